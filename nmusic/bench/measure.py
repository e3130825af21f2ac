"""How the benchmarks measure: FLOPs (the fused RNN kernels included), peak TFLOP/s of known GPUs,
timings with the device synchronised, peak memory, and the load other processes put on the machine.
"""
from __future__ import annotations

import contextlib
import os
import re
import resource
import time

import torch

#: Dense peak TFLOP/s of known GPUs by precision (tf32 = fp32 matmuls/convs on tensor cores).
PEAK_TFLOPS = [
    (r"H200|H100.*(SXM|HBM3)|H100$", {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67}),
    (r"H100", {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51}),    # PCIe
    (r"A100", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    (r"\bL4\b", {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3}),
    (r"T4\b", {"fp16": 65, "fp32": 8.1}),
    (r"V100", {"fp16": 125, "fp32": 15.7}),
    (r"P100", {"fp16": 18.7, "fp32": 9.3}),
]


def _rnn_forward_flops(input_shape, weight_shapes) -> int:
    """``2 x rows x sum(w.numel())`` over the 2-D weights: every input row meets every matrix once."""
    rows = 1
    for n in input_shape[:-1]:
        rows *= n
    return 2 * rows * sum(s[0] * s[1] for s in weight_shapes if s is not None and len(s) == 2)


def _mkldnn_rnn(input, w0, w1, *args, out_shape=None, **kwargs) -> int:
    return _rnn_forward_flops(input, [w0, w1])


def _mkldnn_rnn_backward(input, w1, w2, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_forward_flops(input, [w1, w2])       # input grads + weight grads


def _cudnn_rnn(input, weights, *args, out_shape=None, **kwargs) -> int:
    return _rnn_forward_flops(input, weights)


def _cudnn_rnn_backward(input, weights, *args, out_shape=None, **kwargs) -> int:
    mask = args[-1] if args else kwargs.get("output_mask", (True, True, True, True))
    return (2 if mask[3] else 1) * _rnn_forward_flops(input, weights)


#: FLOP formulas for the fused RNN kernels (oneDNN on CPU, cuDNN on CUDA) that FlopCounterMode
#: does not count on its own; the unfused paths (cells, GRU on CPU) are matmuls it counts already.
RNN_FLOPS = {torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn,
             torch.ops.aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_backward,
             torch.ops.aten._cudnn_rnn: _cudnn_rnn,
             torch.ops.aten._cudnn_rnn_backward: _cudnn_rnn_backward}


def peak_tflops(device: torch.device, amp: str) -> float | None:
    """Dense peak TFLOP/s of ``device`` at the precision of ``amp`` (``None`` when unknown or a CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if amp != "none":
        key = amp
    else:
        key = "tf32" if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 else "fp32"
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, name):
            return peaks.get(key, peaks.get("fp32") if key == "tf32" else None)
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_peak_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict that holds ``peak_mem_mb`` and ``peak_mem_kind`` after the block.

    CUDA: the allocator's peak. CPU: the process's peak RSS during the block (Linux resets it through
    ``/proc/self/clear_refs``); elsewhere the peak since the process started.
    """
    out: dict = {}
    kind = "cuda_allocated"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        kind = "process_peak_rss_since_start"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            kind = "process_peak_rss"
        except OSError:
            pass
    try:
        yield out
    finally:
        if device.type == "cuda":
            mb = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            kb = _rss_peak_kb()
            mb = (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        out.update(peak_mem_mb=round(mb, 1), peak_mem_kind=kind)


class OtherLoad:
    """How many cores other processes kept busy while a block ran (Linux ``/proc/stat``; else ``None``).

    Benchmarks on a shared machine are only as good as this is small: record it with every figure.
    """

    def __enter__(self):
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        self.cores = None
        if self.start and end:
            wall = end[2] - self.start[2]
            self.cores = max(0.0, ((end[0] - self.start[0]) - (end[1] - self.start[1])) / max(wall, 1e-9))

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")   # all but idle, iowait
        t = os.times()
        return busy, t.user + t.system, time.perf_counter()


def run_timed(fn, device: torch.device):
    """``(fn(), seconds)``, with the device synchronised on both ends."""
    sync(device)
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    return value, time.perf_counter() - t0


def timed(fn, device: torch.device) -> float:
    return run_timed(fn, device)[1]
