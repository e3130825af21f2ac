"""Fréchet and kernel distances, halves for their floors, nearest neighbours and the copy flag."""
import math

import pytest
import torch

from nmusic.errors import ConfigError
from nmusic.evaluation import metrics as M


def gaussian(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_frechet_distance_closed_forms():
    a = gaussian(300, 8, 0)
    assert M.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shift = torch.arange(8, dtype=torch.float64) / 4
    # Same covariance: only the means differ.
    assert M.frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    # b = 2a: C_b = 4 C_a, so tr(C_a + 4 C_a - 2 * 2 C_a) = tr(C_a), plus ||mu_a||^2.
    expected = float(torch.cov(a.T).trace() + a.mean(0).square().sum())
    assert M.frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-7)
    b = gaussian(200, 8, 1) * 1.5 + 0.3
    assert M.frechet_distance(a, b) == pytest.approx(M.frechet_distance(b, a), rel=1e-7)
    assert M.frechet_distance(a, b) > M.frechet_distance(a, gaussian(200, 8, 2))


def test_frechet_distance_with_fewer_clips_than_features_and_bad_input():
    a, b = gaussian(5, 16, 0), gaussian(5, 16, 1)
    assert M.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert math.isfinite(M.frechet_distance(a, b)) and M.frechet_distance(a, b) > 0
    with pytest.raises(ConfigError, match="N >= 2"):
        M.frechet_distance(a[:1], b)
    with pytest.raises(ConfigError, match="feature sizes differ"):
        M.frechet_distance(a, b[:, :3])
    with pytest.raises(ConfigError, match="NaN"):
        M.frechet_distance(a, b.clone().fill_(float("nan")))


def test_kernel_distance_is_unbiased_and_grows_with_the_shift():
    same = [M.kernel_distance(gaussian(50, 8, 2 * i), gaussian(60, 8, 2 * i + 1)) for i in range(20)]
    assert abs(sum(same) / len(same)) < 0.02, "two samples of one distribution: about 0 on average"
    assert min(same) < 0 < max(same), "unbiased: it scatters around 0, not above it"
    a = gaussian(100, 8, 0)
    near, far = M.kernel_distance(a, gaussian(100, 8, 1) + 0.5), M.kernel_distance(a, gaussian(100, 8, 1) + 2.0)
    assert 0.02 < near < far
    assert M.kernel_distance(a, gaussian(80, 8, 1) + 1) == pytest.approx(M.kernel_distance(gaussian(80, 8, 1) + 1, a))
    with pytest.raises(ConfigError, match="feature sizes differ"):
        M.kernel_distance(a, a[:, :3])


def test_split_halves_keeps_groups_together_and_labels_on_both_sides():
    groups = [0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 5]
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    first, second = M.split_halves(groups, labels, seed=3)
    assert sorted(first + second) == list(range(len(groups)))
    assert not {groups[i] for i in first} & {groups[i] for i in second}, "a file never straddles the halves"
    for half in (first, second):
        assert {labels[i] for i in half} == {0, 1}
    assert M.split_halves(groups, labels, seed=3) == (first, second)


def test_cosine_nearest_and_originality_flags_copies():
    train = gaussian(60, 16, 0).abs()  # post-ReLU-like features
    heldout = gaussian(40, 16, 1).abs()
    d, i = M.cosine_nearest(train[[7, 3]] * 2.5, train)  # scale does not matter to cosine
    assert i.tolist() == [7, 3] and d.max() < 1e-9
    fresh = gaussian(20, 16, 2).abs()
    gen = torch.cat([train[:5], fresh])
    o = M.originality(gen, train, heldout)
    assert o["flagged"][:5].all(), "exact copies of training clips are flagged"
    assert o["nearest"][:5].tolist() == list(range(5))
    assert o["flagged"][5:].float().mean() < 0.3, "fresh draws from the same distribution are mostly not"
    assert o["threshold"] == pytest.approx(float(torch.quantile(o["heldout_distance"], 0.05)))
    assert o["expected_rate"] == 0.05 and 0.2 <= o["flag_rate"] < 0.45
    with pytest.raises(ConfigError, match="percentile"):
        M.originality(gen, train, heldout, percentile=0)


def test_lag_autocorrelation_peaks_at_the_period_and_checks_its_lag():
    t = torch.arange(200, dtype=torch.float64)
    beat = (t % 8 == 0).double()[None].repeat(3, 1) + 0.01 * torch.randn(3, 200, generator=torch.Generator().manual_seed(0))
    ac = M.lag_autocorrelation(beat, 16)
    assert ac.shape == (16,)
    assert int(ac.argmax()) + 1 in (8, 16) and ac[7] > 0.9 and ac[15] > 0.9   # lags 8 and 16
    assert ac[3].abs() < 0.2                                                    # half a beat: no peak
    noise = M.lag_autocorrelation(torch.randn(4, 400, generator=torch.Generator().manual_seed(1)), 16)
    assert noise.abs().max() < 0.15
    with pytest.raises(ConfigError, match="max_lag"):
        M.lag_autocorrelation(beat, 200)
