"""Sampling speed: seconds of audio (spectrograms; vocoding not included) generated per second.

MelNet: the cached sampler against the seed's sampler, which re-runs the network over the prefix
once per frame (measured in the same run), and against the exact re-run per element (measured when
it is short, otherwise extrapolated from the per-frame run: it runs ``bins`` forwards where the
per-frame run runs one); each method's FLOPs (:func:`melnet_sampling_flops`) and their ratio to one
cached pass, the most the cached sampler can gain at equal FLOP/s. cMelGAN: one generator pass.
"""
from __future__ import annotations

import contextlib
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data.synth import GENRES
from ..device import AMP_DTYPES
from ..models.melnet.sampling import sample_tier, sample_tier_naive
from ..models.melnet.tiers import interleave, split, split_axes, tier_shapes
from .measure import RNN_FLOPS, OtherLoad, peak_memory, run_timed, timed
from .training_speed import build


def _melnet_pass(tiers, genre, n_frames: int, n_mels: int, method: str, generator, device) -> list[float]:
    """Sample all tiers with ``method`` ("cached", "frame", "element"); seconds per tier."""
    shapes, axes = tier_shapes(n_frames, n_mels, len(tiers)), split_axes(len(tiers))
    x, seconds = None, []
    for g, tier in enumerate(tiers):
        if method == "cached":
            fine, s = run_timed(lambda: sample_tier(tier, shapes[g][0], genre, x, generator=generator), device)
        else:
            fine, s = run_timed(lambda: sample_tier_naive(tier, shapes[g][0], genre, x, generator=generator,
                                                           per=method), device)
        seconds.append(s)
        x = fine if g == 0 else interleave(x, fine, axes[g])
    return seconds


def melnet_sampling_flops(tiers, genre, n_frames: int, n_mels: int) -> dict:
    """FLOPs of sampling ``n_frames`` x ``n_mels`` with each method, from two counted passes per tier.

    A tier's forward pass over ``t`` frames costs ``a t + c`` FLOPs: every element costs the same
    and ``c`` is the conditioning on the whole coarser spectrogram. Cached sampling does exactly
    the arithmetic of one pass over all frames (``a T + c``); the per-frame re-run does a pass over
    frames ``<= i`` for every frame ``i`` (``sum_t a t + c``), the per-element re-run ``bins`` times
    that. Their ratio is the most the cached sampler can gain at equal FLOP/s.
    """
    shapes = tier_shapes(n_frames, n_mels, len(tiers))
    p = next(tiers[0].parameters())
    xs, contexts = split(torch.zeros(genre.shape[0], n_frames, n_mels, dtype=p.dtype, device=p.device), len(tiers))
    out = {"cached": [], "frame": [], "element": []}
    for tier, (T, F_), x, context in zip(tiers, shapes, xs, contexts):
        counts = []
        for t in (1, T):
            counter = FlopCounterMode(display=False, custom_mapping=RNN_FLOPS)
            with counter, torch.no_grad():
                tier(x[:, :t], genre, context)
            counts.append(counter.get_total_flops())
        a = (counts[1] - counts[0]) / max(T - 1, 1)
        c = counts[0] - a
        frame = a * T * (T + 1) / 2 + c * T
        out["cached"].append(a * T + c)
        out["frame"].append(frame)
        out["element"].append(frame * F_)
    return {m: sum(v) for m, v in out.items()}


def bench_sample_melnet(preset: str, device: torch.device, seconds: float = 5.0, naive_frame: bool = True,
                        naive_element: bool = False, batch: int = 1) -> dict:
    """Seconds of audio per second: cached sampling vs re-running the network per frame / element."""
    recipe, cfg, spec = build("melnet", preset, device)
    tiers = recipe.tiers()
    for t in tiers:
        t.eval()
    n_frames = spec.frames(round(seconds * spec.sample_rate))
    audio_s = batch * spec.samples(n_frames) / spec.sample_rate
    genre = torch.arange(batch, device=device) % len(GENRES)
    gen = torch.Generator(device).manual_seed(0)
    shapes = [list(s) for s in tier_shapes(n_frames, spec.n_mels, len(tiers))]
    warm_frames = 2 ** len(tiers)                         # warm-up: a couple of frames of every tier
    _melnet_pass(tiers, genre, warm_frames, spec.n_mels, "cached", gen, device)
    out = {"model": "melnet", "preset": preset, "device": str(device), "threads": torch.get_num_threads(),
           "batch": batch, "n_frames": n_frames, "audio_seconds": audio_s, "tier_shapes": shapes, "methods": {}}
    methods = ["cached"] + (["frame"] if naive_frame else []) + (["element"] if naive_element else [])
    for method in methods:
        with peak_memory(device) as mem, OtherLoad() as others:
            per_tier = _melnet_pass(tiers, genre, n_frames, spec.n_mels, method, gen, device)
        total = sum(per_tier)
        out["methods"][method] = {"seconds": total, "per_tier_s": per_tier, "audio_s_per_s": audio_s / total,
                                  "measured": True, "other_processes_cores": others.cores, **mem}
    if "frame" in out["methods"] and "element" not in out["methods"]:
        # the per-element re-run runs F forwards over the very prefix the per-frame run runs once
        per_tier = [s * f for s, (_, f) in zip(out["methods"]["frame"]["per_tier_s"], shapes)]
        out["methods"]["element"] = {"seconds": sum(per_tier), "per_tier_s": per_tier,
                                     "audio_s_per_s": audio_s / sum(per_tier), "measured": False,
                                     "extrapolated_from": "frame x bins per tier"}
    cached = out["methods"]["cached"]["seconds"]
    out["speedup"] = {m: v["seconds"] / cached for m, v in out["methods"].items() if m != "cached"}
    flops = melnet_sampling_flops(tiers, genre, n_frames, spec.n_mels)
    for m, v in out["methods"].items():
        v["gflop"] = flops[m] / 1e9
        v["gflop_per_s"] = flops[m] / 1e9 / v["seconds"]
    # at equal FLOP/s the cached sampler is this much faster than each re-run: the ceiling of "speedup"
    out["flop_ratio"] = {m: flops[m] / flops["cached"] for m in out["speedup"]}
    return out


def bench_sample_cmelgan(preset: str, device: torch.device, amp: str = "none", repeats: int = 3) -> dict:
    """Seconds of audio per second of the EMA generator (one batch of ``batch_size`` clips)."""
    recipe, cfg, spec = build("cmelgan", preset, device)
    genre = torch.arange(cfg.batch_size, device=device) % len(GENRES)
    gen = torch.Generator(device).manual_seed(0)
    ctx = torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp != "none" else contextlib.nullcontext()
    with ctx:
        recipe.sample(genre, generator=gen)       # warm-up
        with peak_memory(device) as mem, OtherLoad() as others:
            times = [timed(lambda: recipe.sample(genre, generator=gen), device) for _ in range(repeats)]
    audio_s = cfg.batch_size * spec.seconds(cfg.clip_frames)
    s = statistics.median(times)
    return {"model": "cmelgan", "preset": preset, "device": str(device), "threads": torch.get_num_threads(),
            "amp": amp, "batch": cfg.batch_size, "audio_seconds": audio_s,
            "methods": {"generator": {"seconds": s, "audio_s_per_s": audio_s / s, "measured": True,
                                      "other_processes_cores": others.cores, **mem}}}
