"""The judges: invariant to level and EQ by construction, and not fooled by trivial fakes on the embedded data."""
import pytest
import torch

from nmusic.data.clips import fixed_clips, split_by_file
from nmusic.errors import CheckpointError
from nmusic.evaluation import fakes as FK
from nmusic.evaluation.feature_judge import FeatureJudge, MusicFeatures, fit_feature_judge
from nmusic.evaluation.judge import Judge, JudgeFrontEnd, JudgeSpec, train_judge
from nmusic.frontend import MelFrontEnd, SpecParams

SR = 16000


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, one_thread):
    """A small embedded dataset (6 files of 10 s per genre) through the user's path, split by file."""
    from nmusic.data.embedded import prepare_embedded
    out = tmp_path_factory.mktemp("judge-data")
    cache = prepare_embedded(out, 6, 10.0, SpecParams().sample_rate, progress=False)[0]
    train, val = split_by_file(cache, seed=0)
    return cache, train, val


@pytest.fixture(scope="module")
def judged(embedded):
    """Both judges trained on the training files (with Griffin-Lim round trips), and what they make of
    real held-out clips, their round trip, and the fakes and probes made from them."""
    cache, train, val = embedded
    fe = MelFrontEnd(SpecParams())
    round_trip = lambda w: fe.invert(fe(w), length=w.shape[-1])  # noqa: E731
    n = JudgeSpec().samples()
    tw, ty = fixed_clips(cache, train, n, per_file=6)
    judge = train_judge(cache, train, inverted=(round_trip(tw[::3]), ty[::3]), steps=60, batch_size=16,
                        progress=False)
    feature_judge = fit_feature_judge(torch.cat([tw, round_trip(tw[::3])]), torch.cat([ty, ty[::3]]), SR, cache.genres)
    wave, labels = fixed_clips(cache, val, n, per_file=5)
    inputs = {"real": wave, "real-inverted": round_trip(wave)}
    for name, mel in FK.make_fakes(fe(wave), labels).items():
        inputs[name] = fe.invert(mel, length=n)
    acc = {kind: {name: float((j.predict(w, SR) == labels).float().mean()) for name, w in inputs.items()}
           for kind, j in (("judge", judge), ("features", feature_judge))}
    return judge, feature_judge, acc, labels


def test_judge_hears_real_music_of_every_genre(judged):
    _, _, acc, labels = judged
    assert len(labels.unique()) == 3
    for kind in ("judge", "features"):
        assert acc[kind]["real"] >= 0.9, (kind, acc[kind])
        assert acc[kind]["real-inverted"] >= 0.8, ("Griffin-Lim artefacts must not decide", kind, acc[kind])


def test_trivial_fakes_score_at_chance(judged):
    _, _, acc, _ = judged
    for kind in ("judge", "features"):
        v = FK.verdict(acc[kind], 3)
        assert v["valid"], (kind, acc[kind], v)
        for name in FK.FAKES:
            assert acc[kind][name] <= 1 / 3 + FK.MAX_ABOVE_CHANCE, (kind, name, acc[kind][name])


def test_a_bag_of_frames_judge_is_caught(embedded):
    """What the old classifier did, reduced to its essence (nearest genre by mean spectrum): real clips
    are recognised, and so are the fakes; the verdict calls it invalid."""
    cache, train, val = embedded
    fe = MelFrontEnd(SpecParams())
    n = JudgeSpec().samples()
    tw, ty = fixed_clips(cache, train, n, per_file=4)
    centroids = torch.stack([fe(tw[ty == k]).mean(dim=(0, 2)) for k in range(3)])
    predict = lambda mel: torch.cdist(mel.mean(2), centroids).argmin(1)  # noqa: E731
    wave, labels = fixed_clips(cache, val, n, per_file=5)
    mel = fe(wave)
    acc = {name: float((predict(m) == labels).float().mean()) for name, m in FK.make_fakes(mel, labels).items()}
    assert float((predict(mel) == labels).float().mean()) >= 0.9
    v = FK.verdict(acc, 3)
    assert not v["valid"] and "mean-frame" in v["failed"], (acc, v)


def test_judges_save_and_load(judged, tmp_path):
    judge, feature_judge, _, _ = judged
    wave = torch.randn(3, JudgeSpec().samples()) * 0.1
    judge.save(tmp_path / "j.pt")
    again = Judge.load(tmp_path / "j.pt")
    assert again.genres == judge.genres and again.spec == judge.spec
    assert torch.allclose(again.embed(wave, SR)[1], judge.embed(wave, SR)[1], atol=1e-5)
    feature_judge.save(tmp_path / "f.pt")
    f_again = FeatureJudge.load(tmp_path / "f.pt")
    assert torch.allclose(f_again.logits(wave, SR), feature_judge.logits(wave, SR), atol=1e-4)
    assert len(feature_judge.top_features("edm", 3)) == 3
    (tmp_path / "bad.pt").write_bytes(b"not a judge")
    with pytest.raises(CheckpointError, match="bad.pt"):
        Judge.load(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        FeatureJudge.load(tmp_path / "bad.pt")


def test_front_ends_ignore_level_and_static_eq():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(2 * SR) / SR
    beat = (torch.sin(2 * torch.pi * 2 * t) > 0.9).float()                       # clicks at 2 Hz
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) * (0.5 + beat) + 0.05 * torch.randn(2 * SR, generator=g)
    fe, feats = JudgeFrontEnd(), MusicFeatures()
    x = fe(wave[None], SR)
    assert torch.allclose(fe(0.01 * wave[None], SR), x, atol=1e-3), "a gain changes nothing"
    tilted = torch.cat([wave[:1], wave[1:] - 0.6 * wave[:-1]])                  # pre-emphasis: a static EQ tilt
    assert torch.corrcoef(torch.stack([fe(tilted[None], SR).flatten(), x.flatten()]))[0, 1] > 0.98
    f = feats(wave[None], SR)
    assert torch.allclose(feats(0.01 * wave[None], SR), f, atol=1e-3)
    assert len(feats.names) == f.shape[1]
    at_44k = torch.nn.functional.interpolate(wave[None, None], scale_factor=44100 / SR, mode="linear")[0]
    assert fe(at_44k, 44100).shape == x.shape, "other rates are resampled to the judge's"


def test_noise_comes_steady_in_bursts_and_flickering():
    from nmusic.evaluation.judge import noise
    wave = noise(6, 2 * SR, SR, torch.Generator().manual_seed(0))
    assert wave.shape == (6, 2 * SR) and torch.isfinite(wave).all()
    peak = wave.abs().amax(1)
    assert (peak >= 0.01 - 1e-6).all() and (peak <= 10 ** -0.5 + 1e-6).all()
    spec = torch.stft(wave, 512, 320, window=torch.hann_window(512), return_complex=True).abs().pow(2)  # 20 ms hop
    high = spec[:, 64:].sum(1)                                          # 2-8 kHz: many bins, a steady level
    spread = (high.std(1) / high.mean(1)).tolist()                      # how much the level moves
    steady, bursts, flicker = spread[0::3], spread[1::3], spread[2::3]
    assert max(steady) < 0.5 < min(bursts + flicker), spread
    # the flicker jumps from one 20 ms frame to the next; bursts mostly decay smoothly
    jumps = (high + 1e-12).log().diff(dim=1).abs().mean(1).tolist()
    assert min(jumps[2::3]) > max(jumps[0::3] + jumps[1::3]), jumps
