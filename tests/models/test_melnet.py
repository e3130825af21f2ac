"""MelNet: autoregressive causality, multiscale split, mixture loss, checkpointing and the recipe."""
import dataclasses
import math

import pytest
import torch

from nmusic.errors import ConfigError
from nmusic.frontend import SpecParams, spec_preset
from nmusic.models.base import StepContext
from nmusic.models.melnet import PRESETS, MelNetConfig, MelNetRecipe, gmm
from nmusic.models.melnet.tiers import Tier, interleave, split, split_axes, tier_shapes

GENRES = ["classical", "edm", "lofi"]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- causality ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rnn,central,conditional", [("lstm", True, False), ("gru", True, True), ("lstm", False, True)])
def test_perturbing_an_element_never_changes_earlier_predictions(rnn, central, conditional):
    """Params at (i', j') with i' < i, or i' == i and j' <= j, do not depend on x[i, j]."""
    torch.manual_seed(0)
    T, F = 4, 5
    tier = Tier(F, 6, 2, 3, rnn=rnn, central=central, n_mixtures=2, conditional=conditional, cond_dim=3).double()
    genre = torch.tensor([1])
    context = torch.randn(1, T, F, dtype=torch.float64) if conditional else None
    x = torch.rand(1, T, F, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        base = tier.mixture(tier(x, genre, context)).stacked()[0]
        for i in range(T):
            for j in range(F):
                y = x.clone()
                y[0, i, j] += 0.7
                diff = (tier.mixture(tier(y, genre, context)).stacked()[0] - base).abs().amax(dim=(-2, -1))
                order = torch.arange(T * F).reshape(T, F)       # time-major, frequency within a frame
                earlier = order <= order[i, j]
                assert diff[earlier].max() == 0, f"x[{i},{j}] leaked into earlier predictions"
                # ... while it does reach every later element (so the test can fail)
                assert diff[~earlier].min() > 1e-10 if (~earlier).any() else True


def test_genre_and_context_condition_a_tier():
    torch.manual_seed(0)
    tier = Tier(4, 6, 1, 3, conditional=True, cond_dim=3, n_mixtures=2).double()
    x, ctx = torch.rand(2, 3, 4, dtype=torch.float64), torch.rand(2, 4, 4, dtype=torch.float64)
    g = torch.tensor([0, 0])
    with torch.no_grad():
        a = tier(x, g, ctx)
        assert (a - tier(x, torch.tensor([1, 2]), ctx)).abs().amin() > 0
        assert (a - tier(x, g, ctx + 0.3)).abs().amin() > 0
    with pytest.raises(ValueError, match="context"):
        tier(x, g)


# --- multiscale ---------------------------------------------------------------------------------
@pytest.mark.parametrize("T,F,G", [(16, 8, 4), (13, 9, 4), (221, 180, 4), (7, 5, 1), (10, 6, 3)])
def test_split_and_interleave_round_trip(T, F, G):
    x = torch.randn(2, T, F)
    tiers, contexts = split(x, G)
    assert [tuple(t.shape[1:]) for t in tiers] == tier_shapes(T, F, G)
    axes = split_axes(G)
    y = tiers[0]
    for g in range(1, G):
        assert torch.equal(y, contexts[g])            # tier g's context is exactly x^{<g}
        ax = axes[g]
        assert contexts[g].shape[ax] - tiers[g].shape[ax] in (0, 1)
        y = interleave(y, tiers[g], ax)
    assert torch.equal(y, x)
    if G > 1:
        assert axes[-1] == 1 and (G < 3 or axes[-2] == 2)   # finest split along time, then frequency
        assert torch.equal(tiers[-1], x[:, 1::2])


# --- mixture loss -------------------------------------------------------------------------------
def test_mixture_nll_is_the_exact_logsumexp():
    torch.manual_seed(0)
    theta = torch.randn(5, 7, 9, dtype=torch.float64)
    x = torch.rand(5, 7, dtype=torch.float64) * 2 - 1
    p = gmm.mixture_params(theta, 0.01)
    assert p.sigma.min() > 0.01
    log_pi = torch.log_softmax(p.logits, -1)
    log_n = -0.5 * ((x[..., None] - p.mu) / p.sigma) ** 2 - torch.log(p.sigma) - 0.5 * math.log(2 * math.pi)
    expected = -torch.logsumexp(log_pi + log_n, -1)
    torch.testing.assert_close(gmm.nll(p, x), expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    tiers = [Tier(5, 6, 2, 3, conditional=True, cond_dim=3, n_mixtures=2, checkpoint=c).double() for c in (False, True)]
    tiers[1].load_state_dict(tiers[0].state_dict())
    x, ctx, g = torch.rand(2, 4, 5, dtype=torch.float64), torch.rand(2, 4, 5, dtype=torch.float64), torch.tensor([0, 1])
    grads = []
    for tier in tiers:
        gmm.nll(tier.mixture(tier(x, g, ctx)), x).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tier.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


# --- recipe -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,target", [("paper-small", 4.04e6), ("paper-large", 50.8e6)])
def test_paper_presets_match_table_1_parameter_counts(name, target):
    cfg = PRESETS[name]
    recipe = MelNetRecipe(cfg, spec_preset(cfg.spec), GENRES)
    assert abs(recipe.n_params() / target - 1) < 0.05
    assert cfg.layers == (12, 6, 5, 4) if name == "paper-small" else cfg.dim == 256


SPEC = SpecParams(n_mels=8)


def small_config(**kw):
    base = dict(clip_frames=8, batch_size=4, dim=8, layers=[1, 1, 1], cond_dim=4, n_mixtures=3, lr=3e-3)
    return MelNetConfig(**{**base, **kw})


def ctx():
    return StepContext(step=0, device=torch.device("cpu"))


def test_train_step_learns_and_eval_reports_per_tier_nll():
    torch.manual_seed(0)
    recipe = MelNetRecipe(small_config(), SPEC, GENRES)
    assert sorted(recipe.modules) == ["tier1", "tier2", "tier3"] == sorted(recipe.optimizers)
    mel = (torch.linspace(-1, 1, 8)[None, :, None] * torch.ones(4, 8, 8)).contiguous()   # easy, fixed pattern
    genre = torch.tensor([0, 1, 2, 0])
    first = recipe.train_step(mel, genre, ctx())
    assert list(first)[:1] == ["nll"] and {"nll_tier1", "nll_tier2", "nll_tier3"} <= set(first)
    for _ in range(40):
        last = recipe.train_step(mel, genre, ctx())
    assert last["nll"] < first["nll"] - 0.5
    ev = recipe.eval_step(mel, genre)
    assert list(ev)[0] == "nll" and math.isfinite(ev["nll"])
    counts = [t.numel() for t in split(mel.transpose(1, 2), 3)[0]]
    joint = sum(ev[f"nll_tier{g + 1}"] * n for g, n in enumerate(counts)) / mel.numel()
    assert ev["nll"] == pytest.approx(joint)


def test_train_tiers_trains_only_the_chosen_tiers():
    recipe = MelNetRecipe(small_config(train_tiers=[2]), SPEC, GENRES)
    assert list(recipe.optimizers) == ["tier1", "tier2", "tier3"][:recipe.n_tiers]  # all kept for later sessions
    before = {n: [p.clone() for p in m.parameters()] for n, m in recipe.modules.items()}
    out = recipe.train_step(torch.rand(2, 8, 8) * 2 - 1, torch.tensor([0, 1]), ctx())
    assert set(out) == {"nll", "nll_tier2"}
    for name, module in recipe.modules.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters()))
        assert changed == (name == "tier2")


def test_fine_batch_size_trains_the_finer_tiers_on_the_first_clips_only():
    torch.manual_seed(0)
    recipe = MelNetRecipe(small_config(fine_batch_size=2), SPEC, GENRES)
    mel, genre = torch.rand(4, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0])
    tiers, contexts = split(mel.transpose(1, 2), 3)
    with torch.no_grad():   # every tier's loss is taken before its own update, on the clips it trains on
        expected = {g: float(recipe.tier_loss(g, [t[:n] for t in tiers], [c if c is None else c[:n] for c in contexts],
                                              genre[:n], ctx()))
                    for g, n in ((1, 4), (2, 2), (3, 2))}
    out = recipe.train_step(mel, genre, ctx())
    for g, value in expected.items():
        assert float(out[f"nll_tier{g}"]) == pytest.approx(value, rel=1e-5)
    n1, n2 = tiers[0].numel(), sum(t[:2].numel() for t in tiers[1:])
    assert float(out["nll"]) == pytest.approx((expected[1] * n1 + sum(expected[g] * tiers[g - 1][:2].numel()
                                                                     for g in (2, 3))) / (n1 + n2), rel=1e-5)


def test_fine_clip_frames_trains_and_validates_the_finer_tiers_on_the_first_frames_only():
    torch.manual_seed(0)
    recipe = MelNetRecipe(small_config(clip_frames=16, fine_clip_frames=8), SPEC, GENRES)
    mel, genre = torch.rand(4, 8, 16) * 2 - 1, torch.tensor([0, 1, 2, 0])
    whole, crop = split(mel.transpose(1, 2), 3), split(mel[:, :, :8].transpose(1, 2), 3)
    with torch.no_grad():   # tier 1 on the whole clips, tiers 2-3 on their first 8 frames
        expected = {g: float(recipe.tier_loss(g, *(whole if g == 1 else crop), genre, ctx())) for g in (1, 2, 3)}
        held_out = recipe.eval_step(mel, genre)
    assert held_out == pytest.approx({"nll": (expected[1] * whole[0][0].numel() + sum(
        expected[g] * crop[0][g - 1].numel() for g in (2, 3))) / (whole[0][0].numel() + crop[0][1].numel()
                                                                 + crop[0][2].numel()),
        **{f"nll_tier{g}": v for g, v in expected.items()}}, rel=1e-5)
    out = recipe.train_step(mel, genre, ctx())
    for g, value in expected.items():
        assert float(out[f"nll_tier{g}"]) == pytest.approx(value, rel=1e-5)
    for bad in (17, 1):   # longer than the clips; too short for three tiers
        with pytest.raises(ConfigError, match="fine_clip_frames"):
            MelNetRecipe(small_config(clip_frames=16, fine_clip_frames=bad), SPEC, GENRES)


def test_recipe_sampling_shapes_determinism_and_priming():
    torch.manual_seed(0)
    recipe = MelNetRecipe(small_config(), SPEC, GENRES)
    genre = torch.tensor([0, 2])
    a = recipe.sample(genre, generator=torch.Generator().manual_seed(1))
    b = recipe.sample(genre, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1
    prime = torch.rand(1, 8, 5) * 2 - 1
    c = recipe.sample(genre, prime=prime, n_frames=11, temperature=0.5)
    assert c.shape == (2, 8, 11) and torch.equal(c[:, :, :5], prime.expand(2, -1, -1))
    assert recipe.sample(genre, prime=prime).shape == (2, 8, 13)    # default: prime + clip_frames


def test_fine_every_trains_the_finer_tiers_on_every_nth_step_only():
    recipe = MelNetRecipe(small_config(fine_every=3), SPEC, GENRES)
    mel, genre = torch.rand(2, 8, 8) * 2 - 1, torch.tensor([0, 1])
    for step in range(4):
        before = {n: [p.clone() for p in m.parameters()] for n, m in recipe.modules.items()}
        out = recipe.train_step(mel, genre, StepContext(step=step, device=torch.device("cpu")))
        fine = step % 3 == 0
        assert set(out) == {"nll", "nll_tier1"} | ({"nll_tier2", "nll_tier3"} if fine else set())
        for name, module in recipe.modules.items():
            changed = any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters()))
            assert changed == (name == "tier1" or fine), (step, name)
    with pytest.raises(ConfigError, match="fine_every"):
        MelNetRecipe(small_config(fine_every=3, train_tiers=[2]), SPEC, GENRES)


def test_given_tiers_are_kept_and_the_finer_ones_sampled_on_them():
    torch.manual_seed(0)
    recipe = MelNetRecipe(small_config(), SPEC, GENRES)
    genre, real = torch.tensor([0, 2]), torch.rand(2, 8, 10) * 2 - 1
    tiers = split(real.transpose(1, 2), 3)[0]
    for k in range(4):
        x = recipe.sample(genre, generator=torch.Generator().manual_seed(1), n_frames=10, given=real, given_tiers=k)
        got = split(x.transpose(1, 2), 3)[0]
        assert [torch.equal(a, b) for a, b in zip(got, tiers)] == [True] * k + [False] * (3 - k)
    with pytest.raises(ConfigError, match="given"):
        recipe.sample(genre, n_frames=8, given=real, given_tiers=1)
    with pytest.raises(ConfigError, match="given_tiers"):
        recipe.sample(genre, n_frames=10, given=real, given_tiers=4)


@pytest.mark.parametrize("field,value", [("rnn", "transformer"), ("layers", []), ("clip_frames", 1),
                                         ("train_tiers", [4]), ("scale_floor", 0.0), ("fine_batch_size", 5),
                                         ("fine_batch_size", -1), ("fine_every", 0)])
def test_bad_config_fields_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        MelNetRecipe(small_config(**{field: value}), SPEC, GENRES)


def test_bad_sampling_arguments_raise_config_errors():
    recipe = MelNetRecipe(small_config(), SPEC, GENRES)
    with pytest.raises(ConfigError, match="genre"):
        recipe.sample(torch.tensor([3]))
    with pytest.raises(ConfigError, match="prime"):
        recipe.sample(torch.tensor([0]), prime=torch.zeros(1, 5, 4))
    with pytest.raises(ConfigError, match="temperature"):
        recipe.sample(torch.tensor([0]), temperature=-1)


def test_presets_are_complete_configs():
    assert {"tiny", "paper-small", "paper-large"} <= set(PRESETS)
    for cfg in PRESETS.values():
        assert dataclasses.is_dataclass(cfg) and cfg.spec in ("default", "melnet-paper")
    assert PRESETS["paper-small"].clip_frames == spec_preset("melnet-paper").frames(8 * 22050)
    assert PRESETS["paper-large"].clip_frames == spec_preset("melnet-paper").frames(3 * 22050)


def test_genre_ids_given_on_the_cpu_are_checked():
    recipe = MelNetRecipe(small_config(), SPEC, GENRES)
    with pytest.raises(ConfigError, match=r"genre ids must be in 0..2 .*got \[0, 3\]"):
        recipe.sample(torch.tensor([0, 3]), n_frames=4)


def test_losses_are_returned_as_device_tensors_non_finite_included():
    """No host read in the step: the losses come back as 0-dim tensors (the trainer reads them once per
    log interval), and a NaN loss is returned rather than raised (the trainer decides what it means)."""
    recipe = MelNetRecipe(small_config(), SPEC, GENRES)
    mel = torch.rand(2, 8, 8) * 2 - 1
    out = recipe.train_step(mel, torch.tensor([0, 1]), ctx())
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in out.values())
    mel[0, 0, 0] = float("nan")
    out = recipe.train_step(mel, torch.tensor([0, 1]), ctx())
    assert not math.isfinite(out["nll"])


def test_tier_by_tier_training_in_one_run_dir(tmp_path):
    """train_tiers may change between sessions of a run; the model's shape may not."""
    from nmusic.data.cache import AudioCache
    from nmusic.errors import CheckpointError
    from nmusic.training.trainer import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    cache = AudioCache.from_waves([torch.rand(20000, generator=g) - 0.5 for _ in range(4)], [0, 0, 1, 1], GENRES[:2],
                                  [f"f{i}.wav" for i in range(4)], SPEC.sample_rate)
    cfg = TrainConfig(steps=2, ckpt_every=1, val_every=0, sample_every=0, progress=False, device="cpu")

    def run(steps, **kw):
        recipe = MelNetRecipe(small_config(**kw), SPEC, GENRES[:2])
        t = Trainer(recipe, cache, tmp_path, TrainConfig(**{**cfg.__dict__, "steps": steps}), [0, 2], [1, 3], "test")
        t.fit()
        return t, recipe

    t, _ = run(2, train_tiers=[1])
    assert t.history[-1].get("nll_tier1") is not None
    t, recipe = run(4, train_tiers=[2])
    assert t.step == 4 and "nll_tier2" in t.history[-1] and "nll_tier1" not in t.history[-1]
    with pytest.raises(CheckpointError, match="dim"):
        run(5, dim=12)


def test_gaussian_baseline_nll_matches_closed_form():
    from nmusic.models.melnet import gaussian_baseline_nll

    g = torch.Generator().manual_seed(0)
    train = torch.randn(64, 3, 50, generator=g) * 0.2 + torch.tensor([-0.5, 0.0, 0.5])[None, :, None]
    held = torch.randn(16, 3, 50, generator=g) * 0.2 + torch.tensor([-0.5, 0.0, 0.5])[None, :, None]
    expected = 0.5 * math.log(2 * math.pi * 0.2 ** 2) + 0.5  # entropy of N(., 0.2)
    assert abs(gaussian_baseline_nll(train, held) - expected) < 0.05
    assert gaussian_baseline_nll(train, held + 1.0) > expected + 5


def test_rnns_run_in_float32_under_cpu_bf16_autocast():
    """bf16 autocast on a CPU (``--amp bf16 --device cpu``): the RNNs run in float32 outside it (oneDNN has no
    bf16 LSTM on CPUs without AVX-512), the rest in bf16, and the loss is finite."""
    from nmusic.models.melnet.layers import call_rnn, make_rnn
    rnn = make_rnn("lstm", 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = call_rnn(rnn, torch.randn(2, 5, 4).bfloat16())
    assert out.dtype == torch.float32
    spec = spec_preset("default")
    r = MelNetRecipe(dataclasses.replace(PRESETS["tiny"], dim=8, layers=(1, 1)), spec, ["a", "b"])
    mel = torch.rand(2, spec.n_mels, 64) * 2 - 1
    ctx = StepContext(step=0, device=torch.device("cpu"), amp_dtype=torch.bfloat16)
    losses = r.train_step(mel, torch.tensor([0, 1]), ctx)
    assert all(math.isfinite(float(v)) for v in losses.values())


def test_input_noise_perturbs_the_inputs_in_training_only():
    """``input_noise``: the teacher-forced inputs (not the targets) get Gaussian noise while training."""
    torch.manual_seed(0)
    tier = Tier(6, 8, 1, 3, central=True, n_mixtures=3, input_noise=0.2)
    x, genre = torch.rand(2, 5, 6) * 2 - 1, torch.tensor([0, 1])
    tier.train()
    assert not torch.allclose(tier(x, genre), tier(x, genre))
    tier.eval()
    torch.testing.assert_close(tier(x, genre), tier(x, genre), rtol=0, atol=0)
    tier.input_noise = 0.0
    torch.testing.assert_close(tier(x, genre), tier.train()(x, genre), rtol=0, atol=0)
    recipe = MelNetRecipe(small_config(input_noise=[0.2]), SPEC, GENRES)
    assert [t.input_noise for t in recipe.tiers()] == [0.2, 0, 0] and "input_noise" in recipe.schedule_fields
    for bad in ([0.2, 0, 0, 0], [0.1, -1]):
        with pytest.raises(ConfigError, match="input_noise"):
            small_config(input_noise=bad)
