"""Cached MelNet sampling equals the full pass; the naive baseline draws the same samples."""
import pytest
import torch

from nmusic.models.melnet import gmm
from nmusic.models.melnet.sampling import FrequencySteps, sample, sample_naive, sample_tier, sample_tier_naive
from nmusic.models.melnet.tiers import Tier, split, tier_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


def make_tier(n_freq, conditional, rnn="lstm", central=True, seed=0):
    torch.manual_seed(seed)
    return Tier(n_freq, 8, 2, 3, rnn=rnn, central=central, n_mixtures=3, conditional=conditional,
                cond_dim=4, genre_cond=True).double()


@pytest.mark.parametrize("project_inputs", [True, False], ids=["cpu-projections", "cuda-cell-inputs"])
@pytest.mark.parametrize("rnn,central,conditional,n_prime", [
    ("lstm", True, False, 0), ("gru", False, True, 0), ("lstm", True, True, 2), ("gru", True, False, 3)])
def test_cached_sampling_matches_full_forward(rnn, central, conditional, n_prime, project_inputs):
    """Both ways of feeding the time stack to the cells (CPU: per-row input biases; CUDA: the fused
    cells take 1-D biases only, so the input is added to the cell's input) give the full pass's numbers."""
    T, F = 5, 6
    tier = make_tier(F, conditional, rnn, central)
    genre = torch.tensor([0, 2])
    context = torch.rand(2, T + 1, F, dtype=torch.float64) * 2 - 1 if conditional else None
    prime = torch.rand(2, n_prime, F, dtype=torch.float64) * 2 - 1 if n_prime else None
    x, cached = sample_tier(tier, T, genre, context, prime, generator=torch.Generator().manual_seed(3), record=True,
                            project_inputs=project_inputs)
    with torch.no_grad():
        full = tier.mixture(tier(x, genre, context)).stacked()
    assert cached.shape == full.shape == (2, T, F, 3, 3)
    torch.testing.assert_close(cached, full, rtol=1e-12, atol=1e-12)
    if n_prime:
        assert torch.equal(x[:, :n_prime], prime)
    assert x.abs().max() <= 1


def test_naive_sampler_draws_the_same_samples():
    tier = make_tier(4, conditional=True)
    genre, context = torch.tensor([1]), torch.rand(1, 4, 4, dtype=torch.float64)
    a = sample_tier(tier, 4, genre, context, generator=torch.Generator().manual_seed(7))
    b = sample_tier_naive(tier, 4, genre, context, generator=torch.Generator().manual_seed(7))
    c = sample_tier(tier, 4, genre, context, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, c)


def test_cached_sampling_advances_time_rnns_one_frame_at_a_time(monkeypatch):
    tier = make_tier(5, conditional=False)
    layer = tier.layers[0]
    lengths, bins = [], []
    layer.time_rnn.register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    layer.freq_rnn.register_forward_hook(lambda m, args, out: lengths.append("whole-frame frequency pass"))
    step = FrequencySteps.step
    monkeypatch.setattr(FrequencySteps, "step", lambda self, l, h, *a: bins.append((l, h.shape)) or step(self, l, h, *a))
    sample_tier(tier, 7, torch.tensor([0]))
    assert lengths == [1] * 7                    # time RNN: one step per frame, never the prefix
    assert bins == [(0, (1, 8)), (1, (1, 8))] * (7 * 5)   # frequency-delayed stack: each layer once per bin


def test_multi_tier_sampling_shapes_priming_and_temperature():
    n_frames, n_mels, G = 9, 6, 3
    shapes = tier_shapes(n_frames, n_mels, G)
    tiers = [make_tier(shapes[g][1], conditional=g > 0, seed=g) for g in range(G)]
    genre = torch.tensor([0, 1])
    prime = torch.rand(1, 4, n_mels, dtype=torch.float64) * 2 - 1
    out = sample(tiers, genre, n_frames, n_mels, generator=torch.Generator().manual_seed(0), prime=prime)
    assert out.shape == (2, n_frames, n_mels)
    assert torch.equal(out[:, :4], prime.expand(2, -1, -1))
    assert not torch.equal(out[0, 4:], out[1, 4:])
    naive = sample_naive(tiers, genre, n_frames, n_mels, generator=torch.Generator().manual_seed(0), prime=prime)
    torch.testing.assert_close(out, naive, rtol=0, atol=1e-12)
    # every tier of the result is consistent with the split of the result
    assert [tuple(t.shape[1:]) for t in split(out, G)[0]] == shapes
    cold = sample(tiers, genre, n_frames, n_mels, temperature=0.0)
    assert torch.equal(cold, sample(tiers, genre, n_frames, n_mels, temperature=0.0))


def test_gmm_sampling_temperature_and_statistics():
    n = 20000
    params = gmm.MixtureParams(mu=torch.tensor([[-0.5, 0.5]]).expand(n, 2), sigma=torch.full((n, 2), 0.1),
                               logits=torch.tensor([[0.0, 1.0]]).expand(n, 2))
    g = torch.Generator().manual_seed(0)
    x = gmm.sample(params, 1.0, g)
    frac_hi = (x > 0).double().mean().item()
    assert abs(frac_hi - torch.sigmoid(torch.tensor(1.0)).item()) < 0.02
    hi = x[x > 0]
    assert abs(hi.mean().item() - 0.5) < 0.01 and abs(hi.std().item() - 0.1) < 0.01
    cold = gmm.sample(params, 0.5, g)
    assert (cold > 0).double().mean().item() > frac_hi + 0.05          # sharper weights
    assert cold[cold > 0].std().item() == pytest.approx(0.05, abs=0.005)  # narrower scales
    assert torch.equal(gmm.sample(params, 0.0), torch.full((n,), 0.5))


def test_per_frame_baseline_reruns_the_tier_once_per_frame_on_the_prefix():
    """The seed's sampler: one forward over frames <= i per frame, all bins of frame i from that pass."""
    T, F = 4, 5
    tier = make_tier(F, conditional=True)
    genre, context = torch.tensor([2]), torch.rand(1, T, F, dtype=torch.float64)
    lengths = []
    tier.register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    x = sample_tier_naive(tier, T, genre, context, temperature=0.0, per="frame")
    assert lengths == [1, 2, 3, 4]
    with torch.no_grad():
        for i in range(T):
            prefix = x[:, :i + 1].clone()
            prefix[:, i] = 0                     # frame i was still empty when it was drawn
            expected = gmm.sample(tier.mixture(tier(prefix, genre, context)[:, i]), 0.0)
            torch.testing.assert_close(x[:, i], expected, rtol=0, atol=0)
    y = sample_tier_naive(tier, T, genre, context, generator=torch.Generator().manual_seed(1), per="frame")
    assert y.shape == (1, T, F) and y.abs().max() <= 1 and not torch.equal(x, y)
    with pytest.raises(ValueError, match="per"):
        sample_tier_naive(tier, T, genre, context, per="bin")


def test_multi_tier_per_frame_baseline():
    n_frames, n_mels, G = 6, 6, 3
    shapes = tier_shapes(n_frames, n_mels, G)
    tiers = [make_tier(shapes[g][1], conditional=g > 0, seed=g) for g in range(G)]
    out = sample_naive(tiers, torch.tensor([0, 1]), n_frames, n_mels, per="frame",
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, n_frames, n_mels) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="naive"):
        sample(tiers, torch.tensor([0]), n_frames, n_mels, naive="bin")
