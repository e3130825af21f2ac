"""The embedded dataset as training data: through the same path as a user's music, or straight to memory.

:func:`prepare_embedded` writes the procedural music of :mod:`nmusic.data.synth` as real audio files
in genre folders (mixed formats and rates) and takes them through fetch -> manifest -> prepare,
exactly as a user's data goes (``nmusic demo``, the notebooks without data of their own).
:func:`synthetic_cache` renders it straight into an in-memory cache, with no files (benchmarks).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .cache import AudioCache, prepare
from .fetch import fetch
from .manifest import CLIP_SECONDS, Manifest, build_manifest
from .midi import build_note_manifest, note_manifest_path, notes_cache_path, prepare_notes
from .synth import GENRES, file_seed, render, write_dataset


def prepare_embedded(out, files_per_genre: int, seconds: float, sample_rate: int, seed: int = 0,
                     progress: bool = True) -> tuple[AudioCache, Manifest, Path]:
    """Embedded dataset -> ``out/data/embedded`` -> fetch -> manifest -> prepare at ``sample_rate``.

    Returns ``(cache, manifest, cache_path)``; ``out/data`` holds the manifest and ``cache.pt``, and the
    notes the synthesiser played (its MIDI files) as ``manifest.notes.csv`` and ``cache.notes.pt``.
    """
    out = Path(out)
    raw = write_dataset(out / "data" / "embedded", files_per_genre=files_per_genre, seconds=seconds, seed=seed,
                        progress=progress)
    root = fetch(str(raw), out / "data" / "raw", progress=progress)
    manifest = build_manifest(root, clip_seconds=CLIP_SECONDS, progress=progress)
    manifest.save(out / "data" / "manifest.csv")
    cache_path = out / "data" / "cache.pt"
    cache = prepare(manifest, sample_rate, cache_path, progress=progress)
    notes = build_note_manifest(root, progress=progress)
    if notes.rows:
        notes.save(note_manifest_path(out / "data" / "manifest.csv"))
        prepare_notes(notes, notes_cache_path(cache_path), genres=manifest.genres)
    return cache, manifest, cache_path


def synthetic_cache(sample_rate: int, seconds: float, files_per_genre: int = 1) -> AudioCache:
    """An in-memory :class:`~nmusic.data.cache.AudioCache` of embedded-synth music (no files)."""
    waves, ids, paths = [], [], []
    for g, genre in enumerate(GENRES):
        for i in range(files_per_genre):
            waves.append(torch.from_numpy(render(genre, file_seed(0, i), seconds, sample_rate)))
            ids.append(g)
            paths.append(f"{genre}/{genre}_{i:04d}.wav")
    return AudioCache.from_waves(waves, ids, list(GENRES), paths, sample_rate)
