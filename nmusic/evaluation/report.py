"""The reports, as markdown: ``metrics.md`` of ``nmusic evaluate`` and ``report.md`` of ``nmusic demo``.

Everything here reads the metrics dict that ``metrics.json`` holds (and the demo's report dict):
Table 1 reproduced (:func:`table1_markdown`), the judges' validity table (:func:`validity_markdown`),
one section per run (:func:`run_markdown`), the whole evaluation (:func:`render_markdown`) and the
demo's report, which embeds it (:func:`demo_markdown`).
"""
from __future__ import annotations

import math
from pathlib import Path

from . import fakes as FK
from .listening_test import summary_markdown

MODEL_NAMES = {"cmelgan": "cMelGAN", "melnet": "MelNet"}
JUDGE_NAMES = {"judge": "network judge", "features": "feature judge"}
ROW_NAMES = {"real": "real held-out audio", "real-inverted": "real held-out -> mel -> Griffin-Lim",
             **{k: f"fake: {v}" for k, v in FK.FAKES.items()}, **{k: f"probe: {v}" for k, v in FK.PROBES.items()}}


def fmt_seconds(s: float | None) -> str:
    """Seconds as ``"0.5 s"``, ``"42 s"``, ``"3.5 min"`` or ``"1.3 h"`` (Table 1's epoch-length column)."""
    if s is None or not math.isfinite(s):
        return "-"
    if s < 10:
        return f"{s:.1f} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x, fmt=".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _params(n) -> str:
    return "-" if not n else (f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k")


def _mos(m: dict | None) -> str:
    if not m:
        return "-"
    hw = m.get("half_width")
    return f"{m['mean']:.2f}" + (f" ± {hw:.2f}" if hw is not None else "") + f" (n={m['n']})"


def _valid(metrics: dict, spec: str, kind: str) -> bool:
    return all(ref["verdict"][kind]["valid"] for ref in metrics["reference"] if ref["spec"] == spec)


def _acc(x, valid: bool) -> str:
    return _pct(x) + ("" if valid else " (invalid judge)")


def table1_rows(metrics: dict) -> list[list[str]]:
    """Table 1 as cells: one row per run, then Griffin-Lim and real-audio rows per data setting."""
    mos = metrics.get("mos") or {}
    rows = []
    for r in metrics["runs"]:
        o = r["originality"]
        ok, ok_f = _valid(metrics, r["spec"], "judge"), _valid(metrics, r["spec"], "features")
        rows.append([f"{MODEL_NAMES.get(r['model'], r['model'])} ({r['preset']}) `{r['name']}`, step {r['step']}",
                     _params(r["params"]), _mos(mos.get(r["name"])),
                     "-" if r["train_khz"] is None else f"{r['train_khz']:.1f} kHz", fmt_seconds(r["epoch_seconds"]),
                     f"{_acc(r['accuracy_generated']['accuracy'], ok)} "
                     f"(ceiling {_pct(r['accuracy_ceiling']['accuracy'])})",
                     f"{_acc(r['accuracy_generated_features']['accuracy'], ok_f)} "
                     f"(ceiling {_pct(r['accuracy_ceiling_features']['accuracy'])})",
                     _pct(r["judges_agree"]),
                     f"{_num(r['fd'])} (floor {_num(r['fd_floor'])})",
                     f"{_num(r['kd'], '.3f')} (floor {_num(r['kd_floor'], '.3f')})",
                     f"{o['flagged']}/{r['n_generated']} (chance {o['expected_rate']:.0%})", "-"])
    several = len(metrics["reference"]) > 1
    for ref in metrics["reference"]:
        tag = f" ({ref['spec']})" if several or ref["spec"] != "default" else ""
        gl, t = ref["griffin_lim"], ref["rows"]
        rows.append([f"Griffin-Lim{tag}", "-", _mos(mos.get("griffin-lim")), "-", "-",
                     _pct(t["real-inverted"]["judge"]["accuracy"]), _pct(t["real-inverted"]["features"]["accuracy"]),
                     "-", "-", "-", "-",
                     f"{_num(gl['spectral_convergence_db'], '.1f')} / {_num(gl['log_spectral_distance_db'], '.1f')}"])
        rows.append([f"Real audio{tag}", "-", _mos(mos.get("real")), "-", "-", _pct(t["real"]["judge"]["accuracy"]),
                     _pct(t["real"]["features"]["accuracy"]), "-", "-", "-", "-", "-"])
    return rows


TABLE1_HEADER = ["model", "parameters", "MOS (/5)", "training speed", "real-time epoch", "genre accuracy (judge)",
                 "genre accuracy (feature judge)", "judges agree", "FD ↓", "KD ↓", "copies flagged", "SC / LSD (dB)"]


def table1_markdown(metrics: dict) -> str:
    """Table 1 (one row per run, Griffin-Lim and real-audio rows) as a markdown table."""
    lines = ["| " + " | ".join(TABLE1_HEADER) + " |", "|" + " --- |" * len(TABLE1_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table1_rows(metrics)]
    return "\n".join(lines) + "\n"


def validity_markdown(ref: dict) -> str:
    """The judge-validity table of one data setting: accuracy on real audio, its inversion, fakes and probes."""
    lines = ["| input (from real held-out clips, as audio) | network judge | assigned to | feature judge | "
             "assigned to |", "| --- | ---: | --- | ---: | --- |"]
    for name, row in ref["rows"].items():
        lines.append(f"| {ROW_NAMES.get(name, name)} | {_pct(row['judge']['accuracy'])} | "
                     + ", ".join(f"{g} {n}" for g, n in row["assigned"].items() if n)
                     + f" | {_pct(row['features']['accuracy'])} | "
                     + ", ".join(f"{g} {n}" for g, n in row["assigned_features"].items() if n) + " |")
    lines.append("")
    for kind, v in ref["verdict"].items():
        state = "**valid**" if v["valid"] else "**INVALID** (" + ", ".join(v["failed"] + v["missing"]) + ")"
        lines.append(f"- {JUDGE_NAMES[kind]}: {state}: every fake at most chance ({v['chance']:.0%}) + 10 points "
                     f"= {v['limit']:.0%}")
    lines += ["", "A clip counts as assigned a genre only when the judge is confident (probability at least halfway "
              "from 1/K to 1); otherwise it is *undecided*, never the genre asked for."]
    return "\n".join(lines) + "\n"


def run_markdown(r: dict) -> list[str]:
    genres = list(r["accuracy_generated"]["per_genre"])
    o = r["originality"]
    lines = [f"## {r['name']}", "",
             f"{MODEL_NAMES.get(r['model'], r['model'])} `{r['preset']}` at step {r['step']} "
             f"(`{Path(r['checkpoint']).name if r.get('checkpoint') else '?'}`, {r.get('checkpoint_choice') or '?'}; "
             f"{r['spec']} spectrogram), {r['n_per_genre']} clips of {r['clip_seconds']:.1f} s per genre"
             f"{'' if r.get('temperature', 1) == 1 else ' at temperature %g' % r['temperature']}, inverted "
             f"with {r.get('inversion', 'griffin-lim-32')} (the ceilings: real clips after Griffin-Lim).", "",
             "| genre asked for | network judge agrees | ceiling | feature judge agrees | ceiling |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for g in genres:
        lines.append(f"| {g} | {_pct(r['accuracy_generated']['per_genre'][g])} | "
                     f"{_pct(r['accuracy_ceiling']['per_genre'][g])} | "
                     f"{_pct(r['accuracy_generated_features']['per_genre'][g])} | "
                     f"{_pct(r['accuracy_ceiling_features']['per_genre'][g])} |")
    lines += ["", f"The two judges agree on {_pct(r['judges_agree'])} of the clips. Ceilings: real held-out clips "
              "after the same mel -> Griffin-Lim round trip.", "",
              "Confusion of generated clips by the network judge (rows: genre asked for, columns: its answer):", "",
              "| | " + " | ".join(genres) + " | undecided |", "|---" * (len(genres) + 2) + "|"]
    for g, row in zip(genres, r["accuracy_generated"]["confusion"]):
        lines.append(f"| {g} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", f"Fréchet distance {_num(r['fd'])} (floor {_num(r['fd_floor'])}), kernel distance "
              f"{_num(r['kd'], '.4f')} (floor {_num(r['kd_floor'], '.4f')}): judge features of the generated audio "
              f"against {r['n_reference']} real held-out clips after Griffin-Lim; the floors put {r['n_floor']} clips "
              "of the other held-out files in the generated clips' place.", "",
              f"![confusion]({r['images']['confusion']}) ![nearest]({r['images']['nearest']})", "",
              f"**Originality** (section 7: whom does a generated piece resemble?): copy threshold "
              f"{o['threshold']:.4f} (the {o['percentile']:g}th percentile of {o['n_heldout_clips']} held-out clips' "
              f"distances to {o['n_train_clips']} training clips); {o['flagged']} of {r['n_generated']} clips "
              f"flagged; nearest neighbours come from {o['distinct_nearest_files']} distinct training files.", "",
              "| clip | asked for | network judge | feature judge | nearest training file | at (s) | cosine distance "
              "| copy? |", "| ---: | --- | --- | --- | --- | ---: | ---: | --- |"]
    for c in o["clips"]:
        lines.append(f"| {c['clip']} | {c['genre']} | {c['predicted']} | {c['predicted_features']} | "
                     f"`{c['nearest_path']}` | {c['nearest_offset_s']:.1f} | {c['distance']:.4f} | "
                     f"{'**yes**' if c['flagged'] else 'no'} |")
    return lines + [""]


def inversions_markdown(bounds: dict | None) -> list[str]:
    """The upper bound per inversion (real held-out -> mel -> inversion -> judges) as markdown lines."""
    if not bounds:
        return []
    lines = [f"### Upper bound per inversion ({bounds['n_clips']} real held-out clips of {bounds['clip_seconds']:.1f} s "
             f"-> mel -> inversion)", "",
             "| inversion | SC (dB) | LSD (dB) | mel L1 | network judge | feature judge |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in bounds["rows"].items():
        lines.append(f"| {name} | {_num(r['spectral_convergence_db'], '.1f')} | {_num(r['log_spectral_distance_db'], '.1f')} "
                     f"| {_num(r['mel_l1'], '.3f')} | {_pct(r['judge_accuracy'])} | {_pct(r['feature_judge_accuracy'])} |")
    return lines + [""]


def render_markdown(metrics: dict) -> str:
    lines = ["# nmusic evaluation", ""]
    for w in metrics.get("warnings") or []:
        lines += [f"> **warning**: {w}", ""]
    lines += ["## Table 1, reproduced", "", table1_markdown(metrics)]
    lines += ["Columns: *parameters* of the trained modules; *MOS* from the blind listening test (mean ± 95% "
              "t-interval) when one was run; *training speed* in kHz of audio consumed per second of training; "
              "*real-time epoch*: time to see the training split once at that speed; *genre accuracy*: share of "
              "generated clips, inverted to audio, that a judge trained on real clips only assigns to the genre "
              "asked for (in brackets: real held-out clips after the same inversion, the ceiling); the *network "
              "judge* hears rhythm and spectral movement, not the average spectrum (nmusic.evaluation.judge), "
              "the *feature judge* is a linear model on named musical features (nmusic.evaluation.feature_judge); "
              "*FD*/*KD*: Fréchet and "
              "unbiased kernel distance of the network judge's features, generated vs real held-out audio (floor: "
              "other real held-out files in their place); *copies flagged*: generated clips nearer to a training "
              "clip than the 5th percentile of real held-out clips are (about 5% expected by chance); *SC / LSD*: "
              "spectral convergence and log-spectral distance of real audio after mel + Griffin-Lim.", ""]
    if metrics.get("images", {}).get("fd"):
        lines += [f"![Fréchet distances]({metrics['images']['fd']})", ""]
    for ref in metrics["reference"]:
        d, j, gl = ref["dataset"], ref["judge"], ref["griffin_lim"]
        lines += [f"## Data and judges ({ref['spec']})", "",
                  f"- cache `{d['cache']}`: {d['train_files']} training files ({d['train_hours']:.2f} h), "
                  f"{d['val_files']} held-out files ({d['val_hours']:.2f} h); genres {', '.join(d['genres'])}",
                  f"- network judge `{j['path']}` ({'reused' if j['reused'] else 'trained now'}, {j['steps']} steps); "
                  f"feature judge `{ref['feature_judge']['path']}`",
                  f"- Griffin-Lim on {gl['n_clips']} held-out clips of {gl['clip_seconds']:.1f} s: spectral "
                  f"convergence {gl['spectral_convergence_db']:.1f} dB, log-spectral distance "
                  f"{gl['log_spectral_distance_db']:.1f} dB, mel spectral convergence "
                  f"{gl['mel_spectral_convergence_db']:.1f} dB", "",
                  f"### Are the judges fooled? ({ref['n_fakes']} fakes of each kind, {ref['n_real']} real clips of "
                  f"{ref['clip_seconds']:.1f} s)", "", validity_markdown(ref),
                  "What the feature judge listens for (largest weights per genre): "
                  + "; ".join(f"**{g}**: " + ", ".join(n for n, _ in top)
                              for g, top in ref["feature_judge"]["top_features"].items()), ""]
        if ref["images"].get("confusion_real"):
            lines += [f"![real held-out confusion]({ref['images']['confusion_real']})", ""]
        lines += inversions_markdown(ref.get("inversions"))
    for r in metrics["runs"]:
        lines += run_markdown(r)
    if metrics.get("mos"):
        lines += ["## Blind listening test", "", f"Ratings: `{metrics['ratings_csv']}`", "",
                  summary_markdown(sorted(metrics["mos"].values(), key=lambda s: -s["mean"]))]
    return "\n".join(lines) + "\n"


def _sessions(sessions: list[dict]) -> str:
    """`` in sessions: train_tiers=[1] to step 3,900 (255 s), then ...``; empty for one session."""
    if len(sessions) < 2:
        return ""
    return " in sessions: " + ", then ".join(
        " ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in s.items() if k not in ("steps", "train_seconds"))
        + f" to step {s['steps']:,} ({s['train_seconds']:.0f} s)" for s in sessions)


def demo_markdown(r: dict, out: Path, metrics: dict) -> str:
    """``nmusic demo``'s report (``r``: ``report.json``, files under ``out``): what was trained, the honest
    headline, samples, then the full evaluation (:func:`render_markdown` of ``metrics``)."""
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    g, j = r["generated"], r["judges"]
    validity = ", ".join(f"{'network' if k == 'judge' else 'feature'} judge {'valid' if v else 'INVALID'}"
                         for k, v in j["valid"].items())
    fakes = ", ".join(f"{name} {row['judge']:.0%}" for name, row in j["rows"].items() if name not in ("real",
                                                                                                    "real-inverted"))
    lines = [
        f"# nmusic demo: {r['model']} `{r['preset']}`", "",
        f"- parameters: {r['params']:,}", f"- training: {r['steps']} steps in {r['train_seconds']:.0f} s on "
        f"{r['device']} ({r['train_khz']:.1f} kHz of audio per second){_sessions(r.get('sessions') or [])}; "
        f"samples from `{Path(r['checkpoint']).name}`",
        f"- **{g['judge_accuracy']:.1%}** of {g['clips_per_genre']} generated clips per genre (inverted to audio with "
        f"{r.get('inversion', 'griffin-lim-32')}) are assigned the genre asked for by the network judge (ceiling: {g['ceiling']:.1%} of real "
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
