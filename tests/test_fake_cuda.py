"""The CUDA code paths, run on a CPU with fake CUDA tensors (``FakeTensorMode``).

Under ``FakeTensorMode`` tensors can live on ``"cuda"`` without a GPU: every op runs its shape,
dtype and device checks (the meta kernels of the CUDA implementations, e.g. the fused LSTM/GRU
cells' "1-D bias" rule), a CPU tensor mixed into a CUDA op is an error, and so is reading a value
on the host (``.item()``, ``int(t)``), which makes a host sync in a hot path fail loudly. Modules
are built outside the mode and moved with ``.to("cuda")`` inside it; with cuDNN off, ``nn.LSTM`` /
``nn.GRU`` run as their fused cells.

What this layer cannot cover (the GPU check, ``benchmarks/gpu_check.py``, does):

* numbers: fake tensors have no values, so nothing here says a result is right, only that the
  CUDA path runs with the right shapes, dtypes and devices (the CPU tests check the numbers);
* backward passes and optimiser steps (autograd wants a CUDA context), so whole training steps,
  the grad scaler and DDP;
* cuDNN itself (its RNN kernels and autocast rule, which runs RNNs in fp16 whatever dtype was
  asked), CUDA generators, CUDA graphs, ``torch.compile``, speed and memory;
* ``torch.autocast("cuda")`` refuses to start without a GPU: :func:`cuda_autocast` below switches
  the same autocast state on the way its ``__enter__`` does;
* torch has no meta kernel for the fused CUDA GRU cell: :func:`_fused_gru_cell_meta` below is one,
  with the checks of the CUDA kernel (the same ones torch's LSTM-cell meta kernel makes);
* the Griffin-Lim iterations themselves: ``torch.istft`` checks its window envelope on the host
  (the NOLA condition) in C++, which fake tensors cannot answer. Everything around them runs here:
  the analysis, the inverse mel filters, the random initial phases and the STFT GL starts from;
* the CPU side of the data path (clips read from the RAM cache) is not run under the mode: its
  reads are host reads by nature; what it hands to the GPU is.
"""
from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from torch._meta_registrations import rnn_cell_checkSizes
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from nmusic.frontend import MelFrontEnd, SpecParams, stft_magnitude
from nmusic.models.base import StepContext
from nmusic.models.cmelgan import PRESETS as GAN_PRESETS
from nmusic.models.cmelgan import CMelGANRecipe
from nmusic.models.melnet import PRESETS as MELNET_PRESETS
from nmusic.models.melnet import MelNetConfig, MelNetRecipe
from nmusic.models.melnet.sampling import FrequencySteps, sample_tier
from nmusic.models.melnet.tiers import Tier, split

GENRES = ["classical", "edm", "lofi"]
CUDA = torch.device("cuda")

pytestmark = pytest.mark.usefixtures("one_thread")


def _fused_gru_cell_meta(input_gates, hidden_gates, hx, input_bias=None, hidden_bias=None):
    """Meta kernel of ``aten::_thnn_fused_gru_cell`` (CUDA): the checks of the CUDA kernel, then
    ``(hy (B, H), workspace (B, 5H))``."""
    rnn_cell_checkSizes(input_gates, hidden_gates, input_bias, hidden_bias, 3, hx)
    workspace = input_gates.new_empty(hx.shape[0], 5 * hx.shape[1])
    return torch.empty_like(hx, memory_format=torch.contiguous_format), workspace


_ATEN_META = torch.library.Library("aten", "IMPL", "Meta")
_ATEN_META.impl("_thnn_fused_gru_cell", _fused_gru_cell_meta)


@contextlib.contextmanager
def fake_cuda():
    """A fake CUDA device; cuDNN off so that RNNs run as (checkable) fused cells. Build modules
    before entering it and move them inside."""
    cudnn = torch.backends.cudnn.enabled
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)      # it logs every failing meta kernel before raising it
    torch.backends.cudnn.enabled = False
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield CUDA
    finally:
        torch.backends.cudnn.enabled = cudnn
        logger.setLevel(level)


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype):
    """CUDA autocast switched on as ``torch.autocast.__enter__`` does (its constructor wants a GPU)."""
    prev, prev_dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled("cuda", prev)
        torch.set_autocast_dtype("cuda", prev_dtype)


class OpLog(TorchDispatchMode):
    """Records every op with its output dtype, and every copy between the host and the device."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, torch.dtype | None]] = []
        self.transfers: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        self.ops.append((func.__name__, getattr(first, "dtype", None)))
        if func.__name__.startswith(("_to_copy", "copy_")):
            src = args[1] if func.__name__.startswith("copy_") else args[0]
            dst = args[0] if func.__name__.startswith("copy_") else out
            if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.device != dst.device \
                    and src.dim() > 0:
                self.transfers.append(f"{func.__name__} {src.device} -> {dst.device} {tuple(src.shape)}")
        return out

    def dtypes(self, *names: str) -> set:
        return {dt for name, dt in self.ops if name.startswith(names)}


def melnet_tiny(**kw) -> MelNetRecipe:
    torch.manual_seed(0)
    cfg = MelNetConfig(**{**MELNET_PRESETS["tiny"].__dict__, "dim": 8, "cond_dim": 4, "n_mixtures": 3, **kw})
    return MelNetRecipe(cfg, SpecParams(), GENRES)


def cmelgan_tiny() -> CMelGANRecipe:
    torch.manual_seed(0)
    return CMelGANRecipe(GAN_PRESETS["tiny"], SpecParams(), GENRES)


def on_cuda(recipe):
    """Move a recipe's modules (built outside the fake mode) to the fake GPU."""
    for m in recipe.modules.values():
        m.to(CUDA)
    return recipe


# --- 1. MelNet cached sampling -----------------------------------------------------------------------
@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_melnet_cached_sampling_runs_on_cuda_with_priming(rnn):
    """The fused CUDA cells take 1-D biases only: a per-row input bias (the CPU formulation) is an error."""
    torch.manual_seed(0)
    tier = Tier(5, 8, 2, 3, rnn=rnn, central=True, n_mixtures=3, conditional=True, cond_dim=4)
    genre, context, prime = torch.tensor([0, 2]), torch.rand(2, 5, 5) * 2 - 1, torch.rand(2, 2, 5) * 2 - 1
    with fake_cuda():
        tier.to(CUDA)
        assert FrequencySteps(tier).project_inputs is False
        x = sample_tier(tier, 4, genre.to(CUDA), context.to(CUDA), prime.to(CUDA),
                        generator=torch.Generator().manual_seed(0))
        assert x.device.type == "cuda" and x.shape == (2, 4, 5)
        with pytest.raises(RuntimeError):         # what sampling on a GPU did before: a per-row bias
            sample_tier(tier, 4, genre.to(CUDA), context.to(CUDA), project_inputs=True)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_melnet_recipe_samples_every_tier_on_cuda(rnn):
    """Genre ids on the GPU (as the trainer's periodic samples have them) are not read on the host;
    ids given on the CPU are checked there (a CPU test)."""
    recipe, prime = melnet_tiny(rnn=rnn), torch.rand(1, 64, 4) * 2 - 1
    with fake_cuda():
        on_cuda(recipe)
        genre = torch.tensor([0, 1, 2], device=CUDA)
        mel = recipe.sample(genre, generator=torch.Generator().manual_seed(0), prime=prime, n_frames=8)
        assert mel.device.type == "cuda" and mel.shape == (3, 64, 8)
        mel = recipe.sample(genre[:1], n_frames=8, temperature=0.0)
        assert mel.shape == (1, 64, 8)


# --- cMelGAN sampling --------------------------------------------------------------------------------
def test_cmelgan_samples_on_cuda():
    recipe = cmelgan_tiny()
    with fake_cuda():
        on_cuda(recipe)
        genre = torch.tensor([0, 1, 2], device=CUDA)
        for generator in (None, torch.Generator().manual_seed(0)):
            mel = recipe.sample(genre, generator=generator)
            assert mel.device.type == "cuda" and mel.shape == (3, 64, 128) and mel.dtype == torch.float32


# --- the forward half of a training step, with no host sync and no host<->device copy -------------
def test_cmelgan_training_losses_on_cuda_without_syncs_or_copies():
    recipe, fe = cmelgan_tiny(), MelFrontEnd(SpecParams())
    for m in recipe.modules.values():
        m.train(any(p.requires_grad for p in m.parameters()))
    with fake_cuda():
        on_cuda(recipe)
        fe.to(CUDA)
        wave = torch.rand(8, SpecParams().samples(128), device=CUDA) * 2 - 1
        genre = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1], device=CUDA)
        ctx = StepContext(step=0, device=CUDA)
        with OpLog() as log:
            with torch.no_grad():
                mel = fe(wave)
            d = recipe.discriminator_loss(mel, genre, ctx)
            g = recipe.generator_loss(mel, genre, ctx)
        assert log.transfers == [], "a training step must not copy between host and device"
        assert {"d_loss", "d_real", "d_fake", "d_wrong"} <= set(d) and {"g_loss", "g_adv", "g_fm"} <= set(g)
        assert all(v.device.type == "cuda" and v.dim() == 0 for v in {**d, **g}.values())
        with OpLog() as log, cuda_autocast(torch.bfloat16):
            d = recipe.discriminator_loss(mel, genre, ctx)
        assert torch.bfloat16 in log.dtypes("convolution") and d["d_loss"].dtype == torch.float32


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_melnet_training_losses_on_cuda_without_syncs_or_copies(rnn):
    recipe = melnet_tiny(rnn=rnn)
    with fake_cuda():
        on_cuda(recipe)
        mel = torch.rand(2, 64, 64, device=CUDA) * 2 - 1
        genre = torch.tensor([0, 2], device=CUDA)
        ctx = StepContext(step=0, device=CUDA)
        with OpLog() as log:
            tiers, contexts = split(mel.transpose(1, 2), recipe.n_tiers)
            losses = [recipe.tier_loss(g, tiers, contexts, genre, ctx) for g in recipe.train_tiers]
        assert log.transfers == []
        assert all(v.device.type == "cuda" and v.dim() == 0 and v.requires_grad for v in losses)


# --- 2. precision: RNNs never train in unscaled fp16 ------------------------------------------------
@pytest.mark.parametrize("rnn,cell", [("lstm", "_thnn_fused_lstm_cell"), ("gru", "_thnn_fused_gru_cell")])
def test_rnns_run_in_fp32_under_bf16_autocast_and_in_fp16_under_fp16(rnn, cell):
    """Under bf16 autocast (no grad scaler) the RNNs leave autocast and run in float32 (cuDNN's autocast
    rule would run them in fp16, unscaled); everything else runs in bf16. Under fp16 autocast, with
    the trainer's grad scaler, they stay in fp16."""
    recipe = melnet_tiny(rnn=rnn)
    with fake_cuda():
        on_cuda(recipe)
        mel = torch.rand(2, 64, 64, device=CUDA) * 2 - 1
        genre = torch.tensor([0, 2], device=CUDA)
        tiers, contexts = split(mel.transpose(1, 2), recipe.n_tiers)
        for dtype, rnn_dtype in ((torch.bfloat16, torch.float32), (torch.float16, torch.float16)):
            with OpLog() as log, cuda_autocast(dtype):
                loss = recipe.tier_loss(2, tiers, contexts, genre, StepContext(step=0, device=CUDA))
            assert log.dtypes(cell) == {rnn_dtype}, (dtype, log.dtypes(cell))
            assert dtype in log.dtypes("addmm"), "the linear maps do run in reduced precision"
            assert loss.dtype == torch.float32


# --- the front end, Griffin-Lim, the judge and evaluation's feature path -------------------------
def test_front_end_and_griffin_lim_inputs_on_cuda():
    """Waveform -> log-mel, log-mel -> linear magnitude (the inverse filters: one matmul, where
    torchaudio's InverseMelScale solved least squares on every call), and what Griffin-Lim starts
    from: random phases and the STFT (see the module docstring for the iterations themselves)."""
    p = SpecParams()
    fe = MelFrontEnd(p)
    with fake_cuda():
        fe.to(CUDA)
        wave = torch.rand(2, p.samples(32), device=CUDA) * 2 - 1
        with OpLog() as log:
            mel = fe(wave)
            linear = fe.linear_spectrogram(mel)
            phases = torch.rand(linear.shape, device=CUDA)
            spec = stft_magnitude(wave, p)
            rebuilt = fe.normalise(torch.matmul(fe.filterbank.T, linear))
        assert log.transfers == []
        assert mel.shape == rebuilt.shape == (2, p.n_mels, 32) and mel.device.type == "cuda"
        assert linear.shape == spec.shape == phases.shape == (2, p.n_fft // 2 + 1, 32)


def test_judge_and_evaluation_features_on_cuda():
    """What evaluation does on the device per batch: the judge's own front end (resampling, its
    log-mel standardised per band) and one network pass for features and logits, for clips as the
    RAM cache hands them over (CPU tensors) at any rate; training the judge needs backward."""
    from nmusic.evaluation.judge import Judge, JudgeNet, JudgeSpec, decide

    spec = JudgeSpec()
    torch.manual_seed(0)
    judge = Judge(JudgeNet(len(GENRES), spec.n_mels, 8), GENRES, spec)         # built on the CPU, as loaded
    wave = torch.rand(3, spec.samples()) - 0.5                                  # the CPU side
    other_rate = torch.rand(2, 2 * 22050) - 0.5
    with fake_cuda():
        judge.to(CUDA)
        assert judge.device.type == "cuda" and judge.front_end.mel.spectrogram.window.device.type == "cuda"
        with OpLog() as log:
            feats, logits = judge.embed(wave, spec.sample_rate)
        assert feats.shape == (3, 128) and logits.shape == (3, 3) and feats.device.type == "cpu"
        assert [t.split()[1:4] for t in log.transfers] == [["cpu", "->", "cuda:0"]] + \
            [["cuda:0", "->", "cpu"], ["cpu", "->", "cuda:0"], ["cuda:0", "->", "cpu"]], \
            "clips in; features out, back in for the head, logits out (Judge.embed, once per batch)"
        feats, logits = judge.embed(other_rate, 22050)                          # resampled on the device
        assert feats.shape == (2, 128) and decide(logits).shape == (2,)