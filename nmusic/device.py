"""Where and in which precision nmusic computes: the one device resolver, the training precision.

``"auto"`` is the GPU when there is one, everywhere: training, sampling, the judges, evaluation,
the notebooks' panels (:func:`resolve_device`). The training precision (:func:`resolve_amp`) is
what is safe and fast for the model on that GPU; :func:`configure_cuda` sets cuDNN and TF32 for
fixed-shape training.
"""
from __future__ import annotations

import os
import re

import torch

from .errors import ConfigError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)


def resolve_device(name="auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The one device resolver: ``"auto"`` is the GPU when there is one, else the CPU; ``"cuda"`` the
    current GPU (under DDP this process's ``local_rank``); ``"cpu"``, ``"cuda:N"`` or a ``torch.device``."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name == "cuda" or re.fullmatch(r"cuda:\d+", name or "")):
        raise ConfigError(f"device {name!r} is not one of 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use 'cpu' or 'auto'")
        if name == "cuda":
            return torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    return torch.device(name)


def bf16_native(device: torch.device) -> bool:
    """Whether the GPU computes bfloat16 in hardware (compute capability 8.0+: A100, L4, H100, ...).
    ``torch.cuda.is_bf16_supported()`` also says yes where it is only emulated (a T4)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_amp(amp: str, device: torch.device, recipe) -> str:
    """The training precision for ``amp`` ("auto", "none", "bf16", "fp16") of ``recipe`` (an instance
    or class; its ``recurrent`` flag matters) on ``device``; raises :class:`ConfigError` for a
    combination that would run but not safely.

    ``auto``: fp32 on a CPU. On CUDA, fp16 with the grad scaler for recurrent models (autocast runs
    cuDNN RNNs in fp16 whatever was asked, so fp16 with its scaler is the safe and fast choice), and
    for the others bf16 where the GPU has it natively, else fp16 with the scaler. Asked-for bf16 runs
    MelNet's RNNs outside autocast in fp32 (:func:`nmusic.models.melnet.layers.call_rnn`).
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp must be one of {list(AMP_CHOICES)} (got {amp!r})")
    cuda = device.type == "cuda"
    if amp == "auto":
        if not cuda:
            return "none"
        return "fp16" if getattr(recipe, "recurrent", False) or not bf16_native(device) else "bf16"
    if amp == "fp16" and not cuda:
        raise ConfigError("amp='fp16' needs a CUDA GPU (fp16 on a CPU is unsupported); use amp='auto', 'bf16' or "
                          "'none' on a CPU")
    if amp == "bf16" and cuda and not bf16_native(device):
        raise ConfigError(f"amp='bf16': {torch.cuda.get_device_name(device)} has no native bfloat16 (it would "
                          f"be emulated, slowly); use amp='auto' (fp16 with a grad scaler there) or 'none'")
    return amp


def configure_cuda(deterministic: bool = False) -> None:
    """Settings for fixed-shape training on CUDA: cuDNN picks its fastest kernels (autotuning), fp32
    matmuls and convolutions use TF32 tensor cores. ``deterministic``: reproducible kernels instead."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
