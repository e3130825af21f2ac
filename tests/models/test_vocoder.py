"""The vocoder family: presets, exact resume through the trainer, chunked inversion without seams."""
from __future__ import annotations

import pytest
import torch

from nmusic.config import apply_overrides
from nmusic.errors import ConfigError
from nmusic.frontend import MelFrontEnd, spec_preset
from nmusic.models.vocoder import PRESETS, VocoderConfig, VocoderRecipe
from nmusic.models.vocoder.model import chunk_windows, chunked_frames

pytestmark = pytest.mark.usefixtures("one_thread")

#: seconds-long: a few steps of a narrow net, the GAN from step 2 (both phases run)
SMALL = dict(dim=16, intermediate_dim=32, num_layers=2, clip_frames=16, batch_size=2, gan_start=2, periods=(),
             mrd_channels=4, mrd_fft_sizes=(256,), stft_fft_sizes=(256, 512))


def small_recipe(**kw) -> VocoderRecipe:
    torch.manual_seed(0)
    cfg = apply_overrides(PRESETS["tiny"], {**SMALL, **kw})
    return VocoderRecipe(cfg, spec_preset(cfg.spec), ["a", "b"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_inverts_its_spectrogram_to_the_front_ends_length(name):
    cfg = PRESETS[name]
    spec = spec_preset(cfg.spec)
    if name.startswith("base"):   # the GPU sizes: build the config only (13M + 42M parameters)
        assert cfg.dim == 512 and cfg.periods == (2, 3, 5, 7, 11)
        return
    recipe = VocoderRecipe(cfg, spec, ["x"])
    mel = MelFrontEnd(spec)(torch.randn(1, spec.samples(20)) * 0.1)
    wave = recipe.vocode(mel)
    assert wave.shape == (1, spec.samples(mel.shape[-1])) and wave.abs().max() <= 1


def test_presets_cover_every_spectrogram_preset():
    from nmusic.frontend import SPEC_PRESETS
    assert {c.spec for c in PRESETS.values()} == set(SPEC_PRESETS)


@pytest.mark.parametrize("field,value", [("clip_frames", 2), ("stft_fft_sizes", [300]), ("lr", 0.0),
                                         ("spec", "nope"), ("periods", [1])])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        VocoderConfig(**{field: value})


def test_train_step_learns_and_gan_phase_updates_the_discriminator():
    recipe = small_recipe()
    from nmusic.models.base import StepContext
    spec = recipe.spec
    wave = torch.sin(torch.arange(2 * spec.samples(16)).reshape(2, -1) * 0.05) * 0.5
    mel = recipe.front_end(wave)
    D = recipe.modules["discriminator"]
    before = [p.detach().clone() for p in D.parameters()]
    first = recipe.train_step(mel, None, StepContext(step=0, device=torch.device("cpu"), extras={"wave": wave}))
    assert "d_loss" not in first                            # warm-up: reconstruction only, D untouched
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))
    for s in range(1, 12):
        last = recipe.train_step(mel, None, StepContext(step=s, device=torch.device("cpu"), extras={"wave": wave}))
    assert {"d_loss", "g_adv", "g_fm"} <= set(last) and all(v.dim() == 0 for v in last.values())
    assert not all(torch.equal(a, b) for a, b in zip(before, D.parameters()))
    assert last["mel_l1"] < first["mel_l1"]


def test_period_and_resolution_discriminators_score_every_clip():
    from nmusic.models.vocoder.networks import WaveDiscriminators
    D = WaveDiscriminators(periods=(2, 3), fft_sizes=(256, 512), mrd_channels=4)
    logits, fmaps = D(torch.randn(3, 4000) * 0.1)
    assert len(logits) == len(fmaps) == 4 and all(y.shape[0] == 3 for y in logits)


def test_train_step_without_the_wave_is_a_clear_error():
    from nmusic.models.base import StepContext
    recipe = small_recipe()
    with pytest.raises(ConfigError, match="wave"):
        recipe.train_step(torch.zeros(1, 64, 16), None, StepContext(step=0, device=torch.device("cpu")))


@pytest.mark.parametrize("n,chunk,context", [(1, 4, 3), (10, 4, 3), (10, 100, 3), (37, 8, 5), (37, 8, 40)])
def test_chunk_windows_tile_the_frames_with_context(n, chunk, context):
    wins = chunk_windows(n, chunk, context)
    assert [w[2] for w in wins] == list(range(0, n, chunk)) and wins[-1][3] == n
    assert len({w[1] - w[0] for w in wins}) == 1
    for ws, we, s, e in wins:
        assert 0 <= ws <= s < e <= we <= n
        assert s - ws >= min(context, s) and we - e >= min(context, n - e)


def test_chunked_inversion_equals_unchunked_everywhere():
    recipe = small_recipe(num_layers=3)
    g = torch.Generator().manual_seed(1)
    mel = torch.rand(3, recipe.spec.n_mels, 301, generator=g) * 2 - 1
    whole = recipe.vocode(mel, chunk_frames=10_000)
    chunked = recipe.vocode(mel, chunk_frames=24, batch=5)
    assert chunked.shape == whole.shape == (3, recipe.spec.samples(301))
    assert torch.allclose(chunked, whole, atol=1e-5, rtol=0)
    # the test can fail: without context the chunk edges (seams) differ
    G = recipe.modules["generator"]
    seams = chunked_frames(G, mel, recipe.spec.hop_length, 24, 0, 5)
    assert (seams - recipe.unwrap(G)(mel)).abs().max() > 1e-3


def test_vocode_pads_or_trims_to_length_and_checks_shape():
    recipe = small_recipe()
    mel = torch.zeros(2, recipe.spec.n_mels, 10) - 1
    assert recipe.vocode(mel, length=5000).shape == (2, 5000)
    assert recipe.vocode(mel[0], length=100).shape == (1, 100)
    with pytest.raises(ConfigError, match="n_mels|64"):
        recipe.vocode(torch.zeros(1, 80, 10))


def test_phase_prior_turns_a_held_note_and_chunks_keep_the_global_frame_index():
    recipe = small_recipe()
    G = recipe.unwrap(recipe.modules["generator"])
    n_fft, hop = recipe.spec.n_fft, recipe.spec.hop_length
    phase = G.linear_phase(9, 0)
    k = 3
    expected = 2 * torch.pi * k * hop * torch.arange(9) / n_fft
    assert torch.allclose(torch.polar(torch.ones(9), phase[0, k]), torch.polar(torch.ones(9), expected), atol=1e-4)
    assert torch.allclose(G.linear_phase(5, torch.tensor([4]))[0], phase[0, :, 4:], atol=1e-6)
    # the prior makes the output depend on where a chunk starts: a wrong offset would leave seams
    mel = torch.rand(1, recipe.spec.n_mels, 120) * 2 - 1
    whole = G(mel)
    assert torch.allclose(G(mel[..., 50:], 50)[0, 2000:5000], whole[0, 50 * hop + 2000:50 * hop + 5000], atol=1e-5)
    assert not torch.allclose(G(mel[..., 50:], 0)[0, 2000:5000], whole[0, 50 * hop + 2000:50 * hop + 5000], atol=1e-3)
