"""Sampling from MelNet: cached incremental sampling and the naive baseline (paper 3.1, 3.1.2).

Cached sampling (:func:`sample_tier`) exploits the structure of the stacks. The time-delayed and
centralized stacks for frame ``i`` depend only on frames ``< i``, so each frame advances their time
RNN states by one step and runs the frequency-direction RNN of the time-delayed stack over the one
previous frame. Within the frame, the frequency-delayed stack advances one bin at a time with its
own state, which is reset at every frame. The cost is therefore linear in the number of elements;
nothing is ever re-run over the prefix.

:func:`sample_tier_naive` is the baseline: for every element it re-runs the full network over the
whole prefix (frames ``<= i``), so its cost grows quadratically. Both consume random numbers in the
same order, so with the same generator they return the same samples.

Multi-tier sampling (:func:`sample`) draws tier 1, then each later tier conditioned on the
interleaved coarser tiers, and interleaves. Priming: the first frames of every tier are taken from
the split of a given real clip (their frames warm the RNN states), the rest is sampled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import melnet_gmm as gmm
from .melnet_tiers import Tier, interleave, split, split_axes, tier_shapes


def _rows(z: torch.Tensor | None, i: int, axis: int) -> torch.Tensor | None:
    """Row ``i`` of the conditioning along ``axis`` (kept when it is broadcast there)."""
    if z is None or z.shape[axis] == 1:
        return z
    return z.narrow(axis, i, 1)


def _start(tier: Tier, genre: torch.Tensor, n_frames: int, context, prime):
    p = next(tier.parameters())
    B = genre.shape[0]
    x = torch.zeros(B, n_frames, tier.n_freq, dtype=p.dtype, device=p.device)
    n_prime = 0
    if prime is not None:
        n_prime = min(prime.shape[1], n_frames)
        x[:, :n_prime] = prime[:, :n_prime].to(x)
    z = tier.condition(genre, context, n_frames)
    return x, z, n_prime


@torch.no_grad()
def sample_tier(tier: Tier, n_frames: int, genre: torch.Tensor, context: torch.Tensor | None = None,
                prime: torch.Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None, record: bool = False, progress=None):
    """Cached sampling of one tier: ``(B, n_frames, tier.n_freq)``.

    ``prime (B|1, P, F)`` fixes the first ``P`` frames. With ``record=True`` also returns the
    mixture parameters used for every element, stacked ``(B, T, F, 3, K)`` (see
    :meth:`MixtureParams.stacked`), to compare against the full pass.
    """
    x, z, n_prime = _start(tier, genre, n_frames, context, prime)
    L = len(tier.layers)
    time_state, central_state = [None] * L, [None] * L
    prev = torch.zeros_like(x[:, :1])                     # x[-1] = 0, as in the full pass
    records = []
    for i in range(n_frames):
        z_i = _rows(z, i, 1)
        h_t, h_c = tier.time_inputs(prev, z_i)
        hts, hcs = [], []
        for l, layer in enumerate(tier.layers):
            h_t, time_state[l] = layer.time_stack(h_t, time_state[l])
            if tier.central:
                h_c, central_state[l] = layer.central_stack(h_c, central_state[l])
            hts.append(h_t)
            hcs.append(h_c)
        if i < n_prime:       # known frame: only the time-direction states need it
            if record:
                h_f = tier.freq_inputs(F.pad(x[:, i:i + 1], (1, 0))[..., :-1], z_i)
                for l, layer in enumerate(tier.layers):
                    h_f, _ = layer.freq_stack(h_f, hts[l], hcs[l])
                records.append(tier.mixture(tier.head(h_f)).stacked())
        else:                 # new frame: bin by bin, carrying the frequency-delayed stack's state
            freq_state = [None] * L
            prev_bin = x.new_zeros(x.shape[0], 1)
            z_f = None if z_i is None else z_i[:, 0]                  # (B, F | 1, D)
            h_ts = [h[:, 0] for h in hts]                              # (B, F, D) per layer
            h_cs = [None if h is None else h[:, 0] for h in hcs]       # (B, D) per layer
            frame = []
            for j in range(tier.n_freq):
                h_f = tier.in_f(prev_bin)
                if z_f is not None:
                    h_f = h_f + z_f[:, j if z_f.shape[1] > 1 else 0]
                for l, layer in enumerate(tier.layers):
                    h_f, freq_state[l] = layer.freq_step(h_f, h_ts[l][:, j], h_cs[l], freq_state[l])
                params = tier.mixture(tier.head(h_f))    # (B, K)
                value = gmm.sample(params, temperature, generator)
                x[:, i, j] = value
                prev_bin = value[:, None]
                if record:
                    frame.append(params.stacked())
            if record:
                records.append(torch.stack(frame, dim=1)[:, None])
        prev = x[:, i:i + 1]
        if progress is not None:
            progress.update(1)
    return (x, torch.cat(records, dim=1)) if record else x


@torch.no_grad()
def sample_tier_naive(tier: Tier, n_frames: int, genre: torch.Tensor, context: torch.Tensor | None = None,
                      prime: torch.Tensor | None = None, temperature: float = 1.0,
                      generator: torch.Generator | None = None, progress=None) -> torch.Tensor:
    """Baseline without caching: one full forward over frames ``<= i`` per element ``(i, j)``."""
    x, z, n_prime = _start(tier, genre, n_frames, context, prime)
    for i in range(n_prime, n_frames):
        z_prefix = z if z is None or z.shape[1] == 1 else z[:, :i + 1]
        for j in range(tier.n_freq):
            theta = tier(x[:, :i + 1], genre, z=z_prefix)[:, i:i + 1, j:j + 1]
            x[:, i, j] = gmm.sample(tier.mixture(theta), temperature, generator)[:, 0, 0]
        if progress is not None:
            progress.update(1)
    return x


@torch.no_grad()
def sample(tiers: list[Tier], genre: torch.Tensor, n_frames: int, n_mels: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, prime: torch.Tensor | None = None,
           naive: bool = False, progress: bool = False) -> torch.Tensor:
    """All tiers, coarse to fine: ``(B,)`` genres -> ``(B, n_frames, n_mels)`` (time-major).

    ``prime (B|1, P, n_mels)`` (time-major) becomes the first ``P`` frames of the result.
    """
    G = len(tiers)
    shapes, axes = tier_shapes(n_frames, n_mels, G), split_axes(G)
    primes = split(prime, G)[0] if prime is not None else [None] * G
    if prime is not None and prime.shape[0] == 1:
        primes = [p.expand(genre.shape[0], -1, -1) for p in primes]
    bar = tqdm(total=sum(s[0] for s in shapes), desc="melnet sampling", unit="frame", disable=not progress)
    x = None
    for g, tier in enumerate(tiers):
        if naive:
            fine = sample_tier_naive(tier, shapes[g][0], genre, x, primes[g], temperature, generator, bar)
        else:
            fine = sample_tier(tier, shapes[g][0], genre, x, primes[g], temperature, generator, progress=bar)
        x = fine if g == 0 else interleave(x, fine, axes[g])
    bar.close()
    return x


def sample_naive(tiers: list[Tier], genre: torch.Tensor, n_frames: int, n_mels: int, **kwargs) -> torch.Tensor:
    """:func:`sample` with the naive per-element re-run of the network (benchmark baseline)."""
    return sample(tiers, genre, n_frames, n_mels, naive=True, **kwargs)
