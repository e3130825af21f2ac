"""What the evaluation compares generated clips with: real audio, its two judges, and how they judge it.

:class:`EvaluationData` is one (audio cache, spectrogram, split) setting: the real training and
held-out clips, cut from the cache by file exactly as training split it; the two judges of
:mod:`nmusic.evaluation.judge` and :mod:`nmusic.evaluation.feature_judge`, trained on real
*training* clips only (a third of them after the generator's spectrogram and its inversion) and
saved next to the cache (``judge-<spec>-<data>.pt``, ``feature-judge-<spec>-<data>.pt``, keyed by
:func:`data_fingerprint`) to be reused; and :class:`Judged` sets of clips (features, both judges'
logits, labels), computed once per clip length.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import from_dict, to_dict
from ..data.cache import AudioCache
from ..data.clips import VAL_FRACTION, balanced_subset, read_chunks, spaced_chunks, split_by_file
from ..errors import CheckpointError, ConfigError
from ..frontend import MelFrontEnd, SpecParams, spec_name
from ..generate import invert
from ..utils.progress import say
from . import metrics as M
from .feature_judge import FeatureJudge, fit_feature_judge
from .judge import FORMAT as JUDGE_FORMAT
from .judge import Judge, JudgeSpec, decide, train_judge

PER_FILE_MAX = 32          # real clips tile each file, at most this many per file ...
MAX_TRAIN_CLIPS = 1024     # ... at most this many training clips (originality references) ...
MAX_HELDOUT_CLIPS = 512    # ... and held-out clips
FEATURE_JUDGE_CLIPS = 768  # training clips the second judge is fitted on ...
INVERTED_CLIPS = 192       # ... of which at most this many (a third at most) after the round trip (both judges)


def report_progress(progress: bool, message: str) -> None:
    if progress:
        say(f"[nmusic evaluate] {message}", file=sys.stderr)


def data_fingerprint(cache: AudioCache, train_files, val_files, spec: SpecParams) -> str:
    """Short hash of what the judges depend on: files, lengths, genres, split, spectrogram, judge set-up."""
    desc = json.dumps({"paths": cache.paths, "lengths": cache.lengths.tolist(), "genre_ids": cache.genre_ids.tolist(),
                       "genres": cache.genres, "train": list(train_files), "val": list(val_files),
                       "spec": to_dict(spec), "judge": [JUDGE_FORMAT, to_dict(JudgeSpec())]}, sort_keys=True)
    return hashlib.sha1(desc.encode()).hexdigest()[:10]


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
        """Each judge's answer per clip: a genre id, or -1 where it is undecided
        (:func:`nmusic.evaluation.judge.decide`)."""
        return decide(self.logits), decide(self.feature_logits)

    def subset(self, idx) -> "Judged":
        idx = list(idx)
        return Judged(self.features[idx], self.logits[idx], self.feature_logits[idx], self.labels[idx],
                      [self.chunks[i] for i in idx] if self.chunks else [])


def split_seed(ckpt: dict) -> int:
    """The seed a run's files were split by: its training seed (the trainer splits with it)."""
    return int((ckpt.get("train_config") or {}).get("seed", 0))


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

    @classmethod
    def of_run(cls, ckpt: dict, cache_path: Path, device: torch.device) -> "EvaluationData":
        """The setting a run was trained in: its spectrogram and split, on ``cache_path``."""
        return cls(cache_path, from_dict(SpecParams, ckpt["spec"]), split_seed(ckpt), device)

    # --- audio -----------------------------------------------------------------------------------
    def clips(self, chunks, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_chunks(self.cache, chunks, samples)

    def mels(self, wave: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Real audio ``(N, samples)`` -> the generator's spectrograms ``(N, n_mels, frames)`` on the CPU,
        ``batch`` clips at a time on the evaluation device."""
        return torch.cat([self.fe(wave[i:i + batch].to(self.device)).cpu() for i in range(0, len(wave), batch)])

    def round_trip(self, wave: torch.Tensor) -> torch.Tensor:
        """Real audio -> the generator's spectrogram -> its inversion (what a perfect generator would sound like)."""
        return invert(self.mels(wave), self.fe, wave.shape[-1])

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
        chunks = spaced_chunks(self.cache, self.train_files, samples, PER_FILE_MAX, as_many_as_fit=True,
                               max_clips=FEATURE_JUDGE_CLIPS, seed=self.seed)
        wave, labels = self.clips(chunks, samples)
        pick = balanced_subset(labels, min(len(wave) // 3, INVERTED_CLIPS), self.seed)   # every genre alike
        rest = torch.ones(len(wave), dtype=torch.bool).index_fill_(0, pick, False)
        report_progress(progress, f"inverting {len(pick)} real training clips (mel -> Griffin-Lim) for the judges")
        inverted = (self.round_trip(wave[pick]), labels[pick])
        if self.judge is None:
            report_progress(progress, f"training the genre judge on {len(self.train_files)} real training files")
            self.judge = train_judge(self.cache, self.train_files, inverted=inverted, steps=steps, seed=self.seed,
                                     device=self.device, progress=progress)
            self.judge.metrics["data_fingerprint"] = self.fingerprint
            self._save("judge", self.judge, [p / f"judge-{stem}" for p in places])
        if self.feature_judge is None:
            report_progress(progress, "fitting the feature judge")
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
                report_progress(progress, f"not reusing {p}: {e}")
                continue
            if judge.genres == self.cache.genres and judge.metrics.get("data_fingerprint") == self.fingerprint:
                self.judge_paths[kind], self.reused[kind] = str(p), True
                report_progress(progress, f"reusing the {kind.replace('_', ' ')} {p}")
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
            train = spaced_chunks(self.cache, self.train_files, samples, PER_FILE_MAX, as_many_as_fit=True,
                                  max_clips=MAX_TRAIN_CLIPS, seed=self.seed)
            held = spaced_chunks(self.cache, self.val_files, samples, PER_FILE_MAX, as_many_as_fit=True,
                                 max_clips=MAX_HELDOUT_CLIPS, seed=self.seed)
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
