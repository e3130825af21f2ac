"""nmusic: genre-conditional generative models of music on Mel spectrograms (MelNet and cMelGAN)."""
__version__ = "0.1.0"
