"""cMelGAN (paper 3.2): config, presets and the recipe the trainer drives (``model``); the networks
(``generator``, ``discriminator``, ``temporal``)."""
from .model import PRESETS, CMelGANConfig, CMelGANRecipe

__all__ = ["PRESETS", "CMelGANConfig", "CMelGANRecipe"]
