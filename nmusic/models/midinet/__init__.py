"""MidiNet-style note-based GAN (Yang et al. 2017): config, presets and recipe (``model``), the networks
(``networks``), and its data, piano-roll bar pairs (``data``)."""
from .model import PRESETS, MidiNetConfig, MidiNetRecipe

__all__ = ["PRESETS", "MidiNetConfig", "MidiNetRecipe"]
