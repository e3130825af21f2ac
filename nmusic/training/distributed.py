"""Multi-GPU training with DDP: the few collective steps the trainer takes, each a plain function.

A run launched by ``torchrun`` has one process per GPU (its *rank*); each trains on its own batches
and DDP averages the gradients. Only rank 0 writes files. Every decision that changes the control
flow (stop for time, stop on divergence, write ``best.pt``) is taken by all ranks together, or one
rank would wait forever for the others. With one process every function here is a no-op.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets (0, 1, 0 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)))


def start_process_group(device: torch.device, world_size: int) -> bool:
    """Join the ranks of a ``torchrun`` launch (NCCL on GPUs, Gloo on CPUs); returns whether this call
    started the process group (and so must end it, :func:`end_process_group`)."""
    if world_size <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    return True


def end_process_group() -> None:
    dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device, world_size: int) -> bool:
    """True on every rank when it is true on any rank (one all-reduce)."""
    if world_size == 1:
        return flag
    flags = torch.tensor([float(flag)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0])


def from_rank0(value, world_size: int):
    """Rank 0's ``value`` on every rank."""
    if world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, world_size: int) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if world_size == 1:
        return [value]
    values = [None] * world_size
    dist.all_gather_object(values, value)
    return values


def wrap_for_training(module: torch.nn.Module, device: torch.device, world_size: int, compile: bool,
                      compile_backend: str = "inductor") -> torch.nn.Module:
    """``module`` in DDP (when distributed), then ``torch.compile`` (when asked for)."""
    if world_size > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        module = torch.compile(module, backend=compile_backend)
    return module
