"""MidiNet's training data: pairs of consecutive piano-roll bars (previous, current) from the note cache.

:class:`BarPairs` is what the trainer draws batches from for this family (the members of
:class:`nmusic.data.clips.AudioClips`): for training step ``s`` a batch of bars drawn from a generator
seeded by ``(seed, rank, s)`` only (genres take equal shares, bars uniform within a genre), so a
resumed run sees the same batches; a file's first bar is paired with an empty previous bar, as in
MidiNet. A batch is ``(pairs (B, 2, tracks, 16, P) float, genre (B,) int64)``, pitches cropped to the
model's window.

:func:`split_notes` holds out the same songs as the audio split when the notes have audio twins (the
embedded dataset writes ``x.mid`` beside ``x.wav``), so that evaluation against held-out audio is fair.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ...data.clips import VAL_FRACTION, balanced_subset, split_by_file
from ...data.midi import NoteCache, notes_cache_path
from ...errors import ConfigError


def split_notes(notes: NoteCache, audio_cache_path=None, val_fraction: float = VAL_FRACTION,
                seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train_files, val_files)`` of the note cache: the audio cache's held-out songs (matched by path
    without extension) when it is given and exists, else :func:`split_by_file` on the notes."""
    if audio_cache_path is not None and Path(audio_cache_path).is_file():
        from ...data.cache import AudioCache
        audio = AudioCache.load(audio_cache_path)
        _, a_val = split_by_file(audio, val_fraction=val_fraction, seed=seed)
        held = {Path(audio.paths[i]).with_suffix("").as_posix() for i in a_val}
        val = [i for i, p in enumerate(notes.paths) if Path(p).with_suffix("").as_posix() in held]
        if val or not held:
            held_idx = set(val)
            return [i for i in range(len(notes.paths)) if i not in held_idx], val
    return split_by_file(notes, val_fraction=val_fraction, seed=seed)


def load_notes(cache_path) -> tuple[NoteCache, Path | None]:
    """The note cache for ``--cache PATH`` (an audio cache ``X.pt`` -> ``X.notes.pt``, or the note cache
    itself) and the audio cache beside it (``None`` when there is none)."""
    path = Path(cache_path)
    notes_path = notes_cache_path(path)
    audio = path if notes_path != path else path.with_name(path.name.removesuffix(".notes.pt") + ".pt")
    if not notes_path.is_file():
        raise ConfigError(f"midinet trains on notes, and there is no note cache {notes_path} beside {path}; put .mid "
                          f"files in the genre folders (`nmusic synth` writes them for the embedded dataset), then "
                          f"run `nmusic manifest` and `nmusic prepare` again")
    return NoteCache.load(notes_path), (audio if audio.is_file() else None)


class BarPairs:
    """(previous bar, bar) pairs of the note cache's ``files``, pitches ``pitch_low .. pitch_low + n_pitches``."""

    def __init__(self, notes: NoteCache, pitch_low: int, n_pitches: int, spec):
        if not isinstance(notes, NoteCache):
            raise ConfigError(f"midinet trains on notes, but it was given a {type(notes).__name__}; give `nmusic "
                              f"train midinet --cache` the audio cache whose .notes.pt sits beside it, or the "
                              f"note cache itself")
        if pitch_low < 0 or pitch_low + n_pitches > notes.rolls.shape[-1]:
            raise ConfigError(f"pitch window {pitch_low}..{pitch_low + n_pitches} lies outside MIDI 0..127")
        self.notes, self.genres = notes, list(notes.genres)
        self.window = slice(pitch_low, pitch_low + n_pitches)
        rolls = notes.rolls[..., self.window]
        first = torch.ones(len(rolls), dtype=torch.bool)
        first[1:] = notes.bar_file[1:] != notes.bar_file[:-1]
        prev = torch.cat([torch.zeros_like(rolls[:1]), rolls[:-1]])
        prev[first] = False
        self.pairs = torch.stack([prev, rolls], 1)                       # (bars, 2, K, 16, P) bool
        self.bar_genre = notes.genre_ids[notes.bar_file]
        # Training throughput is counted in seconds of music: a bar lasts meter * 60 / bpm seconds.
        bar_s = float((notes.meter * 60 / notes.bpm)[notes.bar_file].mean())
        self.clip_samples = int(round(bar_s * spec.sample_rate))
        self.clip_frames = max(spec.frames(self.clip_samples), 2)

    def bars(self, files) -> torch.Tensor:
        return torch.isin(self.notes.bar_file, torch.as_tensor(list(files), dtype=torch.long)).nonzero().flatten()

    def describe(self) -> str:
        return self.notes.describe()

    def to(self, device) -> "BarPairs":
        return self

    def loader(self, files, batch_size: int, seed: int = 0, start_step: int = 0, steps: int | None = None,
               rank: int = 0, **_):
        bars = self.bars(files)
        if len(bars) == 0:
            raise ConfigError("no bars of notes in the training files")
        by_genre = [bars[self.bar_genre[bars] == g] for g in range(len(self.genres))]
        by_genre = [b for b in by_genre if len(b)]
        step = start_step
        while steps is None or step < steps:
            key = hashlib.sha1(f"{seed}:{rank}:{step}".encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
            which = torch.randint(len(by_genre), (batch_size,), generator=g)
            idx = torch.stack([by_genre[w][torch.randint(len(by_genre[w]), (1,), generator=g)][0] for w in which.tolist()])
            yield self.pairs[idx].float(), self.bar_genre[idx]
            step += 1

    def fixed(self, files, seed: int, max_items: int | None):
        bars = self.bars(files)
        if max_items is not None and len(bars) > max_items:
            bars = bars[balanced_subset(self.bar_genre[bars], max_items, seed).sort().values]
        return self.pairs[bars].float(), self.bar_genre[bars]

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        return x
