"""The spectrogram front end: shapes, range, shared filters, Griffin-Lim round trip."""
import math

import pytest
import torch

from nmusic.config import from_dict, to_dict
from nmusic.errors import ConfigError
from nmusic.frontend import (SPEC_PRESETS, MelFrontEnd, SpecParams, griffin_lim_upper_bound, spec_preset,
                             spectral_convergence)


def tone_mix(sr, seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(sr * seconds)) / sr
    freqs = 110 * 2 ** (torch.randint(0, 36, (4,), generator=g) / 12)
    env = torch.exp(-3 * (t % 0.5))
    return sum(0.2 * torch.sin(2 * math.pi * f * t) for f in freqs) * env


def test_shapes_range_and_frames():
    p = SpecParams()
    fe = MelFrontEnd(p)
    wave = tone_mix(p.sample_rate, 1.0).repeat(3, 1)
    x = fe(wave)
    assert x.shape == (3, p.n_mels, p.frames(wave.shape[-1]))
    assert x.min() >= -1 and x.max() <= 1
    assert fe(wave[0]).shape == (p.n_mels, p.frames(wave.shape[-1]))
    assert p.frames(p.samples(128)) == 128
    assert fe(torch.zeros(p.sample_rate)).eq(-1).all(), "silence maps to -1"


def test_normalise_inverts_inside_range():
    fe = MelFrontEnd()
    mel = torch.rand(2, 64, 10) * 5 + 1e-3
    assert torch.allclose(fe.denormalise(fe.normalise(mel)), mel, rtol=1e-4)


def test_same_filterbank_both_ways():
    """The inversion solves least squares against the analysis filters themselves, as torchaudio's
    InverseMelScale does with ``lstsq(driver="gels")``, on any dtype."""
    fe = MelFrontEnd()
    mel = fe.denormalise(fe(tone_mix(16000, 0.5)))
    expected = torch.relu(torch.linalg.lstsq(fe.filterbank.double().T, mel.double(), driver="gels").solution)
    torch.testing.assert_close(fe.linear_spectrogram(fe.normalise(mel)).double(), expected, rtol=1e-4, atol=1e-5)
    fe = fe.to(torch.float64)
    assert fe.fb_pinv.dtype == fe.filterbank.dtype == torch.float64


def test_griffin_lim_round_trip_in_mel_domain():
    """mel(GL(mel(x))) stays within -15 dB spectral convergence of mel(x) (measured about -17 dB)."""
    torch.manual_seed(0)
    p = SpecParams()
    fe = MelFrontEnd(p)
    wave = torch.stack([tone_mix(p.sample_rate, 2.0, s) for s in range(2)])
    out = griffin_lim_upper_bound(wave, fe)
    assert out["audio"].shape == wave.shape
    assert out["mel_spectral_convergence_db"] < -15
    assert out["spectral_convergence_db"] < -5
    # and a wrong inversion (random audio) is far off, so the bound above means something
    assert spectral_convergence(fe.mel(wave), fe.mel(torch.randn_like(wave) * 0.1)) > -3


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match="n_fft"):
        SpecParams(n_fft=1000)
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(SpecParams, {"sample_rate": 16000, "nmels": 3})
    with pytest.raises(ConfigError, match="choose one of"):
        spec_preset("nope")
    assert from_dict(SpecParams, to_dict(SPEC_PRESETS["melnet-paper"])) == SPEC_PRESETS["melnet-paper"]
