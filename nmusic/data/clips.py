"""The clips the models learn from, cut from the audio cache (paper section 4.1).

The paper built each mini-batch from "a random, fixed-length chunk of a random song" concatenated
with other such chunks, with DataLoader worker processes. Here:

* :func:`split_by_file` splits train/validation by *file* (never by clip), stratified per genre,
  with :data:`VAL_FRACTION` held out: the one split that training, evaluation and the notebooks use.
* :class:`ChunkSampler` draws, for training step ``s``, a batch of ``(file, offset)`` pairs from a
  generator seeded by ``(seed, rank, s)`` only, so a run resumed at step ``s`` sees the very same
  batches and every DDP rank sees different ones.
* :func:`make_loader` wraps it in a ``DataLoader`` yielding ``(wave (B, clip_samples) float32 in
  [-1, 1], genre (B,) int64)``. Log-mel is *not* computed here: the trainer runs
  :class:`nmusic.frontend.MelFrontEnd` on the training device, in batch.
* :func:`spaced_chunks` / :func:`fixed_clips` give deterministic evaluation sets (evenly spaced
  chunks per file, a genre-balanced subset by :func:`balanced_subset`); :func:`read_chunks` reads
  any ``(file, offset)`` list.
"""
from __future__ import annotations

import hashlib
import multiprocessing

import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import ConfigError, NmusicError
from .cache import INT16_SCALE, AudioCache

VAL_FRACTION = 0.25  # share of each genre's files held out for validation and evaluation
BALANCES = ("genre", "duration", "file")


# --- train / validation split ---------------------------------------------------------------------------
def split_by_file(cache: AudioCache, val_fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[list[int], list[int]]:
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


def balanced_subset(labels, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` items of ``labels (N,)``, classes taking turns (as equal as possible), seeded."""
    labels = torch.as_tensor(labels).long().cpu()
    n = min(int(n), len(labels))
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(labels), generator=g)
    rank = torch.zeros(len(labels), dtype=torch.long)  # position of each item within its class, in shuffled order
    seen: dict[int, int] = {}
    for i in order.tolist():
        c = int(labels[i])
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i].item() + 1
    keys = rank * (len(labels) + 1) + torch.argsort(order)  # by turn, then shuffled position
    return torch.sort(torch.argsort(keys)[:n]).values


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
def spaced_chunks(cache: AudioCache, files, clip_samples: int, per_file: int = 4, as_many_as_fit: bool = False,
                  max_clips: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """``(file, offset)`` of evenly spaced clips of every file: ``per_file`` of them (with
    ``as_many_as_fit``: as many non-overlapping ones as the file holds, at most ``per_file``).

    Chunk ``k`` of ``n`` is centred in the ``k``-th of ``n`` equal parts of its file (so intros and
    fade-outs are avoided); a file no longer than a clip gives one zero-padded clip. With
    ``max_clips``, a subset chosen by ``seed`` with genres as equal as possible is kept
    (:func:`balanced_subset`), in file order.
    """
    if per_file < 1 or clip_samples < 1:
        raise ConfigError(f"per_file and clip_samples must be >= 1 (got {per_file}, {clip_samples})")
    chunks = []
    for f in files:
        length = int(cache.lengths[f])
        if length <= clip_samples:
            chunks.append((int(f), 0))
            continue
        n = min(per_file, length // clip_samples) if as_many_as_fit else per_file
        for k in range(n):
            centre = (k + 0.5) * length / n
            chunks.append((int(f), min(max(round(centre - clip_samples / 2), 0), length - clip_samples)))
    if max_clips is not None and len(chunks) > max_clips:
        keep = balanced_subset(cache.genre_ids[[f for f, _ in chunks]], max_clips, seed)
        chunks = [chunks[i] for i in keep.tolist()]
    return chunks


def read_chunks(cache: AudioCache, chunks: list[tuple[int, int]],
                clip_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(wave (N, clip_samples) float32, genre (N,) int64)`` of the ``(file, offset)`` ``chunks``."""
    if not chunks:
        return torch.zeros(0, clip_samples), torch.zeros(0, dtype=torch.int64)
    return ChunkDataset(cache, clip_samples).__getitems__(list(chunks))


def fixed_clips(cache: AudioCache, files, clip_samples: int, per_file: int = 4, seed: int = 0,
                max_clips: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic evaluation set: ``per_file`` evenly spaced clips of every file (:func:`spaced_chunks`),
    as ``(wave (N, clip_samples) float32, genre (N,) int64)``."""
    return read_chunks(cache, spaced_chunks(cache, files, clip_samples, per_file, max_clips=max_clips, seed=seed),
                       clip_samples)


# --- the trainer's data ---------------------------------------------------------------------------------
class AudioClips:
    """What the trainer draws batches from by default (:meth:`nmusic.models.base.Recipe.training_data`):
    random ``clip_frames``-long clips of an audio cache, turned into normalised log-mel on the training
    device. A model family that learns from something else returns an object with the same members
    (``genres``, ``clip_frames``, ``clip_samples``, ``describe``, ``to``, ``loader``, ``fixed``,
    ``model_input``), as MidiNet does for piano-roll bars (:mod:`nmusic.models.midinet.data`)."""

    def __init__(self, cache: AudioCache, spec, clip_frames: int):
        if not isinstance(cache, AudioCache):
            raise ConfigError(f"this model trains on audio, but it was given a {type(cache).__name__}; give the "
                              f"audio cache that `nmusic prepare` wrote")
        if int(cache.sample_rate) != spec.sample_rate:
            raise ConfigError(
                f"the audio cache holds {cache.sample_rate} Hz audio but the model's spectrogram needs "
                f"{spec.sample_rate} Hz; re-create the cache with `nmusic prepare ... --sample-rate "
                f"{spec.sample_rate}` or pick a model config whose spec matches")
        self.cache, self.spec, self.genres = cache, spec, list(cache.genres)
        self.clip_frames, self.clip_samples = int(clip_frames), spec.samples(int(clip_frames))
        self.front_end = None

    def describe(self) -> str:
        hours = float(self.cache.lengths.sum()) / self.cache.sample_rate / 3600
        return f"{hours:.2f} h at {self.cache.sample_rate} Hz"

    def to(self, device) -> "AudioClips":
        from ..frontend import MelFrontEnd
        self.front_end = MelFrontEnd(self.spec).to(device)
        return self

    def loader(self, files, batch_size: int, **kwargs) -> DataLoader:
        """``kwargs``: :func:`make_loader`'s ``seed``, ``start_step``, ``steps``, ``num_workers``, ``pin_memory``,
        ``rank``, ``world_size``."""
        return make_loader(self.cache, files, self.clip_samples, batch_size, **kwargs)

    def fixed(self, files, seed: int, max_items: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        return fixed_clips(self.cache, files, self.clip_samples, seed=seed, max_clips=max_items)

    @torch.no_grad()
    def model_input(self, wave: torch.Tensor) -> torch.Tensor:
        return self.front_end(wave)
