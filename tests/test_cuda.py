"""Tests that need a real CUDA GPU (marker ``cuda``; skipped without one). The GPU check
(``benchmarks/gpu_check.py``) runs them; ``tests/test_fake_cuda.py`` covers what can be checked
without a GPU."""
import math

import pytest
import torch

from nmusic.device import bf16_native, resolve_amp
from nmusic.frontend import MelFrontEnd, SpecParams, griffin_lim_upper_bound
from nmusic.models.base import StepContext
from nmusic.models.cmelgan import CMelGANConfig, CMelGANRecipe
from nmusic.models.melnet import MelNetConfig, MelNetRecipe
from nmusic.models.melnet.layers import call_rnn
from nmusic.models.melnet.sampling import sample_tier
from nmusic.models.melnet.tiers import Tier

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by the GPU check)")]
GENRES = ["classical", "edm", "lofi"]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_cached_sampling_on_the_gpu_equals_the_cpu(rnn):
    """Same weights, same random numbers (a CPU generator): the same samples on both devices, in float64."""
    torch.manual_seed(0)
    tier = Tier(6, 8, 2, 3, rnn=rnn, central=True, n_mixtures=3, conditional=True, cond_dim=4).double()
    genre, context = torch.tensor([0, 2]), torch.rand(2, 6, 6, dtype=torch.float64) * 2 - 1
    prime = torch.rand(2, 2, 6, dtype=torch.float64) * 2 - 1
    cpu = sample_tier(tier, 5, genre, context, prime, generator=torch.Generator().manual_seed(1))
    tier.to(CUDA)
    gpu = sample_tier(tier, 5, genre.to(CUDA), context.to(CUDA), prime.to(CUDA),
                      generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)


def test_cudnn_rnns_leave_bf16_autocast_for_fp32():
    """cuDNN's autocast rule runs RNNs in fp16 whatever dtype was asked; call_rnn runs them in fp32."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True).to(CUDA)
    x = torch.randn(4, 5, 8, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert lstm(x)[0].dtype == torch.float16          # the rule this works around
        assert call_rnn(lstm, x)[0].dtype == torch.float32
    with torch.autocast("cuda", dtype=torch.float16):
        assert call_rnn(lstm, x)[0].dtype == torch.float16


def _recipes():
    spec = SpecParams()
    torch.manual_seed(0)
    return {"melnet": MelNetRecipe(MelNetConfig(dim=16, layers=[2, 1, 1], batch_size=4), spec, GENRES),
            "cmelgan": CMelGANRecipe(CMelGANConfig(batch_size=4), spec, GENRES)}


@pytest.mark.parametrize("model", ["melnet", "cmelgan"])
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16", "auto"])
def test_training_steps_on_the_gpu_in_each_precision(model, amp):
    recipe = _recipes()[model]
    try:
        amp = resolve_amp(amp, CUDA, recipe)
    except Exception:
        assert amp == "bf16" and not bf16_native(CUDA)
        pytest.skip("no native bf16 on this GPU")
    recipe.to(CUDA)
    for m in recipe.modules.values():
        m.train(any(p.requires_grad for p in m.parameters()))
    fe = MelFrontEnd(SpecParams()).to(CUDA)
    frames = recipe.config.clip_frames
    wave = torch.rand(4, SpecParams().samples(frames), device=CUDA) * 0.5 - 0.25
    genre = torch.tensor([0, 1, 2, 0], device=CUDA)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    before = [p.detach().clone() for p in recipe.unwrap(next(iter(recipe.modules.values()))).parameters()]
    for step in range(3):
        ctx = StepContext(step=step, device=CUDA, amp_dtype={"none": None, "bf16": torch.bfloat16,
                                                             "fp16": torch.float16}[amp], scaler=scaler)
        losses = recipe.train_step(fe(wave)[..., :frames], genre, ctx)
        assert all(v.device.type == "cuda" for v in losses.values())
    assert all(math.isfinite(float(v)) for v in losses.values())
    after = list(recipe.unwrap(next(iter(recipe.modules.values()))).parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_fp16_grad_scaler_skips_an_overflow_on_the_gpu():
    net = torch.nn.Linear(4, 1).to(CUDA)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    before = net.weight.detach().clone()
    ctx = StepContext(step=0, device=CUDA, amp_dtype=torch.float16, scaler=scaler)
    with ctx.autocast():
        loss = net(torch.full((2, 4), 1e5, device=CUDA)).float().sum() * float("inf")
    ctx.backward(loss)
    ctx.optimizer_step(opt)
    assert torch.equal(net.weight, before) and scaler.get_scale() < 2.0 ** 16


def test_griffin_lim_on_the_gpu_matches_the_cpu_round_trip():
    p = SpecParams()
    torch.manual_seed(0)
    t = torch.arange(p.sample_rate) / p.sample_rate
    wave = (0.3 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 880 * t))[None]
    cpu = griffin_lim_upper_bound(wave, MelFrontEnd(p))
    gpu = griffin_lim_upper_bound(wave.to(CUDA), MelFrontEnd(p).to(CUDA))
    assert abs(cpu["mel_spectral_convergence_db"] - gpu["mel_spectral_convergence_db"]) < 3
    assert gpu["mel_spectral_convergence_db"] < -15


def test_runs_load_on_the_gpu_by_default(tmp_path):
    from nmusic.training.runs import load_run
    from nmusic.training.trainer import TrainConfig
    from tests.training.toy_model import REGISTRY, make_trainer
    make_trainer(tmp_path / "run", TrainConfig(steps=2, device="cuda", progress=False, val_every=0,
                                               sample_every=0)).fit()
    recipe, _ = load_run(tmp_path / "run", registry=REGISTRY)
    assert next(recipe.modules["net"].parameters()).device.type == "cuda"
