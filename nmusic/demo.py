"""``nmusic demo``: the whole job on the embedded dataset, on a CPU, within 15 minutes.

embedded dataset (procedural classical/EDM/lofi) -> fetch -> manifest -> prepare -> train the
``tiny`` preset under a time budget -> genre classifier on real clips -> generate per genre ->
``report.md`` + ``report.json`` (+ WAVs and PNGs) in the output folder.

The data goes through exactly the path a user's data does (real audio files in genre folders,
mixed formats and rates). Nothing is downloaded.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import MelFrontEnd
from .errors import NmusicError


@dataclass(frozen=True)
class DemoBudget:
    files_per_genre: int
    seconds_per_file: float
    train_seconds: float
    classifier_steps: int
    n_per_genre: int
    eval_per_genre: int


#: Full demo: ~11 min of training + ~1.5 min for everything else on 2 CPU cores.
FULL = DemoBudget(files_per_genre=16, seconds_per_file=30.0, train_seconds=660.0, classifier_steps=300,
                  n_per_genre=4, eval_per_genre=32)
QUICK = DemoBudget(files_per_genre=3, seconds_per_file=6.0, train_seconds=8.0, classifier_steps=20,
                   n_per_genre=1, eval_per_genre=4)


def prepare_embedded(out: Path, budget: DemoBudget, spec, seed: int = 0, progress: bool = True):
    """Embedded dataset -> fetch -> manifest -> prepare. Returns ``(cache, manifest, cache_path)``."""
    from .dataset import prepare
    from .fetch import fetch
    from .manifest import build_manifest
    from .synth import write_dataset

    raw = write_dataset(out / "data" / "embedded", files_per_genre=budget.files_per_genre,
                        seconds=budget.seconds_per_file, seed=seed, progress=progress)
    root = fetch(str(raw), out / "data" / "raw", progress=progress)
    manifest = build_manifest(root, clip_seconds=2.0, progress=progress)
    manifest.save(out / "data" / "manifest.csv")
    cache_path = out / "data" / "cache.pt"
    cache = prepare(manifest, spec.sample_rate, cache_path, progress=progress)
    return cache, manifest, cache_path


def run_demo(out, model: str = "cmelgan", quick: bool = False, budget_s: float | None = None, seed: int = 0,
             progress: bool = True, device: str = "auto") -> dict:
    from .audio import spec_preset
    from .classifier import train_classifier
    from .dataset import split_by_file
    from .generate import sample_mels, write_clips
    from .models import registry
    from .train_run import train_model
    from .trainer import resolve_device

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

    cache, manifest, cache_path = prepare_embedded(out, budget, spec, seed, progress)
    train_files, val_files = split_by_file(cache, val_fraction=0.25, seed=seed)

    run_dir = out / "runs" / f"{model}-tiny"
    summary = train_model(model, "tiny", cfg, cache_path=cache_path, run_dir=run_dir, steps=None,
                          time_budget_s=train_seconds, resume=True, device=str(dev), seed=seed, progress=progress)

    clf = train_classifier(cache, train_files, val_files, spec, clip_frames=cfg.clip_frames,
                           steps=budget.classifier_steps, seed=seed, progress=progress, device=dev)
    clf.save(out / "classifier.pt")

    from .trainer import load_run
    recipe, _ = load_run(run_dir, device=dev)
    fe = MelFrontEnd(spec).to(dev)
    n_eval = max(budget.eval_per_genre, budget.n_per_genre)
    genres_report = {}
    all_mels, all_labels = [], []
    for gid, genre in enumerate(cache.genres):
        mels = sample_mels(recipe, [gid] * n_eval, seed=seed + 1000 * gid)
        all_mels.append(mels)
        all_labels.append(torch.full((n_eval,), gid))
        names = [f"{genre}_{i}" for i in range(budget.n_per_genre)]
        files = write_clips(mels[:budget.n_per_genre], fe, out / "samples", names,
                            [f"{model} tiny · asked for {genre}"] * budget.n_per_genre)
        genres_report[genre] = {"files": files}
    acc = clf.accuracy(torch.cat(all_mels), torch.cat(all_labels))
    for genre in cache.genres:
        genres_report[genre]["classifier_accuracy"] = acc["per_genre"][genre]

    report = {
        "model": model, "preset": "tiny", "params": summary["params"],
        "train_seconds": summary["train_seconds"], "train_khz": summary["train_khz"],
        "steps": summary["steps"], "device": summary["device"], "genres": genres_report,
        "genre_list": cache.genres, "spec": spec.to_dict(), "run_dir": str(run_dir),
        "dataset_hours": manifest.hours_per_genre(),
        "classifier": {"real_heldout_accuracy": clf.metrics["real_heldout"]["accuracy"],
                       "real_heldout_per_genre": clf.metrics["real_heldout"]["per_genre"],
                       "generated_accuracy": acc["accuracy"], "generated_confusion": acc["confusion"],
                       "generated_clips_per_genre": n_eval},
        "quick": quick, "total_seconds": None,
    }
    report["total_seconds"] = time.perf_counter() - t_start
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_report(report, out))
    return report


def render_report(r: dict, out: Path) -> str:
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    c = r["classifier"]
    lines = [
        f"# nmusic demo: {r['model']} `{r['preset']}`", "",
        f"- parameters: {r['params']:,}", f"- training: {r['steps']} steps in {r['train_seconds']:.0f} s on "
        f"{r['device']} ({r['train_khz']:.1f} kHz of audio per second)",
        f"- genre classifier (trained on real clips only): {c['real_heldout_accuracy']:.1%} on real held-out clips; "
        f"**{c['generated_accuracy']:.1%}** on {c['generated_clips_per_genre']} generated clips per genre",
        f"- total time: {r['total_seconds']:.0f} s", "",
        "| genre asked for | classifier agrees | samples |", "| --- | --- | --- |",
    ]
    for genre, g in r["genres"].items():
        links = " ".join(f"[wav]({rel(f['wav'])}) ![]({rel(f['png'])})" for f in g["files"])
        lines.append(f"| {genre} | {g['classifier_accuracy']:.0%} | {links} |")
    lines += ["", "Confusion matrix of generated clips (rows: genre asked for, columns: classifier's answer):", "",
              "| | " + " | ".join(r["genre_list"]) + " |", "|---" * (len(r["genre_list"]) + 1) + "|"]
    for genre, row in zip(r["genre_list"], c["generated_confusion"]):
        lines.append(f"| {genre} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
