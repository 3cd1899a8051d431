"""The ModaVerse model: projectors, LoRA LLM, constrained decoding, checkpoints."""
