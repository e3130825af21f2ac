"""The one spectrogram front end: waveform <-> normalised log-mel (paper sections 2.2 and 5).

Everything in nmusic that touches a spectrogram goes through :class:`MelFrontEnd`, built from a
:class:`SpecParams`. Analysis (dataset, training, metrics) and inversion (listening, reports) share
the *same* mel filterbank tensor, which fixes the seed code's mismatch between the filters used to
make spectrograms and the ones used to invert them.

Representation
    mel      = MelScale(|STFT(wave)|)                      (magnitude, ``power=1``)
    log-mel  = ln(max(mel, log_floor))
    x        = 2 * (log-mel - ln(log_floor)) / (ln(log_ceil) - ln(log_floor)) - 1,  clamped to [-1, 1]

so silence is -1 and a full-scale signal sits just below +1. Inversion undoes the normalisation,
solves the mel filterbank by least squares (``torchaudio.transforms.InverseMelScale``) and runs
Griffin-Lim with momentum (``torchaudio.transforms.GriffinLim``).

Shapes: waveforms are ``(B, T)`` or ``(T,)``; spectrograms are ``(B, n_mels, frames)`` or
``(n_mels, frames)``, with ``frames = T // hop_length + 1`` (centred STFT).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torchaudio

from .config import require, to_dict
from .errors import ConfigError


@dataclass(frozen=True)
class SpecParams:
    """All spectrogram parameters. They are saved in every checkpoint (``config.to_dict``)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"
    log_floor: float = 1e-5
    log_ceil: float = 10.0
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99

    def __post_init__(self):
        require(8000 <= self.sample_rate <= 192000, self, "sample_rate", "must be between 8000 and 192000 Hz")
        require(self.n_fft >= 16 and self.n_fft & (self.n_fft - 1) == 0, self, "n_fft", "must be a power of two >= 16")
        require(0 < self.hop_length <= self.n_fft, self, "hop_length", "must be in 1..n_fft")
        require(0 < self.n_mels <= self.n_fft // 2 + 1, self, "n_mels", "must be in 1..n_fft/2+1")
        require(self.mel_scale in ("slaney", "htk"), self, "mel_scale", "must be 'slaney' or 'htk'")
        require(self.mel_norm in (None, "slaney"), self, "mel_norm", "must be None or 'slaney'")
        require(0 < self.log_floor < self.log_ceil, self, "log_floor", "must be in (0, log_ceil)")
        require(0 <= self.f_min < (self.f_max or self.sample_rate / 2) <= self.sample_rate / 2, self, "f_min",
                "needs 0 <= f_min < f_max <= sample_rate/2")
        require(self.griffin_lim_iters >= 1, self, "griffin_lim_iters", "must be >= 1")
        require(0 <= self.griffin_lim_momentum < 1, self, "griffin_lim_momentum", "must be in [0, 1)")

    def frames(self, n_samples: int) -> int:
        """Number of STFT frames for ``n_samples`` of audio (centred STFT)."""
        return n_samples // self.hop_length + 1

    def samples(self, n_frames: int) -> int:
        """Number of audio samples that ``n_frames`` frames cover (inverse of :meth:`frames`)."""
        return (n_frames - 1) * self.hop_length

    def seconds(self, n_frames: int) -> float:
        return self.samples(n_frames) / self.sample_rate


#: Named spectrogram presets. ``default`` is what the CPU demo and tests use; the ``paper-*`` ones
#: are the seed code's settings (MelNet: 180 mels, hop 800, n_fft 2048; cMelGAN: 256 mels x 256
#: frames for 10 s clips).
SPEC_PRESETS: dict[str, SpecParams] = {
    "default": SpecParams(),
    "melnet-paper": SpecParams(sample_rate=22050, n_fft=2048, hop_length=800, n_mels=180),
    "cmelgan-paper": SpecParams(sample_rate=22050, n_fft=2048, hop_length=862, n_mels=256),
}


def spec_preset(name: str) -> SpecParams:
    try:
        return SPEC_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown spectrogram preset {name!r}; choose one of {sorted(SPEC_PRESETS)}") from None


def spec_name(spec: SpecParams) -> str:
    """The preset name of ``spec`` (``default``, ``melnet-paper``, ...) or ``spec-<hash>``."""
    for name, p in SPEC_PRESETS.items():
        if p == spec:
            return name
    return "spec-" + hashlib.sha1(json.dumps(to_dict(spec), sort_keys=True).encode()).hexdigest()[:6]


class MelFrontEnd(torch.nn.Module):
    """Waveform -> normalised log-mel and back, batched, on whatever device the module is on.

    >>> fe = MelFrontEnd(SpecParams())
    >>> x = fe(torch.randn(2, 16000))          # (2, 64, 63) in [-1, 1]
    >>> y = fe.invert(x)                        # (2, 15872) waveform
    """

    def __init__(self, params: SpecParams | None = None):
        super().__init__()
        self.params = p = params or SpecParams()
        f_max = p.f_max or p.sample_rate / 2
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, f_min=p.f_min, f_max=f_max,
            n_mels=p.n_mels, power=1.0, norm=p.mel_norm, mel_scale=p.mel_scale, center=True)
        # One filterbank, both ways: the inverse is the pseudo-inverse of the very filters the analysis
        # uses, computed once in float64. It is the least-squares solution ``torch.linalg.lstsq`` (what
        # torchaudio's InverseMelScale solves on every call) finds for full-rank filters, and the
        # minimum-norm one otherwise, as one matmul that runs the same on every device.
        fb = self.melspec.mel_scale.fb
        self.register_buffer("fb_pinv", torch.linalg.pinv(fb.double().T).to(fb.dtype), persistent=False)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=p.n_fft, hop_length=p.hop_length, n_iter=p.griffin_lim_iters, power=1.0,
            momentum=p.griffin_lim_momentum, rand_init=True)
        self._lo = math.log(p.log_floor)
        self._hi = math.log(p.log_ceil)

    @property
    def filterbank(self) -> torch.Tensor:
        """``(n_fft//2+1, n_mels)`` mel filters shared by analysis and inversion."""
        return self.melspec.mel_scale.fb

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Linear mel magnitude: ``(..., T) -> (..., n_mels, frames)``."""
        return self.melspec(wave.float())

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        """Linear mel magnitude -> normalised log-mel in [-1, 1]."""
        log = torch.log(mel.clamp_min(self.params.log_floor))
        return ((log - self._lo) / (self._hi - self._lo) * 2 - 1).clamp(-1, 1)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel -> linear mel magnitude (inverse of :meth:`normalise` inside its range)."""
        log = (x.float().clamp(-1, 1) + 1) / 2 * (self._hi - self._lo) + self._lo
        return torch.exp(log)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, T)`` or ``(T,)`` -> normalised log-mel ``(B, n_mels, frames)``."""
        return self.normalise(self.mel(wave))

    def linear_spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel -> least-squares linear magnitude ``(..., n_fft//2+1, frames)``."""
        mel = self.denormalise(x)
        return torch.relu(torch.matmul(self.fb_pinv.to(mel.dtype), mel))

    @torch.no_grad()
    def invert(self, x: torch.Tensor, n_iter: int | None = None, length: int | None = None) -> torch.Tensor:
        """Normalised log-mel ``(B, n_mels, frames)`` -> waveform ``(B, samples)`` by Griffin-Lim."""
        gl = self.griffin_lim
        if n_iter is not None and n_iter != gl.n_iter:   # another iteration count: a transform of its own
            gl = torchaudio.transforms.GriffinLim(
                n_fft=gl.n_fft, hop_length=gl.hop_length, n_iter=n_iter, power=1.0, momentum=gl.momentum,
                rand_init=True).to(x.device)
        spec = self.linear_spectrogram(x)
        gl.length = length
        wave = gl(spec)
        return wave.clamp(-1, 1)


def spectral_convergence(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """``||S_ref - S_est||_F / ||S_ref||_F`` in dB (lower is better) between two magnitude spectrograms."""
    num = torch.linalg.vector_norm((reference - estimate).flatten())
    den = torch.linalg.vector_norm(reference.flatten()).clamp_min(1e-12)
    return float(20 * torch.log10((num / den).clamp_min(1e-12)))


def log_spectral_distance(reference: torch.Tensor, estimate: torch.Tensor, floor: float = 1e-5) -> float:
    """Root-mean-square difference of 20*log10 magnitudes in dB, averaged over frames."""
    a = 20 * torch.log10(reference.clamp_min(floor))
    b = 20 * torch.log10(estimate.clamp_min(floor))
    return float(((a - b) ** 2).mean(dim=-2).sqrt().mean())


def stft_magnitude(wave: torch.Tensor, params: SpecParams) -> torch.Tensor:
    """Linear STFT magnitude ``(..., n_fft//2+1, frames)`` with the front end's STFT settings."""
    window = torch.hann_window(params.n_fft, device=wave.device)
    spec = torch.stft(wave.float().reshape(-1, wave.shape[-1]), params.n_fft, params.hop_length, window=window,
                      center=True, return_complex=True).abs()
    return spec.reshape(*wave.shape[:-1], *spec.shape[-2:])


def griffin_lim_upper_bound(wave: torch.Tensor, front_end: MelFrontEnd) -> dict:
    """The paper's "Griffin-Lim" row: real audio -> mel -> Griffin-Lim -> audio, and how far it got.

    Returns ``{"audio": reconstructed (B, T), "spectral_convergence_db", "log_spectral_distance_db",
    "mel_spectral_convergence_db"}``. Spectral convergence compares linear STFT magnitudes of the
    original and the reconstruction; the mel figure compares their mel spectrograms.
    """
    wave = wave.reshape(-1, wave.shape[-1]).float()
    x = front_end(wave)
    rec = front_end.invert(x, length=wave.shape[-1])
    p = front_end.params
    s_ref, s_rec = stft_magnitude(wave, p), stft_magnitude(rec, p)
    return {
        "audio": rec,
        "spectral_convergence_db": spectral_convergence(s_ref, s_rec),
        "log_spectral_distance_db": log_spectral_distance(s_ref, s_rec),
        "mel_spectral_convergence_db": spectral_convergence(front_end.mel(wave), front_end.mel(rec)),
    }
