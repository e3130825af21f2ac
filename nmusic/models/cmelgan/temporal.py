"""cMelGAN's temporal discriminators: does the spectrogram *move* like music of the genre? (MelGAN's
multi-scale discriminator, Kumar et al. 2019, turned along the time axis of a spectrogram.)

The 2-D discriminator (:mod:`.discriminator`) scores local time-frequency patches and sums
them, so a generator can please it with the right texture everywhere and no rhythm at all. Each
temporal discriminator reads whole frames, the mel bins as channels, with 1-D convolutions along
time; at scale ``s`` the frames are first averaged ``s`` at a time, so scale 1 hears onsets and
scale 4 hears bars. Strided and dilated layers give a receptive field of 65 (pooled) frames: about
one second at scale 1 for the ``default`` spectrogram, the whole clip at scale 4.

Layout per scale (``B`` batch, ``F`` mel bins, ``T`` frames, ``C`` channels)::

    x (B, F, T) -> AvgPool1d(s) -> (B, F, T/s)
    -> Conv1d(F->C, 5) -> Conv1d(C->C, 5, stride 2) -> Conv1d(C->C, 5, stride 2)       LeakyReLU after each
    -> [minibatch std: +1 channel] -> Conv1d(C->C, 3, dilation 2) -> Conv1d(C->C, 3, dilation 4)
    -> h = sum over time (B, C) -> logit = Linear(h) + <embed(genre), h>           (projection, Miyato & Koyama)

Spectral norm on every weight, as in the 2-D discriminator. The output of :class:`TemporalDiscriminators`
is one logit per scale, ``(B, n_scales)``; the losses average over them.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def minibatch_std_1d(h: torch.Tensor, group: int) -> torch.Tensor:
    """``(N, C, T) -> (N, C + 1, T)``: the mean standard deviation over runs of ``group`` samples."""
    N, C, T = h.shape
    y = h.float().view(N // group, group, C, T)
    y = ((y - y.mean(1, keepdim=True)).square().mean(1) + 1e-8).sqrt().mean(dim=(1, 2))   # (N / group,)
    y = y.repeat_interleave(group).view(N, 1, 1).expand(N, 1, T)
    return torch.cat([h, y.to(h.dtype)], dim=1)


class TemporalDiscriminator(nn.Module):
    """One scale. ``trunk(x (N, F, T), group) -> (h (N, C), feature maps)`` does not see the genre (so
    repeated blocks of a batch can share it); ``head(h, genre (N,)) -> logit (N,)`` adds it."""

    def __init__(self, n_genres: int, n_mels: int, scale: int, channels: int = 128, leaky: float = 0.2,
                 minibatch_std: int = 4):
        super().__init__()
        self.scale, self.minibatch_std = scale, minibatch_std
        sn, c = spectral_norm, channels
        self.pool = nn.AvgPool1d(scale) if scale > 1 else nn.Identity()
        self.front = nn.ModuleList([
            nn.Sequential(sn(nn.Conv1d(n_mels, c, 5, padding=2)), nn.LeakyReLU(leaky)),
            nn.Sequential(sn(nn.Conv1d(c, c, 5, stride=2, padding=2)), nn.LeakyReLU(leaky)),
            nn.Sequential(sn(nn.Conv1d(c, c, 5, stride=2, padding=2)), nn.LeakyReLU(leaky)),
        ])
        extra = 1 if minibatch_std else 0
        self.back = nn.ModuleList([
            nn.Sequential(sn(nn.Conv1d(c + extra, c, 3, padding=2, dilation=2)), nn.LeakyReLU(leaky)),
            nn.Sequential(sn(nn.Conv1d(c, c, 3, padding=4, dilation=4)), nn.LeakyReLU(leaky)),
        ])
        self.linear = sn(nn.Linear(c, 1))
        self.embed = sn(nn.Embedding(n_genres, c))

    def trunk(self, x: torch.Tensor, group: int) -> tuple[torch.Tensor, list]:
        h, feats = self.pool(x), []
        for layer in self.front:
            h = layer(h)                                                # (N, C, T_i)
            feats.append(h)
        if self.minibatch_std:
            h = minibatch_std_1d(h, group)
        for layer in self.back:
            h = layer(h)
            feats.append(h)
        return h.sum(-1), feats                                         # (N, C)

    def head(self, h: torch.Tensor, genre: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(1) + (self.embed(genre) * h).sum(1)


class TemporalDiscriminators(nn.Module):
    """All scales; :meth:`trunks` then :meth:`heads` give logits ``(N, n_scales)``."""

    def __init__(self, n_genres: int, n_mels: int, scales, channels: int = 128, leaky: float = 0.2,
                 minibatch_std: int = 4):
        super().__init__()
        self.discriminators = nn.ModuleList(TemporalDiscriminator(n_genres, n_mels, s, channels, leaky, minibatch_std)
                                            for s in scales)

    def trunks(self, x: torch.Tensor, group: int) -> tuple[list[torch.Tensor], list]:
        hs, feats = [], []
        for d in self.discriminators:
            h, f = d.trunk(x, group)
            hs.append(h)
            feats += f
        return hs, feats

    def heads(self, hs: list[torch.Tensor], genre: torch.Tensor) -> torch.Tensor:
        return torch.stack([d.head(h, genre) for d, h in zip(self.discriminators, hs)], 1)
