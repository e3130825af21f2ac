"""The neural vocoder (the paper's future work): config, presets and the recipe the trainer drives
(``model``; chunked inversion too), its networks and losses from the ``vocos`` package (``networks``)."""
from .model import PRESETS, VocoderConfig, VocoderRecipe

__all__ = ["PRESETS", "VocoderConfig", "VocoderRecipe"]
