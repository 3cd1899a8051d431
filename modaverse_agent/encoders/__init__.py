"""Encoders that turn media into embeddings (ImageBind)."""
