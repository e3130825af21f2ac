"""RAM-resident audio corpus and random-chunk mini-batches (paper section 4.1).

The paper's data pipeline made training GPU-bound by (1) decoding and resampling the whole dataset
once, with the torchaudio resampler, and keeping it in CPU memory ("reducing disk accesses during
training from O(n) to O(1)"), and (2) building each mini-batch from "a random, fixed-length chunk of
a random song" concatenated with other such chunks, with DataLoader worker processes. Here:

* :func:`prepare` decodes + resamples every manifest row in a process pool and stores all of it as
  one flat int16 tensor plus file offsets (:class:`AudioCache`), saved as a single ``torch.save``
  file that reloads in well under a second per hour of audio.
* :func:`split_by_file` splits train/validation by *file* (never by clip), stratified per genre.
* :class:`ChunkSampler` draws, for training step ``s``, a batch of ``(file, offset)`` pairs from a
  generator seeded by ``(seed, rank, s)`` only, so a run resumed at step ``s`` sees the very same
  batches and every DDP rank sees different ones.
* :func:`make_loader` wraps it in a ``DataLoader`` yielding ``(wave (B, clip_samples) float32 in
  [-1, 1], genre (B,) int64)``. Log-mel is *not* computed here: the trainer runs
  :class:`nmusic.frontend.MelFrontEnd` on the training device, in batch.
* :func:`fixed_clips` gives a deterministic evaluation set (evenly spaced chunks per file).
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from .decode import load_audio
from ..errors import ConfigError, NmusicError

CACHE_FORMAT = "nmusic-audio-cache"
CACHE_VERSION = 1
INT16_SCALE = 32767.0  # float [-1, 1] <-> int16 [-32767, 32767]
BALANCES = ("genre", "duration", "file")


class CacheError(NmusicError):
    """The audio cache file is missing, corrupt, or does not match what is asked of it."""


def _rerun(path) -> str:
    return f"re-create it with `nmusic prepare MANIFEST --out {path}`"


# --- the cache --------------------------------------------------------------------------------------
@dataclass
class AudioCache:
    """Every file of the corpus, resampled to ``sample_rate``, mono, concatenated.

    ``audio[offsets[i]:offsets[i+1]]`` is file ``i`` (``paths[i]``, genre ``genres[genre_ids[i]]``).
    """

    audio: torch.Tensor      # (N,) int16, all files concatenated
    offsets: torch.Tensor    # (F+1,) int64, offsets[0] = 0, offsets[-1] = N
    genre_ids: torch.Tensor  # (F,) int64 indices into ``genres``
    genres: list[str]
    paths: list[str]         # as in the manifest (relative to its root, posix)
    sample_rate: int
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} of rows prepare dropped

    @classmethod
    def from_waves(cls, waves, genre_ids, genres, paths, sample_rate: int) -> "AudioCache":
        """Build from float waveforms ``[(T_i,) in [-1, 1], ...]`` (quantised to int16)."""
        lengths = torch.tensor([0] + [len(w) for w in waves], dtype=torch.int64)
        audio = torch.cat([_to_int16(torch.as_tensor(w)) for w in waves] or [torch.zeros(0, dtype=torch.int16)])
        return cls(audio, lengths.cumsum(0), torch.as_tensor(genre_ids, dtype=torch.int64), list(genres),
                   list(paths), int(sample_rate))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> torch.Tensor:
        """``(F,)`` int64 samples per file."""
        return self.offsets[1:] - self.offsets[:-1]

    def file(self, i: int) -> torch.Tensor:
        """File ``i`` as float32 ``(T_i,)`` in [-1, 1]."""
        return self.audio[self.offsets[i]:self.offsets[i + 1]].float().div_(INT16_SCALE)

    def hours_per_genre(self) -> dict[str, float]:
        hours = torch.zeros(len(self.genres), dtype=torch.float64)
        hours.index_add_(0, self.genre_ids, self.lengths.double())
        return {g: float(h) / self.sample_rate / 3600 for g, h in zip(self.genres, hours)}

    def share_memory_(self) -> "AudioCache":
        """Move the audio to shared memory so worker processes map it instead of copying it."""
        for t in (self.audio, self.offsets, self.genre_ids):
            t.share_memory_()
        return self

    def save(self, path) -> Path:
        """Write one ``torch.save`` file atomically (temporary file, fsync, ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "audio": self.audio, "offsets": self.offsets,
                 "genre_ids": self.genre_ids, "genres": list(self.genres), "paths": list(self.paths),
                 "sample_rate": int(self.sample_rate), "skipped": list(self.skipped)}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path, sample_rate: int | None = None) -> "AudioCache":
        """Read a cache written by :meth:`save`; :class:`CacheError` (naming the file) if unusable.

        With ``sample_rate`` given, a cache prepared at another rate is refused too.
        """
        path = Path(path)
        if not path.is_file():
            raise CacheError(f"{path}: audio cache not found; {_rerun(path)}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, wrong file type, ...: all mean "corrupt"
            raise CacheError(f"{path}: audio cache is corrupt or not a cache file ({type(e).__name__}: "
                             f"{str(e)[:200]}); {_rerun(path)}") from None
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            raise CacheError(f"{path}: not an nmusic audio cache; {_rerun(path)}")
        if state.get("version") != CACHE_VERSION:
            raise CacheError(f"{path}: audio cache version {state.get('version')} is not supported by this "
                             f"nmusic (needs {CACHE_VERSION}); {_rerun(path)}")
        try:
            cache = cls(state["audio"], state["offsets"], state["genre_ids"], list(state["genres"]),
                        list(state["paths"]), int(state["sample_rate"]), list(state.get("skipped", [])))
        except KeyError as e:
            raise CacheError(f"{path}: audio cache lacks the field {e}; {_rerun(path)}") from None
        problem = cache._check()
        if problem:
            raise CacheError(f"{path}: audio cache is inconsistent ({problem}); {_rerun(path)}")
        if sample_rate is not None and cache.sample_rate != sample_rate:
            raise CacheError(f"{path}: audio cache holds {cache.sample_rate} Hz audio but {sample_rate} Hz is "
                             f"needed; re-create it with `nmusic prepare MANIFEST --out {path} "
                             f"--sample-rate {sample_rate}` (or use another cache file)")
        return cache

    def _check(self) -> str | None:
        a, o, g = self.audio, self.offsets, self.genre_ids
        if not (isinstance(a, torch.Tensor) and a.dtype == torch.int16 and a.dim() == 1):
            return "audio must be a 1-D int16 tensor"
        if not (isinstance(o, torch.Tensor) and o.dtype == torch.int64 and o.shape == (len(self.paths) + 1,)):
            return "offsets must be int64 of length files+1"
        if int(o[0]) != 0 or int(o[-1]) != len(a) or bool((o[1:] < o[:-1]).any()):
            return "offsets must rise from 0 to the audio length"
        if not (isinstance(g, torch.Tensor) and g.dtype == torch.int64 and g.shape == (len(self.paths),)):
            return "genre_ids must be int64, one per file"
        if len(g) and (int(g.min()) < 0 or int(g.max()) >= len(self.genres)):
            return "genre_ids out of range"
        return None


def _to_int16(wave: torch.Tensor) -> torch.Tensor:
    return (wave.float() * INT16_SCALE).round_().clamp_(-INT16_SCALE, INT16_SCALE).to(torch.int16)


# --- prepare: decode + resample everything once -------------------------------------------------------
def _decode_job(job: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    """Worker: ``(path, rate) -> (int16 samples, None)`` or ``(None, why it failed)``."""
    path, sample_rate = job
    try:
        wave, _ = load_audio(path, sample_rate)
        return _to_int16(wave).numpy(), None
    except Exception as e:  # a bad file must never stop the run; report it instead
        reason = str(e) if isinstance(e, NmusicError) else f"{type(e).__name__}: {e}"
        return None, reason.removeprefix(f"{path}: ")


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core already


def _decoded(jobs: list, workers: int):
    """``_decode_job`` over ``jobs``, in order, with at most a few results waiting in memory.

    Uses a process pool (the platform's default start method, like DataLoader workers); if the pool
    cannot start or breaks (no /dev/shm in a sandbox, a killed worker), the rest runs in this process.
    """
    done = 0
    if workers > 1:
        pool = None
        try:
            pool = ProcessPoolExecutor(workers, initializer=_init_worker)
            it = iter(jobs)
            pending = deque(pool.submit(_decode_job, j) for _, j in zip(range(4 * workers), it))
            while pending:
                result = pending.popleft().result()
                job = next(it, None)
                if job is not None:
                    pending.append(pool.submit(_decode_job, job))
                done += 1
                yield result
        except (BrokenProcessPool, OSError) as e:
            print(f"prepare: the decoding processes failed ({type(e).__name__}: {e}); "
                  "decoding the remaining files in this process", file=sys.stderr)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    for job in jobs[done:]:
        yield _decode_job(job)


def prepare(manifest, sample_rate: int, out_path, workers: int | None = None, progress: bool = True) -> AudioCache:
    """Decode + resample every row of ``manifest`` to mono ``sample_rate``, save the cache, return it.

    ``manifest`` needs ``root``, ``rows`` (``genre``, ``path`` relative to root, ``duration``) and
    ``genres``. Runs ``workers`` processes (default: all cores). Files that fail to decode are skipped
    and listed in ``cache.skipped`` (and on stderr); the run only stops if none decodes.
    """
    rows = list(manifest.rows)
    if not rows:
        raise NmusicError("the manifest has no audio files; check the data folder and re-run `nmusic manifest`")
    genres = list(manifest.genres)
    gid = {g: i for i, g in enumerate(genres)}
    workers = min(workers if workers is not None else _cpu_count(), len(rows))
    root = Path(manifest.root)
    jobs = [(str(root / r["path"]), int(sample_rate)) for r in rows]
    # Preallocate from the manifest durations so peak memory stays ~ one copy of the corpus.
    estimate = sum(int(np.ceil(float(r.get("duration", 0)) * sample_rate)) + 2 for r in rows)
    audio = torch.empty(estimate, dtype=torch.int16)
    offsets, genre_ids, paths, skipped, used = [0], [], [], [], 0
    bar = tqdm(total=len(rows), desc=f"decode + resample to {sample_rate} Hz", unit="file", disable=not progress)
    try:
        for (data, error), row in zip(_decoded(jobs, workers), rows):
            bar.update(1)
            if data is None or len(data) == 0:
                skipped.append({"path": row["path"], "reason": error or "no samples"})
                continue
            if used + len(data) > len(audio):  # manifest durations were short: grow
                grown = torch.empty(max(used + len(data), len(audio) + len(audio) // 4), dtype=torch.int16)
                grown[:used] = audio[:used]
                audio = grown
            audio[used:used + len(data)] = torch.from_numpy(data)
            used += len(data)
            offsets.append(used)
            genre_ids.append(gid[row["genre"]])
            paths.append(row["path"])
            bar.set_postfix(hours=f"{used / sample_rate / 3600:.2f}")
    finally:
        bar.close()
    if skipped:
        print(f"prepare: skipped {len(skipped)} of {len(rows)} file(s) that could not be decoded:", file=sys.stderr)
        for s in skipped:
            print(f"  {s['path']}: {s['reason']}", file=sys.stderr)
    if not paths:
        raise NmusicError("no file of the manifest could be decoded (see the reasons above); check the data folder")
    # torch.save writes a view's whole storage: trim unless the slack is negligible.
    audio = audio[:used].clone() if len(audio) - used > len(audio) // 100 else audio[:used]
    cache = AudioCache(audio, torch.tensor(offsets, dtype=torch.int64), torch.tensor(genre_ids, dtype=torch.int64),
                       genres, paths, int(sample_rate), skipped)
    cache.save(out_path)
    return cache


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --- train / validation split ---------------------------------------------------------------------------
def split_by_file(cache: AudioCache, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train_files, val_files)``: file indices, stratified per genre, deterministic by ``seed``.

    Each genre with >= 2 files gives ``round(n * val_fraction)`` files (at least 1, at most n-1) to
    validation; a genre with one file keeps it for training. A file's side depends only on its path,
    the seed and its genre's file count, not on the order of the cache.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    train, val = [], []
    for g in range(len(cache.genres)):
        files = (cache.genre_ids == g).nonzero().flatten().tolist()
        files.sort(key=lambda i: hashlib.sha1(f"{seed}:{cache.paths[i]}".encode()).digest())
        n_val = 0
        if len(files) >= 2 and val_fraction > 0:
            n_val = min(max(round(len(files) * val_fraction), 1), len(files) - 1)
        val += files[:n_val]
        train += files[n_val:]
    return sorted(train), sorted(val)


# --- random chunks ------------------------------------------------------------------------------------
def _step_seed(seed: int, rank: int, step: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ChunkSampler(Sampler):
    """Batch sampler: step ``s`` -> ``[(file, offset), ...]`` of ``batch_size`` random chunks.

    The batch for step ``s`` depends only on ``(seed, rank, s)`` (its own ``torch.Generator``), so
    iterating from ``start_step=k`` gives exactly batches ``k, k+1, ...`` of a run from step 0.
    Infinite unless ``steps`` (the step to stop before) is given.

    balance: ``"genre"``: a uniformly random genre, then one of its files with probability proportional
    to duration; ``"duration"``: files proportional to duration (every second of audio equally likely);
    ``"file"``: files uniformly. The chunk start is uniform over the file; files shorter than a
    chunk are zero-padded at the end.
    """

    def __init__(self, cache: AudioCache, files, clip_samples: int, batch_size: int, seed: int = 0,
                 start_step: int = 0, steps: int | None = None, balance: str = "genre", rank: int = 0,
                 world_size: int = 1):
        super().__init__()
        files = torch.as_tensor(list(files), dtype=torch.int64)
        if len(files) == 0:
            raise NmusicError("no files to draw training chunks from; the split left this set empty")
        if balance not in BALANCES:
            raise ConfigError(f"balance must be one of {BALANCES} (got {balance!r})")
        for name, value in (("clip_samples", clip_samples), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {value})")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in 0..world_size-1 (got rank {rank}, world_size {world_size})")
        self.files, self.clip_samples, self.batch_size = files, int(clip_samples), int(batch_size)
        self.seed, self.start_step, self.steps, self.rank = int(seed), int(start_step), steps, int(rank)
        self.lengths = cache.lengths[files]
        self.room = (self.lengths - self.clip_samples + 1).clamp_min(1)  # possible chunk starts per file
        self.probs = self._probs(cache.genre_ids[files], self.lengths.double(), balance)

    @staticmethod
    def _probs(genre: torch.Tensor, length: torch.Tensor, balance: str) -> torch.Tensor:
        length = length.clamp_min(1)
        if balance == "file":
            return torch.ones_like(length) / len(length)
        if balance == "duration":
            return length / length.sum()
        per_genre = torch.zeros(int(genre.max()) + 1, dtype=torch.float64).index_add_(0, genre, length)
        return length / per_genre[genre] / int((per_genre > 0).sum())

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The ``(file, offset)`` pairs of step ``step``."""
        g = torch.Generator().manual_seed(_step_seed(self.seed, self.rank, step))
        pick = torch.multinomial(self.probs, self.batch_size, replacement=True, generator=g)
        start = (torch.rand(self.batch_size, generator=g, dtype=torch.float64) * self.room[pick]).long()
        return list(zip(self.files[pick].tolist(), start.tolist()))

    def __iter__(self):
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an infinite ChunkSampler has no length (pass steps=...)")
        return max(self.steps - self.start_step, 0)


class ChunkDataset(torch.utils.data.Dataset):
    """``[(file, offset), ...] -> (wave (B, clip_samples) float32 in [-1, 1], genre (B,) int64)``."""

    def __init__(self, cache: AudioCache, clip_samples: int):
        self.cache, self.clip_samples = cache, int(clip_samples)

    def __getitems__(self, chunks: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        audio, offsets = self.cache.audio, self.cache.offsets
        out = torch.zeros(len(chunks), self.clip_samples, dtype=torch.int16)
        files = []
        for row, (f, start) in enumerate(chunks):
            a = int(offsets[f]) + start
            b = min(a + self.clip_samples, int(offsets[f + 1]))
            out[row, :b - a] = audio[a:b]
            files.append(f)
        return out.float().div_(INT16_SCALE), self.cache.genre_ids[files]

    def __getitem__(self, chunk: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        wave, genre = self.__getitems__([chunk])
        return wave[0], genre[0]


def _whole_batch(batch):
    return batch  # ChunkDataset.__getitems__ already returns collated tensors


def make_loader(cache: AudioCache, files, clip_samples: int, batch_size: int, seed: int = 0, start_step: int = 0,
                num_workers: int = 0, pin_memory: bool = False, balance: str = "genre", steps: int | None = None,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """DataLoader of random chunks: yields ``(wave (B, clip_samples) float32, genre (B,) int64)``.

    Batches depend only on ``(seed, rank, step)`` (see :class:`ChunkSampler`), whatever
    ``num_workers``; the loader has its own generator, so iterating it leaves the global torch RNG
    untouched. Infinite unless ``steps`` is given.
    """
    sampler = ChunkSampler(cache, files, clip_samples, batch_size, seed=seed, start_step=start_step, steps=steps,
                           balance=balance, rank=rank, world_size=world_size)
    if num_workers > 0 and multiprocessing.get_start_method() != "fork":
        # Workers that do not fork receive the cache by pickling: shared memory makes that a handle,
        # not a copy. Forked workers already share the parent's pages (never written, never copied).
        cache.share_memory_()
    return DataLoader(ChunkDataset(cache, clip_samples), batch_sampler=sampler, collate_fn=_whole_batch,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(int(seed)))


# --- evaluation clips -----------------------------------------------------------------------------------
def fixed_clips(cache: AudioCache, files, clip_samples: int, per_file: int = 4, seed: int = 0,
                max_clips: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic evaluation set: ``per_file`` evenly spaced chunks of every file.

    Chunk ``k`` of a file is centred in the ``k``-th of ``per_file`` equal parts (so intros and
    fade-outs are avoided); a file shorter than a chunk gives one zero-padded chunk. With
    ``max_clips``, a subset chosen by ``seed`` with genres as equal as possible is kept (in file order).
    Returns ``(wave (N, clip_samples) float32, genre (N,) int64)``.
    """
    if per_file < 1 or clip_samples < 1:
        raise ConfigError(f"per_file and clip_samples must be >= 1 (got {per_file}, {clip_samples})")
    chunks = []
    for f in files:
        length = int(cache.lengths[f])
        if length <= clip_samples:
            chunks.append((int(f), 0))
            continue
        for k in range(per_file):
            centre = (k + 0.5) * length / per_file
            chunks.append((int(f), min(max(round(centre - clip_samples / 2), 0), length - clip_samples)))
    if max_clips is not None and len(chunks) > max_clips:  # a seeded subset, genres taking turns
        order, taken = [], {}
        for i in torch.randperm(len(chunks), generator=torch.Generator().manual_seed(int(seed))).tolist():
            g = int(cache.genre_ids[chunks[i][0]])
            order.append((taken.get(g, 0), len(order), i))
            taken[g] = taken.get(g, 0) + 1
        chunks = [chunks[i] for i in sorted(i for _, _, i in sorted(order)[:max_clips])]
    if not chunks:
        return torch.zeros(0, clip_samples), torch.zeros(0, dtype=torch.int64)
    return ChunkDataset(cache, clip_samples).__getitems__(chunks)
