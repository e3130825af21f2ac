"""MidiNet's three networks (Yang et al. 2017, section 3 and figure 1), for multi-track bars.

A bar is ``(K, S, P)``: K tracks as channels (drums, bass, chords, melody), S = 16 steps, P pitches.
``y`` is the 1-D condition (genre embedding, and MidiNet's 13-dim chord when on), broadcast as extra
channels wherever it is concatenated::

    conditioner(prev bar)  (K, 16, P) -conv 1xP-> (C, 16, 1) -conv 2x1 /2-> (C, 8, 1) -> (C, 4, 1) -> (C, 2, 1)
    generator(z, y, conditioner maps)
        [z, y] -FC-> H -> [., y] -FC-> (G, 2, 1) -> [., y, cond 2] -convT 2x1 x2-> (G, 4, 1) -> [., y, cond 4] -> ...
        -> (G, 16, 1) -> [., y, cond 16] -convT 1xP-> (K, 16, P) logits (sigmoid: note-on probabilities)
    discriminator(bar, y)
        [bar, y] -conv 2xP /2-> (D1, 8, 1) -> [., y] -conv 4x1 /2-> (D2, 3, 1) -> [flat, y] -FC-> F -> [., y]
        -> logit = Linear + <embed(genre), h>     (projection added to MidiNet's concatenation)

Batch norm after every generator and conditioner layer but the output, leaky ReLU in the discriminator,
as MidiNet (and DCGAN) do. The discriminator also returns its first layer's features, which the
generator's feature-matching term uses.
"""
from __future__ import annotations

import torch
from torch import nn


def _cat(h: torch.Tensor, y: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
    """``h (B, C, T, W)`` with ``y (B, Y)`` broadcast as channels and conditioner ``maps`` (same T, W) appended."""
    B, _, T, W = h.shape
    return torch.cat([h, y[:, :, None, None].expand(B, y.shape[1], T, W), *maps], dim=1)


class Conditioner(nn.Module):
    """Previous bar -> feature maps at 16, 8, 4 and 2 steps (the generator's resolutions, finest first)."""

    def __init__(self, tracks: int, pitches: int, channels: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Conv2d(tracks, channels, (1, pitches)), nn.BatchNorm2d(channels),
                                                   nn.LeakyReLU(0.2))])
        for _ in range(3):
            self.layers.append(nn.Sequential(nn.Conv2d(channels, channels, (2, 1), stride=(2, 1)),
                                             nn.BatchNorm2d(channels), nn.LeakyReLU(0.2)))

    def forward(self, prev: torch.Tensor) -> list[torch.Tensor]:
        maps, h = [], prev
        for layer in self.layers:
            h = layer(h)
            maps.append(h)
        return maps


class Generator(nn.Module):
    """``(z (B, Z), y (B, Y), prev (B, K, 16, P)) -> logits (B, K, 16, P)``; owns the conditioner."""

    def __init__(self, tracks: int, pitches: int, z_dim: int, y_dim: int, hidden: int, channels: int,
                 cond_channels: int):
        super().__init__()
        self.channels = channels
        self.conditioner = Conditioner(tracks, pitches, cond_channels)
        self.fc = nn.Sequential(nn.Linear(z_dim + y_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(hidden + y_dim, channels * 2), nn.BatchNorm1d(channels * 2), nn.ReLU())
        c_in = channels + y_dim + cond_channels
        self.up = nn.ModuleList([nn.Sequential(nn.ConvTranspose2d(c_in, channels, (2, 1), stride=(2, 1)),
                                               nn.BatchNorm2d(channels), nn.ReLU()) for _ in range(3)])
        self.out = nn.ConvTranspose2d(c_in, tracks, (1, pitches))

    def forward(self, z: torch.Tensor, y: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        c16, c8, c4, c2 = self.conditioner(prev)
        h = self.fc2(torch.cat([self.fc(torch.cat([z, y], 1)), y], 1)).view(len(z), self.channels, 2, 1)
        for layer, cond in zip(self.up, (c2, c4, c8)):
            h = layer(_cat(h, y, cond))
        return self.out(_cat(h, y, c16))


class Discriminator(nn.Module):
    """``(bar (B, K, 16, P), y (B, Y), genre (B,)) -> (logit (B,), first-layer features (B, D1, 8, 1))``."""

    def __init__(self, tracks: int, pitches: int, y_dim: int, n_genres: int, channels: tuple[int, int], hidden: int):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(tracks + y_dim, c1, (2, pitches), stride=(2, 1))
        self.conv2 = nn.Sequential(nn.Conv2d(c1 + y_dim, c2, (4, 1), stride=(2, 1)), nn.BatchNorm2d(c2))
        self.fc = nn.Linear(c2 * 3 + y_dim, hidden)
        self.linear = nn.Linear(hidden + y_dim, 1)
        self.embed = nn.Embedding(n_genres, hidden + y_dim)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, y: torch.Tensor, genre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.act(self.conv1(_cat(x, y)))
        h = self.act(self.conv2(_cat(f1, y))).flatten(1)
        h = torch.cat([self.act(self.fc(torch.cat([h, y], 1))), y], 1)
        return self.linear(h).squeeze(1) + (self.embed(genre) * h).sum(1), f1
