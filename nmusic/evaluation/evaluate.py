"""``nmusic evaluate``: the paper's Table 1 for our runs, with honest numbers for what it lacked (sections 5, 7).

For every run directory given:

1. load the trained model at the checkpoint generation uses (:func:`nmusic.training.runs.load_run`:
   MelNet's best by held-out likelihood, cMelGAN's latest) and the real audio it was trained on
   (``--cache``, else ``../../data/cache.pt`` as ``nmusic demo`` lays runs out, else the ``cache``
   entry of ``run.json``), split by file exactly as training did;
2. get the two judges for that data and spectrogram (:mod:`nmusic.evaluation.data`), trained on real
   *training* clips only (some of them passed through the generator's spectrogram and inversion):
   the network of :mod:`nmusic.evaluation.judge` and the linear model of
   :mod:`nmusic.evaluation.feature_judge`. They are saved next to the cache and reused;
3. hold the judges to account (:mod:`nmusic.evaluation.fakes`): real held-out clips, the same after the
   inversion, and the trivial fakes and probes made from them, all through the inversion to audio.
   A judge that scores any fake above chance + 10 points is reported as **invalid**, and its
   accuracies are marked so;
4. generate ``n_per_genre`` clips per genre, invert them to audio as a listener gets them
   (:func:`nmusic.generate.invert`: Griffin-Lim with the run's spectrogram parameters), and measure: the genre
   accuracy by the judge (ceiling: real held-out clips after the same inversion) and by the second
   judge, how often the two agree; Fréchet and kernel distances of judge features to one half of
   the held-out files after the inversion, each beside its floor (the other half against it, the
   same number of clips); originality (each clip's nearest training clip, flagged when nearer than
   the 5th percentile of held-out clips, :func:`nmusic.evaluation.metrics.originality`);
5. Table 1's own columns: trainable parameters, training speed in kHz of audio per second and the
   real-time epoch length.

Per data setting a reference section gives the judges' validity table and the Griffin-Lim upper
bound (spectral convergence, log-spectral distance). When a blind listening test was run
(``listening_test.csv`` next to the runs, :mod:`nmusic.evaluation.listening_test`), its mean opinion
scores fill the MOS column. Writes ``metrics.json``, ``metrics.md`` (:mod:`nmusic.evaluation.report`)
and PNGs into the out folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .. import plots
from ..config import from_dict, to_dict
from ..data.clips import balanced_subset, spaced_chunks
from ..device import resolve_device
from ..errors import ConfigError
from ..frontend import SpecParams, griffin_lim_upper_bound, spec_name
from ..generate import invert, sample_per_genre
from ..training.runs import describe_checkpoint, find_cache, load_run, run_label
from ..utils.files import atomic_write_json, atomic_write_text, read_json
from . import fakes as FK
from . import metrics as M
from .data import PER_FILE_MAX, EvaluationData, report_progress, split_seed
from .listening_test import mos_by_source
from .report import JUDGE_NAMES, render_markdown

JUDGE_STEPS = 200          # training steps of the network judge
MAX_FAKE_CLIPS = 96        # held-out clips the fakes are made from
GL_CLIPS = 16              # held-out clips for the spectral figures of the inversion
LISTENING_CSV = "listening_test.csv"


def accuracy_report(pred: torch.Tensor, labels: torch.Tensor, genres: list[str]) -> dict:
    """Share of clips assigned their (true or asked-for) genre, overall and per genre, and the confusion
    matrix (rows: that genre, columns: the judge's answer, the last column "undecided" (-1))."""
    n = len(genres)
    cm = torch.zeros(n, n + 1, dtype=torch.long)
    cols = torch.where(pred.long() < 0, torch.full_like(pred.long(), n), pred.long())
    cm.index_put_((labels.long(), cols), torch.ones_like(labels.long()), accumulate=True)
    per = {g: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")) for i, g in enumerate(genres)}
    return {"accuracy": float((pred == labels).float().mean()) if len(labels) else float("nan"),
            "per_genre": per, "confusion": cm.tolist(), "undecided": float((pred < 0).float().mean()) if len(labels)
            else float("nan"), "n": int(len(labels))}


def training_speed(ckpt: dict, spec: SpecParams) -> dict:
    """Table 1's "training speed": kHz of audio consumed per second of training (from a checkpoint)."""
    steps, elapsed = int(ckpt.get("step", 0)), float(ckpt.get("elapsed_s") or 0.0)
    batch, frames = ckpt.get("batch_size"), ckpt.get("clip_frames")
    if batch is None or frames is None:  # older checkpoints: the model config has them
        cfg = ckpt.get("model_config") or {}
        batch, frames = batch or cfg.get("batch_size"), frames or cfg.get("clip_frames")
    world = int(ckpt.get("world_size") or 1)
    samples = steps * int(batch or 0) * world * spec.samples(int(frames or 1))
    khz = samples / elapsed / 1000 if elapsed > 0 and samples > 0 else None
    return {"steps": steps, "elapsed_s": elapsed, "batch_size": batch, "clip_frames": frames, "world_size": world,
            "samples_seen": samples, "train_khz": khz}


def evaluation_frames(recipe, judge_seconds: float) -> int | None:
    """Frames to generate for evaluation: MelNet samples as long as the judge's clips (it can make any
    length); a fixed-length generator (``None``) makes its own clip."""
    if recipe.name == "melnet":
        return recipe.spec.frames(round(judge_seconds * recipe.spec.sample_rate))
    return None


def _answer(genres: list[str], pred) -> str:
    return "undecided" if int(pred) < 0 else genres[int(pred)]


def distances(generated: torch.Tensor, real: dict, seed: int) -> dict:
    """Fréchet and kernel distances of ``generated (N, D)`` features to held-out half one (after the
    inversion), and their floors: held-out half two against half one, as many clips as generated."""
    first, second = real["halves"]
    ref = real["heldout_inverted"].features
    a, b = ref[first], ref[second]
    out = {"fd": None, "fd_floor": None, "kd": None, "kd_floor": None, "n_reference": len(a), "n_floor": 0}
    if len(a) < 2 or len(generated) < 2:
        return out
    labels = real["heldout_inverted"].labels[second]
    floor = b[balanced_subset(labels, len(generated), seed)] if len(b) else b
    out.update(fd=M.frechet_distance(generated, a), kd=M.kernel_distance(generated, a), n_floor=len(floor))
    if len(floor) >= 2:
        out.update(fd_floor=M.frechet_distance(floor, a), kd_floor=M.kernel_distance(floor, a))
    return out


def evaluate_run(run_dir: Path, data: EvaluationData, recipe, ckpt: dict, out_dir: Path, n_per_genre: int,
                 seed: int, progress: bool, temperature: float = 1.0) -> dict:
    """All metrics of one run (see the module docstring); also writes its PNGs into ``out_dir``."""
    name = run_label(run_dir)
    spec, genres = data.spec, data.cache.genres
    frames = evaluation_frames(recipe, data.judge.spec.clip_seconds)
    from ..inversion import load_inversion
    inversion = load_inversion(None, spec, device=data.device, run_dir=run_dir)  # as `nmusic generate` makes its audio
    report_progress(progress, f"{name}: sampling {n_per_genre} clips per genre, inverting them with {inversion.name}")
    mels, labels = sample_per_genre(recipe, n_per_genre, seed, frames, temperature)
    samples = spec.samples(int(mels.shape[-1]))
    torch.manual_seed(seed)
    gen = data.judge_audio(invert(mels, data.fe, samples, inversion=inversion), labels)
    real = data.real(samples)
    pred, pred_f = gen.predictions()
    acc_gen, acc_feat = accuracy_report(pred, labels, genres), accuracy_report(pred_f, labels, genres)
    ceil_pred, ceil_pred_f = real["heldout_inverted"].predictions()
    ceiling = accuracy_report(ceil_pred, real["heldout_inverted"].labels, genres)
    ceiling_f = accuracy_report(ceil_pred_f, real["heldout_inverted"].labels, genres)
    dist = distances(gen.features, real, seed)
    train, held = real["train"], real["heldout_inverted"]
    orig = M.originality(gen.features, train.features, held.features)
    clips = []
    for i in range(len(labels)):
        j = int(orig["nearest"][i])
        f, offset = train.chunks[j]
        clips.append({"clip": i, "genre": genres[int(labels[i])], "predicted": _answer(genres, pred[i]),
                      "predicted_features": _answer(genres, pred_f[i]),
                      "nearest_path": data.cache.paths[f], "nearest_genre": genres[int(data.cache.genre_ids[f])],
                      "nearest_offset_s": round(offset / data.rate, 3),
                      "distance": float(orig["distance"][i]), "flagged": bool(orig["flagged"][i])})
    speed = training_speed(ckpt, spec)
    train_samples = float(data.cache.lengths[data.train_files].sum())
    epoch_s = train_samples / (speed["train_khz"] * 1000) if speed["train_khz"] else None
    info = read_json(run_dir / "run.json")
    warnings = []
    if info.get("val_files") is not None and info.get("val_files") != len(data.val_files):
        warnings.append(f"{name}: run.json records {info['val_files']} held-out files but the evaluation split has "
                        f"{len(data.val_files)}; the run was trained with another split, so 'held-out' clips "
                        f"may have been seen in training")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    plots.confusion(acc_gen["confusion"], genres, f"{name}: generated, judge (rows: asked for)",
                    path=out_dir / f"confusion-{safe}.png")
    plots.nearest_distances(orig["heldout_distance"], orig["distance"], orig["threshold"],
                            f"{name}: nearest training clip", path=out_dir / f"nearest-{safe}.png")
    return {
        "name": name, "run_dir": str(run_dir), "model": ckpt.get("model"), "preset": ckpt.get("preset"),
        "step": int(ckpt.get("step", 0)), "checkpoint": ckpt.get("checkpoint_path"),
        "checkpoint_choice": ckpt.get("checkpoint_choice"),
        "spec": data.name, "cache": str(data.cache_path), "params": recipe.n_params(),
        "speed": speed, "train_khz": speed["train_khz"], "epoch_seconds": epoch_s,
        "clip_frames": int(mels.shape[-1]), "clip_seconds": spec.seconds(int(mels.shape[-1])),
        "n_generated": len(labels), "n_per_genre": n_per_genre, "seed": seed, "temperature": temperature,
        "inversion": inversion.name,
        "accuracy_generated": acc_gen, "accuracy_generated_features": acc_feat,
        "judges_agree": float((pred == pred_f).float().mean()),
        "accuracy_ceiling": ceiling, "accuracy_ceiling_features": ceiling_f,
        **dist,
        "originality": {"percentile": orig["percentile"], "threshold": orig["threshold"],
                        "flagged": int(orig["flagged"].sum()), "flag_rate": orig["flag_rate"],
                        "expected_rate": orig["expected_rate"], "n_train_clips": len(train.features),
                        "n_heldout_clips": len(held.features),
                        "distinct_nearest_files": len({c["nearest_path"] for c in clips}),
                        "heldout_distance": orig["heldout_distance"].tolist(), "clips": clips},
        "images": {"confusion": f"confusion-{safe}.png", "nearest": f"nearest-{safe}.png"},
        "warnings": warnings,
    }


def judge_validity(data: EvaluationData, seed: int, out_dir: Path | None = None) -> dict:
    """The judges held to account on real held-out clips: as recorded, after the round trip, and the
    fakes and probes of :mod:`nmusic.evaluation.fakes` made from them (after the inversion); with a
    verdict per judge."""
    samples = round(data.judge.spec.clip_seconds * data.rate)
    genres = data.cache.genres
    real = data.real(samples)
    idx = balanced_subset(real["heldout"].labels, MAX_FAKE_CLIPS, seed)
    chunks = [real["heldout"].chunks[i] for i in idx.tolist()]
    wave, labels = data.clips(chunks, samples)
    mels = data.mels(wave)
    rows = {"real": real["heldout"], "real-inverted": real["heldout_inverted"]}
    for name, fake in FK.make_fakes(mels, labels, seed).items():
        rows[name] = data.judge_audio(invert(fake, data.fe, samples), labels)
    table = {}
    for name, judged in rows.items():
        pred, pred_f = judged.predictions()
        table[name] = {"judge": accuracy_report(pred, judged.labels, genres),
                       "features": accuracy_report(pred_f, judged.labels, genres),
                       "assigned": _assigned(pred, genres), "assigned_features": _assigned(pred_f, genres)}
    verdicts = {kind: FK.verdict({n: table[n][kind]["accuracy"] for n in FK.FAKES}, len(genres))
                for kind in ("judge", "features")}
    bound = griffin_lim_bound(data, seed)
    images = {}
    if out_dir is not None:
        images["confusion_real"] = f"confusion-real-{data.name}.png"
        plots.confusion(table["real-inverted"]["judge"]["confusion"], genres,
                        f"real held-out after Griffin-Lim ({data.name})", path=out_dir / images["confusion_real"])
    return {
        "spec": data.name, "spec_params": to_dict(data.spec), "clip_seconds": samples / data.rate,
        "n_real": len(real["heldout"].labels), "n_fakes": len(labels), "rows": table, "verdict": verdicts,
        "judge": {"path": data.judge_paths.get("judge"), "reused": data.reused.get("judge"),
                  "spec": to_dict(data.judge.spec),
                  **{k: data.judge.metrics.get(k) for k in ("steps", "train_seconds")}},
        "feature_judge": {"path": data.judge_paths.get("feature_judge"), "reused": data.reused.get("feature_judge"),
                          "top_features": {g: data.feature_judge.top_features(g, 4) for g in genres}},
        "griffin_lim": bound,
        "dataset": {"cache": str(data.cache_path), "genres": genres,
                    "train_files": len(data.train_files), "val_files": len(data.val_files),
                    "train_hours": data.hours(data.train_files), "val_hours": data.hours(data.val_files),
                    "hours_per_genre": data.cache.hours_per_genre()},
        "images": images,
    }


def _assigned(pred: torch.Tensor, genres: list[str]) -> dict:
    counts = torch.bincount(pred.long() + 1, minlength=len(genres) + 1).tolist()
    return {**dict(zip(genres, counts[1:])), "undecided": counts[0]}


def griffin_lim_bound(data: EvaluationData, seed: int) -> dict:
    """Spectral convergence and log-spectral distance of real held-out audio after mel + Griffin-Lim."""
    n = data.spec.samples(128)
    chunks = spaced_chunks(data.cache, data.val_files, n, PER_FILE_MAX, as_many_as_fit=True, max_clips=GL_CLIPS,
                           seed=seed)
    wave, _ = data.clips(chunks, n)
    torch.manual_seed(seed)  # Griffin-Lim starts from random phases
    bound = griffin_lim_upper_bound(wave.to(data.fe.filterbank.device), data.fe)
    return {"n_clips": len(chunks), "clip_seconds": n / data.rate,
            **{k: bound[k] for k in ("spectral_convergence_db", "log_spectral_distance_db",
                                      "mel_spectral_convergence_db")}}


def inversion_bounds(data: EvaluationData, vocoders, seed: int) -> dict:
    """The upper bound per inversion: real held-out clips (the judges' clip length) -> mel -> inversion ->
    audio, with spectral convergence and log-spectral distance (the front end's STFT), mel L1 after
    re-analysis and both judges' accuracy; Griffin-Lim and every vocoder in ``vocoders`` of this spectrogram."""
    from ..frontend import log_spectral_distance, spectral_convergence, stft_magnitude
    from ..inversion import GriffinLim, load_inversion
    samples = round(data.judge.spec.clip_seconds * data.rate)
    held = data.real(samples)["heldout"]
    wave, labels = data.clips(held.chunks, samples)
    mels = data.mels(wave)
    inversions = [GriffinLim(data.fe)]
    for v in vocoders:
        try:
            inversions.append(load_inversion(str(v), data.spec, device=data.device))
        except ConfigError:            # a vocoder of another spectrogram: it belongs to another section
            continue
    rows = {}
    for inv in inversions:
        torch.manual_seed(seed)
        rec = invert(mels, data.fe, samples, inversion=inv)
        pred, pred_f = data.judge_audio(rec, labels).predictions()
        s_ref, s_rec = stft_magnitude(wave, data.spec), stft_magnitude(rec, data.spec)
        rows[inv.name] = {"spectral_convergence_db": spectral_convergence(s_ref, s_rec),
                          "log_spectral_distance_db": log_spectral_distance(s_ref, s_rec),
                          "mel_l1": float((data.fe(rec.to(data.device)).cpu() - mels).abs().mean()),
                          "judge_accuracy": float((pred == labels).float().mean()),
                          "feature_judge_accuracy": float((pred_f == labels).float().mean())}
    return {"n_clips": len(labels), "clip_seconds": samples / data.rate, "rows": rows}


def evaluate_runs(run_dirs, out_dir, cache_path=None, device: str = "auto", n_per_genre: int = 16,
                  judge_steps: int = JUDGE_STEPS, seed: int = 0, ratings=None, test_id: str | None = None,
                  progress: bool = True, vocoders=(), temperature: float = 1.0) -> dict:
    """Evaluate every run in ``run_dirs``; write ``metrics.json``, ``metrics.md`` and PNGs to ``out_dir``.

    ``ratings``: a listening-test CSV (default: ``listening_test.csv`` in the folder holding the
    first run, when it exists) for the MOS column; ``test_id``: only that blind test's ratings
    (default: all of the file, matched to runs by run name); ``vocoders``: vocoder runs whose upper bound
    (real -> vocoder -> judge) is reported per data setting next to Griffin-Lim's (the vocoders recorded for
    the runs are added); ``temperature``: the generated clips' sampling temperature, as ``nmusic generate
    --temperature`` (recorded per run). Returns the metrics dict that ``metrics.json`` holds.
    """

    if n_per_genre < 2:
        raise ConfigError(f"--n must be at least 2 clips per genre (got {n_per_genre}); statistics need several")
    if judge_steps < 1:
        raise ConfigError(f"--judge-steps must be at least 1 (got {judge_steps}); the network judge needs training")
    if not temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0 (got {temperature}); 1 samples the models as trained")
    from ..inversion import split_vocoders
    run_dirs, given = split_vocoders(run_dirs)     # vocoder runs among them: upper-bound rows, not models
    vocoders = [*vocoders, *given]
    if not run_dirs:
        raise ConfigError("give at least one run directory to evaluate")
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datas: dict[tuple, EvaluationData] = {}
    runs, warnings = [], []
    names = [run_label(r) for r in run_dirs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"several runs are called {sorted(dupes)}; runs are named by their folder, so rename one")
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: no such run directory")
        recipe, ckpt = load_run(run_dir, device=dev)
        report_progress(progress, f"{run_label(run_dir)}: {describe_checkpoint(ckpt)}")
        spec = from_dict(SpecParams, ckpt["spec"])
        cpath = find_cache(run_dir, cache_path)
        key = (str(cpath.resolve()), json.dumps(to_dict(spec), sort_keys=True), split_seed(ckpt))
        if key not in datas:
            datas[key] = EvaluationData.of_run(ckpt, cpath, dev)
            same = sum(spec_name(d.spec) == spec_name(spec) for d in datas.values())
            if same > 1:  # another data cache with the same spectrogram: keep their sections apart
                datas[key].name += f"-data{same}"
        data = datas[key]
        if list(recipe.genres) != list(data.cache.genres):
            raise ConfigError(f"{run_dir} was trained on genres {recipe.genres} but {cpath} holds {data.cache.genres}; "
                              f"pass the cache it was trained on with --cache")
        data.judges(out, judge_steps, progress)
        result = evaluate_run(run_dir, data, recipe, ckpt, out, n_per_genre, seed, progress, temperature)
        warnings += result.pop("warnings")
        runs.append(result)
        del recipe  # free the model before loading the next one
    reference = [judge_validity(d, seed, out) for d in datas.values()]
    from ..inversion import recorded_vocoder
    vocoders = list(dict.fromkeys([*map(str, vocoders), *(str(v) for v in map(recorded_vocoder, run_dirs) if v)]))
    for ref, d in zip(reference, datas.values()):
        ref["inversions"] = inversion_bounds(d, vocoders, seed)
    for ref in reference:
        for kind, v in ref["verdict"].items():
            if not v["valid"]:
                warnings.append(f"the {JUDGE_NAMES[kind]} ({ref['spec']}) is INVALID: it assigns the fakes "
                                f"{', '.join(v['failed'] + v['missing'])} their genre above chance + 10 points; "
                                f"its accuracies below say nothing about music")
    if runs:
        plots.fd_bars([r["name"] for r in runs], [r["fd"] or 0.0 for r in runs], [r["fd_floor"] or 0.0 for r in runs],
                      "Fréchet distance of judge features (lower is better)", path=out / "fd.png")
    ratings = Path(ratings) if ratings is not None else run_dirs[0].parent / LISTENING_CSV
    mos = mos_by_source(ratings, test_id) if ratings.is_file() else {}
    result = {"format": "nmusic-metrics-2", "runs": runs, "reference": reference, "mos": mos,
              "ratings_csv": str(ratings) if mos else None, "ratings_test": test_id, "n_per_genre": n_per_genre,
              "seed": seed, "device": str(dev), "warnings": warnings, "images": {"fd": "fd.png"} if runs else {}}
    result = _clean(result)
    atomic_write_json(out / "metrics.json", result)
    atomic_write_text(out / "metrics.md", render_markdown(result))
    return result


def _clean(obj):
    """JSON-safe: tensors to lists, tuples to lists, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
