"""Lengths, continuation, genre blends and variations (``nmusic.compose``) on small untrained models,
and the same requests through ``nmusic generate``."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from nmusic.compose import (MIN_PRIME_FRAMES, GenerationError, blend_path, check_length, frames_for_seconds,
                            genre_label, load_prime, parse_genre, sample_request)
from nmusic.frontend import MelFrontEnd, SpecParams
from nmusic.models.cmelgan import CMelGANConfig, CMelGANRecipe
from nmusic.models.melnet import MelNetConfig, MelNetRecipe

GENRES = ["classical", "edm", "lofi"]
SPEC = SpecParams(n_fft=128, hop_length=64, n_mels=16)
GAN = dict(clip_frames=32, batch_size=4, z_dim=8, g_channels=(8, 8, 4), upsample_factors=(2, 2),
           finetune_kernels=(3, 5), d_channels=(8, 16, 16), d_kernels=(3, 3, 3), d_strides=(2, 2, 1),
           d_groups=(1, 2, 1), d_minibatch_std=2, d_temporal_scales=(1,))


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def gan(**kw) -> CMelGANRecipe:
    torch.manual_seed(0)
    r = CMelGANRecipe(CMelGANConfig(**{**GAN, "time_latent": True, **kw}), SPEC, GENRES)
    for m in r.modules.values():
        m.eval()
    return r


def melnet() -> MelNetRecipe:
    torch.manual_seed(0)
    cfg = MelNetConfig(clip_frames=16, dim=8, layers=(1, 1, 1, 1), n_mixtures=2, cond_dim=4, genre_all_tiers=True)
    return MelNetRecipe(cfg, SPEC, GENRES)


def test_seconds_to_frames_covers_the_request():
    for s in (0.01, 0.5, 1.0, 2.0, 10.0, 30.0):
        f = frames_for_seconds(SPEC, s)
        assert SPEC.seconds(f) >= s > SPEC.seconds(f - 1)


def test_cmelgan_makes_any_length_by_rounding_up_and_trimming():
    r = gan()
    hop = 4                                                    # prod(upsample_factors)
    for n in (5, 33, 130):
        made = r.frames_valid(n)
        assert made % hop == 0 and made >= max(n, 32) and made - max(n, 32) < hop
        out = r.sample(torch.tensor([0, 2]), torch.Generator().manual_seed(1), n_frames=n)
        assert out.shape == (2, 16, n) and out.abs().max() <= 1
    # the same seed: a longer clip starts with the shorter one (the noise is drawn column by column,
    # and every frame comes out of the same convolutions: nothing is stitched)
    short = r.sample(torch.tensor([1]), torch.Generator().manual_seed(5), n_frames=32)
    long = r.sample(torch.tensor([1]), torch.Generator().manual_seed(5), n_frames=256)
    torch.testing.assert_close(short[..., :8], long[..., :8], atol=1e-3, rtol=0)


def test_cmelgan_long_output_is_shift_equivariant_so_it_has_no_seams():
    """Shifting the noise sequence by k latent columns shifts the output by k * hop frames away from the
    edges: the generator has no position of its own along time, so a long clip has no seams."""
    r = gan()
    G = r.modules["generator_ema"]
    z = torch.randn(1, 8, 40, generator=torch.Generator().manual_seed(0))
    a, b = G(z, torch.tensor([0])), G(z[..., 3:], torch.tensor([0]))
    torch.testing.assert_close(a[..., 12 + 40:120], b[..., 40:120 - 12], atol=1e-5, rtol=0)


def test_cmelgan_trains_on_crops_of_longer_outputs():
    import random
    r = gan()
    torch.manual_seed(0)
    random.seed(0)
    seen = set()
    G = r.modules["generator"]
    calls = []
    G.register_forward_hook(lambda m, i, o: calls.append(o.shape[-1]))
    for _ in range(12):
        fake = r.fakes(G, torch.tensor([0, 1, 2, 0]))
        assert fake.shape == (4, 16, 32)
        seen.add(calls[-1])
    assert seen == {32, 36, 40, 44, 48}                      # 8 latent columns + 0..4 extra (crop_extra 0.5)


def test_old_layout_cmelgan_is_a_clear_error_past_its_clip():
    r = gan(time_latent=False)
    assert r.sample(torch.tensor([0]), n_frames=20).shape == (1, 16, 20)
    with pytest.raises(GenerationError, match=r"--seconds .*time_latent"):
        check_length(r, 2.0)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 10_000])
def test_bad_lengths_name_the_argument(bad):
    with pytest.raises(GenerationError, match="--seconds"):
        check_length(gan(), bad)


def test_parse_genre_and_blends():
    assert parse_genre("edm", GENRES) == 1
    w = parse_genre("edm:0.7, lofi:0.3", GENRES)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.7, 0.3]))
    torch.testing.assert_close(parse_genre("edm:7,lofi:3", GENRES), w)
    assert genre_label(w, GENRES) == "edm70-lofi30" and genre_label(2, GENRES) == "lofi"
    for bad, why in [("polka", "not a genre"), ("edm:0.5,polka:0.5", "polka"), ("edm:x", "GENRE:WEIGHT"),
                     ("edm:-1,lofi:1", ">= 0"), ("edm:0,lofi:0", "add up to 0"), ("edm;0.5", "not a genre"),
                     ("edm:0.5,", "GENRE:WEIGHT"), ("edm:1e999", ">= 0")]:
        with pytest.raises(GenerationError, match=why) as e:
            parse_genre(bad, GENRES)
        assert "--genre" in str(e.value)
    path = blend_path(GENRES, "classical", "lofi", 5)
    torch.testing.assert_close(path.sum(1), torch.ones(5))
    assert path[0, 0] == 1 and path[-1, 2] == 1 and path[2, 0] == 0.5


def test_blend_mixes_genre_embeddings():
    r = gan()
    one_hot = sample_request(r, parse_genre("edm:1", GENRES), 2, seed=3, seconds=0.2)
    plain = sample_request(r, 1, 2, seed=3, seconds=0.2)
    torch.testing.assert_close(one_hot, plain, atol=1e-5, rtol=0)
    mix = sample_request(r, parse_genre("edm:0.5,lofi:0.5", GENRES), 2, seed=3, seconds=0.2)
    lofi = sample_request(r, 2, 2, seed=3, seconds=0.2)
    assert (mix - plain).abs().max() > 1e-3 and (mix - lofi).abs().max() > 1e-3
    G = r.modules["generator_ema"]
    e = G.embed.weight
    torch.testing.assert_close(G.condition(torch.tensor([[0.0, 0.5, 0.5]])), (e[1:2] + e[2:3]) / 2)
    with pytest.raises(GenerationError, match="blends of genres are for cMelGAN"):
        sample_request(melnet(), parse_genre("edm:0.5,lofi:0.5", GENRES), 1)


def test_truncation_and_seeds_make_variations():
    r = gan()
    z = r.noise(64, torch.Generator().manual_seed(0), truncation=0.5)
    assert z.shape == (64, 8, 8) and z.abs().max() <= 0.5 and z.std() > 0.2
    a = sample_request(r, 0, 2, seed=0, truncation=0.5)
    assert torch.equal(a, sample_request(r, 0, 2, seed=0, truncation=0.5))
    assert not torch.equal(a, sample_request(r, 0, 2, seed=1, truncation=0.5))
    assert not torch.equal(a, sample_request(r, 0, 2, seed=0, truncation=2.0))
    for bad in (0, -1, float("nan")):
        with pytest.raises(GenerationError, match="--truncation"):
            sample_request(r, 0, 1, truncation=bad)
    with pytest.raises(GenerationError, match="--truncation is for cMelGAN"):
        sample_request(melnet(), 0, 1, truncation=1.0)


@pytest.mark.parametrize("n_frames", [16, 17, 37, 50])
def test_melnet_samples_any_number_of_frames(n_frames):
    """Lengths that are not a multiple of the tier split (4 tiers: time halved twice)."""
    r = melnet()
    out = r.sample(torch.tensor([0, 2]), torch.Generator().manual_seed(0), n_frames=n_frames)
    assert out.shape == (2, 16, n_frames) and torch.isfinite(out).all()


def _wav(path, seconds, sr=22050, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32), sr)
    return path


def test_melnet_continues_a_prime_file(tmp_path):
    r = melnet()
    fe = MelFrontEnd(SPEC)
    prime = load_prime(_wav(tmp_path / "mine.wav", 0.5), fe)          # 22.05 kHz -> the run's 16 kHz
    assert prime.shape[:2] == (1, 16) and prime.shape[-1] == SPEC.frames(8000) - 1
    part = load_prime(tmp_path / "mine.wav", fe, seconds=0.25)
    torch.testing.assert_close(part, prime[..., : part.shape[-1]], atol=1e-4, rtol=0)   # the first 0.25 s
    out = sample_request(r, 1, 2, seed=0, seconds=1.0, prime=prime, temperature=0.8)
    P = prime.shape[-1]
    assert out.shape == (2, 16, frames_for_seconds(SPEC, 1.0))
    torch.testing.assert_close(out[..., :P], prime.expand(2, -1, -1), atol=1e-6, rtol=0)   # starts with the prime
    assert not torch.equal(out[0, :, P:], out[1, :, P:])                                  # and carries on
    default = sample_request(r, 1, 1, seed=0, prime=prime)                              # prime + one clip
    assert default.shape[-1] == P + 16
    with pytest.raises(GenerationError, match="not longer than"):
        sample_request(r, 1, 1, seconds=0.2, prime=prime)
    with pytest.raises(GenerationError, match="needs an autoregressive model"):
        sample_request(gan(), 1, 1, prime=prime)


def test_bad_primes_name_the_argument(tmp_path):
    fe = MelFrontEnd(SPEC)
    with pytest.raises(GenerationError, match="--prime .*no such file"):
        load_prime(tmp_path / "missing.wav", fe)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(GenerationError, match="--prime"):
        load_prime(junk, fe)
    short = _wav(tmp_path / "short.wav", (MIN_PRIME_FRAMES - 4) * 64 / 16000)
    with pytest.raises(GenerationError, match="too short"):
        load_prime(short, fe)
    with pytest.raises(GenerationError, match="--prime-seconds"):
        load_prime(_wav(tmp_path / "ok.wav", 1.0), fe, seconds=-1)


def test_generate_cli_lengths_blends_and_errors(quick_demo, tmp_path, capsys):
    from nmusic.interfaces.cli import main
    _, report = quick_demo
    run, sr = report["run_dir"], report["spec"]["sample_rate"]
    assert main(["generate", run, "--genre", "edm:0.6,lofi:0.4", "--n", "1", "--seconds", "5", "--truncation",
                 "1.0", "--out", str(tmp_path), "--device", "cpu"]) == 0
    wav = tmp_path / "cmelgan_edm60-lofi40_000.wav"
    data, rate = sf.read(wav)
    assert rate == sr and 5.0 <= len(data) / sr < 5.1
    capsys.readouterr()
    prime = _wav(tmp_path / "p.wav", 1.0)
    for args, names in [(["--genre", "edm:x"], "--genre"), (["--genre", "edm", "--seconds", "-3"], "--seconds"),
                        (["--genre", "edm", "--prime", str(prime)], "--prime"),
                        (["--genre", "polka:1"], "--genre")]:
        assert main(["generate", run, *args, "--n", "1", "--out", str(tmp_path), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert names in err and "Traceback" not in err
