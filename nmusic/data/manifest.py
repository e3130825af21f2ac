"""The data manifest: which audio files train the models, and as which genre (paper sections 2.2, 4.1).

Paper 2.2: a script writes a csv with each song's genre, file path, duration and sample rate,
combining the genres from separate folders. Here the genre is the top-level folder under the data
root (files nested deeper count for that genre); genre ids are the positions in the sorted genre
names, saved with the data.

Every file is probed, in a process pool over all cores (paper 4.1: use the whole dataset, fast):
its header gives the duration, rate and channels, and a light check decodes a second at its start,
middle and end (:func:`nmusic.data.decode.probe`); only a file whose header cannot be trusted, or
that looks silent there, is decoded in full. ``nmusic prepare`` then decodes each file once. A file
that cannot be decoded, is empty, holds NaN/inf, is shorter than one training clip or is pure
silence is listed in ``Manifest.skipped`` with the reason; it never stops the run (a defect the
light check cannot see, such as a NaN in the middle of a file, is reported by ``prepare``, which
skips the file the same way). Files with other extensions, hidden files and macOS ``__MACOSX``
folders are ignored.

On disk (``save``): ``<name>.csv`` with :data:`MANIFEST_COLUMNS`, ``<name>.skipped.csv`` (path,
reason) and ``<name>.genres.json`` (genres, clip_seconds, root relative to the csv's folder).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DecodeError, FetchError
from ..utils.parallel import parallel_map
from .decode import AUDIO_EXTENSIONS, audio_stats, probe

MANIFEST_COLUMNS = ("genre", "path", "duration", "sample_rate", "channels")
SILENCE_PEAK = 1e-4  # a file whose |sample| never reaches this is "pure silence"
CLIP_SECONDS = 2.0   # files shorter than this (one training clip of the tiny presets) are skipped
_TYPES = {"genre": str, "path": str, "duration": float, "sample_rate": int, "channels": int}


@dataclass
class Manifest:
    root: str                 # data root; row paths are relative to it
    rows: list[dict]          # keys MANIFEST_COLUMNS, path in posix form
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    genres: list[str] = field(default_factory=list)    # genre id = index; default sorted row genres
    clip_seconds: float = CLIP_SECONDS

    def __post_init__(self):
        self.genres = list(self.genres) or sorted({r["genre"] for r in self.rows})
        unknown = sorted({r["genre"] for r in self.rows} - set(self.genres))
        if unknown:
            raise ConfigError(f"manifest rows use genres {unknown} missing from genres {self.genres}; rebuild it.")

    @property
    def genre_ids(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genres)}

    def paths(self) -> list[Path]:
        """Absolute paths of the rows' files, in row order."""
        return [Path(self.root) / r["path"] for r in self.rows]

    def hours_per_genre(self) -> dict[str, float]:
        hours = dict.fromkeys(self.genres, 0.0)
        for r in self.rows:
            hours[r["genre"]] += r["duration"] / 3600
        return hours

    def summary(self, max_skipped: int = 30) -> str:
        """Per-genre files/hours and the skipped files with their reasons."""
        hours = self.hours_per_genre()
        counts = {g: sum(r["genre"] == g for r in self.rows) for g in self.genres}
        lines = [f"{len(self.rows)} files, {sum(hours.values()):.2f} h of audio in {len(self.genres)} genres "
                 f"(clip {self.clip_seconds:g} s); {len(self.skipped)} skipped"]
        lines += [f"  {i:2d} {g:<20} {counts[g]:6d} files {hours[g]:8.2f} h" for i, g in enumerate(self.genres)]
        if self.skipped:
            lines.append("skipped:")
            lines += [f"  {s['path']}: {s['reason']}" for s in self.skipped[:max_skipped]]
            if len(self.skipped) > max_skipped:
                lines.append(f"  ... and {len(self.skipped) - max_skipped} more (see the .skipped.csv file)")
        return "\n".join(lines)

    def save(self, csv_path: str | os.PathLike) -> Path:
        """Write ``<name>.csv``, ``<name>.skipped.csv`` and ``<name>.genres.json``; returns the csv path."""
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(csv_path, MANIFEST_COLUMNS, self.rows)
        write_csv(sibling(csv_path, ".skipped.csv"), ("path", "reason"), self.skipped)
        root = os.path.relpath(Path(self.root).resolve(), csv_path.parent.resolve())
        meta = {"genres": self.genres, "clip_seconds": self.clip_seconds, "root": Path(root).as_posix()}
        sibling(csv_path, ".genres.json").write_text(json.dumps(meta, indent=1) + "\n")
        return csv_path

    @classmethod
    def load(cls, csv_path: str | os.PathLike) -> "Manifest":
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise ConfigError(f"{csv_path}: no manifest there; build one with nmusic.data.manifest.build_manifest.")
        rows = _read_csv(csv_path, MANIFEST_COLUMNS)
        skipped_path, meta_path = sibling(csv_path, ".skipped.csv"), sibling(csv_path, ".genres.json")
        skipped = _read_csv(skipped_path, ("path", "reason")) if skipped_path.is_file() else []
        meta = {"root": ".", "genres": [], "clip_seconds": CLIP_SECONDS}
        if meta_path.is_file():
            try:
                meta.update(json.loads(meta_path.read_text()))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{meta_path}: not valid JSON ({e}); rebuild the manifest.") from None
        root = os.path.normpath(csv_path.parent / meta["root"])
        return cls(root, rows, skipped, meta["genres"], float(meta["clip_seconds"]))


def sibling(csv_path: Path, suffix: str) -> Path:
    """``NAME.csv`` -> ``NAME<suffix>`` (``.skipped.csv``, ``.genres.json``) beside it."""
    return csv_path.with_name(csv_path.stem + suffix)


def write_csv(path: Path, columns: tuple, rows: list[dict]) -> None:
    """``rows`` (dicts; keys beyond ``columns`` ignored) as a CSV with a header line."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _read_csv(path: Path, columns: tuple) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {missing}; expected {list(columns)}. Rebuild the manifest.")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append({c: _TYPES.get(c, str)(row[c]) for c in columns})
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}, line {line}: bad value ({e}); fix or rebuild the manifest.") from None
        return rows


def probe_file(job: tuple[str, str, str, float]) -> dict:
    """Worker: ``(root, genre, rel_path, clip_seconds)`` -> a manifest row or ``{"path", "reason"}``."""
    root, genre, rel, clip_seconds = job
    path = Path(root) / rel
    try:
        if path.stat().st_size == 0:
            return {"path": rel, "reason": "empty (0 bytes)"}
        s = probe(path)
        if s.frames and s.finite and s.peak < SILENCE_PEAK:   # silent where it was checked: is it silent throughout?
            s = audio_stats(path)
    except DecodeError as e:
        return {"path": rel, "reason": "cannot decode: " + str(e).removeprefix(f"{path}: ")}
    except Exception as e:  # noqa: BLE001 - one bad file must never stop the run
        return {"path": rel, "reason": f"cannot decode: {type(e).__name__}: {e}"}
    if s.frames == 0:
        return {"path": rel, "reason": "empty (no audio samples)"}
    if not s.finite:
        return {"path": rel, "reason": "non-finite samples (NaN or inf)"}
    if s.duration < clip_seconds:
        return {"path": rel, "reason": f"shorter than a clip ({s.duration:.2f} s < {clip_seconds:g} s)"}
    if s.peak < SILENCE_PEAK:
        return {"path": rel, "reason": f"pure silence (peak {s.peak:.1e})"}
    return {"genre": genre, "path": rel, "duration": round(s.duration, 4), "sample_rate": s.sample_rate,
            "channels": s.channels}


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def genre_files(root: Path, extensions) -> list[tuple[str, str]]:
    """``(genre, path relative to root)`` of every file in ``root/<genre>/**`` whose suffix (lower-cased) is
    in ``extensions``, in sorted order; hidden files and folders and macOS's ``__MACOSX`` are skipped.
    The one walk of a data folder: audio (:func:`build_manifest`) and MIDI (``data.midi``) alike."""
    found = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not _hidden(entry.name):
            for folder, dirs, files in os.walk(entry):
                dirs[:] = sorted(d for d in dirs if not _hidden(d))
                found += [(entry.name, (Path(folder) / name).relative_to(root).as_posix()) for name in sorted(files)
                          if not _hidden(name) and Path(name).suffix.lower() in extensions]
    return found


def build_manifest(root: str | os.PathLike, clip_seconds: float = CLIP_SECONDS, workers: int | None = None,
                   progress: bool = True) -> Manifest:
    """Scan ``root/<genre>/**/<audio file>`` and probe every file (all cores) into a Manifest."""
    root = Path(root)
    if not root.is_dir():
        raise FetchError(f"{root}: data folder not found; pass the folder that holds one sub-folder per genre.")
    skipped = [{"path": e.name, "reason": "not inside a genre folder"} for e in sorted(root.iterdir())
               if e.is_file() and not _hidden(e.name) and e.suffix.lower() in AUDIO_EXTENSIONS]
    jobs = [(str(root), genre, rel, clip_seconds) for genre, rel in genre_files(root, AUDIO_EXTENSIONS)]
    results = parallel_map(probe_file, jobs, workers, progress, desc="scan audio")
    rows = [r for r in results if "genre" in r]
    skipped += [r for r in results if "genre" not in r]
    return Manifest(str(root), rows, sorted(skipped, key=lambda s: s["path"]), clip_seconds=clip_seconds)
