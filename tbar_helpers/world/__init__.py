"""The world the models live in: the mini data, the mini CLIP and its foundation, the paper's datasets."""
