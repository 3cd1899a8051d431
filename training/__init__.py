"""Training: instruction generation, feature cache, the single-stage trainer and evaluation."""
