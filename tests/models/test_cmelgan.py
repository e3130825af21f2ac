"""cMelGAN: presets and parameter counts, architecture as in the paper, losses, one training step."""
import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nmusic.config import to_dict
from nmusic.errors import ConfigError
from nmusic.frontend import SPEC_PRESETS, SpecParams
from nmusic.models.base import StepContext
from nmusic.models.cmelgan import PRESETS, CMelGANConfig, CMelGANRecipe
from nmusic.models.cmelgan.discriminator import minibatch_std
from nmusic.models.cmelgan.losses import d_loss_terms, g_adv_loss, stat_distance

GENRES = ["classical", "edm", "lofi"]
CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
# Even smaller than "tiny" so that a step takes milliseconds: 16 mels x 32 frames.
MINI_SPEC = SpecParams(n_fft=128, hop_length=64, n_mels=16)
MINI = dict(clip_frames=32, batch_size=6, z_dim=8, g_channels=(8, 8, 4), upsample_factors=(2, 2),
            finetune_kernels=(3, 5), d_channels=(8, 16, 16), d_kernels=(3, 3, 3), d_strides=(2, 2, 1),
            d_groups=(1, 2, 1), d_minibatch_std=2)


def mini(**kw) -> CMelGANRecipe:
    torch.manual_seed(0)
    return CMelGANRecipe(CMelGANConfig(**{**MINI, **kw}), MINI_SPEC, GENRES)


def ctx() -> StepContext:
    return StepContext(0, torch.device("cpu"))


def batch(r: CMelGANRecipe, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, F, T = r.config.batch_size, r.spec.n_mels, r.config.clip_frames
    return torch.rand(B, F, T, generator=g) * 2 - 1, torch.arange(B) % len(GENRES)


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def kinds(module: nn.Module, name: str = "weight") -> set[str]:
    if not parametrize.is_parametrized(module, name):
        return set()
    return {type(p).__name__ for p in module.parametrizations[name]}


# --- presets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,target", [("paper-small", 15.3e6), ("paper-large", 25.2e6),
                                         ("paper-small-original", 15.3e6), ("paper-large-original", 25.2e6)])
def test_paper_presets_match_table_1(name, target):
    """Table 1 counts are generator + discriminator trainable parameters (not the EMA copy)."""
    c = PRESETS[name]
    spec = SPEC_PRESETS[c.spec]
    assert (spec.n_mels, c.clip_frames, c.batch_size, c.d_steps) == (256, 256, 8, 2)
    assert spec.sample_rate == 22050 and abs(spec.seconds(c.clip_frames) - 10) < 0.1
    r = CMelGANRecipe(c, spec, GENRES)
    total = r.n_params(["generator", "discriminator"])
    assert abs(total / target - 1) < 0.05, f"{name}: {total / 1e6:.2f}M vs {target / 1e6}M"
    G = r.modules["generator"]
    assert G.start[1] * 32 == 256 and G.start[2] * 32 == 256, "paper geometry needs no cropping"


def test_original_presets_are_the_papers_objective():
    for name in ("paper-small-original", "paper-large-original", "tiny-original"):
        c = PRESETS[name]
        assert (c.loss, c.conditioning, c.matching_aware, c.spectral_norm) == ("bce", "concat", True, False)
        assert (c.d_steps, c.d_minibatch_std, c.feature_matching, c.ema_decay) == (2, 0, 0.0, 0.0)


def test_tiny_shapes_and_range():
    c = PRESETS["tiny"]
    assert c.spec == "default" and c.clip_frames == 128
    r = CMelGANRecipe(c, SPEC_PRESETS[c.spec], GENRES)
    genre = torch.tensor([0, 1, 2, 0])
    x = r.sample(genre, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 64, 128)
    assert x.abs().max() <= 1 and x.std() > 0
    assert r.modules["discriminator"](x, genre).shape == (4, 4), "the 2-D logit and three temporal scales"


def test_generator_crops_any_geometry_and_stays_in_range():
    r = mini(clip_frames=30)                              # 30 frames: 8 * 4 = 32 generated, 2 cropped
    x = r.sample(torch.tensor([0, 1]))
    assert x.shape == (2, 16, 30)
    G = r.modules["generator"]
    with torch.no_grad():                                 # blow the output up: tanh still bounds it
        G.to_mel[2].parametrizations.weight.original0.mul_(100)
    y = G(r.noise(2) * 10, torch.tensor([0, 1]))
    assert y.min() >= -1 and y.max() <= 1 and y.abs().max() > 0.99


# --- architecture -----------------------------------------------------------------------------------
def test_weight_norm_on_every_generator_convolution():
    G = mini().modules["generator"]
    convs = [m for m in G.modules() if isinstance(m, CONVS)]
    assert len(convs) > 10
    assert all(kinds(m) == {"_WeightNorm"} for m in convs)
    assert any(isinstance(m, nn.ReflectionPad2d) for m in G.modules())


@pytest.mark.parametrize("sn,expected", [(True, "_SpectralNorm"), (False, "_WeightNorm")])
def test_discriminator_normalisation(sn, expected):
    D = mini(spectral_norm=sn).modules["discriminator"]
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(kinds(m) == {expected} for m in convs)
    assert [m.groups for m in convs] == [1, 2, 1], "grouped convolutions as configured"
    assert convs[-1].in_channels == 17, "minibatch-std channel before the last layer"


def test_finetune_stack_is_used():
    r = mini()
    G = r.modules["generator"]
    assert len(G.finetune) == 2
    z, genre = r.noise(3), torch.tensor([0, 1, 2])
    before = G(z, genre)
    with torch.no_grad():
        G.finetune[1][1].parametrizations.weight.original1.add_(0.5)   # the last 1-D convolution
    assert (G(z, genre) - before).abs().max() > 1e-3


def test_finetune_stack_off():
    on, off = mini(), mini(use_finetune=False)
    G = off.modules["generator"]
    assert len(G.finetune) == 0 and not any(isinstance(m, nn.Conv1d) for m in G.modules())
    assert off.n_params(["generator"]) < on.n_params(["generator"])
    z, genre = off.noise(2), torch.tensor([0, 2])
    direct = torch.tanh(G.to_mel(G.upsample[1](G.upsample[0](
        nn.functional.leaky_relu(G.linear(z * G.embed(genre)), 0.2).view(-1, *G.start))))[:, 0])
    assert torch.allclose(G(z, genre), direct, atol=1e-6)


@pytest.mark.parametrize("conditioning", ["projection", "concat", "both"])
def test_discriminator_uses_the_genre(conditioning):
    D = mini(conditioning=conditioning).modules["discriminator"]
    assert hasattr(D, "embed_concat") == (conditioning != "projection")
    assert hasattr(D, "embed_project") == (conditioning != "concat")
    x = torch.rand(3, 16, 32)
    with torch.no_grad():
        a, b = D(x, torch.tensor([0, 0, 0])), D(x, torch.tensor([1, 1, 1]))
    assert (a - b).abs().max() > 0


# --- losses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["hinge", "bce", "lsgan"])
def test_matching_aware_loss_treats_wrong_genre_as_fake(loss):
    real, fake, wrong = (torch.full((4,), 0.5, requires_grad=True) for _ in range(3))
    terms = d_loss_terms(loss, real, fake, wrong)
    assert torch.allclose(terms["d_loss"], terms["d_loss_real"] + (terms["d_loss_fake"] + terms["d_loss_wrong"]) / 2)
    terms["d_loss"].backward()
    # gradient descent raises real logits and lowers fake and wrong-genre logits alike
    assert (real.grad < 0).all() and (fake.grad > 0).all() and (wrong.grad > 0).all()
    assert torch.allclose(fake.grad, wrong.grad)
    # a wrong-genre real that D calls "real" costs as much as a fake that D calls "real"
    hi = torch.full((4,), 2.0)
    t = d_loss_terms(loss, hi, hi, hi)
    assert torch.isclose(t["d_loss_wrong"], t["d_loss_fake"]) and t["d_loss_wrong"] > t["d_loss_real"]
    # the generator wants its fakes called real
    fake2 = torch.full((4,), 0.5, requires_grad=True)
    g_adv_loss(loss, fake2).backward()
    assert (fake2.grad < 0).all()


def test_train_step_feeds_wrong_genre_reals_as_negatives():
    r = mini(d_steps=2)
    mel, genre = batch(r)
    B = len(genre)
    calls = {"generator": [], "discriminator": []}
    r.modules["generator"].register_forward_hook(lambda m, i, o: calls["generator"].append(len(o)))
    r.modules["discriminator"].register_forward_hook(
        lambda m, i, o: calls["discriminator"].append((i[0].clone(), i[1].clone(), o)))
    logs = r.train_step(mel, genre, ctx())
    assert calls["generator"] == [B, B], "one batch of fakes per discriminator step; the last one's serves the generator"
    d_calls = calls["discriminator"]
    assert len(d_calls) == 3, "one concatenated call per discriminator step, one for the generator step"
    for x, y, _ in d_calls[:2]:
        assert x.shape[0] == 3 * B
        assert torch.equal(x[:B], mel) and torch.equal(x[2 * B:], mel), "real, fake, real"
        assert torch.equal(y[:2 * B], torch.cat([genre, genre]))
        assert (y[2 * B:] != genre).all(), "the third block pairs reals with a wrong genre"
    x, y, logits = d_calls[1]
    real, fake, wrong = logits.detach().split(B)
    expected = d_loss_terms("hinge", real, fake, wrong)
    for k in ("d_loss", "d_loss_real", "d_loss_fake", "d_loss_wrong"):
        assert logs[k] == pytest.approx(float(expected[k]), rel=1e-5)
    assert logs["d_wrong"] == pytest.approx(float(wrong.mean()), rel=1e-5)
    x, y, _ = d_calls[2]
    assert x.shape[0] == 2 * B and torch.equal(x[B:], mel), "feature matching: [fake, real] in one call"
    assert torch.equal(x[:B], d_calls[1][0][B:2 * B]), "the generator is judged on the last D step's fakes"
    assert not torch.equal(d_calls[0][0][B:2 * B], d_calls[1][0][B:2 * B]), "each D step has fresh fakes"


def test_without_matching_aware_no_wrong_block():
    r = mini(matching_aware=False, feature_matching=0.0)
    mel, genre = batch(r)
    shapes = []
    r.modules["discriminator"].register_forward_hook(lambda m, i, o: shapes.append(i[0].shape[0]))
    logs = r.train_step(mel, genre, ctx())
    assert shapes == [2 * len(genre), len(genre)] and "d_wrong" not in logs and "g_fm" not in logs


# --- training step, EMA, sampling -------------------------------------------------------------------
@pytest.mark.parametrize("loss,conditioning", [("hinge", "projection"), ("bce", "concat"), ("lsgan", "both")])
def test_train_step_updates_everything(loss, conditioning):
    r = mini(loss=loss, conditioning=conditioning, ema_decay=0.99)
    G, D, E = (r.modules[k] for k in ("generator", "discriminator", "generator_ema"))
    g0, d0, e0 = flat(G), flat(D), flat(E)
    assert torch.equal(g0, e0) and not any(p.requires_grad for p in E.parameters())
    mel, genre = batch(r)
    for step in range(3):
        logs = r.train_step(mel, genre, ctx())
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and torch.isfinite(v) for v in logs.values()), logs
        assert abs(logs["d_loss"]) < 100 and abs(logs["g_loss"]) < 100
    g1, d1, e1 = flat(G), flat(D), flat(E)
    assert not torch.equal(g0, g1) and not torch.equal(d0, d1) and not torch.equal(e0, e1)
    # the EMA sits between the start and the current generator, closer to the current one (warm-up)
    assert 0 < (e1 - g1).norm() < (g0 - g1).norm()
    assert r.ema_updates == 3
    state = r.extra_state()
    r2 = mini()
    r2.load_extra_state(json.loads(json.dumps(state)))
    assert r2.ema_updates == 3


def test_ema_decay_zero_copies_the_generator():
    r = mini(ema_decay=0.0)
    mel, genre = batch(r)
    r.train_step(mel, genre, ctx())
    assert torch.equal(flat(r.modules["generator"]), flat(r.modules["generator_ema"]))


def test_sample_is_seeded_and_truncation_bounds_noise():
    r = mini()
    genre = torch.tensor([0, 1, 2, 1])
    a = r.sample(genre, generator=torch.Generator().manual_seed(3))
    b = r.sample(genre, generator=torch.Generator().manual_seed(3))
    c = r.sample(genre, generator=torch.Generator().manual_seed(4))
    assert a.shape == (4, 16, 32) and torch.equal(a, b) and not torch.equal(a, c)
    z = r.noise(1000, torch.Generator().manual_seed(0), truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    with pytest.raises(ConfigError, match="truncation"):
        r.sample(genre, truncation=0.0)


def test_eval_step_stat_distance():
    r = mini()
    mel, genre = batch(r)
    out = r.eval_step(mel, genre)
    assert list(out)[0] == "stat_distance" and out["stat_distance"] > 0
    assert out == r.eval_step(mel, genre), "fixed noise: validation is deterministic"
    assert stat_distance(mel, mel, genre)["stat_distance"] == 0
    shifted = stat_distance(mel, mel + 0.1, genre)
    assert shifted["mean_l1"] == pytest.approx(0.1, rel=1e-4) and shifted["std_l1"] == pytest.approx(0, abs=1e-5)


# --- config -----------------------------------------------------------------------------------------
def test_config_round_trips_through_json():
    c = PRESETS["paper-small"]
    again = CMelGANConfig(**json.loads(json.dumps(to_dict(c))))
    assert again == c and isinstance(again.g_channels, tuple)


@pytest.mark.parametrize("field,value", [
    ("spec", "nope"), ("loss", "wgan"), ("conditioning", "film"), ("upsample_factors", (2, 2, 2, 2, 2, 2, 2)),
    ("upsample_factors", (1, 2, 2, 2)), ("g_channels", (8, 8)), ("finetune_kernels", (9, 3)),
    ("finetune_kernels", (3, 301)), ("d_groups", (1, 3, 8, 1)), ("d_kernels", (5, 5, 4, 3)), ("d_strides", (2, 2)),
    ("betas", (0.5,)), ("ema_decay", 1.0), ("d_steps", 0), ("lr_d", 0.0), ("clip_frames", 4),
    ("feature_matching", -1.0), ("z_dim", 0), ("d_minibatch_std", -1), ("d_groups", (1, 4, 8, 2)),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(PRESETS["tiny"], **{field: value})


def test_recipe_checks_geometry_against_the_dataset_spec():
    with pytest.raises(ConfigError, match="upsample_factors"):
        CMelGANRecipe(PRESETS["tiny"], SpecParams(n_mels=8), GENRES)       # 16x upsampling > 8 mels
    with pytest.raises(ConfigError, match="genre"):
        CMelGANRecipe(PRESETS["tiny"], SPEC_PRESETS["default"], [])


def test_minibatch_std_never_mixes_real_and_fake_blocks():
    h = torch.randn(8, 3, 2, 2)
    h[:4] = h[0]                                   # block 1: four identical samples (a collapsed generator)
    out = minibatch_std(h, 4)
    assert out.shape == (8, 4, 2, 2)
    assert out[:4, 3].abs().max() < 1e-3 and out[4:, 3].min() > 0.1
    r = mini()
    calls = []
    r.modules["discriminator"].register_forward_hook(lambda m, a, kw, o: calls.append(kw.get("segment")),
                                                     with_kwargs=True)
    mel, genre = batch(r)
    r.train_step(mel, genre, ctx())
    assert calls == [len(genre), len(genre)], "the recipe tells D where its blocks start"


def test_generator_step_skips_discriminator_weight_gradients_only():
    """The generator step freezes D's weights: same generator gradients, no D weight gradients."""
    r = mini()
    G, D = r.modules["generator"], r.modules["discriminator"].eval()   # eval: spectral norm stops iterating
    z, genre = torch.randn(4, r.config.z_dim), torch.tensor([0, 1, 2, 0])
    with r.frozen(D):
        D(G(z, genre), genre).mean().backward()
    frozen = [p.grad.clone() for p in G.parameters()]
    assert all(p.grad is None for p in D.parameters()) and all(p.requires_grad for p in D.parameters())
    G.zero_grad(set_to_none=True)
    D(G(z, genre), genre).mean().backward()
    for a, b in zip(frozen, (p.grad for p in G.parameters())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(p.grad is not None for p in D.parameters())
    D.zero_grad(set_to_none=True)
    D.train()
    r.train_step(*batch(r), ctx())                        # after a whole step: D's last grads were cleared
    assert all(p.grad is None for p in D.parameters())


def test_discriminator_under_ddp_is_never_frozen_compiled_or_not():
    """Under DDP every rank must compute D's weight gradients; ``torch.compile`` wraps DDP as
    ``OptimizedModule(DDP(D))``, which must not hide the DDP (the reducer errors on the next D step)."""
    import torch.distributed as dist

    r = mini()
    D = r.modules["discriminator"]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(D)
        cases = {"ddp": ddp, "compile(ddp)": torch.compile(ddp, backend="eager"),
                 "compile(D)": torch.compile(D, backend="eager"), "D": D}
        frozen = {}
        for name, wrapped in cases.items():
            with r.frozen(wrapped):
                frozen[name] = not any(p.requires_grad for p in D.parameters())
            assert all(p.requires_grad for p in D.parameters())
    finally:
        dist.destroy_process_group()
    assert frozen == {"ddp": False, "compile(ddp)": False, "compile(D)": True, "D": True}


@pytest.mark.parametrize("conditioning,temporal", [("projection", ()), ("concat", ()), ("both", ()),
                                                   ("projection", (1, 4))])
def test_repeated_blocks_give_the_same_logits_features_and_gradients(conditioning, temporal):
    """D steps score [real, fake, real with wrong genres]: the convolutions may run once for both real blocks."""
    r = mini(conditioning=conditioning, d_temporal_scales=temporal)
    D = r.modules["discriminator"].eval()          # eval: spectral norm stops iterating between the calls
    mel, genre = batch(r)
    B = len(genre)
    x = torch.cat([mel, torch.rand_like(mel), mel])
    y = torch.cat([genre, genre, r.wrong_genres(genre)])
    outs, grads, seen = [], [], []
    D.layers[0].register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    for repeats in (None, {2: 0}):
        D.zero_grad(set_to_none=True)
        logits, feats = D(x, y, features=True, segment=B, repeats=repeats)
        (logits.square().sum() + sum(f.mean() for f in feats)).backward()
        outs.append((logits.detach(), [f.detach() for f in feats]))
        grads.append(torch.cat([p.grad.flatten() for p in D.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)
    assert (outs[0][0][2 * B:] - outs[0][0][:B]).abs().max() > 0    # the wrong genre still changes the logit
    assert seen == [3 * B, 3 * B if conditioning != "projection" else 2 * B]   # concat: the genre is an input


def test_temporal_discriminators_score_whole_frames_per_scale():
    r = mini(d_temporal_scales=(1, 2, 4), d_temporal_channels=8)
    D = r.modules["discriminator"]
    mel, genre = batch(r)
    logits, feats = D(mel, genre, features=True, segment=len(genre))
    assert logits.shape == (len(genre), 4), "the 2-D logit, then one per temporal scale"
    assert [d.scale for d in D.temporal.discriminators] == [1, 2, 4]
    assert len(feats) == len(r.config.d_channels) + 3 * 5, "feature matching sees the temporal maps too"
    shifted = D(torch.roll(mel, 1, dims=1), genre, segment=len(genre))   # the same frames with other bins
    assert (shifted[:, 1:] - logits[:, 1:]).abs().max() > 0
    before = flat(D.temporal)
    logs = r.train_step(mel, genre, ctx())
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
    assert not torch.equal(before, flat(D.temporal)), "the temporal discriminators are trained"
    with pytest.raises(ConfigError, match="d_temporal_scales"):
        mini(d_temporal_scales=(8,))                       # 32 frames / 8 leaves 4 pooled frames
