"""nmusic.data.perform: notes played by the embedded synthesiser's instruments, and FluidSynth."""
import shutil

import numpy as np
import pytest

from nmusic.data import perform, synth
from nmusic.data.midi import write_score
from nmusic.errors import ConfigError, NmusicError

SR = 16000


def spectrum(y):
    return np.abs(np.fft.rfft(y))[: len(y) // 4]


@pytest.mark.parametrize("genre", synth.GENRES)
def test_perform_plays_a_score_like_the_synthesiser(genre):
    y, score = synth.render_with_score(genre, 2, 4.0, SR)
    z = perform.perform(score, genre, 4.0, SR, seed=2)
    assert z.shape == y.shape and z.dtype == np.float32
    assert 0.5 < np.abs(z).max() <= 0.9
    assert np.array_equal(z, perform.perform(score, genre, 4.0, SR, seed=2))          # deterministic
    # the same notes and instruments: the long-term spectrum is close to the original's, far from another genre's
    other = perform.perform(synth.render_with_score("edm" if genre != "edm" else "classical", 2, 4.0, SR)[1],
                            "edm" if genre != "edm" else "classical", 4.0, SR, seed=2)
    near = np.corrcoef(np.log1p(spectrum(z)), np.log1p(spectrum(y)))[0, 1]
    far = np.corrcoef(np.log1p(spectrum(other)), np.log1p(spectrum(y)))[0, 1]
    assert near > far


def test_perform_refuses_unknown_genres_and_plays_silence_for_no_notes():
    with pytest.raises(ConfigError, match="fluidsynth"):
        perform.perform({"bpm": 100, "notes": []}, "jazz", 1.0, SR)
    z = perform.perform({"bpm": 100, "meter": 4, "notes": []}, "classical", 1.0, SR)
    assert z.shape == (SR,) and not z.any()


def test_fluidsynth_missing_gives_a_clear_message(tmp_path, monkeypatch):
    _, score = synth.render_with_score("lofi", 0, 2.0, SR)
    mid = write_score(score, tmp_path / "a.mid")
    monkeypatch.setattr(perform.shutil, "which", lambda name: None)
    with pytest.raises(NmusicError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        perform.fluidsynth(mid, SR)


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="FluidSynth is not installed")
def test_fluidsynth_renders_a_midi_file(tmp_path):
    try:
        perform.find_soundfont()
    except NmusicError:
        pytest.skip("no General MIDI soundfont installed")
    _, score = synth.render_with_score("lofi", 0, 2.0, SR)
    y = perform.fluidsynth(write_score(score, tmp_path / "a.mid"), SR)
    assert y.ndim == 1 and len(y) >= SR and np.abs(y).max() > 0.01
