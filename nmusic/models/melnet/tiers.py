"""Multiscale MelNet: tier split/interleave, feature extraction and the tier network (paper 3.1.2).

The spectrogram ``x (B, T, F)`` (time-major) is split recursively by alternately halving time and
frequency into even/odd rows: the even half is the coarser spectrogram ``x^{<g}``, the odd half is
tier ``g``. The finest split (producing the last tier) is along time, the one before along
frequency, and so on; tier 1 is what is left. Generation runs the other way: tier 1, then each
tier ``g`` conditioned on ``x^{<g}``, interleaved with it to double one axis.

A :class:`Tier` is one autoregressive MelNet (``layers``) plus its conditioning: the genre
embedding (tier 1, optionally every tier) and, for tiers ``g >= 2``, a feature-extraction network
of bidirectional RNNs over time and frequency of ``x^{<g}`` whose output is added to the inputs of
the stacks (``h[0] = W_0 x_shifted + z``). Odd sizes are fine: the odd half is at most one row
shorter than the even half, and tier element ``k`` takes the features of coarse row ``k`` (its
neighbour just before it; the bidirectional RNNs carry what lies after).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .gmm import MixtureParams, init_head, mixture_params
from .layers import DelayedLayer, make_rnn, run_freq, run_time

TIME, FREQ = 1, 2   # axes of a (B, T, F) tier


# --- multiscale bookkeeping ---------------------------------------------------------------------
def split_axes(n_tiers: int) -> list[int | None]:
    """Axis along which tier ``g`` (index ``g - 1``) was split off; ``None`` for tier 1."""
    return [None] + [TIME if (n_tiers - 1 - g) % 2 == 0 else FREQ for g in range(1, n_tiers)]


def split(x: torch.Tensor, n_tiers: int) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """``x (B, T, F)`` -> (tiers, contexts): ``tiers[g]`` is tier ``g+1``, ``contexts[g]`` is ``x^{<g+1}``.

    ``contexts[0]`` is ``None``; ``contexts[g]`` has the shape of ``tiers[g]`` or one more row
    along the split axis.
    """
    axes = split_axes(n_tiers)
    tiers, contexts = [None] * n_tiers, [None] * n_tiers
    cur = x
    for g in range(n_tiers - 1, 0, -1):
        ax = axes[g]
        n = cur.shape[ax]
        tiers[g] = cur.narrow(ax, 1, n - 1)[(slice(None),) * ax + (slice(None, None, 2),)]
        cur = cur[(slice(None),) * ax + (slice(None, None, 2),)]
        contexts[g] = cur
    tiers[0] = cur
    return tiers, contexts


def interleave(coarse: torch.Tensor, fine: torch.Tensor, axis: int) -> torch.Tensor:
    """Inverse of one split: even rows from ``coarse``, odd rows from ``fine`` along ``axis``."""
    nc, nf = coarse.shape[axis], fine.shape[axis]
    if nf not in (nc, nc - 1):
        raise ValueError(f"cannot interleave {nc} coarse rows with {nf} fine rows")
    if nf < nc:   # pad so both halves have the same length, then drop the padding row
        fine = torch.cat([fine, coarse.narrow(axis, nc - 1, 1)], dim=axis)
    out = torch.stack([coarse, fine], dim=axis + 1)
    shape = list(coarse.shape)
    shape[axis] = 2 * nc
    return out.reshape(shape).narrow(axis, 0, nc + nf)


def tier_shapes(n_frames: int, n_mels: int, n_tiers: int) -> list[tuple[int, int]]:
    """``(frames, bins)`` of every tier for a ``n_frames x n_mels`` spectrogram."""
    axes = split_axes(n_tiers)
    shapes = [None] * n_tiers
    cur = [n_frames, n_mels]
    for g in range(n_tiers - 1, 0, -1):
        i = axes[g] - 1
        fine = list(cur)
        fine[i] = cur[i] // 2
        cur[i] = (cur[i] + 1) // 2
        shapes[g] = tuple(fine)
    shapes[0] = tuple(cur)
    return shapes


# --- networks -----------------------------------------------------------------------------------
class FeatureExtractor(nn.Module):
    """Features of the coarser spectrogram: ``x^{<g} (B, Tc, Fc) -> (B, Tc, Fc, dim)``.

    Each layer runs bidirectional RNNs along time (per bin) and along frequency (per frame), mixes
    the four directions with a linear map and adds a residual.
    """

    def __init__(self, dim: int, width: int, layers: int = 1, rnn: str = "lstm"):
        super().__init__()
        self.inp = nn.Linear(1, width)
        self.time_rnns = nn.ModuleList(make_rnn(rnn, width, width, bidirectional=True) for _ in range(layers))
        self.freq_rnns = nn.ModuleList(make_rnn(rnn, width, width, bidirectional=True) for _ in range(layers))
        self.mix = nn.ModuleList(nn.Linear(4 * width, width) for _ in range(layers))
        self.out = nn.Linear(width, dim)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        h = self.inp(context.unsqueeze(-1))
        for t_rnn, f_rnn, mix in zip(self.time_rnns, self.freq_rnns, self.mix):
            h = h + mix(torch.cat([run_time(t_rnn, h)[0], run_freq(f_rnn, h)[0]], dim=-1))
        return self.out(h)


class Tier(nn.Module):
    """One tier: ``x (B, T, F)``, genre ``(B,)``, context ``x^{<g}`` -> mixture params per element.

    ``conditional`` tiers (``g >= 2``) own a :class:`FeatureExtractor`; ``genre_cond`` adds a
    genre embedding. ``checkpoint`` recomputes each layer in the backward pass
    (``torch.utils.checkpoint``, ``use_reentrant=False``) to save activation memory. ``input_noise``: in
    training mode, Gaussian noise of that std is added to the inputs (the earlier elements the stacks read),
    never to the targets, so the tier learns to predict from inputs as imperfect as its own samples.
    """

    def __init__(self, n_freq: int, dim: int, layers: int, n_genres: int, *, rnn: str = "lstm",
                 central: bool = False, n_mixtures: int = 10, scale_floor: float = 5e-3,
                 genre_cond: bool = True, conditional: bool = False, cond_dim: int = 32, cond_layers: int = 1,
                 checkpoint: bool = False, input_noise: float = 0.0):
        super().__init__()
        self.input_noise = input_noise
        self.n_freq, self.dim, self.central = n_freq, dim, central
        self.scale_floor, self.checkpoint = scale_floor, checkpoint
        self.in_t = nn.Linear(1, dim)
        self.in_f = nn.Linear(1, dim)
        self.in_c = nn.Linear(n_freq, dim) if central else None
        self.genre = nn.Embedding(n_genres, dim) if genre_cond else None
        self.features = FeatureExtractor(dim, cond_dim, cond_layers, rnn) if conditional else None
        self.layers = nn.ModuleList(DelayedLayer(dim, rnn, central) for _ in range(layers))
        self.head = nn.Linear(dim, 3 * n_mixtures)
        init_head(self.head, n_mixtures)

    # --- conditioning and inputs ----------------------------------------------------------------
    def condition(self, genre: torch.Tensor, context: torch.Tensor | None, n_frames: int) -> torch.Tensor | None:
        """Conditioning added to the stacks' inputs: ``(B, T, F, D)``, ``(B, 1, 1, D)`` or ``None``."""
        z = None
        if self.genre is not None:
            z = self.genre(genre)[:, None, None, :]
        if self.features is not None:
            if context is None:
                raise ValueError("this tier is conditioned on the coarser tiers: pass context")
            feats = self.features(context)[:, :n_frames, :self.n_freq]
            if feats.shape[1:3] != (n_frames, self.n_freq):
                raise ValueError(f"context {tuple(context.shape)} is too small for a tier of "
                                 f"{n_frames} frames x {self.n_freq} bins")
            z = feats if z is None else z + feats
        return z

    def time_inputs(self, x_prev: torch.Tensor, z: torch.Tensor | None):
        """Previous frames ``x[i-1] (B, T, F)`` -> ``h^t[0] (B, T, F, D)``, ``h^c[0] (B, T, D) | None``."""
        h_t = self.in_t(x_prev.unsqueeze(-1))
        h_c = self.in_c(x_prev) if self.central else None
        if z is not None:
            h_t = h_t + z
            if self.central:
                h_c = h_c + z.mean(dim=2)
        return h_t, h_c

    def freq_inputs(self, x_prev: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Previous bins ``x[i, j-1] (B, T, F)`` -> ``h^f[0] (B, T, F, D)``."""
        h_f = self.in_f(x_prev.unsqueeze(-1))
        return h_f if z is None else h_f + z

    def mixture(self, theta: torch.Tensor) -> MixtureParams:
        """Raw head output ``(..., 3K)`` -> :class:`MixtureParams` ``(..., K)``."""
        return mixture_params(theta, self.scale_floor)

    # --- full pass ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, genre: torch.Tensor, context: torch.Tensor | None = None,
                z: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced pass over a whole tier ``x (B, T, F)`` -> head output ``(B, T, F, 3K)``.

        Turn it into mixture parameters with :meth:`mixture` (the module returns a plain tensor so
        that DDP sees its output). ``z`` (from :meth:`condition`) may be passed to skip recomputing
        the conditioning.
        """
        if z is None:
            z = self.condition(genre, context, x.shape[1])
        x_in = x + self.input_noise * torch.randn_like(x) if self.input_noise and self.training else x
        x_time = F.pad(x_in, (0, 0, 1, 0))[:, :-1]   # x[i-1, j]; zeros before the first frame
        x_freq = F.pad(x_in, (1, 0))[:, :, :-1]       # x[i, j-1]; zeros below the first bin
        h_t, h_c = self.time_inputs(x_time, z)
        h_f = self.freq_inputs(x_freq, z)
        for layer in self.layers:
            if self.checkpoint and torch.is_grad_enabled():
                h_t, h_f, h_c = checkpoint(layer, h_t, h_f, h_c, use_reentrant=False)
            else:
                h_t, h_f, h_c = layer(h_t, h_f, h_c)
        return self.head(h_f)
