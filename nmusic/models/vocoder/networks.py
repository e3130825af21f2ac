"""The vocoder's networks, built from the ``vocos`` package's modules, and its reconstruction losses.

- :class:`VocosGenerator`: normalised log-mel ``(B, n_mels, frames)`` -> waveform ``(B, (frames-1)*hop)``;
  ``vocos.models.VocosBackbone`` (ConvNeXt blocks at frame rate) + ``vocos.heads.ISTFTHead`` (log-magnitude
  and phase per STFT bin, then ``torch.istft`` with the front end's own ``n_fft``/``hop_length``, centred,
  so the output has exactly the length :meth:`nmusic.frontend.SpecParams.samples` gives).
- :class:`WaveDiscriminators`: HiFi-GAN's multi-period discriminators (``vocos.discriminators.DiscriminatorP``)
  and DAC's multi-resolution, multi-band STFT discriminators (``vocos.discriminators.DiscriminatorR``),
  called once on one concatenated batch (the trainer's DDP rule).
- :func:`multi_resolution_stft_loss`: spectral convergence + log-magnitude L1 at several STFT sizes
  (Yamamoto et al. 2020, Parallel WaveGAN); the hinge GAN and feature-matching losses are ``vocos.loss``'s.
"""
from __future__ import annotations

import math

import torch
from vocos.discriminators import DiscriminatorP, DiscriminatorR
from vocos.heads import ISTFTHead
from vocos.loss import DiscriminatorLoss, FeatureMatchingLoss, GeneratorLoss
from vocos.models import VocosBackbone


class VocosGenerator(torch.nn.Module):
    """ConvNeXt backbone + iSTFT head, with the mel's least-squares magnitude as a prior (FreeV, Lv et al.
    2024): the head's log-magnitude is added to ``log`` of the front end's pseudo-inverse of the mel
    (the spectrogram Griffin-Lim starts from) and starts at zero, so the network learns a correction and
    the phase instead of the whole magnitude; FreeV reports about half the training steps of Vocos for
    the same quality. With ``phase_prior`` the head's phase is added to the phase-vocoder advance of each
    bin's centre frequency (:meth:`linear_phase`): a frame-rate convolution network is shift-equivariant
    and cannot make the phase of a held note turn from frame to frame by itself, the prior does, and the
    network predicts what is left (constant for a held note at a bin centre). The head runs in float32 outside autocast (complex tensors have no bf16/fp16
    kernels, and ``exp`` of a log-magnitude wants the range)."""

    def __init__(self, n_mels: int, n_fft: int, hop_length: int, dim: int, intermediate_dim: int, num_layers: int,
                 front_end=None, phase_prior: bool = False):
        super().__init__()
        self.backbone = VocosBackbone(input_channels=n_mels, dim=dim, intermediate_dim=intermediate_dim,
                                      num_layers=num_layers)
        self.head = ISTFTHead(dim=dim, n_fft=n_fft, hop_length=hop_length, padding="center")
        self.num_layers = num_layers
        self.n_fft, self.hop_length = n_fft, hop_length
        self.front_end = front_end
        self.phase_prior = phase_prior
        self.register_buffer("bins", torch.arange(n_fft // 2 + 1), persistent=False)
        if front_end is not None:       # the magnitude correction starts at zero: the prior as it is
            n_bins = n_fft // 2 + 1
            with torch.no_grad():
                self.head.out.weight[:n_bins].zero_()
                self.head.out.bias[:n_bins].zero_()

    @property
    def context_frames(self) -> int:
        """Frames on each side that can change one output frame: the input conv and every ConvNeXt block
        look 3 frames each way (kernel 7), and the iSTFT overlaps ``n_fft / hop`` frames."""
        return 3 * (self.num_layers + 1) + -(-self.n_fft // self.hop_length) + 1

    def linear_phase(self, n_frames: int, frame_offset) -> torch.Tensor:
        """``(B or 1, bins, frames)``: the phase a steady sinusoid at each bin's centre frequency has in frame
        ``frame_offset + t`` (``2 pi k hop t / n_fft``, computed exactly in integers modulo ``n_fft``)."""
        t = torch.arange(n_frames, device=self.bins.device)
        t = t[None] + torch.as_tensor(frame_offset, device=t.device).reshape(-1, 1)
        turns = (self.bins[None, :, None] * (self.hop_length * t[:, None, :] % self.n_fft)) % self.n_fft
        return turns.float() * (2 * math.pi / self.n_fft)

    def forward(self, mel: torch.Tensor, frame_offset=0) -> torch.Tensor:
        """``frame_offset``: the index of ``mel``'s first frame in the whole signal (an int or ``(B,)``); only
        the phase prior reads it, so a chunk vocoded alone equals the same frames vocoded with the rest."""
        h = self.backbone(mel)
        with torch.autocast(h.device.type, enabled=False):
            x = self.head.out(h.float()).transpose(1, 2)
            log_mag, phase = x.chunk(2, dim=1)
            if self.front_end is not None:
                prior = self.front_end.linear_spectrogram(mel.float())
                log_mag = log_mag + torch.log(prior.clamp_min(self.front_end.params.log_floor))
            if self.phase_prior:
                phase = phase + self.linear_phase(mel.shape[-1], frame_offset)
            mag = torch.exp(log_mag.clamp(max=math.log(1e2)))
            return self.head.istft(torch.polar(mag, phase))


class WaveDiscriminators(torch.nn.Module):
    """Every sub-discriminator on the same waveform batch ``(B, T)``; returns per sub-discriminator the
    logits and the feature maps (lists)."""

    def __init__(self, periods: tuple[int, ...], fft_sizes: tuple[int, ...], mrd_channels: int):
        super().__init__()
        self.discriminators = torch.nn.ModuleList(
            [DiscriminatorP(period=p) for p in periods]
            + [DiscriminatorR(window_length=w, channels=mrd_channels) for w in fft_sizes])

    def forward(self, wave: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, fmaps = [], []
        for d in self.discriminators:
            y, f = d(wave)
            logits.append(y)
            fmaps.append(f)
        return logits, fmaps


def stft_mag(wave: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(wave.float(), n_fft, n_fft // 4, window=window, center=True, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def multi_resolution_stft_loss(fake: torch.Tensor, real: torch.Tensor, fft_sizes: tuple[int, ...]) -> tuple:
    """``(spectral convergence, log-magnitude L1)`` averaged over the STFT sizes ``fft_sizes`` (hop n/4)."""
    sc, mag = 0.0, 0.0
    for n in fft_sizes:
        f, r = stft_mag(fake, n), stft_mag(real, n)
        sc = sc + torch.linalg.vector_norm(r - f, dim=(-2, -1)).div(
            torch.linalg.vector_norm(r, dim=(-2, -1)).clamp_min(1e-7)).mean()
        mag = mag + (f.log() - r.log()).abs().mean()
    return sc / len(fft_sizes), mag / len(fft_sizes)


def gan_losses():
    """``vocos.loss``'s hinge losses for the discriminators and the generator, and its feature matching."""
    return DiscriminatorLoss(), GeneratorLoss(), FeatureMatchingLoss()
