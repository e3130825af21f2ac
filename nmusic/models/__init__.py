"""The model families (paper section 3), one folder each, and their registry::

    base.py     what every family gives the trainer (Recipe) and gets per step (StepContext)
    melnet/     MelNet: model.py (config, presets, recipe), layers, tiers, gmm, sampling
    cmelgan/    cMelGAN: model.py (config, presets, recipe), generator, discriminator, temporal, losses
    vocoder/    the neural vocoder (mel -> waveform): model.py (config, presets, recipe, chunked inversion), networks
    midinet/    MidiNet-style note GAN: model.py (config, presets, recipe), networks, data (piano-roll bar pairs)

A new family (a neural vocoder, a note-based GAN) is a new folder with the same shape and an entry
in :func:`registry`: name -> (config presets, Recipe subclass).
"""
from __future__ import annotations


def registry() -> dict:
    """``{"cmelgan": (PRESETS, CMelGANRecipe), "melnet": ..., "vocoder": ..., "midinet": ...}`` (imported lazily)."""
    from . import cmelgan, melnet, midinet, vocoder
    return {"cmelgan": (cmelgan.PRESETS, cmelgan.CMelGANRecipe), "melnet": (melnet.PRESETS, melnet.MelNetRecipe),
            "vocoder": (vocoder.PRESETS, vocoder.VocoderRecipe), "midinet": (midinet.PRESETS, midinet.MidiNetRecipe)}
