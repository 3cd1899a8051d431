"""The ImageBind encoder on torch alone."""
