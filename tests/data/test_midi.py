"""nmusic.data.midi and the synthesiser's notes: MIDI files beside the audio, piano-roll bars, the note
manifest and cache with its bad-file report, and ``nmusic manifest``/``prepare`` taking MIDI in."""
import numpy as np
import pretty_midi
import pytest
import torch

from nmusic.data import synth
from nmusic.data.midi import (STEPS, TRACKS, NoteCache, NoteManifest, NotesError, build_note_manifest, chord_vectors,
                              note_manifest_path, notes_cache_path, prepare_notes, read_score, rolls_to_score,
                              score_to_rolls, write_score)
from nmusic.interfaces.cli import main

SR = 16000


@pytest.mark.parametrize("genre", synth.GENRES)
def test_recording_the_notes_leaves_the_audio_bit_identical(genre):
    y, score = synth.render_with_score(genre, 3, 4.0, SR)
    assert np.array_equal(y, synth.render(genre, 3, 4.0, SR))
    assert score["notes"] and all(0 <= n[2] < 4.0 for n in score["notes"])
    tracks = {n[0] for n in score["notes"]}
    assert tracks <= set(TRACKS)
    assert ("drums" in tracks) == (genre != "classical")      # classical is piano only
    assert score["bpm"] == pytest.approx(synth.clip_params(genre, 3)["bpm"])


def test_midi_file_round_trip_keeps_tracks_tempo_and_drum_channel(tmp_path):
    _, score = synth.render_with_score("lofi", 1, 4.0, SR)
    path = write_score(score, tmp_path / "a.mid", synth.PROGRAMS["lofi"])
    pm = pretty_midi.PrettyMIDI(str(path))
    assert [i.name for i in pm.instruments] == [t for t in TRACKS if any(n[0] == t for n in score["notes"])]
    assert [i.is_drum for i in pm.instruments] == [i.name == "drums" for i in pm.instruments]   # channel 10
    back = read_score(path)
    assert back["bpm"] == pytest.approx(score["bpm"], rel=1e-3)
    assert len(back["notes"]) == len(score["notes"])
    beat = 60 / score["bpm"]           # read_score gives beats
    for (t, m, s, _, _), (t2, m2, s2, _, _) in zip(sorted(score["notes"]), sorted(back["notes"])):
        assert (t, m) == (t2, m2) and s2 * beat == pytest.approx(s, abs=0.01)


def test_piano_rolls_are_tempo_normalised_and_round_trip():
    notes = [("drums", 36, 0.0, 0.1, 1.0), ("bass", 40, 0.0, 2.0, 1.0), ("melody", 72, 1.0, 0.5, 1.0),
             ("chords", 60, 4.0, 4.0, 1.0)]
    slow = score_to_rolls({"bpm": 60, "meter": 4, "notes": notes}, in_beats=True)
    assert slow.shape == (2, len(TRACKS), STEPS, 128)
    assert slow[0, 0, :, 36].nonzero().flatten().tolist() == [0]                  # one drum hit
    assert slow[0, 1, :, 40].nonzero().flatten().tolist() == list(range(8))       # two beats held
    assert slow[0, 3, :, 72].nonzero().flatten().tolist() == [4, 5]
    assert slow[1, 2, :, 60].all()
    fast = score_to_rolls({"bpm": 150, "meter": 4, "notes": [(t, m, s * 0.4, d * 0.4, v) for t, m, s, d, v in notes]},
                          in_beats=False)                                        # the same in seconds at 150 bpm
    assert torch.equal(fast, slow)
    again = score_to_rolls(rolls_to_score(slow, 150), in_beats=False)
    assert torch.equal(again, slow)


def test_chord_vector_names_root_and_quality():
    roll = torch.zeros(2, len(TRACKS), STEPS, 128, dtype=torch.bool)
    roll[0, 2, :, [60, 64, 67]] = True          # C major
    roll[1, 2, :, [57, 60, 64]] = True          # A minor
    roll[:, 0, :, 36] = True                    # drums do not count
    ch = chord_vectors(roll)
    assert ch[0, :12].argmax() == 0 and ch[0, 12] == 0
    assert ch[1, :12].argmax() == 9 and ch[1, 12] == 1
    assert chord_vectors(torch.zeros(1, 4, STEPS, 128, dtype=torch.bool)).sum() == 0


def bad_midi_folder(root):
    synth.write_dataset(root, files_per_genre=2, seconds=3.0, sample_rate=SR, formats=("wav",), channels=(1,),
                        progress=False)
    (root / "edm" / "empty.mid").write_bytes(b"")
    good = (root / "lofi" / "lofi_0000.mid").read_bytes()
    (root / "lofi" / "truncated.mid").write_bytes(good[: len(good) // 2])
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    pm.write(str(root / "classical" / "silent.mid"))
    return root


def test_bad_midi_files_are_reported_not_fatal(tmp_path):
    m = build_note_manifest(bad_midi_folder(tmp_path / "raw"), workers=1, progress=False)
    assert len(m.rows) == 6 and m.genres == list(synth.GENRES)
    reasons = {s["path"]: s["reason"] for s in m.skipped}
    assert reasons["edm/empty.mid"] == "empty (0 bytes)"
    assert reasons["classical/silent.mid"] == "no notes"
    assert reasons["lofi/truncated.mid"].startswith("cannot read MIDI")
    m.save(tmp_path / "m.notes.csv")
    back = NoteManifest.load(tmp_path / "m.notes.csv")
    assert back.rows == m.rows and len(back.skipped) == 3
    cache = prepare_notes(back, tmp_path / "c.notes.pt")
    loaded = NoteCache.load(tmp_path / "c.notes.pt")
    assert loaded.paths == cache.paths and torch.equal(loaded.rolls, cache.rolls)
    assert int(loaded.bar_file.max()) == len(loaded.paths) - 1
    with pytest.raises(NotesError, match="not an nmusic note cache"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        NoteCache.load(tmp_path / "bad.pt")


def test_cli_manifest_and_prepare_take_midi_in(tmp_path, capsys):
    root = bad_midi_folder(tmp_path / "raw")
    assert main(["manifest", str(root), "--out", str(tmp_path / "m.csv"), "--workers", "1",
                 "--clip-seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "6 MIDI files" in out and "3 MIDI files skipped" in out and "no notes" in out
    assert note_manifest_path(tmp_path / "m.csv").is_file()
    assert main(["prepare", str(tmp_path / "m.csv"), "--out", str(tmp_path / "cache.pt"), "--workers", "1"]) == 0
    notes = NoteCache.load(notes_cache_path(tmp_path / "cache.pt"))
    assert len(notes.paths) == 6 and notes.genres == list(synth.GENRES)
