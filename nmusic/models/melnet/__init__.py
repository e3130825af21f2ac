"""MelNet (paper 3.1): config and presets, the recipe the trainer drives (``model``); the network (``layers``,
``tiers``, ``gmm``); cached sampling (``sampling``)."""
from .model import PRESETS, MelNetConfig, MelNetRecipe, gaussian_baseline_nll

__all__ = ["PRESETS", "MelNetConfig", "MelNetRecipe", "gaussian_baseline_nll"]
