"""Model families. Each entry: name -> (config presets, Recipe subclass)."""
from __future__ import annotations


def registry() -> dict:
    """``{"cmelgan": (PRESETS, CMelGANRecipe), "melnet": (PRESETS, MelNetRecipe)}`` (imported lazily)."""
    from . import cmelgan, melnet
    return {"cmelgan": (cmelgan.PRESETS, cmelgan.CMelGANRecipe), "melnet": (melnet.PRESETS, melnet.MelNetRecipe)}
