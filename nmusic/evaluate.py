"""``nmusic evaluate``: the paper's Table 1 for our runs, with the numbers it lacked (sections 5 and 7).

For every run directory given:

1. load the trained model (:func:`nmusic.trainer.load_run`) and the real audio it was trained on
   (``--cache``, else ``../../data/cache.pt`` as ``nmusic demo`` lays runs out, else a ``cache``
   entry of ``run.json``), split by file exactly as training did (``split_by_file`` with the
   run's seed and :data:`VAL_FRACTION`);
2. get the genre classifier for that spectrogram setting and data (trained on real training clips
   only, saved as ``classifier-<spec>-<data>.pt`` next to the cache, or in the out folder, and
   reused by later evaluations);
3. generate ``n_per_genre`` clips per genre and measure, against real clips of the same length:
   conditional genre accuracy and confusion matrix (real held-out accuracy is the ceiling), the
   Fréchet distance of classifier features to real held-out clips (real train vs held-out with as
   many clips is the floor), the classifier "inception score" (and its real-data value), and
   originality: each clip's nearest training clip, its file and distance, flagged when nearer than
   the 5th percentile of held-out-to-train distances (see :func:`nmusic.metrics.originality`);
4. Table 1's own columns: trainable parameters, training speed in kHz of audio per second (steps x
   batch x world size x clip samples / training seconds, from the checkpoint) and the real-time
   epoch length (the training split's audio divided by that speed).

Per spectrogram setting, a "Griffin-Lim" row gives the upper bound of the inversion (real audio
-> mel -> Griffin-Lim, :func:`nmusic.audio.griffin_lim_upper_bound`) and a "real audio" row the
classifier's ceiling. When a blind listening test was run (``listening_test.csv`` next to the runs,
see :mod:`nmusic.mos`) its mean opinion scores fill the MOS column.

Writes ``metrics.json``, ``metrics.md`` and PNGs (confusion matrices, Fréchet bars, nearest-neighbour
distance histograms) into the out folder.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import metrics as M
from . import plots
from .audio import SPEC_PRESETS, MelFrontEnd, SpecParams, griffin_lim_upper_bound
from .classifier import GenreClassifier, accuracy_report, train_classifier
from .dataset import AudioCache, ChunkDataset, split_by_file
from .errors import CheckpointError, ConfigError

VAL_FRACTION = 0.25        # the split nmusic.train_run.train_model (and so `nmusic train`/`demo`) uses
CLASSIFIER_FRAMES = 128    # clip length the classifier trains on (it pools over time: any length works)
PER_FILE_MAX = 32          # real clips tile each file, at most this many per file ...
MAX_TRAIN_CLIPS = 4096     # ... and at most this many training clips (originality references)
MAX_HELDOUT_CLIPS = 1024
GL_CLIPS = 16              # held-out clips put through Griffin-Lim for its rows
LISTENING_CSV = "listening_test.csv"
MODEL_NAMES = {"cmelgan": "cMelGAN", "melnet": "MelNet"}


def run_label(run_dir) -> str:
    """The name a run goes by in tables, plots and listening tests: its folder name."""
    return Path(run_dir).name


def spec_name(spec: SpecParams) -> str:
    """The preset name of ``spec`` (``default``, ``melnet-paper``, ...) or ``spec-<hash>``."""
    for name, p in SPEC_PRESETS.items():
        if p == spec:
            return name
    return "spec-" + hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:6]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def find_runs(folder) -> list[Path]:
    """Sub-folders of ``folder`` (or ``folder`` itself) holding a complete checkpoint, sorted by name."""
    from .checkpoint import BEST, list_checkpoints, looks_complete

    folder = Path(folder)
    if not folder.is_dir():
        return []
    def trained(d: Path) -> bool:
        return any(looks_complete(p) for p in [d / BEST, *list_checkpoints(d)] if p.is_file())
    return [folder] if trained(folder) else sorted(d for d in folder.iterdir() if d.is_dir() and trained(d))


def find_cache(run_dir, cache_path=None) -> Path:
    """The audio cache a run was trained on: ``cache_path`` if given, else the demo layout, else run.json."""
    if cache_path is not None:
        p = Path(cache_path)
        if not p.is_file():
            raise ConfigError(f"--cache {p}: no such file; give the cache file `nmusic prepare` wrote")
        return p
    run_dir = Path(run_dir)
    candidates = [run_dir.parent.parent / "data" / "cache.pt"]  # nmusic demo: OUT/runs/NAME and OUT/data/cache.pt
    recorded = _read_json(run_dir / "run.json").get("cache")
    if recorded:
        candidates.insert(0, Path(recorded) if Path(recorded).is_absolute() else run_dir / recorded)
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"{run_dir}: cannot tell which audio cache this run was trained on (looked for "
                      f"{', '.join(str(c) for c in candidates)}); pass it with --cache PATH (the file that "
                      f"`nmusic prepare` wrote)")


def data_fingerprint(cache: AudioCache, train_files, val_files, spec: SpecParams) -> str:
    """Short hash of what a classifier depends on: files, lengths, genres, split and spectrogram."""
    desc = json.dumps({"paths": cache.paths, "lengths": cache.lengths.tolist(), "genre_ids": cache.genre_ids.tolist(),
                       "genres": cache.genres, "train": list(train_files), "val": list(val_files),
                       "spec": spec.to_dict(), "frames": CLASSIFIER_FRAMES}, sort_keys=True)
    return hashlib.sha1(desc.encode()).hexdigest()[:10]


def tile_chunks(cache: AudioCache, files, clip_samples: int, per_file_max: int = PER_FILE_MAX,
                max_clips: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """``(file, offset)`` of non-overlapping clips tiling each file (centred in equal parts, at most
    ``per_file_max`` per file, one zero-padded clip for a short file); a genre-balanced seeded
    subset of ``max_clips`` when there are more."""
    chunks = []
    for f in files:
        length = int(cache.lengths[f])
        n = max(1, min(per_file_max, length // clip_samples))
        for k in range(n):
            centre = (k + 0.5) * length / n
            chunks.append((int(f), max(0, min(round(centre - clip_samples / 2), length - clip_samples))))
    if max_clips is not None and len(chunks) > max_clips:
        keep = M.balanced_subset(cache.genre_ids[[f for f, _ in chunks]], max_clips, seed)
        chunks = [chunks[i] for i in keep.tolist()]
    return chunks


@dataclass
class Embedded:
    """Classifier view of a set of clips: features ``(N, 128)``, logits ``(N, K)``, labels ``(N,)``."""

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    chunks: list = field(default_factory=list)  # (file, offset) of real clips


@torch.no_grad()
def embed_real(clf: GenreClassifier, fe: MelFrontEnd, cache: AudioCache, chunks, clip_samples: int,
               batch: int = 64) -> Embedded:
    ds, device = ChunkDataset(cache, clip_samples), fe.filterbank.device
    feats, logits, labels = [], [], []
    for i in range(0, len(chunks), batch):
        wave, genre = ds.__getitems__(chunks[i:i + batch])
        f, lg = clf.embed(fe(wave.to(device)))
        feats.append(f)
        logits.append(lg)
        labels.append(genre)
    if not chunks:
        return Embedded(torch.zeros(0, 1), torch.zeros(0, len(cache.genres)), torch.zeros(0, dtype=torch.long), [])
    return Embedded(torch.cat(feats), torch.cat(logits), torch.cat(labels), list(chunks))


class Context:
    """One (cache, spectrogram, split) with its classifier and real-clip embeddings per clip length."""

    def __init__(self, cache_path: Path, spec: SpecParams, seed: int, device: torch.device):
        self.cache_path, self.spec, self.seed, self.device = cache_path, spec, seed, device
        self.cache = AudioCache.load(cache_path, sample_rate=spec.sample_rate)
        self.train_files, self.val_files = split_by_file(self.cache, val_fraction=VAL_FRACTION, seed=seed)
        if not self.val_files:
            raise ConfigError(f"{cache_path}: no held-out files (a genre needs at least 2 files for one to be "
                              f"held out); add files, the real-data metrics need unseen clips")
        self.fe = MelFrontEnd(spec).to(device)
        self.fingerprint = data_fingerprint(self.cache, self.train_files, self.val_files, spec)
        self.name = spec_name(spec)
        self.clf: GenreClassifier | None = None
        self.clf_path: Path | None = None
        self.clf_reused = False
        self._real: dict[int, tuple[Embedded, Embedded]] = {}

    def classifier(self, out_dir: Path, steps: int, progress: bool) -> GenreClassifier:
        if self.clf is not None:
            return self.clf
        fname = f"classifier-{self.name}-{self.fingerprint}.pt"
        for p in (self.cache_path.parent / fname, out_dir / fname, self.cache_path.parent.parent / "classifier.pt"):
            clf = self._usable(p)
            if clf is not None:
                self.clf, self.clf_path, self.clf_reused = clf, p, True
                _say(progress, f"reusing the genre classifier {p} ({clf.metrics.get('steps', '?')} steps)")
                return clf
        clf = train_classifier(self.cache, self.train_files, self.val_files, self.spec, clip_frames=CLASSIFIER_FRAMES,
                               steps=steps, seed=self.seed, device=self.device, progress=progress)
        clf.metrics["data_fingerprint"] = self.fingerprint
        for folder in (self.cache_path.parent, out_dir):
            try:
                clf.save(folder / fname)
                self.clf_path = folder / fname
                break
            except OSError:
                continue
        self.clf = clf
        return clf

    def _usable(self, path: Path) -> GenreClassifier | None:
        """The classifier at ``path`` if it exists, loads and was trained for this data and spectrogram.

        Ours carry the data fingerprint; the one ``nmusic demo`` writes (``OUT/classifier.pt``, next
        to ``OUT/data/cache.pt``) is accepted when its genres, spectrogram, clip length and split sizes
        match and its BatchNorm statistics were re-estimated (older ones were not: see
        :func:`nmusic.classifier.recalibrate_batchnorm`).
        """
        if not path.is_file():
            return None
        try:
            clf = GenreClassifier.load(path, device=self.device)
        except CheckpointError:
            return None  # unreadable: train a new one
        m = clf.metrics
        same_split = (m.get("data_fingerprint") == self.fingerprint or
                      ("data_fingerprint" not in m and clf.clip_frames == CLASSIFIER_FRAMES and m.get("bn_batches")
                       and (m.get("train_files"), m.get("val_files")) == (len(self.train_files), len(self.val_files))))
        return clf if clf.genres == self.cache.genres and clf.spec == self.spec and same_split else None

    def real(self, frames: int) -> tuple[Embedded, Embedded]:
        """``(train, heldout)`` real clips of ``frames`` frames, embedded by the classifier (cached)."""
        if frames not in self._real:
            n = self.spec.samples(frames)
            train = tile_chunks(self.cache, self.train_files, n, max_clips=MAX_TRAIN_CLIPS, seed=self.seed)
            held = tile_chunks(self.cache, self.val_files, n, max_clips=MAX_HELDOUT_CLIPS, seed=self.seed)
            self._real[frames] = (embed_real(self.clf, self.fe, self.cache, train, n),
                                  embed_real(self.clf, self.fe, self.cache, held, n))
        return self._real[frames]

    def hours(self, files) -> float:
        return float(self.cache.lengths[list(files)].sum()) / self.cache.sample_rate / 3600


def _say(progress: bool, message: str) -> None:
    if progress:
        tqdm.write(f"[nmusic evaluate] {message}", file=sys.stderr)


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


def sample_generated(recipe, n_per_genre: int, seed: int, temperature: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_genre`` mels per genre ``(G*n, n_mels, frames)`` and their genre ids, seeded per genre."""
    from .generate import sample_mels

    mels, labels = [], []
    for g in range(len(recipe.genres)):
        mels.append(sample_mels(recipe, [g] * n_per_genre, seed=seed + 1000 * g, temperature=temperature))
        labels.append(torch.full((n_per_genre,), g, dtype=torch.long))
    return torch.cat(mels), torch.cat(labels)


def evaluate_run(run_dir: Path, ctx: Context, recipe, ckpt: dict, out_dir: Path, n_per_genre: int, seed: int,
                 progress: bool) -> dict:
    """All metrics of one run (see the module docstring); also writes its PNGs into ``out_dir``."""
    name = run_label(run_dir)
    spec, genres = ctx.spec, ctx.cache.genres
    _say(progress, f"{name}: sampling {n_per_genre} clips per genre")
    mels, labels = sample_generated(recipe, n_per_genre, seed)
    frames = int(mels.shape[-1])
    feats, logits = ctx.clf.embed(mels)
    train, held = ctx.real(frames)
    acc_gen = accuracy_report(logits.argmax(-1), labels, genres)
    acc_real = accuracy_report(held.logits.argmax(-1), held.labels, genres)
    fd = M.frechet_distance(feats, held.features) if len(held.features) >= 2 else None
    floor_idx = M.balanced_subset(train.labels, len(feats), seed)
    fd_floor = M.frechet_distance(train.features[floor_idx], held.features) if len(held.features) >= 2 else None
    orig = M.originality(feats, train.features, held.features)
    clips = []
    for i in range(len(feats)):
        j = int(orig["nearest"][i])
        f, offset = train.chunks[j]
        clips.append({"clip": i, "genre": genres[int(labels[i])], "predicted": genres[int(logits[i].argmax())],
                      "nearest_path": ctx.cache.paths[f], "nearest_genre": genres[int(ctx.cache.genre_ids[f])],
                      "nearest_offset_s": round(offset / ctx.cache.sample_rate, 3),
                      "distance": float(orig["distance"][i]), "flagged": bool(orig["flagged"][i])})
    speed = training_speed(ckpt, spec)
    train_samples = float(ctx.cache.lengths[ctx.train_files].sum())
    epoch_s = train_samples / (speed["train_khz"] * 1000) if speed["train_khz"] else None
    info = _read_json(run_dir / "run.json")
    warnings = []
    if info.get("val_files") is not None and info.get("val_files") != len(ctx.val_files):
        warnings.append(f"{name}: run.json records {info['val_files']} held-out files but the evaluation split has "
                        f"{len(ctx.val_files)}; the run was trained with another split, so 'held-out' clips "
                        f"may have been seen in training")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    plots.confusion(acc_gen["confusion"], genres, f"{name}: generated (rows: asked for)",
                    path=out_dir / f"confusion-{safe}.png")
    plots.nearest_distances(orig["heldout_distance"], orig["distance"], orig["threshold"],
                            f"{name}: nearest training clip", path=out_dir / f"nearest-{safe}.png")
    return {
        "name": name, "run_dir": str(run_dir), "model": ckpt.get("model"), "preset": ckpt.get("preset"),
        "step": int(ckpt.get("step", 0)), "spec": ctx.name, "cache": str(ctx.cache_path),
        "params": recipe.n_params(),
        "speed": speed, "train_khz": speed["train_khz"], "epoch_seconds": epoch_s,
        "clip_frames": frames, "clip_seconds": spec.seconds(frames), "n_generated": len(feats),
        "n_per_genre": n_per_genre, "seed": seed,
        "accuracy_generated": acc_gen, "accuracy_real_heldout": acc_real,
        "fd": fd, "fd_floor": fd_floor, "fd_n": {"generated": len(feats), "heldout": len(held.features),
                                                 "floor_train": len(floor_idx)},
        "inception_score": M.inception_score(M.softmax(logits)),
        "inception_score_real": M.inception_score(M.softmax(held.logits)) if len(held.logits) else None,
        "originality": {"percentile": orig["percentile"], "threshold": orig["threshold"],
                        "flagged": int(orig["flagged"].sum()), "flag_rate": orig["flag_rate"],
                        "expected_rate": orig["expected_rate"], "n_train_clips": len(train.features),
                        "n_heldout_clips": len(held.features),
                        "distinct_nearest_files": len({c["nearest_path"] for c in clips}),
                        "heldout_distance": orig["heldout_distance"].tolist(), "clips": clips},
        "images": {"confusion": f"confusion-{safe}.png", "nearest": f"nearest-{safe}.png"},
        "warnings": warnings,
    }


def griffin_lim_row(ctx: Context, out_dir: Path, seed: int) -> dict:
    """Real held-out clips -> mel -> Griffin-Lim: spectral convergence, log-spectral distance, and the
    classifier's accuracy on the reconstructed audio (vs on the originals)."""
    n = ctx.spec.samples(CLASSIFIER_FRAMES)
    chunks = tile_chunks(ctx.cache, ctx.val_files, n, max_clips=GL_CLIPS, seed=seed)
    wave, labels = ChunkDataset(ctx.cache, n).__getitems__(chunks)
    torch.manual_seed(seed)  # Griffin-Lim starts from random phases
    bound = griffin_lim_upper_bound(wave.to(ctx.fe.filterbank.device), ctx.fe)
    rec = ctx.clf.predict(ctx.fe(bound["audio"]))
    orig = ctx.clf.predict(ctx.fe(wave.to(ctx.fe.filterbank.device)))
    held = ctx.real(CLASSIFIER_FRAMES)[1]
    acc_real = accuracy_report(held.logits.argmax(-1), held.labels, ctx.cache.genres)
    plots.confusion(acc_real["confusion"], ctx.cache.genres, f"real held-out ({ctx.name})",
                    path=out_dir / f"confusion-real-{ctx.name}.png")
    return {
        "spec": ctx.name, "spec_params": ctx.spec.to_dict(), "n_clips": len(chunks),
        "clip_seconds": ctx.spec.seconds(CLASSIFIER_FRAMES),
        "spectral_convergence_db": bound["spectral_convergence_db"],
        "log_spectral_distance_db": bound["log_spectral_distance_db"],
        "mel_spectral_convergence_db": bound["mel_spectral_convergence_db"],
        "accuracy_griffin_lim": float((rec == labels).float().mean()),
        "accuracy_original": float((orig == labels).float().mean()),
        "accuracy_real_heldout": acc_real, "inception_score_real": M.inception_score(M.softmax(held.logits)),
        "classifier": {"path": str(ctx.clf_path) if ctx.clf_path else None, "reused": ctx.clf_reused,
                       "steps": ctx.clf.metrics.get("steps"), "clip_frames": CLASSIFIER_FRAMES,
                       "real_heldout_accuracy": ctx.clf.metrics.get("real_heldout", {}).get("accuracy")},
        "dataset": {"cache": str(ctx.cache_path), "genres": ctx.cache.genres,
                    "train_files": len(ctx.train_files), "val_files": len(ctx.val_files),
                    "train_hours": ctx.hours(ctx.train_files), "val_hours": ctx.hours(ctx.val_files),
                    "hours_per_genre": ctx.cache.hours_per_genre()},
        "images": {"confusion_real": f"confusion-real-{ctx.name}.png"},
    }


def evaluate_runs(run_dirs, out_dir, cache_path=None, device: str = "auto", n_per_genre: int = 16,
                  classifier_steps: int = 300, seed: int = 0, ratings=None, test_id: str | None = None,
                  progress: bool = True) -> dict:
    """Evaluate every run in ``run_dirs``; write ``metrics.json``, ``metrics.md`` and PNGs to ``out_dir``.

    ``ratings``: a listening-test CSV (default: ``listening_test.csv`` in the folder holding the
    first run, when it exists) for the MOS column; ``test_id``: only that blind test's ratings
    (default: all of the file, matched to runs by run name). Returns the metrics dict that
    ``metrics.json`` holds.
    """
    from .generate import resolve_device
    from .trainer import load_run

    if n_per_genre < 2:
        raise ConfigError(f"--n must be at least 2 clips per genre (got {n_per_genre}); statistics need several")
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ConfigError("give at least one run directory to evaluate")
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contexts: dict[tuple, Context] = {}
    runs, warnings = [], []
    names = [run_label(r) for r in run_dirs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"several runs are called {sorted(dupes)}; runs are named by their folder, so rename one")
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: no such run directory")
        recipe, ckpt = load_run(run_dir, device=dev)
        spec = SpecParams.from_dict(ckpt["spec"])
        cpath = find_cache(run_dir, cache_path)
        split_seed = int((ckpt.get("train_config") or {}).get("seed", 0))
        key = (str(cpath.resolve()), json.dumps(spec.to_dict(), sort_keys=True), split_seed)
        if key not in contexts:
            contexts[key] = Context(cpath, spec, split_seed, dev)
            same = sum(spec_name(c.spec) == spec_name(spec) for c in contexts.values())
            if same > 1:  # another data cache with the same spectrogram: keep their sections apart
                contexts[key].name += f"-data{same}"
        ctx = contexts[key]
        if list(recipe.genres) != list(ctx.cache.genres):
            raise ConfigError(f"{run_dir} was trained on genres {recipe.genres} but {cpath} holds {ctx.cache.genres}; "
                              f"pass the cache it was trained on with --cache")
        ctx.classifier(out, classifier_steps, progress)
        result = evaluate_run(run_dir, ctx, recipe, ckpt, out, n_per_genre, seed, progress)
        warnings += result.pop("warnings")
        runs.append(result)
        del recipe  # free the model before loading the next one
    reference = [griffin_lim_row(ctx, out, seed) for ctx in contexts.values()]
    if runs:
        plots.fd_bars([r["name"] for r in runs], [r["fd"] or 0.0 for r in runs], [r["fd_floor"] or 0.0 for r in runs],
                      "Fréchet distance of classifier features (lower is better)", path=out / "fd.png")
    ratings = Path(ratings) if ratings is not None else run_dirs[0].parent / LISTENING_CSV
    from .mos import mos_by_source
    mos = mos_by_source(ratings, test_id) if ratings.is_file() else {}
    result = {"format": "nmusic-metrics-1", "runs": runs, "reference": reference, "mos": mos,
              "ratings_csv": str(ratings) if mos else None, "ratings_test": test_id, "n_per_genre": n_per_genre,
              "seed": seed, "device": str(dev), "warnings": warnings, "images": {"fd": "fd.png"}}
    result = _clean(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text(render_markdown(result))
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


# --- markdown --------------------------------------------------------------------------------------------
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


def table1_rows(metrics: dict) -> list[list[str]]:
    """Table 1 as cells: one row per run, then Griffin-Lim and real-audio rows per spectrogram setting."""
    mos = metrics.get("mos") or {}
    rows = []
    for r in metrics["runs"]:
        o = r["originality"]
        rows.append([f"{MODEL_NAMES.get(r['model'], r['model'])} ({r['preset']}) `{r['name']}`, step {r['step']}",
                     _params(r["params"]), _mos(mos.get(r["name"])),
                     "-" if r["train_khz"] is None else f"{r['train_khz']:.1f} kHz", M.fmt_seconds(r["epoch_seconds"]),
                     f"{_pct(r['accuracy_generated']['accuracy'])} "
                     f"(real {_pct(r['accuracy_real_heldout']['accuracy'])})",
                     f"{_num(r['fd'])} (floor {_num(r['fd_floor'])})",
                     f"{_num(r['inception_score'])} (real {_num(r['inception_score_real'])})",
                     f"{o['flagged']}/{r['n_generated']} (chance {o['expected_rate']:.0%})", "-"])
    several = len(metrics["reference"]) > 1
    for g in metrics["reference"]:
        tag = f" ({g['spec']})" if several or g["spec"] != "default" else ""
        rows.append([f"Griffin-Lim{tag}", "-", _mos(mos.get("griffin-lim")), "-", "-",
                     f"{_pct(g['accuracy_griffin_lim'])} (orig. {_pct(g['accuracy_original'])})", "-", "-", "-",
                     f"{_num(g['spectral_convergence_db'], '.1f')} / {_num(g['log_spectral_distance_db'], '.1f')}"])
        rows.append([f"Real audio{tag}", "-", _mos(mos.get("real")), "-", "-",
                     _pct(g["accuracy_real_heldout"]["accuracy"]), "-", _num(g["inception_score_real"]), "-", "-"])
    return rows


TABLE1_HEADER = ["model", "parameters", "MOS (/5)", "training speed", "real-time epoch", "genre accuracy",
                 "FD ↓", "IS ↑", "copies flagged", "SC / LSD (dB)"]


def table1_markdown(metrics: dict) -> str:
    """Table 1 (one row per run, Griffin-Lim and real-audio rows) as a markdown table."""
    lines = ["| " + " | ".join(TABLE1_HEADER) + " |", "|" + " --- |" * len(TABLE1_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table1_rows(metrics)]
    return "\n".join(lines) + "\n"


def render_markdown(metrics: dict) -> str:
    lines = ["# nmusic evaluation", "", "## Table 1, reproduced", "", table1_markdown(metrics)]
    lines += ["Columns: *parameters* of the trained modules; *MOS* from the blind listening test (mean ± 95% "
              "t-interval) when one was run; *training speed* in kHz of audio consumed per second of training; "
              "*real-time epoch*: time to see the training split once at that speed; *genre accuracy*: a CNN "
              "trained on real clips only, on generated clips of each genre (in brackets: on real held-out clips "
              "of the same length, the ceiling); *FD*: Fréchet distance of its features, generated vs real held-out "
              "(floor: real training vs held-out clips, as many as generated); *IS*: its inception score (1 to the "
              "number of genres); *copies flagged*: generated clips nearer to a training clip than the 5th percentile "
              "of real held-out clips are (about 5% expected by chance); *SC / LSD*: spectral convergence and "
              "log-spectral distance of real audio after mel + Griffin-Lim (the inversion's upper bound).", ""]
    if metrics.get("images", {}).get("fd"):
        lines += [f"![Fréchet distances]({metrics['images']['fd']})", ""]
    for w in metrics.get("warnings") or []:
        lines += [f"> **warning**: {w}", ""]
    for g in metrics["reference"]:
        d, c = g["dataset"], g["classifier"]
        lines += [f"## Data and classifier ({g['spec']})", "",
                  f"- cache `{d['cache']}`: {d['train_files']} training files ({d['train_hours']:.2f} h), "
                  f"{d['val_files']} held-out files ({d['val_hours']:.2f} h); genres {', '.join(d['genres'])}",
                  f"- genre classifier `{c['path']}` ({'reused' if c['reused'] else 'trained now'}, "
                  f"{c['steps']} steps, "
                  f"{c['clip_frames']}-frame clips): {_pct(g['accuracy_real_heldout']['accuracy'])} on "
                  f"{g['accuracy_real_heldout']['n']} real held-out clips",
                  f"- Griffin-Lim on {g['n_clips']} held-out clips of {g['clip_seconds']:.1f} s: spectral convergence "
                  f"{g['spectral_convergence_db']:.1f} dB, log-spectral distance "
                  f"{g['log_spectral_distance_db']:.1f} dB, "
                  f"mel spectral convergence {g['mel_spectral_convergence_db']:.1f} dB", "",
                  f"![real held-out confusion]({g['images']['confusion_real']})", ""]
    for r in metrics["runs"]:
        genres = list(r["accuracy_generated"]["per_genre"])
        o = r["originality"]
        lines += [f"## {r['name']}", "",
                  f"{MODEL_NAMES.get(r['model'], r['model'])} `{r['preset']}` at step {r['step']} "
                  f"({r['spec']} spectrogram, {r['clip_frames']}-frame clips of {r['clip_seconds']:.1f} s), "
                  f"{r['n_per_genre']} generated clips per genre.", "",
                  "| genre asked for | classifier agrees | real held-out |", "| --- | ---: | ---: |"]
        for gname in genres:
            lines.append(f"| {gname} | {_pct(r['accuracy_generated']['per_genre'][gname])} | "
                         f"{_pct(r['accuracy_real_heldout']['per_genre'][gname])} |")
        lines += ["", "Confusion of generated clips (rows: genre asked for, columns: classifier's answer):", "",
                  "| | " + " | ".join(genres) + " |", "|---" * (len(genres) + 1) + "|"]
        for gname, row in zip(genres, r["accuracy_generated"]["confusion"]):
            lines.append(f"| {gname} | " + " | ".join(str(v) for v in row) + " |")
        lines += ["", f"![confusion]({r['images']['confusion']}) ![nearest]({r['images']['nearest']})", "",
                  f"**Originality** (section 7: whom does a generated piece resemble?): copy threshold "
                  f"{o['threshold']:.4f} (the {o['percentile']:g}th percentile of {o['n_heldout_clips']} "
                  f"held-out clips' "
                  f"distances to {o['n_train_clips']} training clips); {o['flagged']} of {r['n_generated']} clips "
                  f"flagged; nearest neighbours come from {o['distinct_nearest_files']} distinct training files.", "",
                  "| clip | asked for | classified as | nearest training file | at (s) | cosine distance | copy? |",
                  "| ---: | --- | --- | --- | ---: | ---: | --- |"]
        for c in o["clips"]:
            lines.append(f"| {c['clip']} | {c['genre']} | {c['predicted']} | `{c['nearest_path']}` | "
                         f"{c['nearest_offset_s']:.1f} | {c['distance']:.4f} | {'**yes**' if c['flagged'] else 'no'} |")
        lines.append("")
    if metrics.get("mos"):
        from .mos import summary_markdown
        lines += ["## Blind listening test", "", f"Ratings: `{metrics['ratings_csv']}`", "",
                  summary_markdown(sorted(metrics["mos"].values(), key=lambda s: -s["mean"]))]
    return "\n".join(lines) + "\n"
