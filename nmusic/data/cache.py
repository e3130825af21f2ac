"""The RAM-resident audio corpus (paper section 4.1): every file decoded and resampled once.

The paper made training GPU-bound by decoding and resampling the whole dataset once, with the
torchaudio resampler, and keeping it in CPU memory ("reducing disk accesses during training from
O(n) to O(1)"). Here :func:`prepare` decodes + resamples every manifest row in a process pool and
stores all of it as one flat int16 tensor plus file offsets (:class:`AudioCache`), saved as a single
``torch.save`` file that reloads memory-mapped in well under a second. The clips the models train
on are cut from it by :mod:`nmusic.data.clips`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import NmusicError
from ..utils.files import atomic_write
from ..utils.parallel import cpu_count, ordered_map
from ..utils.progress import progress_bar
from .decode import load_audio

CACHE_FORMAT = "nmusic-audio-cache"
CACHE_VERSION = 1
INT16_SCALE = 32767.0  # float [-1, 1] <-> int16 [-32767, 32767]


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
        """Write one ``torch.save`` file atomically (:func:`nmusic.utils.files.atomic_write`)."""
        state = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "audio": self.audio, "offsets": self.offsets,
                 "genre_ids": self.genre_ids, "genres": list(self.genres), "paths": list(self.paths),
                 "sample_rate": int(self.sample_rate), "skipped": list(self.skipped)}
        return atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path, sample_rate: int | None = None) -> "AudioCache":
        """Read a cache written by :meth:`save`; :class:`CacheError` (naming the file) if unusable.

        The audio is memory-mapped (``torch.load(mmap=True)``): loading takes well under a second
        whatever the size, pages are read when first used, and processes that load the same file
        (DataLoader workers, DDP ranks) share one copy in the page cache. With ``sample_rate``
        given, a cache prepared at another rate is refused too.
        """
        path = Path(path)
        if not path.is_file():
            raise CacheError(f"{path}: audio cache not found; {_rerun(path)}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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
    workers = min(workers if workers is not None else cpu_count(), len(rows))
    root = Path(manifest.root)
    jobs = [(str(root / r["path"]), int(sample_rate)) for r in rows]
    # Preallocate from the manifest durations so peak memory stays ~ one copy of the corpus.
    estimate = sum(int(np.ceil(float(r.get("duration", 0)) * sample_rate)) + 2 for r in rows)
    audio = torch.empty(estimate, dtype=torch.int16)
    offsets, genre_ids, paths, skipped, used = [0], [], [], [], 0
    bar = progress_bar(total=len(rows), desc=f"decode + resample to {sample_rate} Hz", unit="file",
                       disable=not progress)
    try:
        for (data, error), row in zip(ordered_map(_decode_job, jobs, workers, name="prepare"), rows):
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
            bar.set_postfix(hours=f"{used / sample_rate / 3600:.2f}", refresh=False)
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
