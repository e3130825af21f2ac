"""cMelGAN discriminator: (spectrogram, genre) -> one realness logit (paper section 3.2.2).

Layout (``B`` batch, ``F`` mel bins, ``T`` frames)::

    x (B, F, T) -> (B, 1, F, T)
    [concat conditioning] embed_c(genre) (B, F*T) -> (B, 1, F, T), stacked as a 2nd input channel (paper)
    -> [Conv2d(kernel k_i, stride s_i, groups g_i) -> LeakyReLU] per layer       grouped convs allow the
       paper's large kernels at modest cost; stride 2 layers downsample
       [minibatch std] before the last layer, one extra channel holding the feature spread across
       a group of samples (Karras et al. 2018), so a generator that ignores its noise is easy to spot
    -> h = sum over (freq, time) of the last feature map (B, C)                  (SNGAN/BigGAN pooling)
    -> logit = Linear(h)                                                          (paper: linear output)
             + <embed_p(genre), h>                  [projection conditioning, Miyato & Koyama 2018]

``conditioning`` picks ``"concat"`` (the paper), ``"projection"`` or ``"both"``. The output is a raw
logit; the loss (hinge, BCE-with-logits = the paper's sigmoid + BCE, or least squares) lives in
:mod:`nmusic.models.cmelgan`.

Speed: the weights are channels-last, so the convolutions run in NHWC (faster grouped convolutions on
a CPU, tensor cores on a GPU); with projection conditioning, blocks of the batch that repeat other
blocks (the wrong-genre reals) go through the convolutions once (``repeats``).

Normalisation: spectral norm on every weight (convs, linear, projection embedding) when
``spectral_norm`` is on (the stabiliser of choice for GAN discriminators, Miyato et al. 2018);
otherwise weight norm on the convs, as in the paper and MelGAN.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from .temporal import TemporalDiscriminators


class Discriminator(nn.Module):
    """``forward(x (N, F, T), genre (N,), features=False, segment=N) -> logits (N,)`` (and feature maps);
    ``(N, 1 + len(temporal_scales))`` with temporal discriminators (:mod:`.temporal`).

    ``segment``: the batch is a concatenation of blocks of this many samples (real, fake, ...); the
    minibatch-std groups never straddle two blocks.
    """

    def __init__(self, n_genres: int, n_mels: int, frames: int, channels, kernels, strides, groups,
                 conditioning: str = "projection", use_spectral_norm: bool = True, leaky: float = 0.2,
                 minibatch_std: int = 0, temporal_scales=(), temporal_channels: int = 128):
        super().__init__()
        self.n_mels, self.frames, self.minibatch_std = n_mels, frames, minibatch_std
        self.concat = conditioning in ("concat", "both")
        self.project = conditioning in ("projection", "both")
        norm = spectral_norm if use_spectral_norm else (lambda m: m)
        conv_norm = spectral_norm if use_spectral_norm else weight_norm

        if self.concat:
            # One learned (F x T) plane per genre (the paper's "embedding reshaped to the spectrogram size").
            self.embed_concat = nn.Embedding(n_genres, n_mels * frames)
        layers, c_in = [], 2 if self.concat else 1
        for i, (c, k, s, g) in enumerate(zip(channels, kernels, strides, groups)):
            if minibatch_std and i == len(channels) - 1:
                c_in += 1
            layers.append(nn.Sequential(
                conv_norm(nn.Conv2d(c_in, c, kernel_size=k, stride=s, padding=k // 2, groups=g)),
                nn.LeakyReLU(leaky),
            ))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.linear = norm(nn.Linear(c_in, 1))
        if self.project:
            self.embed_project = norm(nn.Embedding(n_genres, c_in))
        # Temporal discriminators (temporal.py): whole frames along time, one logit per scale.
        self.temporal = TemporalDiscriminators(n_genres, n_mels, temporal_scales, temporal_channels, leaky,
                                               minibatch_std) if temporal_scales else None
        # Channels-last weights make the convolutions run in NHWC: in NCHW oneDNN converts the grouped
        # convolutions' activations in every backward (1.2-1.4x slower per discriminator pass on a CPU).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, genre: torch.Tensor, features: bool = False, segment: int | None = None,
                repeats: dict[int, int] | None = None):
        """``repeats={i: j}``: block ``i`` (of ``segment`` samples) holds the same spectrograms as block
        ``j`` (the matching-aware negatives: real clips with wrong genres). Without concat conditioning
        the convolutions never see the genre, so they run once per distinct block and only the genre
        projection differs: the same logits (and features) for a third less work in a D step."""
        n = segment or len(x)
        blocks = len(x) // n
        distinct = list(range(blocks))
        if repeats and not self.concat:
            distinct = [b for b in distinct if b not in repeats]
            x = torch.cat([x[b * n:(b + 1) * n] for b in distinct])
        group = math.gcd(self.minibatch_std or 1, n)
        t_h, t_feats = self.temporal.trunks(x, group) if self.temporal is not None else ([], [])
        h = x.unsqueeze(1)                                                   # (B, 1, F, T)
        if self.concat:
            plane = self.embed_concat(genre).view(-1, 1, self.n_mels, self.frames).to(h.dtype)
            h = torch.cat([h, plane], dim=1)                                 # (B, 2, F, T)
        feats = []
        for i, layer in enumerate(self.layers):
            if self.minibatch_std and i == len(self.layers) - 1:
                h = minibatch_std(h, group)
            h = layer(h)                                                     # (B, C_i, F_i, T_i)
            feats.append(h)
        h = h.sum(dim=(2, 3))                                                # (B, C)
        if len(distinct) < blocks:                                           # repeated blocks share features
            rows = torch.cat([torch.arange(n, device=h.device) + distinct.index(repeats.get(b, b)) * n
                              for b in range(blocks)])
            h, feats = h[rows], [f[rows] for f in feats] if features else feats
            t_h, t_feats = [th[rows] for th in t_h], [f[rows] for f in t_feats] if features else t_feats
        logit = self.linear(h).squeeze(1)                                    # (B,)
        if self.project:
            logit = logit + (self.embed_project(genre) * h).sum(dim=1)
        if self.temporal is not None:                                        # (B, 1 + scales)
            logit = torch.cat([logit[:, None], self.temporal.heads(t_h, genre)], dim=1)
            feats = feats + t_feats
        return (logit, feats) if features else logit


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C + 1, H, W)``: append the mean standard deviation over each run of
    ``group`` consecutive samples (``group`` divides ``N``), broadcast over space."""
    N, C, H, W = h.shape
    y = h.float().view(N // group, group, C, H, W)
    var = (y - y.mean(1, keepdim=True)).square().mean(1)    # = var(1, correction=0), ~8x faster on a CPU
    y = (var + 1e-8).sqrt().mean(dim=(1, 2, 3))                               # (N / group,)
    y = y.repeat_interleave(group).view(N, 1, 1, 1).expand(N, 1, H, W)
    return torch.cat([h, y.to(h.dtype)], dim=1)
