"""``nmusic bench``: every benchmark of one device in one run, a JSON file and a printed table."""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import torch

from ..device import configure_cuda, resolve_amp, resolve_device
from ..errors import ConfigError
from ..frontend import spec_preset
from ..models import registry
from .data_speed import bench_data
from .sampling_speed import bench_sample_cmelgan, bench_sample_melnet
from .training_speed import bench_train, check_cases

#: The paper's own Table 1 figures on a P100 (kHz), for the printed table.
PAPER_P100_KHZ = {("melnet", "paper-small"): 307.0, ("melnet", "paper-large"): 75.0,
                  ("cmelgan", "paper-small"): 980.0, ("cmelgan", "paper-large"): 705.0}


QUICK = {"presets": {"melnet": ["tiny"], "cmelgan": ["tiny"]}, "steps": 1, "warmup": 1, "sample_seconds": 0.1,
         "data_files": 1, "data_seconds": 3.0}
#: Full run: the paper's configurations; cMelGAN also with the paper's own objective (``*-original``: BCE,
#: concat conditioning, no spectral norm / feature matching), which is what the reference ran.
FULL = {"presets": {"melnet": ["paper-small", "paper-large"],
                    "cmelgan": ["paper-small", "paper-large", "paper-small-original", "paper-large-original"]},
        "steps": 3, "warmup": 1, "sample_seconds": 5.0, "data_files": 4, "data_seconds": 30.0}


# --- the whole run -----------------------------------------------------------------------------------
def run_bench(out: str | os.PathLike | None = "bench.json", quick: bool = False, device: str = "auto",
              models: list[str] | None = None, presets: list[str] | None = None, amp: str | list[str] = "auto",
              compile: bool = False, steps: int | None = None, sample_seconds: float | None = None,
              sections: list[str] | None = None, threads: int | None = None, naive: bool = True,
              sample_batch: int = 1, print_table: bool = True) -> dict:
    """Run the benchmarks, print a table, write JSON to ``out`` (after every case); returns the results.

    ``models``: "melnet", "cmelgan" (default both); ``presets``: default tiny with ``quick``, else
    paper-small and paper-large; ``amp``: one or more of "auto" (what ``nmusic train`` picks for the
    model on this device, :func:`nmusic.training.trainer.resolve_amp`), "none" (fp32), "bf16", "fp16": training
    is measured once per precision;
    ``sections``: any of "train", "sample", "data"; ``naive=False`` skips the per-frame re-run
    sampling baseline (minutes at paper sizes); ``sample_batch``: MelNet clips sampled at once.
    """
    mode = QUICK if quick else FULL
    if sample_batch < 1:
        raise ConfigError(f"bench: sample_batch must be at least 1 (got {sample_batch})")
    dev = resolve_device(device)
    if dev.type == "cuda":
        configure_cuda()                       # what the trainer does: cuDNN autotuning, TF32
    if threads:
        torch.set_num_threads(threads)
    asked = [amp] if isinstance(amp, str) else list(amp)

    def amps_for(model: str) -> list[str]:
        """The precisions to measure for ``model``, "auto" resolved as the trainer resolves it."""
        out = []
        for a in asked:
            try:
                a = resolve_amp(a, dev, registry()[model][1])
            except ConfigError as e:
                raise ConfigError(f"bench: {e}") from None
            out += [a] if a not in out else []
        return out

    amps = sorted({a for m in (models or ["melnet", "cmelgan"]) if m in registry() for a in amps_for(m)})
    models = models or ["melnet", "cmelgan"]
    sections = sections or ["train", "sample", "data"]
    unknown = set(sections) - {"train", "sample", "data"}
    if unknown:
        raise ConfigError(f"bench: unknown section(s) {sorted(unknown)}; choose from train, sample, data")
    if presets:     # the given presets of every model that has them
        reg = registry()
        cases = [(m, p) for m in models for p in presets if m not in reg or p in reg[m][0]]
        check_cases(cases or [(models[0], presets[0])])
    else:
        cases = [(m, p) for m in models for p in mode["presets"].get(m, [])]
        check_cases(cases or [(m, "tiny") for m in models])
    result = {"meta": _meta(dev, amps, quick), "train": [], "sample": [], "data": None}

    def save():
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(result, indent=2, default=str))

    if "train" in sections:
        for m, p in cases:
            for a in amps_for(m):
                result["train"].append(bench_train(m, p, dev, a, compile, steps or mode["steps"], mode["warmup"]))
                save()
    if "sample" in sections:
        mel_presets = [p for m, p in cases if m == "melnet"]
        for m, p in cases:
            if m == "melnet":   # the per-frame baseline once: at paper-small, or the first preset
                baseline = naive and p == ("paper-small" if "paper-small" in mel_presets else mel_presets[0])
                result["sample"].append(bench_sample_melnet(p, dev, sample_seconds or mode["sample_seconds"],
                                                            naive_frame=baseline, naive_element=quick and naive,
                                                            batch=sample_batch))
            else:
                result["sample"].append(bench_sample_cmelgan(p, dev, amps_for(m)[0]))
            save()
    if "data" in sections:
        result["data"] = _bench_data_for(cases, result["train"], dev, mode)
    result["meta"]["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    save()
    if print_table:
        print(format_table(result))
    return result


def _bench_data_for(cases, train_rows, dev, mode) -> dict:
    reg = registry()
    geos, rates = [], []
    step_s = {}
    for r in train_rows:          # the first precision measured
        step_s.setdefault((r["model"], r["preset"]), r["step_s"])
    seen = set()
    for m, p in cases:
        cfg = reg[m][0][p]
        spec = spec_preset(cfg.spec)
        if (m, spec, cfg.clip_frames, cfg.batch_size) in seen:    # e.g. the *-original presets: same batches
            continue
        seen.add((m, spec, cfg.clip_frames, cfg.batch_size))
        rates.append(spec.sample_rate)
        geos.append({"name": f"{m} {p}", "spec": spec, "clip_samples": spec.samples(cfg.clip_frames),
                     "batch": cfg.batch_size, "step_s": step_s.get((m, p))})
    rate = max(set(rates), key=rates.count)
    return bench_data(rate, [g for g, r in zip(geos, rates) if r == rate], dev, mode["data_files"],
                      mode["data_seconds"], batches=3 if mode is QUICK else 10)


def _meta(dev: torch.device, amp: list[str], quick: bool) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1).strip()
    except (OSError, AttributeError):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": quick, "device": str(dev), "load_avg_start": load,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "amp": amp,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
            "torch": torch.__version__, "python": platform.python_version()}


# --- printing ----------------------------------------------------------------------------------------
def _f(x, fmt="{:.3g}") -> str:
    return "-" if x is None else fmt.format(x)


def format_table(result: dict) -> str:
    """The result dict as plain-text tables."""
    meta = result["meta"]
    lines = [f"nmusic bench on {meta['device']} ({meta['device_name']}, {meta['threads']} threads), "
             f"torch {meta['torch']}"]
    load = meta.get("load_avg_start")
    if meta["device"] == "cpu" and load and load[0] > 0.5 * (meta["cpu_count"] or 1):
        lines.append(f"note: the machine was busy (load average {load[0]:.1f} on {meta['cpu_count']} cores): "
                     "CPU figures are pessimistic; with other work on the cores, --threads 1 avoids stalls")
    if result["train"]:
        lines += ["", "training (kHz of audio per second; reference: the paper code on a 2-core CPU; "
                  "others: cores other processes kept busy meanwhile)",
                  f"{'model':8} {'preset':21} {'amp':4} {'batch':>5} {'clip s':>6} {'s/step':>8} {'kHz':>8} {'ref kHz':>8} "
                  f"{'x ref':>6} {'goal':>5} {'peak MB':>8} {'GFLOP/step':>10} {'GFLOP/s':>8} {'%peak':>6} {'others':>6}"]
        for r in result["train"]:
            ref = r.get("reference") or {}
            lines.append(
                f"{r['model']:8} {r['preset']:21} {r['amp']:4} {r['batch']:>5} {r['clip_seconds']:>6.2f} {r['step_s']:>8.3f} "
                f"{r['khz']:>8.1f} {_f(ref.get('khz'), '{:.1f}'):>8} {_f(r.get('speedup_vs_reference'), '{:.2f}'):>6} "
                f"{_f(ref.get('goal_speedup'), '{:g}'):>5} {r['peak_mem_mb']:>8.0f} {r['flops_per_step'] / 1e9:>10.1f} "
                f"{r['flops_per_s'] / 1e9:>8.1f} {_f(r['peak_fraction'] and 100 * r['peak_fraction'], '{:.1f}'):>6} "
                f"{_f(r.get('other_processes_cores'), '{:.2f}'):>6}")
    if result["sample"]:
        lines += ["", "sampling (seconds of audio per second; spectrograms, vocoder not included)",
                  f"{'model':8} {'preset':22} {'batch':>5} {'method':10} {'audio s':>8} {'wall s':>9} {'audio s/s':>10} "
                  f"{'GFLOP':>9} {'GFLOP/s':>8} {'cached x faster':>15} {'FLOP ratio':>10}"]
        for r in result["sample"]:
            for name, m in r["methods"].items():
                sp = r.get("speedup", {}).get(name)
                note = "" if m["measured"] else " (extrapolated)"
                lines.append(f"{r['model']:8} {r['preset']:22} {r.get('batch', ''):>5} {name:10} {r['audio_seconds']:>8.2f} "
                             f"{m['seconds']:>9.2f} {m['audio_s_per_s']:>10.3g} {_f(m.get('gflop'), '{:.1f}'):>9} "
                             f"{_f(m.get('gflop_per_s'), '{:.1f}'):>8} {_f(sp, '{:.1f}'):>15} "
                             f"{_f(r.get('flop_ratio', {}).get(name), '{:.1f}'):>10}{note}")
    d = result.get("data")
    if d:
        lines += ["", f"data: decode + resample to {d['sample_rate']} Hz: {d['decode_resample_hours_per_min']:.2f} "
                  f"hours of audio per minute ({d['files']} files, {d['audio_hours'] * 60:.1f} min in {d['prepare_s']:.1f} s)",
                  f"{'loader':28} {'batch':>5} {'clip s':>6} {'RAM+mel b/s':>11} {'disk b/s':>9} {'RAM/disk':>8} "
                  f"{'train steps/s':>13} {'loader share':>12}"]
        for r in d["loaders"]:
            lines.append(f"{r['name']:28} {r['batch']:>5} {r['clip_seconds']:>6.2f} {r['ram_batches_per_s']:>11.1f} "
                         f"{r['disk_batches_per_s']:>9.2f} {r['ram_vs_disk']:>8.1f} "
                         f"{_f(r.get('train_steps_per_s')):>13} {_f(r.get('loader_share_of_step'), '{:.1%}'):>12}")
    return "\n".join(lines)
