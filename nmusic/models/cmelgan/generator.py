"""cMelGAN generator: noise x genre -> one normalised log-mel spectrogram (paper section 3.2.1).

Layout, top to bottom (``B`` batch, ``C_i`` channels, ``F`` mel bins, ``T`` frames)::

    z (B, z_dim) ~ N(0, I)  *  embed(genre) (B, z_dim)          element-wise product (paper)
    -> Linear -> LeakyReLU -> (B, C_0, h_0, w_0)                  h_0 = ceil(F / prod(factors)), same for T
    -> [ConvTranspose2d(stride f_i) -> LeakyReLU -> ResStack2d] per upsampling factor f_i
    -> LeakyReLU -> Conv2d(C_N -> 1, 7x7) -> crop to (F, T) -> (B, F, T)
    -> fine-tuning stack (optional): [Conv1d over time, F channels, kernel k_j -> LeakyReLU -> ResStack1d]
       with increasing k_j (paper: "1D convolutions over the time domain with increasing kernel sizes")
    -> tanh -> (B, F, T) in [-1, 1], the range of :class:`nmusic.frontend.MelFrontEnd`.

With ``time_latent`` (the presets) the noise is a sequence ``(B, z_dim, W)`` along the latent time
axis instead: each column times the genre embedding goes through the same linear layer to one column
``(C_0, h_0)`` of the first feature map, and everything after is convolutional along time, so ``W``
columns make ``W * prod(factors)`` frames: any length from the training clip's ``W`` up, with no seams
(every frame comes out of the same convolutions; nothing is stitched). The recipe trains it on random
crops of longer outputs, so the interior of a long output is what the discriminator saw.

The seed code built the fine-tuning stack but never called it; here it is used, and
``use_finetune=False`` leaves it out (the paper's section 4.3 ablation).

Every convolution carries weight normalisation (``torch.nn.utils.parametrizations.weight_norm``) as in
MelGAN, and the residual stacks use reflection padding with dilations 1, 3, 9 (MelGAN's ResStack,
shortcut = identity). Dilations are capped at ``size - 1`` per axis so that reflection padding stays
valid on the small early feature maps.

Speed: the 2-D stack runs in channels-last memory (NHWC). The full-resolution layers have few
channels (16-24) and most of the pixels; in NCHW oneDNN runs their convolutions at a few GFLOP/s.

Sizes: the upsampling stack produces ``h_0 * prod(factors)`` rows (>= F) and likewise columns (>= T);
any excess is cropped (highest mel rows / last frames), so every ``(n_mels, clip_frames)`` works. A
geometry whose products divide the target exactly (the presets) crops nothing.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def wn_conv(dims: int, *args, **kwargs) -> nn.Module:
    """Weight-normalised ``Conv1d``/``Conv2d``."""
    return weight_norm((nn.Conv1d if dims == 1 else nn.Conv2d)(*args, **kwargs))


class ResStack(nn.Module):
    """MelGAN residual stack: ``x + Conv1x1(LReLU(DilatedConv3(LReLU(x))))`` for each dilation.

    ``dims`` 1: ``(B, C, T)``; 2: ``(B, C, H, W)``; shape preserved. ``size`` is the spatial size
    (``T`` or ``(H, W)``) used to cap dilations so reflection padding is valid.
    """

    def __init__(self, dims: int, channels: int, size, dilations=(1, 3, 9), leaky: float = 0.2):
        super().__init__()
        sizes = (size,) if dims == 1 else tuple(size)
        pad_cls = nn.ReflectionPad1d if dims == 1 else nn.ReflectionPad2d
        blocks = []
        for d in dilations:
            dil = tuple(max(1, min(d, s - 1)) for s in sizes)
            # ReflectionPad2d takes (left, right, top, bottom) = (W, W, H, H).
            pad = (dil[0], dil[0]) if dims == 1 else (dil[1], dil[1], dil[0], dil[0])
            blocks.append(nn.Sequential(
                nn.LeakyReLU(leaky),
                pad_cls(pad),
                wn_conv(dims, channels, channels, kernel_size=3, dilation=dil if dims == 2 else dil[0]),
                nn.LeakyReLU(leaky),
                wn_conv(dims, channels, channels, kernel_size=1),
            ))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def start_size(target: int, factors) -> int:
    """Rows (or columns) of the first feature map so that upsampling covers ``target``."""
    return math.ceil(target / math.prod(factors))


class Generator(nn.Module):
    """``forward(z, genre) -> (B, n_mels, frames)`` in [-1, 1].

    ``z``: ``(B, z_dim)`` for the paper's layout, one noise vector per clip mapped by the linear layer
    to the whole first feature map; ``(B, z_dim, columns)`` with ``time_latent``, a noise *sequence*
    along the latent time axis, each column mapped by the same linear layer to one column of the
    first feature map, so the whole network is convolutional along time and ``columns`` latent
    columns make ``columns * prod(factors)`` frames (any number of columns >= the training clip's).
    ``genre``: ``(B,)`` ids, or ``(B, n_genres)`` float weights that mix the genre embeddings (blends).
    """

    def __init__(self, n_genres: int, n_mels: int, frames: int, z_dim: int, channels, factors,
                 finetune_kernels, use_finetune: bool = True, dilations=(1, 3, 9), leaky: float = 0.2,
                 time_latent: bool = False):
        super().__init__()
        self.n_mels, self.frames, self.z_dim = n_mels, frames, z_dim
        self.time_latent, self.hop = time_latent, math.prod(factors)
        h, w = start_size(n_mels, factors), start_size(frames, factors)
        self.start = (channels[0], h, w)
        self.columns = w                     # latent columns of a training clip
        self.embed = nn.Embedding(n_genres, z_dim)
        self.linear = nn.Linear(z_dim, channels[0] * h * (1 if time_latent else w))
        self.leaky = leaky

        ups = []
        for c_in, c_out, f in zip(channels[:-1], channels[1:], factors):
            h, w = h * f, w * f
            ups.append(nn.Sequential(
                # kernel 2f, stride f: output exactly f times larger (MelGAN's upsampling layer)
                weight_norm(nn.ConvTranspose2d(c_in, c_out, kernel_size=2 * f, stride=f,
                                               padding=f // 2 + f % 2, output_padding=f % 2)),
                nn.LeakyReLU(leaky),
                ResStack(2, c_out, (h, w), dilations, leaky),
            ))
        self.upsample = nn.ModuleList(ups)
        self.to_mel = nn.Sequential(nn.LeakyReLU(leaky), nn.ReflectionPad2d(3),
                                    wn_conv(2, channels[-1], 1, kernel_size=7))

        self.use_finetune = use_finetune
        fine = []
        if use_finetune:
            for k in finetune_kernels:
                fine.append(nn.Sequential(
                    nn.ReflectionPad1d(((k - 1) // 2, k // 2)),
                    wn_conv(1, n_mels, n_mels, kernel_size=k),
                    nn.LeakyReLU(leaky),
                    ResStack(1, n_mels, frames, dilations, leaky),
                ))
        self.finetune = nn.ModuleList(fine)

    def condition(self, genre: torch.Tensor) -> torch.Tensor:
        """``(B,)`` genre ids -> their embeddings; ``(B, n_genres)`` weights -> the weighted mix ``(B, z_dim)``."""
        if genre.is_floating_point():
            return genre.to(self.embed.weight.dtype) @ self.embed.weight
        return self.embed(genre)

    def forward(self, z: torch.Tensor, genre: torch.Tensor) -> torch.Tensor:
        c, h0, w0 = self.start
        if self.time_latent:                                                 # z (B, z_dim, W)
            x = z * self.condition(genre)[:, :, None]
            x = nn.functional.leaky_relu(self.linear(x.transpose(1, 2)), self.leaky)   # (B, W, C_0 h_0)
            w0 = x.shape[1]
            x = x.view(-1, w0, c, h0).permute(0, 2, 3, 1)                    # (B, C_0, h_0, W)
            frames = w0 * self.hop                                           # no crop along time
        else:
            x = z * self.condition(genre)                                    # (B, z_dim)
            x = nn.functional.leaky_relu(self.linear(x), self.leaky)
            x, frames = x.view(-1, c, h0, w0), self.frames
        # channels-last activations: 1.5x faster convolutions on a CPU (oneDNN), tensor cores on a GPU
        x = x.contiguous(memory_format=torch.channels_last)                 # (B, C_0, h_0, w_0)
        for layer in self.upsample:
            x = layer(x)                                                     # (B, C_i, h_i, w_i)
        x = self.to_mel(x)[:, 0, : self.n_mels, : frames]                    # (B, F, T)
        for layer in self.finetune:
            x = layer(x)                                                     # (B, F, T)
        return torch.tanh(x)
