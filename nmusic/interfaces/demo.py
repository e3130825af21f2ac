"""``nmusic demo``: the whole job on the embedded dataset, on a CPU, within 15 minutes.

embedded dataset (procedural classical/EDM/lofi) -> fetch -> manifest -> prepare -> train the
``tiny`` preset under a time budget (MelNet: tier 1 first, then the finer tiers) -> ``nmusic
evaluate`` on the run (the two judges, held to account by the trivial fakes; accuracy of the
generated audio against its ceilings; distances with their floors; originality) -> listening
samples per genre -> ``report.md`` + ``report.json`` (+ WAVs and PNGs) in the output folder.

The data goes through exactly the path a user's data does (real audio files in genre folders,
mixed formats and rates). Nothing is downloaded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import to_dict
from ..data.embedded import prepare_embedded
from ..device import resolve_device
from ..errors import NmusicError
from ..evaluation.evaluate import evaluate_runs
from ..evaluation.report import demo_markdown
from ..frontend import MelFrontEnd, spec_preset
from ..generate import sample_per_genre, write_clips
from ..models import registry
from ..training.runs import load_run, train_within
from ..utils.files import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class DemoBudget:
    files_per_genre: int
    seconds_per_file: float
    train_seconds: float
    judge_steps: int
    n_per_genre: int      # listening samples written per genre
    eval_per_genre: int   # clips per genre the judges score


#: Full demo: 8.5 min of training + ~6 min for data, judges, evaluation and samples on 2 CPU cores
#: (an AMD EPYC without AVX-512: 15 min in all; training the judge alone takes ~2 min there).
FULL = DemoBudget(files_per_genre=16, seconds_per_file=30.0, train_seconds=510.0, judge_steps=300,
                  n_per_genre=4, eval_per_genre=32)
QUICK = DemoBudget(files_per_genre=3, seconds_per_file=6.0, train_seconds=8.0, judge_steps=20,
                   n_per_genre=1, eval_per_genre=2)


def run_demo(out, model: str = "cmelgan", quick: bool = False, budget_s: float | None = None, seed: int = 0,
             progress: bool = True, device: str = "auto", vocoder=None) -> dict:
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else FULL
    train_seconds = budget_s if budget_s is not None else budget.train_seconds
    if train_seconds <= 0:
        raise NmusicError(f"--budget must be positive (got {budget_s})")
    presets, _ = registry()[model]
    cfg = presets["tiny"]
    spec = spec_preset(cfg.spec)
    torch.manual_seed(seed)
    dev = resolve_device(device)

    cache, manifest, cache_path = prepare_embedded(out, budget.files_per_genre, budget.seconds_per_file,
                                                   spec.sample_rate, seed, progress)
    run_dir = out / "runs" / f"{model}-tiny"
    summary = train_within(model, "tiny", cfg, cache_path, run_dir, train_seconds, resume=True, device=str(dev),
                           seed=seed, progress=progress)   # MelNet: tier 1 first, then the finer tiers

    if vocoder is not None:   # a trained vocoder run makes the run's audio (evaluation, samples) from now on
        from ..inversion import record_vocoder
        record_vocoder(run_dir, vocoder)
    metrics = evaluate_runs([run_dir], out / "eval", cache_path=cache_path, device=str(dev),
                            n_per_genre=budget.eval_per_genre, judge_steps=budget.judge_steps, seed=seed,
                            progress=progress)
    run, ref = metrics["runs"][0], metrics["reference"][0]

    recipe, ckpt = load_run(run_dir, device=dev)
    fe = MelFrontEnd(spec).to(dev)
    from ..inversion import load_inversion
    inversion = load_inversion(None, spec, device=dev, run_dir=run_dir)
    genres_report = {}
    mels, labels = sample_per_genre(recipe, budget.n_per_genre, seed)
    for gid, genre in enumerate(cache.genres):
        names = [f"{genre}_{i}" for i in range(budget.n_per_genre)]
        files = write_clips(mels[labels == gid], fe, out / "samples", names,
                            [f"{model} tiny · asked for {genre}"] * budget.n_per_genre, inversion=inversion)
        genres_report[genre] = {"files": files, "judge_accuracy": run["accuracy_generated"]["per_genre"][genre],
                                "feature_judge_accuracy": run["accuracy_generated_features"]["per_genre"][genre]}
    rows = ref["rows"]
    report = {
        "model": model, "preset": "tiny", "params": summary["params"],
        "train_seconds": summary["train_seconds"], "train_khz": summary["train_khz"],
        "steps": summary["steps"], "sessions": summary["sessions"], "device": summary["device"],
        "checkpoint": run["checkpoint"],
        "inversion": inversion.name,
        "genres": genres_report, "genre_list": cache.genres, "spec": to_dict(spec), "run_dir": str(run_dir),
        "dataset_hours": manifest.hours_per_genre(),
        "judges": {
            "valid": {kind: v["valid"] for kind, v in ref["verdict"].items()},
            "chance": ref["verdict"]["judge"]["chance"],
            "rows": {name: {"judge": row["judge"]["accuracy"], "feature_judge": row["features"]["accuracy"]}
                     for name, row in rows.items()},
        },
        "generated": {"clips_per_genre": run["n_per_genre"], "clip_seconds": run["clip_seconds"],
                      "judge_accuracy": run["accuracy_generated"]["accuracy"],
                      "feature_judge_accuracy": run["accuracy_generated_features"]["accuracy"],
                      "judges_agree": run["judges_agree"], "confusion": run["accuracy_generated"]["confusion"],
                      "ceiling": run["accuracy_ceiling"]["accuracy"],
                      "ceiling_features": run["accuracy_ceiling_features"]["accuracy"],
                      "fd": run["fd"], "fd_floor": run["fd_floor"], "kd": run["kd"], "kd_floor": run["kd_floor"],
                      "copies_flagged": run["originality"]["flagged"]},
        "evaluation": str(out / "eval" / "metrics.md"),
        "quick": quick, "total_seconds": None,
    }
    report["total_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", demo_markdown(report, out, metrics))
    return report
