"""Training: the trainer loop, checkpoints and run folders."""
