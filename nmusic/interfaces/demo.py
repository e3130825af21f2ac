"""``nmusic demo``: the whole job on the embedded dataset, on a CPU, within 15 minutes.

embedded dataset (procedural classical/EDM/lofi) -> fetch -> manifest -> prepare -> train the
``tiny`` preset under a time budget -> ``nmusic evaluate`` on the run (the two judges, held to
account by the trivial fakes; accuracy of the generated audio against its ceilings; distances with
their floors; originality) -> listening samples per genre -> ``report.md`` + ``report.json`` (+ WAVs
and PNGs) in the output folder.

The data goes through exactly the path a user's data does (real audio files in genre folders,
mixed formats and rates). Nothing is downloaded.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..frontend import MelFrontEnd
from ..errors import NmusicError


@dataclass(frozen=True)
class DemoBudget:
    files_per_genre: int
    seconds_per_file: float
    train_seconds: float
    judge_steps: int
    n_per_genre: int      # listening samples written per genre
    eval_per_genre: int   # clips per genre the judges score


#: Full demo: ~10 min of training + ~4 min for data, judges, evaluation and samples on 2 CPU cores.
FULL = DemoBudget(files_per_genre=16, seconds_per_file=30.0, train_seconds=600.0, judge_steps=300,
                  n_per_genre=4, eval_per_genre=32)
QUICK = DemoBudget(files_per_genre=3, seconds_per_file=6.0, train_seconds=8.0, judge_steps=20,
                   n_per_genre=1, eval_per_genre=2)


def prepare_embedded(out: Path, budget: DemoBudget, spec, seed: int = 0, progress: bool = True):
    """Embedded dataset -> fetch -> manifest -> prepare. Returns ``(cache, manifest, cache_path)``."""
    from ..data.cache import prepare
    from ..data.fetch import fetch
    from ..data.manifest import build_manifest
    from ..data.synth import write_dataset

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
    from ..frontend import spec_preset
    from ..evaluation.evaluate import evaluate_runs
    from ..generate import sample_mels, write_clips
    from ..models import registry
    from ..training.runs import train_model
    from ..training.trainer import load_run, resolve_device

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
    run_dir = out / "runs" / f"{model}-tiny"
    summary = train_model(model, "tiny", cfg, cache_path=cache_path, run_dir=run_dir, steps=None,
                          time_budget_s=train_seconds, resume=True, device=str(dev), seed=seed, progress=progress)

    metrics = evaluate_runs([run_dir], out / "eval", cache_path=cache_path, device=str(dev),
                            n_per_genre=budget.eval_per_genre, judge_steps=budget.judge_steps, seed=seed,
                            progress=progress)
    run, ref = metrics["runs"][0], metrics["reference"][0]

    recipe, ckpt = load_run(run_dir, device=dev)
    fe = MelFrontEnd(spec).to(dev)
    genres_report = {}
    for gid, genre in enumerate(cache.genres):
        mels = sample_mels(recipe, [gid] * budget.n_per_genre, seed=seed + 1000 * gid)
        names = [f"{genre}_{i}" for i in range(budget.n_per_genre)]
        files = write_clips(mels, fe, out / "samples", names, [f"{model} tiny · asked for {genre}"] * budget.n_per_genre)
        genres_report[genre] = {"files": files, "judge_accuracy": run["accuracy_generated"]["per_genre"][genre],
                                "feature_judge_accuracy": run["accuracy_generated_features"]["per_genre"][genre]}
    rows = ref["rows"]
    report = {
        "model": model, "preset": "tiny", "params": summary["params"],
        "train_seconds": summary["train_seconds"], "train_khz": summary["train_khz"],
        "steps": summary["steps"], "device": summary["device"], "checkpoint": run["checkpoint"],
        "genres": genres_report, "genre_list": cache.genres, "spec": spec.to_dict(), "run_dir": str(run_dir),
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
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_report(report, out, metrics))
    return report


def render_report(r: dict, out: Path, metrics: dict) -> str:
    """The demo's report: what was trained, the honest headline, samples, then the full evaluation."""
    from ..evaluation.evaluate import _num, render_markdown

    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    g, j = r["generated"], r["judges"]
    validity = ", ".join(f"{'network' if k == 'judge' else 'feature'} judge {'valid' if v else 'INVALID'}"
                         for k, v in j["valid"].items())
    fakes = ", ".join(f"{name} {row['judge']:.0%}" for name, row in j["rows"].items() if name not in ("real",
                                                                                                    "real-inverted"))
    lines = [
        f"# nmusic demo: {r['model']} `{r['preset']}`", "",
        f"- parameters: {r['params']:,}", f"- training: {r['steps']} steps in {r['train_seconds']:.0f} s on "
        f"{r['device']} ({r['train_khz']:.1f} kHz of audio per second); samples from `{Path(r['checkpoint']).name}`",
        f"- **{g['judge_accuracy']:.1%}** of {g['clips_per_genre']} generated clips per genre (inverted to audio with "
        f"Griffin-Lim) are assigned the genre asked for by the network judge (ceiling: {g['ceiling']:.1%} of real "
        f"held-out clips after the same inversion); the feature judge says {g['feature_judge_accuracy']:.1%} "
        f"(ceiling {g['ceiling_features']:.1%}); they agree on {g['judges_agree']:.0%}",
        f"- judges held to account ({validity}): trivial fakes score {fakes} with the network judge "
        f"(chance {j['chance']:.0%})",
        f"- Fréchet distance {_num(g['fd'])} (floor {_num(g['fd_floor'])}), kernel distance {_num(g['kd'], '.4f')} "
        f"(floor {_num(g['kd_floor'], '.4f')}); {g['copies_flagged']} clips flagged as near-copies",
        f"- total time: {r['total_seconds']:.0f} s", "",
        "| genre asked for | network judge agrees | feature judge agrees | samples |", "| --- | --- | --- | --- |",
    ]
    for genre, s in r["genres"].items():
        links = " ".join(f"[wav]({rel(f['wav'])}) ![]({rel(f['png'])})" for f in s["files"])
        lines.append(f"| {genre} | {s['judge_accuracy']:.0%} | {s['feature_judge_accuracy']:.0%} | {links} |")
    evaluation = render_markdown(metrics).replace("](", "](eval/").replace("# nmusic evaluation", "# Evaluation", 1)
    return "\n".join(lines) + "\n\n" + evaluation.replace("\n#", "\n##")
