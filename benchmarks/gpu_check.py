"""The GPU route, checked on a real GPU in one command (about 8 minutes on one GPU).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu-check      # on a CUDA GPU
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check           # the same plumbing on a CPU, tiny

What it runs, each part with its own time cap (a part that runs out of time says so), and what it
writes: ``gpu-check.json`` (everything measured) and ``gpu-check.md`` (the report) in ``--out``:

1. ``cuda-tests``: the tests marked ``cuda`` (``tests/test_cuda.py``: CUDA against CPU numbers,
   each precision's training step, the fp16 grad scaler, cuDNN RNNs under autocast);
2. ``train``: ``paper-small`` of both models for 100+ steps in each precision (fp32, bf16, fp16; a
   precision the GPU does not have natively is reported as such): finite losses, and whether they
   fall (MelNet: training NLL, first against last tenth; cMelGAN: the validation statistic);
3. ``resume``: ``nmusic train melnet`` on the GPU killed with SIGKILL after a checkpoint and run
   again, against an uninterrupted run, with deterministic kernels (``--set deterministic=true``):
   the losses must be equal (a relative difference under 1e-4 is reported as such: a kernel torch
   has no deterministic version of). MelNet, because cMelGAN's reflection padding has no
   deterministic backward on CUDA;
4. ``sampling``: cached MelNet sampling of ``paper-small`` on the GPU and on the CPU, in seconds of
   audio per second: the per-bin loop is launch-bound, so the faster one is named;
5. ``inversion``: Griffin-Lim on the GPU and on the CPU (time, and the round trip's spectral
   convergence on both);
6. ``bench``: ``nmusic bench --device cuda --sections train`` at the paper presets, kHz next to the
   paper's P100 figures and the fraction of the GPU's peak.

``--dry-run`` runs every part on the CPU at toy sizes in well under a minute, so the check itself is
tested without a GPU (``tests/test_gpu_check.py``); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nmusic.errors import ConfigError  # noqa: E402

FULL = {"budget_s": 480, "models": {"melnet": "paper-small", "cmelgan": "paper-small"}, "steps": 120,
        "train_cap_s": 45, "amps": ["none", "bf16", "fp16"], "resume_steps": 24, "sample_seconds": 2.0,
        "gl_batch": 4, "bench_presets": ["paper-small", "paper-large"], "bench_steps": 3}
DRY = {"budget_s": 240, "models": {"melnet": "tiny", "cmelgan": "tiny"}, "steps": 4, "train_cap_s": 20,
       "amps": ["none", "bf16"], "resume_steps": 24, "sample_seconds": 0.1, "gl_batch": 1,
       "bench_presets": ["tiny"], "bench_steps": 1}
#: Overrides that make the dry run's models toy-sized (the check's plumbing, not its numbers).
DRY_OVERRIDES = {"melnet": {"batch_size": 2, "clip_frames": 16, "dim": 8, "layers": [1, 1, 1]},
                 "cmelgan": {"batch_size": 2, "clip_frames": 32}}


class Report:
    def __init__(self, out: Path, dry: bool, device: torch.device, budget_s: float):
        self.out, self.dry, self.device, self.budget_s = out, dry, device, budget_s
        self.started = time.monotonic()
        self.data = {"meta": meta(device, dry), "parts": {}}

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def part(self, name: str, fn, *args) -> None:
        """Run one part; record its status (ok / failed / skipped), seconds and results; never raise."""
        t0 = time.monotonic()
        if self.left_s() <= 0:
            entry = {"status": "skipped", "why": "the check's time budget ran out"}
        else:
            try:
                entry = {"status": "ok", **fn(*args)}
            except Skip as e:
                entry = {"status": "skipped", "why": str(e)}
            except Exception as e:  # noqa: BLE001 - reported, the other parts still run
                entry = {"status": "failed", "error": f"{type(e).__name__}: {str(e).strip()[:2000]}"}
        entry["seconds"] = round(time.monotonic() - t0, 1)
        self.data["parts"][name] = entry
        print(f"[gpu-check] {name}: {entry['status']} ({entry['seconds']} s)", flush=True)
        self.save()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu-check.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        (self.out / "gpu-check.md").write_text(markdown(self.data))


class Skip(Exception):
    """A part that cannot run here (no GPU for the cuda tests, a precision the GPU lacks)."""


def meta(device: torch.device, dry: bool) -> dict:
    gpu = device.type == "cuda"
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "dry_run": dry, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if gpu else platform.processor() or platform.machine(),
            "capability": list(torch.cuda.get_device_capability(device)) if gpu else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version()}


# --- the parts ----------------------------------------------------------------------------------------
def cuda_tests(report: Report) -> dict:
    xml = report.out / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-o", "addopts=",
           str(ROOT / "tests" / "test_cuda.py"), f"--junitxml={xml}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(60, report.left_s()))
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
    if counts["tests"] and counts["skipped"] == counts["tests"]:
        raise Skip(f"all {counts['tests']} cuda tests skipped: no CUDA GPU here")
    if failed:
        raise RuntimeError(f"cuda tests failed: {failed}\n{r.stdout[-3000:]}")
    return {"counts": counts, "returncode": r.returncode}


def _cache(tmp: Path, sample_rate: int, seconds: float) -> Path:
    from nmusic.data.embedded import synthetic_cache
    path = tmp / f"cache-{sample_rate}.pt"
    if not path.exists():
        cache = synthetic_cache(sample_rate, seconds, files_per_genre=2)
        cache.save(path)
    return path


def _config(model: str, preset: str, dry: bool):
    from nmusic.config import resolve
    from nmusic.models import registry
    return resolve(registry()[model][0], preset, DRY_OVERRIDES[model] if dry else {})


def train(report: Report, cfg: dict, tmp: Path) -> dict:
    """Each model's preset in each precision: ``steps`` steps (or the time cap), losses checked."""
    from nmusic.device import resolve_amp
    from nmusic.frontend import spec_preset
    from nmusic.models import registry
    from nmusic.training.runs import train_model
    rows = []
    for model, preset in cfg["models"].items():
        mcfg = _config(model, preset, report.dry)
        spec = spec_preset(mcfg.spec)
        cache = _cache(tmp, spec.sample_rate, spec.seconds(mcfg.clip_frames) * 2 + 2)
        for amp in cfg["amps"]:
            row = {"model": model, "preset": preset, "amp": amp}
            rows.append(row)
            try:
                resolve_amp(amp, report.device, registry()[model][1])
            except ConfigError as e:
                row.update(status="not on this device", why=str(e))
                continue
            steps = cfg["steps"]
            overrides = dict(log_every=1, ckpt_every=0, sample_every=0, keep_last=1,
                             val_every=steps // 2 if model == "cmelgan" else 0)
            summary = train_model(model, preset, mcfg, cache, tmp / f"run-{model}-{amp}", steps=steps,
                                  time_budget_s=min(cfg["train_cap_s"], max(report.left_s() - 60, 5)),
                                  device=str(report.device), amp=amp, progress=False, train_overrides=overrides)
            hist = json.loads((tmp / f"run-{model}-{amp}" / "history.json").read_text())
            train_rows = [h for h in hist if h["split"] == "train"]
            key = "nll" if model == "melnet" else "g_loss"
            values = [h[key] for h in train_rows if key in h]
            tenth = max(1, len(values) // 10)
            first, last = sum(values[:tenth]) / tenth, sum(values[-tenth:]) / tenth
            finite = all(math.isfinite(v) for h in train_rows for k, v in h.items() if isinstance(v, float))
            row.update(status="ok" if finite else "NOT FINITE", steps=summary["steps"], khz=round(summary["train_khz"], 1),
                       skipped_steps=sum(h.get("skipped_steps", 0) for h in train_rows),
                       first=round(first, 4), last=round(last, 4))
            if model == "melnet":
                row.update(metric="train NLL", falling=last < first)
            else:           # a GAN's losses need not fall: its validation statistic (lower is better) should
                val = [h["val_stat_distance"] for h in hist if h["split"] == "val"]
                row.update(metric="val stat_distance", g_loss_first_last=[row["first"], row["last"]],
                           first=round(val[0], 4) if val else None, last=round(val[-1], 4) if val else None,
                           falling=len(val) >= 2 and val[-1] < val[0])
    bad = [r for r in rows if r.get("status") not in ("ok", "not on this device")]
    if bad:
        raise RuntimeError(f"training not finite: {bad}")
    return {"rows": rows}


def _train_cmd(cache: Path, run: Path, steps: int, device: torch.device) -> list[str]:
    return [sys.executable, "-m", "nmusic", "train", "melnet", "--cache", str(cache), "--run", str(run),
            "--device", str(device), "--seed", "3", "--steps", str(steps), "--set", "batch_size=2",
            "--set", "clip_frames=16", "--set", "log_every=1", "--set", "ckpt_every=4", "--set", "val_every=0",
            "--set", "sample_every=0", "--set", "deterministic=true"]


def resume(report: Report, cfg: dict, tmp: Path) -> dict:
    """SIGKILL after a checkpoint, run again: the same losses as a run never killed."""
    cache = _cache(tmp, 16000, 6.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    steps = cfg["resume_steps"]
    ref, run = tmp / "resume-ref", tmp / "resume-run"
    reference = subprocess.Popen(_train_cmd(cache, ref, steps, report.device), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_train_cmd(cache, run, steps, report.device), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "ckpt-00000008.pt").exists():
        if victim.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the run to kill wrote no checkpoint: {victim.communicate()[1][-2000:]}")
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = json.loads((run / "history.json").read_text())[-1]["step"]
    if reference.wait(timeout=300) != 0:
        raise RuntimeError(reference.communicate()[1][-2000:])
    again = subprocess.run(_train_cmd(cache, run, steps, report.device), env=env, capture_output=True, text=True,
                           timeout=300)
    if again.returncode != 0:
        raise RuntimeError(again.stderr[-2000:])

    def losses(path):
        return [{k: v for k, v in h.items() if k not in ("elapsed_s", "steps_per_s")}
                for h in json.loads((path / "history.json").read_text())]

    a, b = losses(ref), losses(run)
    if [sorted(x) for x in a] != [sorted(y) for y in b]:
        raise RuntimeError(f"killed at step {killed_at} and resumed: not the same log entries as the uninterrupted run")
    rel = max((abs(x[k] - y[k]) / max(abs(x[k]), 1e-12) for x, y in zip(a, b) for k in x
               if isinstance(x[k], float)), default=0.0)
    if rel > 1e-4:
        raise RuntimeError(f"killed at step {killed_at} and resumed: losses differ from the uninterrupted run "
                           f"(max relative difference {rel:.3g})")
    return {"killed_after_step": killed_at, "steps": steps, "equal": a == b, "max_relative_difference": rel}


def sampling(report: Report, cfg: dict) -> dict:
    """Cached MelNet sampling, seconds of audio per second, on this device and on the CPU."""
    from nmusic.bench.sampling_speed import bench_sample_melnet
    preset = cfg["models"]["melnet"]
    rows = {}
    for dev in dict.fromkeys([report.device, torch.device("cpu")]):
        r = bench_sample_melnet(preset, dev, cfg["sample_seconds"], naive_frame=False)
        rows[str(dev)] = {"audio_s_per_s": r["methods"]["cached"]["audio_s_per_s"],
                          "seconds": r["methods"]["cached"]["seconds"], "audio_seconds": r["audio_seconds"]}
    best = max(rows, key=lambda d: rows[d]["audio_s_per_s"])
    return {"preset": preset, "devices": rows, "faster": best}


def inversion(report: Report, cfg: dict) -> dict:
    """Griffin-Lim round trip of real-like audio on this device and on the CPU."""
    from nmusic.data.embedded import synthetic_cache
    from nmusic.frontend import MelFrontEnd, griffin_lim_upper_bound, spec_preset
    spec = spec_preset("melnet-paper")
    cache = synthetic_cache(spec.sample_rate, 4.0)
    wave = torch.stack([cache.file(i)[: spec.sample_rate * 3] for i in range(cfg["gl_batch"])]
                       if cfg["gl_batch"] <= len(cache) else [cache.file(0)[: spec.sample_rate * 3]])
    rows = {}
    for dev in dict.fromkeys([report.device, torch.device("cpu")]):
        fe = MelFrontEnd(spec).to(dev)
        torch.manual_seed(0)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        out = griffin_lim_upper_bound(wave.to(dev), fe)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        rows[str(dev)] = {"seconds": round(time.perf_counter() - t0, 3),
                          "spectral_convergence_db": round(out["spectral_convergence_db"], 2),
                          "mel_spectral_convergence_db": round(out["mel_spectral_convergence_db"], 2)}
    return {"clips": len(wave), "clip_seconds": 3.0, "devices": rows}


def bench(report: Report, cfg: dict, tmp: Path) -> dict:
    """``nmusic bench --sections train`` at the paper presets (tiny in the dry run), amp auto."""
    from nmusic.bench.run import PAPER_P100_KHZ, run_bench
    result = run_bench(out=tmp / "bench.json", device=str(report.device), presets=cfg["bench_presets"],
                       sections=["train"], steps=cfg["bench_steps"], amp="auto", quick=report.dry, print_table=False)
    rows = [{"model": r["model"], "preset": r["preset"], "amp": r["amp"], "s_per_step": round(r["step_s"], 4),
             "khz": round(r["khz"], 1), "p100_khz": PAPER_P100_KHZ.get((r["model"], r["preset"])),
             "peak_fraction": r["peak_fraction"], "peak_mem_mb": r["peak_mem_mb"]} for r in result["train"]]
    return {"rows": rows}


# --- the report ---------------------------------------------------------------------------------------
def markdown(data: dict) -> str:
    m = data["meta"]
    lines = [f"# GPU check: {m['device_name']} ({m['device']})", "",
             f"torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, {m['time']}"
             + (" — **dry run on the CPU at toy sizes: the numbers mean nothing**" if m["dry_run"] else ""), "",
             "| part | status | seconds | note |", "| --- | --- | --- | --- |"]
    parts = data["parts"]
    for name, p in parts.items():
        note = p.get("why") or p.get("error", "").splitlines()[0][:160] if p["status"] != "ok" else ""
        lines.append(f"| {name} | {p['status']} | {p['seconds']} | {note} |")
    t = parts.get("train", {})
    if t.get("rows"):
        lines += ["", "## Training, each precision", "",
                  "| model | preset | amp | status | steps | kHz | skipped (fp16) | metric | first → last | falling |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in t["rows"]:
            lines.append(f"| {r['model']} | {r['preset']} | {r['amp']} | {r.get('status')} | {r.get('steps', '-')} | "
                         f"{r.get('khz', '-')} | {r.get('skipped_steps', '-')} | {r.get('metric', '-')} | "
                         f"{r.get('first', '-')} → {r.get('last', '-')} | {r.get('falling', '-')} |")
    s = parts.get("sampling", {})
    if s.get("devices"):
        lines += ["", f"## Cached MelNet sampling ({s['preset']})", "", "| device | audio s per s | wall s |",
                  "| --- | --- | --- |"]
        lines += [f"| {d} | {v['audio_s_per_s']:.3g} | {v['seconds']:.2f} |" for d, v in s["devices"].items()]
        lines += ["", f"Faster here: **{s['faster']}**."]
    i = parts.get("inversion", {})
    if i.get("devices"):
        lines += ["", f"## Griffin-Lim ({i['clips']} x {i['clip_seconds']} s)", "",
                  "| device | s | spectral convergence dB | mel SC dB |", "| --- | --- | --- | --- |"]
        lines += [f"| {d} | {v['seconds']} | {v['spectral_convergence_db']} | {v['mel_spectral_convergence_db']} |"
                  for d, v in i["devices"].items()]
    b = parts.get("bench", {})
    if b.get("rows"):
        lines += ["", "## Training speed (`nmusic bench`)", "",
                  "| model | preset | amp | s/step | kHz | paper's P100 kHz | % of peak | peak MB |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in b["rows"]:
            pf = f"{100 * r['peak_fraction']:.1f}" if r["peak_fraction"] else "-"
            lines.append(f"| {r['model']} | {r['preset']} | {r['amp']} | {r['s_per_step']} | {r['khz']} | "
                         f"{r['p100_khz'] or '-'} | {pf} | {r['peak_mem_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu-check"))
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU at toy sizes (tests the check)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole check (default 480; dry 240)")
    a = p.parse_args(argv)
    cfg = DRY if a.dry_run else FULL
    if a.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        print("gpu_check: no CUDA GPU here; run it on one, or use --dry-run", file=sys.stderr)
        return 2
    report = Report(Path(a.out), a.dry_run, device, a.budget or cfg["budget_s"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report.part("cuda-tests", cuda_tests, report)
        report.part("train", train, report, cfg, tmp)
        report.part("resume", resume, report, cfg, tmp)
        report.part("sampling", sampling, report, cfg)
        report.part("inversion", inversion, report, cfg)
        report.part("bench", bench, report, cfg, tmp)
    print(markdown(report.data))
    return 0 if all(p["status"] != "failed" for p in report.data["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
