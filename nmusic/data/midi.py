"""Notes in and out: standard MIDI files <-> tempo-normalised piano-rolls, one bar at a time (MidiNet's
representation, Yang et al. 2017), and the note cache the note-based models train on.

A *score* is ``{"bpm", "meter", "notes": [(track, midi, start s, seconds, velocity 0..1), ...]}``: what
the embedded synthesiser records (:func:`nmusic.data.synth.render_with_score`) and what a MIDI file
holds once its instruments are sorted into the four :data:`TRACKS`. A *piano-roll* is a bool tensor
``(bars, len(TRACKS), STEPS, 128)``: 16 steps per bar whatever the tempo (so it is tempo-normalised),
a step is on while a note sounds (drums: on the step of the hit only).

Files:

* :func:`write_score` / :func:`read_score`: score <-> ``.mid`` (pretty_midi; a track per instrument,
  drums on channel 10, the tempo and meter in the file). Instruments of a user's file go to a track by
  name (``drums``, ``bass``, ``chords``, ``melody``), else drums by channel 10, bass by program 32-39 or
  a low register, the highest remaining instrument as the melody, the rest as chords.
* :func:`build_note_manifest` scans ``root/<genre>/**/*.mid`` like the audio manifest; a file that is
  empty, truncated or otherwise unreadable, or holds no notes, goes to the skipped report with the
  reason and never stops the run. :func:`prepare_notes` turns the rows into a :class:`NoteCache`
  (``nmusic prepare`` writes it beside the audio cache as ``<name>.notes.pt``).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, NmusicError
from ..utils.files import atomic_write
from ..utils.parallel import parallel_map
from .manifest import genre_files, sibling, write_csv

TRACKS = ("drums", "bass", "chords", "melody")
STEPS = 16                         # piano-roll steps per bar (MidiNet)
PITCHES = 128
MIDI_EXTENSIONS = (".mid", ".midi")
NOTES_FORMAT, NOTES_VERSION = "nmusic-notes", 1
NOTE_COLUMNS = ("genre", "path", "bars", "bpm", "meter")
MINOR_THIRD, MAJOR_THIRD = 3, 4


class NotesError(NmusicError):
    """A note cache or MIDI file that cannot be used (names the file and what to do)."""


# --- scores <-> MIDI files ------------------------------------------------------------------------------
def write_score(score: dict, path, programs: dict | None = None) -> Path:
    """Write ``score`` as a standard MIDI file (atomically): one instrument per track that has notes,
    drums on channel 10, General MIDI ``programs`` per pitched track (default piano)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=float(score["bpm"]))
    pm.time_signature_changes.append(pretty_midi.TimeSignature(int(score.get("meter", 4)), 4, 0.0))
    instruments = {}
    for track, midi, start, seconds, velocity in score["notes"]:
        if track not in instruments:
            drum = track == "drums"
            instruments[track] = pretty_midi.Instrument(program=0 if drum else (programs or {}).get(track, 0),
                                                        is_drum=drum, name=track)
        vel = int(np.clip(round(velocity * 110), 1, 127))
        instruments[track].notes.append(pretty_midi.Note(vel, int(midi), float(start),
                                                         float(start) + max(float(seconds), 0.01)))
    pm.instruments = [instruments[t] for t in TRACKS if t in instruments]
    return atomic_write(Path(path), lambda f: pm.write(f))


def _track_of(inst, pitched_means: dict) -> str:
    name = (inst.name or "").strip().lower()
    if name in TRACKS:
        return name
    if inst.is_drum:
        return "drums"
    if 32 <= inst.program <= 39 or pitched_means[id(inst)] < 48:
        return "bass"
    return "melody" if pitched_means[id(inst)] == max(pitched_means.values()) and len(pitched_means) > 1 \
        else "chords"


def read_score(path) -> dict:
    """A MIDI file as a score with times in *beats* (``start``, ``seconds`` fields hold beats here) and
    its first tempo and meter; :class:`NotesError` naming the file when it cannot be read."""
    import pretty_midi

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise NotesError(f"{path}: empty (0 bytes)")
        pm = pretty_midi.PrettyMIDI(str(path))
    except NotesError:
        raise
    except Exception as e:  # noqa: BLE001 - mido raises many kinds for a truncated or foreign file
        raise NotesError(f"{path}: cannot read MIDI ({type(e).__name__}: {str(e)[:200]})") from None
    insts = [i for i in pm.instruments if i.notes]
    if not insts:
        raise NotesError(f"{path}: no notes")
    means = {id(i): float(np.mean([n.pitch for n in i.notes])) for i in insts if not i.is_drum}
    ts = pm.time_signature_changes
    meter = ts[0].numerator * 4 / ts[0].denominator if ts else 4
    _, tempi = pm.get_tempo_changes()
    bpm = float(tempi[0]) if len(tempi) else 120.0
    res = float(pm.resolution)
    notes = []
    for inst in insts:
        track = _track_of(inst, means)
        for n in inst.notes:
            on, off = pm.time_to_tick(n.start) / res, pm.time_to_tick(n.end) / res
            notes.append((track, int(n.pitch), on, max(off - on, 0.0), n.velocity / 110))
    return {"bpm": bpm, "meter": float(meter), "notes": sorted(notes, key=lambda x: x[2])}


# --- scores <-> piano-rolls -----------------------------------------------------------------------------
def score_to_rolls(score: dict, in_beats: bool = True) -> torch.Tensor:
    """``(bars, 4, STEPS, 128)`` bool piano-roll of a score (times in beats, or seconds with
    ``in_beats=False``): onsets to the nearest step, a note held over the steps it sounds."""
    meter, beat_s = float(score.get("meter", 4)), 60.0 / float(score["bpm"])
    to_beats = 1.0 if in_beats else 1 / beat_s
    per_beat = STEPS / meter
    last = max((n[2] * to_beats for n in score["notes"]), default=0.0)
    bars = int(last // meter) + 1
    roll = torch.zeros(bars * STEPS, len(TRACKS), PITCHES, dtype=torch.bool)
    for track, midi, start, length, _ in score["notes"]:
        if not 0 <= midi < PITCHES:
            continue
        on = int(round(start * to_beats * per_beat))
        n = 1 if track == "drums" else max(1, int(round(length * to_beats * per_beat)))
        roll[on:on + n, TRACKS.index(track), midi] = True
    return roll.view(bars, STEPS, len(TRACKS), PITCHES).permute(0, 2, 1, 3).contiguous()


def rolls_to_score(rolls: torch.Tensor, bpm: float, meter: float = 4, pitch_low: int = 0,
                   velocity: float = 0.8) -> dict:
    """A score (times in seconds) from ``(bars, 4, STEPS, P)`` piano-rolls whose pitch 0 is MIDI
    ``pitch_low``: a run of consecutive on-steps is one held note; each drum step is one hit."""
    rolls = torch.as_tensor(rolls).bool().cpu()
    bars, tracks, steps, pitches = rolls.shape
    step_s = meter * 60.0 / bpm / steps
    flat = rolls.permute(1, 3, 0, 2).reshape(tracks, pitches, bars * steps).numpy()
    notes = []
    for t, track in enumerate(TRACKS[:tracks]):
        for p in np.nonzero(flat[t].any(1))[0]:
            line = flat[t, p].astype(np.int8)
            if track == "drums":
                for s in np.nonzero(line)[0]:
                    notes.append((track, int(p) + pitch_low, s * step_s, step_s, velocity))
                continue
            edges = np.diff(np.concatenate([[0], line, [0]]))
            for on, off in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]):
                notes.append((track, int(p) + pitch_low, on * step_s, (off - on) * step_s, velocity))
    notes.sort(key=lambda n: (n[2], n[0], n[1]))
    return {"bpm": float(bpm), "meter": float(meter), "notes": notes}


def chord_vectors(rolls: torch.Tensor, pitch_low: int = 0) -> torch.Tensor:
    """MidiNet's 13-dim chord condition per bar, ``(N, 13)`` float from ``(N, 4, STEPS, P)``: a one-hot
    root (12) and a minor flag, from the best-matching triad of the bar's pitched notes (silence: zeros)."""
    pitched = rolls[:, 1:].float().sum(dim=(1, 2))                            # (N, P) steps each pitch sounds
    pc = torch.zeros(len(rolls), 12, device=rolls.device)
    idx = (torch.arange(pitched.shape[1], device=rolls.device) + pitch_low) % 12
    pc.index_add_(1, idx, pitched)
    scores = []
    for third in (MAJOR_THIRD, MINOR_THIRD):
        scores.append(torch.stack([pc[:, r] + pc[:, (r + third) % 12] + pc[:, (r + 7) % 12] for r in range(12)], 1))
    scores = torch.cat(scores, 1)                                             # (N, 24): 12 major, 12 minor
    best = scores.argmax(1)
    out = torch.zeros(len(rolls), 13, device=rolls.device)
    sounding = pc.sum(1) > 0
    out[sounding, best[sounding] % 12] = 1
    out[sounding, 12] = (best[sounding] >= 12).float()
    return out


# --- the note manifest --------------------------------------------------------------------------------
@dataclass
class NoteManifest:
    root: str
    rows: list[dict]                                     # keys NOTE_COLUMNS
    skipped: list[dict] = field(default_factory=list)   # {"path", "reason"}

    @property
    def genres(self) -> list[str]:
        return sorted({r["genre"] for r in self.rows})

    def summary(self) -> str:
        bars = {g: sum(r["bars"] for r in self.rows if r["genre"] == g) for g in self.genres}
        lines = [f"{len(self.rows)} MIDI files, {sum(bars.values())} bars in {len(bars)} genres; "
                 f"{len(self.skipped)} MIDI files skipped"]
        lines += [f"     {g:<20} {b:6d} bars" for g, b in bars.items()]
        lines += [f"  {s['path']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)

    def save(self, csv_path) -> Path:
        """``<name>.notes.csv`` (rows, root relative to the csv) and ``<name>.notes.skipped.csv``."""
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        root = Path(os.path.relpath(Path(self.root).resolve(), csv_path.parent.resolve())).as_posix()
        write_csv(csv_path, ("root",) + NOTE_COLUMNS, [{"root": root, **r} for r in self.rows])
        write_csv(sibling(csv_path, ".skipped.csv"), ("path", "reason"), self.skipped)
        return csv_path

    @classmethod
    def load(cls, csv_path) -> "NoteManifest":
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise ConfigError(f"{csv_path}: no note manifest there; run `nmusic manifest DATA_DIR` on a folder "
                              f"holding .mid files")
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        root = os.path.normpath(csv_path.parent / (rows[0]["root"] if rows else "."))
        rows = [{"genre": r["genre"], "path": r["path"], "bars": int(r["bars"]), "bpm": float(r["bpm"]),
                 "meter": float(r["meter"])} for r in rows]
        skipped, skipped_path = [], sibling(csv_path, ".skipped.csv")
        if skipped_path.is_file():
            with open(skipped_path, newline="", encoding="utf-8") as f:
                skipped = list(csv.DictReader(f))
        return cls(root, rows, skipped)


def note_manifest_path(manifest_csv) -> Path:
    """Where the note manifest of an audio manifest ``NAME.csv`` lives: ``NAME.notes.csv``."""
    p = Path(manifest_csv)
    return p.with_name(p.stem + ".notes.csv")


def notes_cache_path(cache_path) -> Path:
    """Where the note cache of an audio cache ``NAME.pt`` lives: ``NAME.notes.pt``."""
    p = Path(cache_path)
    return p if p.name.endswith(".notes.pt") else p.with_name(p.stem + ".notes.pt")


def _probe_midi(job: tuple[str, str, str]) -> dict:
    root, genre, rel = job
    try:
        score = read_score(Path(root) / rel)
    except NotesError as e:
        return {"path": rel, "reason": str(e).removeprefix(f"{Path(root) / rel}: ")}
    rolls = score_to_rolls(score)
    return {"genre": genre, "path": rel, "bars": len(rolls), "bpm": round(score["bpm"], 3), "meter": score["meter"]}


def build_note_manifest(root, workers: int | None = None, progress: bool = True) -> NoteManifest:
    """Scan ``root/<genre>/**/*.mid`` (and ``.midi``); bad files go to ``skipped`` with the reason."""
    root = Path(root)
    jobs = [(str(root), genre, rel) for genre, rel in genre_files(root, MIDI_EXTENSIONS)] if root.is_dir() else []
    results = parallel_map(_probe_midi, jobs, workers, progress, desc="scan MIDI") if jobs else []
    return NoteManifest(str(root), [r for r in results if "genre" in r],
                        sorted((r for r in results if "genre" not in r), key=lambda r: r["path"]))


# --- the note cache -----------------------------------------------------------------------------------
@dataclass
class NoteCache:
    """Every bar of every MIDI file: ``rolls (bars, 4, STEPS, 128)`` bool, ``bar_file (bars,)`` the file
    of each bar (in order within a file); per file ``paths``, ``genre_ids``, ``bpm``, ``meter``."""

    rolls: torch.Tensor
    bar_file: torch.Tensor
    paths: list[str]
    genre_ids: torch.Tensor
    bpm: torch.Tensor
    meter: torch.Tensor
    genres: list[str]
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def bars_of(self, f: int) -> torch.Tensor:
        return (self.bar_file == f).nonzero().flatten()

    def describe(self) -> str:
        return f"{len(self.rolls)} bars of notes in {len(self.paths)} MIDI files"

    def save(self, path) -> Path:
        state = {"format": NOTES_FORMAT, "version": NOTES_VERSION, "rolls": self.rolls, "bar_file": self.bar_file,
                 "paths": list(self.paths), "genre_ids": self.genre_ids, "bpm": self.bpm, "meter": self.meter,
                 "genres": list(self.genres), "skipped": list(self.skipped)}
        return atomic_write(Path(path), lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path) -> "NoteCache":
        path = Path(path)
        again = (f"make it with `nmusic manifest DATA_DIR --out M.csv` then `nmusic prepare M.csv --out CACHE.pt` "
                 f"(a genre folder holding .mid files gives CACHE.notes.pt)")
        if not path.is_file():
            raise NotesError(f"{path}: note cache not found; {again}")
        try:
            s = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise NotesError(f"{path}: note cache is corrupt or not a cache file ({type(e).__name__}); {again}") from None
        if not isinstance(s, dict) or s.get("format") != NOTES_FORMAT or s.get("version") != NOTES_VERSION:
            raise NotesError(f"{path}: not an nmusic note cache (version {NOTES_VERSION}); {again}")
        return cls(s["rolls"], s["bar_file"], list(s["paths"]), s["genre_ids"], s["bpm"], s["meter"],
                   list(s["genres"]), list(s.get("skipped", [])))


def prepare_notes(manifest: NoteManifest, out_path, genres: list[str] | None = None) -> NoteCache:
    """Read every row's MIDI file into piano-roll bars and save the :class:`NoteCache` at ``out_path``.
    ``genres`` (default: the manifest's) fixes the genre ids, e.g. to match the audio cache's."""
    genres = list(genres or manifest.genres)
    rolls, bar_file, paths, gids, bpm, meter, skipped = [], [], [], [], [], [], list(manifest.skipped)
    for row in manifest.rows:
        if row["genre"] not in genres:
            skipped.append({"path": row["path"], "reason": f"genre {row['genre']!r} is not one of {genres}"})
            continue
        try:
            score = read_score(Path(manifest.root) / row["path"])
        except NotesError as e:   # changed since the manifest was built
            skipped.append({"path": row["path"], "reason": str(e)})
            continue
        r = score_to_rolls(score)
        bar_file.append(torch.full((len(r),), len(paths), dtype=torch.long))
        rolls.append(r)
        paths.append(row["path"])
        gids.append(genres.index(row["genre"]))
        bpm.append(score["bpm"])
        meter.append(score["meter"])
    if not paths:
        raise NotesError(f"no usable MIDI file in {manifest.root} ({len(skipped)} skipped); add .mid files with notes "
                         f"to the genre folders")
    cache = NoteCache(torch.cat(rolls), torch.cat(bar_file), paths, torch.tensor(gids), torch.tensor(bpm),
                      torch.tensor(meter), genres, skipped)
    cache.save(out_path)
    return cache
