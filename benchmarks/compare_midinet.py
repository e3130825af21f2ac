"""MidiNet-style (notes) vs cMelGAN vs MelNet (Mel spectrograms) at equal CPU training time, judged alike.

The budget is CPU time, on one thread (``OMP_NUM_THREADS=1``), so that a machine shared with other jobs
gives every model the same amount of computation: each model is first trained for two short step
counts in a scratch run, the CPU seconds a step costs are the difference of the two (start-up and
imports cancel out), and the model is then trained for the fixed step count the budget buys at that
speed (``steps = budget / cpu_seconds_per_step``). All three train on the same embedded dataset (the
audio and the MIDI files the synthesiser wrote beside it; same held-out songs), then ``nmusic
evaluate`` judges them together: generated audio -> log-mel -> Griffin-Lim -> the two judges
(accuracy), FD against its floor, copies flagged. Finally the wall and CPU seconds each model takes to
generate 10 s of audio (MelNet and MidiNet in one go; cMelGAN as consecutive 2 s clips). The three models train side by
side, each in its own single-thread process.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/compare_midinet.py --out compare --budget 300

writes ``compare/comparison.json`` and ``compare/comparison.md`` (and the evaluation in ``compare/eval``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODELS = ("midinet", "cmelgan", "melnet")


def cpu_of(cmd: list[str], log: Path) -> float:
    """CPU seconds (user + system) a child command uses (its own rusage, so commands may run side by
    side); its output goes to ``log``."""
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return usage.ru_utime + usage.ru_stime


def train_cmd(model: str, cache: Path, run: Path, steps: int, seed: int) -> list[str]:
    return [sys.executable, "-m", "nmusic", "train", model, "--cache", str(cache), "--run", str(run), "--preset", "tiny",
            "--steps", str(steps), "--seed", str(seed), "--device", "cpu", "--set", "sample_every=0",
            "--set", "log_every=50"]


def generation_seconds(run: Path, seconds: float = 10.0) -> dict:
    """Wall and CPU seconds to make ``seconds`` of audio with the run (one clip, after loading)."""
    import torch

    from nmusic.generate import invert
    from nmusic.frontend import MelFrontEnd
    from nmusic.training.runs import load_run
    recipe, _ = load_run(run, device="cpu")
    g = torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    genre = torch.tensor([0])
    if recipe.name == "midinet":
        recipe.sample_audio(genre, seconds, g)
    else:
        fe = MelFrontEnd(recipe.spec)
        if recipe.name == "melnet":
            mel = recipe.sample(genre, generator=g, n_frames=recipe.spec.frames(round(seconds * recipe.spec.sample_rate)))
        else:   # a fixed-length generator: consecutive clips
            clip_s = recipe.spec.samples(recipe.config.clip_frames) / recipe.spec.sample_rate
            mel = torch.cat([recipe.sample(genre, generator=g) for _ in range(math.ceil(seconds / clip_s))], -1)
        invert(mel, fe)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="compare")
    p.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per model")
    p.add_argument("--files", type=int, default=16, help="embedded files per genre (as nmusic demo)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each embedded file")
    p.add_argument("--calibrate", type=int, nargs=2, default=(10, 60), help="the two short step counts")
    p.add_argument("--n", type=int, default=32, help="generated clips per genre for nmusic evaluate")
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("set OMP_NUM_THREADS=1 (and MKL_NUM_THREADS=1): the budget is single-thread CPU time", file=sys.stderr)
        return 2
    import torch
    torch.set_num_threads(1)
    from nmusic.data.embedded import prepare_embedded

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "data" / "cache.pt"
    if not cache.is_file():
        prepare_embedded(out, a.files, a.seconds, 16000, seed=a.seed)
    def train(model: str) -> dict:
        done = out / f"{model}.train.json"          # a rerun of the script only evaluates again
        if done.is_file():
            return json.loads(done.read_text())
        log = out / f"{model}.log"
        lo, hi = a.calibrate
        scratch = out / "calibrate" / model
        c_lo = cpu_of(train_cmd(model, cache, scratch / "a", lo, a.seed), log)
        c_hi = cpu_of(train_cmd(model, cache, scratch / "b", hi, a.seed), log)
        per_step = (c_hi - c_lo) / (hi - lo)
        if per_step <= 0.02 * c_hi / hi:   # the step count's cost drowned in start-up noise: calibrate longer
            raise RuntimeError(f"{model}: {lo} and {hi} steps cost {c_lo:.1f} and {c_hi:.1f} CPU s; pass a wider "
                               f"--calibrate")
        steps = max(int(a.budget / per_step), 1)
        run = out / "runs" / f"{model}-tiny"
        t0 = time.perf_counter()
        cpu = cpu_of(train_cmd(model, cache, run, steps, a.seed), log)
        result = {"cpu_s_per_step": per_step, "steps": steps, "train_cpu_s": cpu,
                  "train_wall_s": time.perf_counter() - t0, "run": str(run)}
        done.write_text(json.dumps(result))
        print(json.dumps({model: result}), flush=True)
        return result

    # The models train side by side, each in its own single-thread process: CPU time is what is budgeted.
    with ThreadPoolExecutor(len(a.models)) as pool:
        results = dict(zip(a.models, pool.map(train, a.models)))
    runs = [results[m]["run"] for m in a.models]
    subprocess.run([sys.executable, "-m", "nmusic", "evaluate", *runs, "--out", str(out / "eval"), "--n", str(a.n),
                    "--device", "cpu"], check=True)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    for r in metrics["runs"]:
        model = r["model"]
        results[model].update(
            accuracy=r["accuracy_generated"]["accuracy"], accuracy_features=r["accuracy_generated_features"]["accuracy"],
            ceiling=r["accuracy_ceiling"]["accuracy"], fd=r["fd"], fd_floor=r["fd_floor"],
            copies=r["originality"]["flagged"], n_generated=r["n_generated"], clip_seconds=r["clip_seconds"],
            train_khz=r["train_khz"], params=r["params"], **{f"gen10_{k}": v for k, v in
                                                             generation_seconds(Path(r["run_dir"])).items()})
    (out / "comparison.json").write_text(json.dumps(results, indent=1))
    rows = ["| | " + " | ".join(a.models) + " |", "| --- |" + " --- |" * len(a.models)]

    def row(name, fmt):
        rows.append(f"| {name} | " + " | ".join(fmt(results[m]) for m in a.models) + " |")
    row("parameters", lambda r: f"{r['params']:,}")
    row(f"training steps ({a.budget:g} CPU s, 1 thread)", lambda r: f"{r['steps']:,} ({r['cpu_s_per_step']:.3f} s/step)")
    row("training throughput (kHz of audio per s)", lambda r: f"{r['train_khz']:,.0f}")
    row("genre accuracy, network judge (ceiling)", lambda r: f"{100 * r['accuracy']:.0f}% ({100 * r['ceiling']:.0f}%)")
    row("genre accuracy, feature judge", lambda r: f"{100 * r['accuracy_features']:.0f}%")
    row("FD (floor)", lambda r: f"{r['fd']:.1f} ({r['fd_floor']:.1f})")
    row("copies flagged", lambda r: f"{r['copies']} / {r['n_generated']}")
    row("seconds to generate 10 s (CPU s)", lambda r: f"{r['gen10_wall_s']:.1f} ({r['gen10_cpu_s']:.1f})")
    (out / "comparison.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
