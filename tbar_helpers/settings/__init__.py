"""The experiments' settings: classification, image–text and a user's own CLIP (one Setting interface)."""
