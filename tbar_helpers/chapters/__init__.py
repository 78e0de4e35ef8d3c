"""What the book's chapters call: experiments, figures and widgets."""
