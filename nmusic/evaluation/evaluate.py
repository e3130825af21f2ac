"""``nmusic evaluate``: the paper's Table 1 for our runs, with honest numbers for what it lacked (sections 5, 7).

For every run directory given:

1. load the trained model at the checkpoint generation uses (:func:`nmusic.training.trainer.load_run`:
   MelNet's best by held-out likelihood, cMelGAN's latest) and the real audio it was trained on
   (``--cache``, else ``../../data/cache.pt`` as ``nmusic demo`` lays runs out, else the ``cache``
   entry of ``run.json``), split by file exactly as training did;
2. get the two judges for that data and spectrogram, trained on real *training* clips only (half of
   them passed through the generator's spectrogram and inversion): the network of
   :mod:`nmusic.evaluation.judge` and the linear model of :mod:`nmusic.evaluation.feature_judge`. They are saved next to
   the cache (``judge-<spec>-<data>.pt``, ``feature-judge-<spec>-<data>.pt``) and reused;
3. hold the judges to account (:mod:`nmusic.evaluation.fakes`): real held-out clips, the same after the
   inversion, and the trivial fakes and probes made from them, all through the inversion to audio.
   A judge that scores any fake above chance + 10 points is reported as **invalid**, and its
   accuracies are marked so;
4. generate ``n_per_genre`` clips per genre, invert them to audio as a listener gets them
   (:func:`invert`: Griffin-Lim with the run's spectrogram parameters), and measure: the genre
   accuracy by the judge (ceiling: real held-out clips after the same inversion) and by the second
   judge, how often the two agree; Fréchet and kernel distances of judge features to one half of
   the held-out files after the inversion, each beside its floor (the other half against it, the
   same number of clips); originality (each clip's nearest training clip, flagged when nearer than
   the 5th percentile of held-out clips, :func:`nmusic.evaluation.metrics.originality`);
5. Table 1's own columns: trainable parameters, training speed in kHz of audio per second and the
   real-time epoch length.

Per data setting a reference section gives the judges' validity table and the Griffin-Lim upper
bound (spectral convergence, log-spectral distance). When a blind listening test was run
(``listening_test.csv`` next to the runs, :mod:`nmusic.evaluation.listening_test`), its mean opinion scores fill the MOS
column. Writes ``metrics.json``, ``metrics.md`` and PNGs into the out folder.
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

from . import fakes as FK
from . import metrics as M
from .. import plots
from ..frontend import SPEC_PRESETS, MelFrontEnd, SpecParams, griffin_lim_upper_bound
from ..data.cache import AudioCache, ChunkDataset, split_by_file
from ..errors import CheckpointError, ConfigError
from .feature_judge import FeatureJudge, fit_feature_judge
from .judge import FORMAT as JUDGE_FORMAT
from .judge import Judge, JudgeSpec, decide, train_judge

VAL_FRACTION = 0.25        # the split nmusic.training.runs.train_model (and so `nmusic train`/`demo`) uses
JUDGE_STEPS = 200          # training steps of the network judge
PER_FILE_MAX = 32          # real clips tile each file, at most this many per file ...
MAX_TRAIN_CLIPS = 1024     # ... at most this many training clips (originality references) ...
MAX_HELDOUT_CLIPS = 512    # ... and held-out clips
MAX_FAKE_CLIPS = 96        # held-out clips the fakes are made from
FEATURE_JUDGE_CLIPS = 768  # training clips the second judge is fitted on ...
INVERTED_CLIPS = 192       # ... of which at most this many (a third at most) after the round trip (both judges)
GL_CLIPS = 16              # held-out clips for the spectral figures of the inversion
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
    from ..training.checkpoint import BEST, list_checkpoints, looks_complete

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
    """Short hash of what the judges depend on: files, lengths, genres, split, spectrogram, judge set-up."""
    desc = json.dumps({"paths": cache.paths, "lengths": cache.lengths.tolist(), "genre_ids": cache.genre_ids.tolist(),
                       "genres": cache.genres, "train": list(train_files), "val": list(val_files),
                       "spec": spec.to_dict(), "judge": [JUDGE_FORMAT, JudgeSpec().to_dict()]}, sort_keys=True)
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


def invert(mels: torch.Tensor, front_end: MelFrontEnd, samples: int | None = None, batch: int = 32) -> torch.Tensor:
    """Spectrograms ``(N, n_mels, frames)`` -> audio ``(N, samples)`` the way listeners get it (Griffin-Lim)."""
    device = front_end.filterbank.device
    out = [front_end.invert(mels[i:i + batch].to(device), length=samples).cpu() for i in range(0, len(mels), batch)]
    return torch.cat(out) if out else torch.zeros(0, samples or 0)


@dataclass
class Judged:
    """What the judges make of a set of clips: network features ``(N, 128)`` and logits, the second
    judge's logits, the true (or asked-for) genres, and where real clips came from."""

    features: torch.Tensor
    logits: torch.Tensor
    feature_logits: torch.Tensor
    labels: torch.Tensor
    chunks: list = field(default_factory=list)

    def predictions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each judge's answer per clip: a genre id, or -1 where it is undecided (:func:`nmusic.evaluation.judge.decide`)."""
        return decide(self.logits), decide(self.feature_logits)

    def subset(self, idx) -> "Judged":
        idx = list(idx)
        return Judged(self.features[idx], self.logits[idx], self.feature_logits[idx], self.labels[idx],
                      [self.chunks[i] for i in idx] if self.chunks else [])


class EvaluationData:
    """One (cache, spectrogram, split): the real audio, its judges, and the judged real clips per length."""

    def __init__(self, cache_path: Path, spec: SpecParams, seed: int, device: torch.device):
        self.cache_path, self.spec, self.seed, self.device = cache_path, spec, seed, device
        self.cache = AudioCache.load(cache_path, sample_rate=spec.sample_rate)
        self.train_files, self.val_files = split_by_file(self.cache, val_fraction=VAL_FRACTION, seed=seed)
        if not self.val_files:
            raise ConfigError(f"{cache_path}: no held-out files (a genre needs at least 2 files for one to be "
                              f"held out); add files, the real-data metrics need unseen clips")
        self.fe = MelFrontEnd(spec).to(device)
        self.rate = self.cache.sample_rate
        self.fingerprint = data_fingerprint(self.cache, self.train_files, self.val_files, spec)
        self.name = spec_name(spec)
        self.judge: Judge | None = None
        self.feature_judge: FeatureJudge | None = None
        self.judge_paths: dict[str, str] = {}
        self.reused: dict[str, bool] = {}
        self._real: dict[int, dict] = {}

    # --- audio -----------------------------------------------------------------------------------
    def clips(self, chunks, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not chunks:
            return torch.zeros(0, samples), torch.zeros(0, dtype=torch.long)
        return ChunkDataset(self.cache, samples).__getitems__(chunks)

    def round_trip(self, wave: torch.Tensor) -> torch.Tensor:
        """Real audio -> the generator's spectrogram -> its inversion (what a perfect generator would sound like)."""
        samples = wave.shape[-1]
        mels = torch.cat([self.fe(wave[i:i + 32].to(self.device)).cpu() for i in range(0, len(wave), 32)])
        return invert(mels, self.fe, samples)

    # --- judges ----------------------------------------------------------------------------------
    def judges(self, out_dir: Path, steps: int, progress: bool) -> tuple[Judge, FeatureJudge]:
        """The two judges of this data: loaded when saved earlier for it, else trained and saved."""
        if self.judge is not None:
            return self.judge, self.feature_judge
        stem = f"{self.name}-{self.fingerprint}.pt"
        places = [self.cache_path.parent, out_dir]
        self.judge = self._reuse("judge", [p / f"judge-{stem}" for p in places], lambda p: Judge.load(p, self.device),
                                 progress)
        self.feature_judge = self._reuse("feature_judge", [p / f"feature-judge-{stem}" for p in places],
                                         FeatureJudge.load, progress)
        if self.judge is not None and self.feature_judge is not None:
            return self.judge, self.feature_judge
        # Training clips, and the same after the round trip: both judges learn that inversion artefacts carry no genre.
        samples = round(JudgeSpec().clip_seconds * self.rate)
        chunks = tile_chunks(self.cache, self.train_files, samples, max_clips=FEATURE_JUDGE_CLIPS, seed=self.seed)
        wave, labels = self.clips(chunks, samples)
        pick = M.balanced_subset(labels, min(len(wave) // 3, INVERTED_CLIPS), self.seed)   # every genre alike
        rest = torch.ones(len(wave), dtype=torch.bool).index_fill_(0, pick, False)
        _say(progress, f"inverting {len(pick)} real training clips (mel -> Griffin-Lim) for the judges")
        inverted = (self.round_trip(wave[pick]), labels[pick])
        if self.judge is None:
            _say(progress, f"training the genre judge on {len(self.train_files)} real training files")
            self.judge = train_judge(self.cache, self.train_files, inverted=inverted, steps=steps, seed=self.seed,
                                     device=self.device, progress=progress)
            self.judge.metrics["data_fingerprint"] = self.fingerprint
            self._save("judge", self.judge, [p / f"judge-{stem}" for p in places])
        if self.feature_judge is None:
            _say(progress, "fitting the feature judge")
            self.feature_judge = fit_feature_judge(torch.cat([wave[rest], inverted[0]]),
                                                   torch.cat([labels[rest], inverted[1]]), self.rate,
                                                   self.cache.genres)
            self.feature_judge.metrics["data_fingerprint"] = self.fingerprint
            self._save("feature_judge", self.feature_judge, [p / f"feature-judge-{stem}" for p in places])
        return self.judge, self.feature_judge

    def _reuse(self, kind: str, paths, load, progress: bool):
        for p in paths:
            if not p.is_file():
                continue
            try:
                judge = load(p)
            except CheckpointError as e:
                _say(progress, f"not reusing {p}: {e}")
                continue
            if judge.genres == self.cache.genres and judge.metrics.get("data_fingerprint") == self.fingerprint:
                self.judge_paths[kind], self.reused[kind] = str(p), True
                _say(progress, f"reusing the {kind.replace('_', ' ')} {p}")
                return judge
        self.reused[kind] = False
        return None

    def _save(self, kind: str, judge, paths) -> None:
        for p in paths:
            try:
                judge.save(p)
                self.judge_paths[kind] = str(p)
                return
            except OSError:
                continue

    def judge_audio(self, wave: torch.Tensor, labels: torch.Tensor, chunks=None) -> Judged:
        feats, logits = self.judge.embed(wave, self.rate)
        return Judged(feats, logits, self.feature_judge.logits(wave, self.rate), labels.long(), list(chunks or []))

    # --- real clips ------------------------------------------------------------------------------
    def real(self, samples: int) -> dict:
        """Judged real clips of ``samples`` samples: ``train`` (as recorded), ``heldout`` (as recorded),
        ``heldout_inverted`` (after the round trip) and the two halves of held-out files."""
        if samples not in self._real:
            train = tile_chunks(self.cache, self.train_files, samples, max_clips=MAX_TRAIN_CLIPS, seed=self.seed)
            held = tile_chunks(self.cache, self.val_files, samples, max_clips=MAX_HELDOUT_CLIPS, seed=self.seed)
            t_wave, t_labels = self.clips(train, samples)
            h_wave, h_labels = self.clips(held, samples)
            first, second = M.split_halves([f for f, _ in held], h_labels, self.seed)
            self._real[samples] = {
                "train": self.judge_audio(t_wave, t_labels, train),
                "heldout": self.judge_audio(h_wave, h_labels, held),
                "heldout_inverted": self.judge_audio(self.round_trip(h_wave), h_labels, held),
                "halves": (first, second),
            }
        return self._real[samples]

    def hours(self, files) -> float:
        return float(self.cache.lengths[list(files)].sum()) / self.rate / 3600


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


def evaluation_frames(recipe, judge_seconds: float) -> int | None:
    """Frames to generate for evaluation: MelNet samples as long as the judge's clips (it can make any
    length); a fixed-length generator (``None``) makes its own clip."""
    if recipe.name == "melnet":
        return recipe.spec.frames(round(judge_seconds * recipe.spec.sample_rate))
    return None


def sample_generated(recipe, n_per_genre: int, seed: int, n_frames: int | None = None,
                     temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_genre`` mels per genre ``(G*n, n_mels, frames)`` and their genre ids, seeded per genre."""
    from ..generate import sample_mels

    mels, labels = [], []
    extra = {} if n_frames is None else {"n_frames": n_frames}
    for g in range(len(recipe.genres)):
        mels.append(sample_mels(recipe, [g] * n_per_genre, seed=seed + 1000 * g, temperature=temperature, **extra))
        labels.append(torch.full((n_per_genre,), g, dtype=torch.long))
    return torch.cat(mels), torch.cat(labels)


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
    floor = b[M.balanced_subset(labels, len(generated), seed)] if len(b) else b
    out.update(fd=M.frechet_distance(generated, a), kd=M.kernel_distance(generated, a), n_floor=len(floor))
    if len(floor) >= 2:
        out.update(fd_floor=M.frechet_distance(floor, a), kd_floor=M.kernel_distance(floor, a))
    return out


def evaluate_run(run_dir: Path, data: EvaluationData, recipe, ckpt: dict, out_dir: Path, n_per_genre: int,
                 seed: int, progress: bool) -> dict:
    """All metrics of one run (see the module docstring); also writes its PNGs into ``out_dir``."""
    name = run_label(run_dir)
    spec, genres = data.spec, data.cache.genres
    frames = evaluation_frames(recipe, data.judge.spec.clip_seconds)
    _say(progress, f"{name}: sampling {n_per_genre} clips per genre, inverting them with Griffin-Lim")
    mels, labels = sample_generated(recipe, n_per_genre, seed, frames)
    samples = spec.samples(int(mels.shape[-1]))
    gen = data.judge_audio(invert(mels, data.fe, samples), labels)
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
    info = _read_json(run_dir / "run.json")
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
        "n_generated": len(labels), "n_per_genre": n_per_genre, "seed": seed, "inversion": "griffin-lim",
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
    fakes and probes of :mod:`nmusic.evaluation.fakes` made from them (after the inversion); with a verdict per judge."""
    samples = round(data.judge.spec.clip_seconds * data.rate)
    genres = data.cache.genres
    real = data.real(samples)
    idx = M.balanced_subset(real["heldout"].labels, MAX_FAKE_CLIPS, seed)
    chunks = [real["heldout"].chunks[i] for i in idx.tolist()]
    wave, labels = data.clips(chunks, samples)
    mels = torch.cat([data.fe(wave[i:i + 32].to(data.device)).cpu() for i in range(0, len(wave), 32)])
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
        "spec": data.name, "spec_params": data.spec.to_dict(), "clip_seconds": samples / data.rate,
        "n_real": len(real["heldout"].labels), "n_fakes": len(labels), "rows": table, "verdict": verdicts,
        "judge": {"path": data.judge_paths.get("judge"), "reused": data.reused.get("judge"),
                  "spec": data.judge.spec.to_dict(), **{k: data.judge.metrics.get(k) for k in ("steps", "train_seconds")}},
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
    chunks = tile_chunks(data.cache, data.val_files, n, max_clips=GL_CLIPS, seed=seed)
    wave, _ = data.clips(chunks, n)
    torch.manual_seed(seed)  # Griffin-Lim starts from random phases
    bound = griffin_lim_upper_bound(wave.to(data.fe.filterbank.device), data.fe)
    return {"n_clips": len(chunks), "clip_seconds": n / data.rate,
            **{k: bound[k] for k in ("spectral_convergence_db", "log_spectral_distance_db",
                                      "mel_spectral_convergence_db")}}


def evaluate_runs(run_dirs, out_dir, cache_path=None, device: str = "auto", n_per_genre: int = 16,
                  judge_steps: int = JUDGE_STEPS, seed: int = 0, ratings=None, test_id: str | None = None,
                  progress: bool = True) -> dict:
    """Evaluate every run in ``run_dirs``; write ``metrics.json``, ``metrics.md`` and PNGs to ``out_dir``.

    ``ratings``: a listening-test CSV (default: ``listening_test.csv`` in the folder holding the
    first run, when it exists) for the MOS column; ``test_id``: only that blind test's ratings
    (default: all of the file, matched to runs by run name). Returns the metrics dict that
    ``metrics.json`` holds.
    """
    from ..training.trainer import describe_checkpoint, load_run, resolve_device

    if n_per_genre < 2:
        raise ConfigError(f"--n must be at least 2 clips per genre (got {n_per_genre}); statistics need several")
    run_dirs = [Path(r) for r in run_dirs]
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
        _say(progress, f"{run_label(run_dir)}: {describe_checkpoint(ckpt)}")
        spec = SpecParams.from_dict(ckpt["spec"])
        cpath = find_cache(run_dir, cache_path)
        split_seed = int((ckpt.get("train_config") or {}).get("seed", 0))
        key = (str(cpath.resolve()), json.dumps(spec.to_dict(), sort_keys=True), split_seed)
        if key not in datas:
            datas[key] = EvaluationData(cpath, spec, split_seed, dev)
            same = sum(spec_name(d.spec) == spec_name(spec) for d in datas.values())
            if same > 1:  # another data cache with the same spectrogram: keep their sections apart
                datas[key].name += f"-data{same}"
        data = datas[key]
        if list(recipe.genres) != list(data.cache.genres):
            raise ConfigError(f"{run_dir} was trained on genres {recipe.genres} but {cpath} holds {data.cache.genres}; "
                              f"pass the cache it was trained on with --cache")
        data.judges(out, judge_steps, progress)
        result = evaluate_run(run_dir, data, recipe, ckpt, out, n_per_genre, seed, progress)
        warnings += result.pop("warnings")
        runs.append(result)
        del recipe  # free the model before loading the next one
    reference = [judge_validity(d, seed, out) for d in datas.values()]
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
    from .listening_test import mos_by_source
    mos = mos_by_source(ratings, test_id) if ratings.is_file() else {}
    result = {"format": "nmusic-metrics-2", "runs": runs, "reference": reference, "mos": mos,
              "ratings_csv": str(ratings) if mos else None, "ratings_test": test_id, "n_per_genre": n_per_genre,
              "seed": seed, "device": str(dev), "warnings": warnings, "images": {"fd": "fd.png"} if runs else {}}
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
JUDGE_NAMES = {"judge": "network judge", "features": "feature judge"}
ROW_NAMES = {"real": "real held-out audio", "real-inverted": "real held-out -> mel -> Griffin-Lim",
             **{k: f"fake: {v}" for k, v in FK.FAKES.items()}, **{k: f"probe: {v}" for k, v in FK.PROBES.items()}}


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
                     "-" if r["train_khz"] is None else f"{r['train_khz']:.1f} kHz", M.fmt_seconds(r["epoch_seconds"]),
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
             f"{r['spec']} spectrogram), {r['n_per_genre']} clips of {r['clip_seconds']:.1f} s per genre, inverted "
             f"with Griffin-Lim.", "",
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
              "judge* hears rhythm and spectral movement, not the average spectrum (nmusic.evaluation.judge), the *feature "
              "judge* is a linear model on named musical features (nmusic.evaluation.feature_judge); *FD*/*KD*: Fréchet and "
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
    for r in metrics["runs"]:
        lines += run_markdown(r)
    if metrics.get("mos"):
        from .listening_test import summary_markdown
        lines += ["## Blind listening test", "", f"Ratings: `{metrics['ratings_csv']}`", "",
                  summary_markdown(sorted(metrics["mos"].values(), key=lambda s: -s["mean"]))]
    return "\n".join(lines) + "\n"
