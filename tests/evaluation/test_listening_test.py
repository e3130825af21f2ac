"""Blind listening test: shuffling, ratings CSV round trip, MOS with Student-t intervals."""
import math

import pytest
import torch

from nmusic.errors import ConfigError
from nmusic.evaluation import listening_test as mos

SOURCES = ("real", "griffin-lim", "cmelgan-tiny")
GENRES = ("classical", "edm")


def clips(sr=8000):
    g = torch.Generator().manual_seed(0)
    return [{"source": s, "genre": genre, "wave": torch.randn(800, generator=g) * (0.01 + 0.3 * k), "sample_rate": sr}
            for k, s in enumerate(SOURCES) for genre in GENRES]


@pytest.mark.parametrize("df,p,expected", [(1, 0.975, 12.7062), (2, 0.975, 4.3027), (5, 0.975, 2.5706),
                                           (10, 0.975, 2.2281), (29, 0.975, 2.0452), (30, 0.975, 2.0423),
                                           (100, 0.975, 1.9840), (10, 0.95, 1.8125), (4, 0.995, 4.6041)])
def test_t_quantile_matches_published_tables(df, p, expected):
    assert mos.t_quantile(p, df) == pytest.approx(expected, abs=2e-4)
    assert mos.t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-4)


def test_t_quantile_rejects_nonsense():
    with pytest.raises(ConfigError):
        mos.t_quantile(1.0, 5)
    with pytest.raises(ConfigError):
        mos.t_quantile(0.9, 0)


def test_mean_ci():
    s = mos.mean_ci([1, 2, 3, 4, 5])
    half = 2.7764 * math.sqrt(2.5) / math.sqrt(5)
    assert s["n"] == 5 and s["mean"] == 3 and s["std"] == pytest.approx(math.sqrt(2.5))
    assert s["half_width"] == pytest.approx(half, abs=1e-3) and s["low"] == pytest.approx(3 - half, abs=1e-3)
    one = mos.mean_ci([4])
    assert one["mean"] == 4 and math.isnan(one["half_width"])
    assert mos.mean_ci([])["n"] == 0


def test_blind_test_is_shuffled_unlabeled_and_loudness_matched():
    t = mos.make_blind_test(clips(), seed=0)
    assert len(t) == 6 and [c.item for c in t.clips] == [f"clip-{k:02d}" for k in range(1, 7)]
    for c in t.clips:
        assert not any(s in c.item for s in SOURCES + GENRES)
        assert float(c.wave.square().mean().sqrt()) == pytest.approx(mos.TARGET_RMS, rel=1e-3)
    order = lambda test: [(c.source, c.genre) for c in test.clips]  # noqa: E731
    assert order(t) != [(s, g) for s in SOURCES for g in GENRES], "shuffled"
    again, other = mos.make_blind_test(clips(), seed=0), mos.make_blind_test(clips(), seed=1)
    assert again.test_id == t.test_id and order(again) == order(t)
    assert other.test_id != t.test_id and order(other) != order(t)
    changed = clips()
    changed[0]["wave"] = changed[0]["wave"] * -1
    assert mos.make_blind_test(changed, seed=0).test_id != t.test_id, "new audio, new test"
    assert t.key()[t.clips[0].item] == (t.clips[0].source, t.clips[0].genre)


def test_loudness_match_limits_peaks_and_keeps_silence():
    spiky = torch.zeros(1000)
    spiky[0] = 1.0
    assert float(mos.loudness_match(spiky).abs().max()) <= 0.99 + 1e-6
    assert mos.loudness_match(torch.zeros(100)).abs().max() == 0


def test_ratings_round_trip_and_summary(tmp_path):
    t = mos.make_blind_test(clips(), seed=3)
    csv_path = tmp_path / "runs" / "listening_test.csv"
    given = {"real": [5, 4], "griffin-lim": [3, 2], "cmelgan-tiny": [1, 1]}
    taken = {s: list(v) for s, v in given.items()}
    for c in t.clips:
        mos.save_rating(csv_path, t, c, taken[c.source].pop(), rater="ann")
    for c in t.clips[:2]:
        mos.save_rating(csv_path, t.test_id, c, 3, rater="bob")
    rows = mos.load_ratings(csv_path)
    assert len(rows) == 8 and all(isinstance(r["rating"], int) for r in rows)
    assert mos.rated_items(rows, t.test_id, "ann") == {c.item for c in t.clips}
    assert mos.rated_items(rows, t.test_id, "bob") == {c.item for c in t.clips[:2]}
    ann = mos.summarise([r for r in rows if r["rater"] == "ann"])
    assert [s["source"] for s in ann] == ["real", "griffin-lim", "cmelgan-tiny"]  # best first
    for s in ann:
        expected = mos.mean_ci(given[s["source"]])
        assert s["n"] == 2 and s["mean"] == expected["mean"] and s["high"] == pytest.approx(expected["high"])
    assert ann[-1]["half_width"] == 0  # two equal ratings: no spread
    assert mos.mos_by_source(csv_path)["real"]["n"] >= 2
    md = mos.summary_markdown(ann)
    assert "| real | 2 | 4.50 |" in md
    assert mos.mos_by_source(tmp_path / "none.csv") == {}


def test_bad_ratings_are_clear_errors(tmp_path):
    t = mos.make_blind_test(clips(), seed=0)
    with pytest.raises(ConfigError, match="outside the 1-5 scale"):
        mos.save_rating(tmp_path / "r.csv", t, t.clips[0], 6)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(mos.RATING_COLUMNS) + "\nx,clip-01,real,edm,great,ann,now\n")
    with pytest.raises(ConfigError, match=r"bad.csv, line 2: 'great' is not a rating"):
        mos.load_ratings(bad)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="missing column"):
        mos.load_ratings(other)
    with pytest.raises(ConfigError, match="no ratings file"):
        mos.load_ratings(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="lacks"):
        mos.make_blind_test([{"source": "real"}])
