"""Device and precision choices: the GPU by default everywhere, and the training precision per model and GPU.

No GPU here: the GPUs' properties (compute capability, name) are given to the resolvers, which is
all they read; what runs on a GPU is in test_fake_cuda.py and in the GPU check.
"""
import inspect
import re
from pathlib import Path

import pytest
import torch

from nmusic.device import configure_cuda, resolve_amp, resolve_device
from nmusic.errors import ConfigError
from nmusic.models.cmelgan import CMelGANRecipe
from nmusic.models.melnet import MelNetRecipe
from nmusic.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
GPUS = {"T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "L4": (8, 9), "H100": (9, 0)}


@pytest.fixture
def gpu(monkeypatch):
    """Pretend the CUDA device is the named GPU (only its properties: nothing runs on it)."""
    def use(name):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: GPUS[name])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA {name}")
        return torch.device("cuda", 0)
    return use


@pytest.mark.parametrize("name", list(GPUS))
def test_auto_precision_per_model_and_gpu(gpu, name):
    """MelNet's cuDNN RNNs run in fp16 under any CUDA autocast, so fp16 with the grad scaler is the safe
    choice there; cMelGAN gets bf16 where the GPU has it natively, fp16 with the scaler elsewhere."""
    dev = gpu(name)
    native = GPUS[name] >= (8, 0)
    assert resolve_amp("auto", dev, MelNetRecipe) == "fp16"
    assert resolve_amp("auto", dev, CMelGANRecipe) == ("bf16" if native else "fp16")
    assert resolve_amp("none", dev, MelNetRecipe) == "none" and resolve_amp("fp16", dev, CMelGANRecipe) == "fp16"
    if native:
        assert resolve_amp("bf16", dev, MelNetRecipe) == "bf16"
    else:    # torch.cuda.is_bf16_supported() says yes on a T4: it counts emulation
        with pytest.raises(ConfigError, match=f"NVIDIA {name} has no native bfloat16.*amp='auto'"):
            resolve_amp("bf16", dev, CMelGANRecipe)


def test_auto_precision_on_a_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu, MelNetRecipe) == resolve_amp("auto", cpu, CMelGANRecipe) == "none"
    assert resolve_amp("bf16", cpu, MelNetRecipe) == "bf16"
    with pytest.raises(ConfigError, match="fp16.*needs a CUDA GPU"):
        resolve_amp("fp16", cpu, CMelGANRecipe)
    with pytest.raises(ConfigError, match="amp must be one of"):
        resolve_amp("fp8", cpu, CMelGANRecipe)
    assert TrainConfig().amp == "auto"


def test_auto_device_is_the_gpu_when_there_is_one(monkeypatch):
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0) == resolve_device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ConfigError, match="'gpu' is not one of"):
        resolve_device("gpu")


def test_every_entry_point_defaults_to_the_gpu():
    """Loading runs (notebooks 02-04), generating, evaluating, the panels, the demo and training all
    take ``device="auto"`` by default and resolve it with the one resolver."""
    from nmusic.evaluation.evaluate import evaluate_runs
    from nmusic.generate import generate
    from nmusic.interfaces.cli import build_parser
    from nmusic.interfaces.demo import run_demo
    from nmusic.interfaces.widgets import GeneratePanel
    from nmusic.training.runs import load_run, train_model

    for fn in (load_run, run_demo, evaluate_runs, generate, train_model, GeneratePanel.__init__):
        assert inspect.signature(fn).parameters["device"].default == "auto", fn.__qualname__
    assert TrainConfig().device == "auto"
    parser = build_parser()
    for command in ("train", "generate", "demo", "evaluate", "bench"):
        args = {"train": ["train", "cmelgan", "--cache", "c", "--run", "r"], "generate": ["generate", "r", "--genre", "g"],
                "evaluate": ["evaluate", "r", "--out", "o"]}.get(command, [command])
        assert parser.parse_args(args).device == "auto", command
    sources = " ".join(p.read_text() for p in (ROOT / "nmusic").rglob("*.py"))
    assert not re.search(r"torch\.device\(\"cuda\" if torch\.cuda\.is_available\(\)", sources), \
        "resolve 'auto' with nmusic.device.resolve_device, the one resolver"


def test_notebooks_use_the_gpu_when_there_is_one():
    """Training, the evaluation, loaded runs and the panels run on DEVICE (the GPU when there is one)."""
    for name in ("02_melnet.py", "03_cmelgan.py", "04_listen_compare.py"):
        text = (ROOT / "notebooks" / name).read_text()
        assert "DEVICE = resolve_device(\"auto\")" in text, name
        assert not re.search(r"device=\"cpu\"|torch\.cuda\.is_available\(\)", text), name
        for call in re.findall(r"(load_run\([^)]*\)|evaluate_runs\([^)]*\)|GeneratePanel\([^)]*\))", text, re.S):
            assert "device=DEVICE" in call, (name, call)


def test_cuda_settings_for_fixed_shapes():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        configure_cuda()
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and not torch.backends.cudnn.deterministic
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
         torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved
