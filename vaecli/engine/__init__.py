"""The engine: one epoch loop for a VAE or a stack of them, its steps, and its stop and resume state."""
