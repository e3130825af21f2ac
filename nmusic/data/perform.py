"""Notes to audio: a score played by the embedded synthesiser's own instruments, or by FluidSynth.

:func:`perform` plays a score (:mod:`nmusic.data.midi`: ``{"bpm", "meter", "notes": [(track, midi,
start s, seconds, velocity)]}``) with the instruments and the mix of a genre of
:mod:`nmusic.data.synth`, their timbre drawn from ``clip_params(genre, seed)``:

classical  every pitched track on the piano, chords panned left and melody right, in the hall; no drums
edm        kick/clap/hats on the drum keys, the saw bass, supersaw chords, the pluck as melody; side-chain
           pumping on the beat and the loud master
lofi       kick/snare/hats, the sine bass, e-piano chords and melody; reverb, tape and vinyl

So generated notes sound like the training audio of their genre: what differs is only the notes.
:func:`fluidsynth` renders any MIDI file with a General MIDI soundfont (for a user's MIDI, whose
instruments the synthesiser does not know), with a clear message when FluidSynth is missing.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import ConfigError, NmusicError
from . import synth as S

#: Where Debian/Ubuntu's ``fluid-soundfont-gm`` puts its General MIDI soundfont.
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
              "/usr/share/sounds/sf2/default-GM.sf2")


def _drum_kit(genre: str, p: dict, rng, sr: int) -> dict:
    """GM drum key -> one-shot sample of the genre's kit (keys it lacks map to the nearest kind)."""
    if genre == "edm":
        hat = S._hat(sr, rng, p["hat_decay"], p["hat_hz"])
        closed = S._hat(sr, rng, 0.02, p["hat_hz"] + 1000)
        kit = {S.KICK: p["gains"]["kick"] * S._kick(sr, rng, **p["kick"]),
               S.CLAP: p["gains"]["clap"] * S._clap(sr, rng), S.SNARE: p["gains"]["clap"] * S._clap(sr, rng),
               S.OPEN_HAT: p["gains"]["hats"] * hat, S.CLOSED_HAT: p["gains"]["hats"] * closed}
    else:
        kick = S._filter(S._kick(sr, rng, **p["kick"]), sr, hi=1500)
        hat = S._hat(sr, rng, 0.03, 2500)
        kit = {S.KICK: p["gains"]["kick"] * kick, S.SNARE: p["gains"]["snare"] * S._snare(sr, rng, **p["snare"]),
               S.CLOSED_HAT: p["gains"]["hats"] * hat, S.OPEN_HAT: p["gains"]["hats"] * hat}
        kit[S.CLAP] = kit[S.SNARE]
    return kit


def _drum(kit: dict, key: int) -> np.ndarray:
    if key in kit:
        return kit[key]
    if key < 38:
        return kit[S.KICK]
    return kit[S.SNARE] if key < 42 or 47 <= key <= 50 else kit[S.CLOSED_HAT]


def perform(score: dict, genre: str, seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """``score`` played by ``genre``'s instruments: float32 mono ``(round(seconds * sample_rate),)``, peak
    as the synthesiser's (silence when the score has no notes it can play)."""
    if genre not in S.GENRES:
        raise ConfigError(f"perform: the embedded synthesiser plays {list(S.GENRES)}, not {genre!r}; render a "
                          f"user's MIDI with nmusic.data.perform.fluidsynth")
    sr, n = int(sample_rate), int(round(seconds * sample_rate))
    rng = np.random.default_rng([int(seed), S.GENRES.index(genre), 7])
    p = S.clip_params(genre, seed)
    beat = 60.0 / float(score["bpm"])
    tracks = {t: np.zeros(n) for t in ("drums", "bass", "chords", "melody")}
    tones: dict = {}
    kit = _drum_kit(genre, p, rng, sr) if genre != "classical" else {}

    def tone(kind: str, midi: int, length: float) -> np.ndarray:
        if genre == "classical":
            key = ("piano", midi)
            if key not in tones:
                tones[key] = S._piano_tone(midi, sr, min(4.0, seconds + 0.3), p["piano"], rng)
            return S._note(tones[key], sr, length, 0.15)
        if genre == "lofi":
            if kind == "bass":
                return S._sine_bass(midi, sr, length)
            key = ("epiano", midi)
            if key not in tones:
                tones[key] = S._epiano_tone(midi, sr, min(4.0, seconds + 0.3), p["epiano"])
            return S._note(tones[key], sr, length, 0.25)
        m = max(int(length * sr), 1)                                          # edm
        ramp = np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / (0.003 * sr))
        if kind == "bass":
            saw = S._saw(float(S._hz(midi)), m, sr) * ramp
            env = np.exp(-np.arange(m) / (0.06 * sr))
            return (S._filter(saw, sr, hi=p["bass_cutoff"]) + env * S._filter(saw, sr, hi=4 * p["bass_cutoff"])) / 2
        if kind == "chords":
            left, right = S._supersaw(midi, m, sr, rng, p["voices"], p["detune"])
            return S._filter((left + right) / 2, sr, hi=p["pad_cutoff"]) * ramp
        return S._pluck(midi, sr)

    for track, midi, start, length, velocity in score["notes"]:
        if start >= seconds or track not in tracks or (track == "drums" and not kit):
            continue
        sig = _drum(kit, midi) if track == "drums" else tone(track, int(midi), max(float(length), 0.02))
        S._add(tracks[track], start, sig, sr, float(np.clip(velocity, 0.05, 1.2)))
    mix = _mix(genre, p, tracks, rng, sr, beat)
    peak = np.abs(mix).max()
    return (mix * (p["peak"] / peak) if peak > 1e-9 else mix).astype(np.float32)


def _mix(genre: str, p: dict, t: dict, rng, sr: int, beat: float) -> np.ndarray:
    """The genre's mix and master, as :mod:`nmusic.data.synth` does it, to mono."""
    n = len(t["drums"])
    if genre == "classical":
        mix = S._pan(t["bass"] + t["chords"], -0.25) + S._pan(t["melody"], 0.25)
        mix = mix + p["reverb"]["wet"] * S._reverb(mix, sr, rng, p["reverb"]["t60"], p["reverb"]["damp_hz"])
    elif genre == "edm":
        g = p["gains"]
        music = S._pan(g["bass"] * t["bass"], 0) + S._pan(g["pad"] * t["chords"], 0) \
            + S._pan(g["lead"] * S._filter(t["melody"], sr, hi=3000), 0.3)
        music = music + 0.25 * S._reverb(music, sr, rng, 1.2, 5000)
        mix = S._pan(t["drums"], 0) + S._sidechain(n, sr, beat, p["pump"], p["pump_release"])[:, None] * music
        peak = np.abs(mix).max()
        mix = np.tanh(p["drive"] * mix / peak) if peak > 1e-9 else mix
    else:
        g = p["gains"]
        mix = S._pan(t["drums"], 0) + S._pan(g["bass"] * t["bass"], 0) + S._pan(g["keys"] * t["chords"], -0.3) \
            + S._pan(g["melody"] * t["melody"], 0.2)
        mix = mix + p["reverb"]["wet"] * S._reverb(mix, sr, rng, p["reverb"]["t60"], 3000)
        if np.abs(mix).max() > 1e-9:
            mix = S._tape(mix, p, rng, sr)
        mix = mix + S._vinyl(n, sr, rng, p["crackle"], p["hiss"])[:, None]
    return mix.mean(axis=1)


def find_soundfont(soundfont=None) -> Path:
    for c in [soundfont] if soundfont else SOUNDFONTS:
        if c and Path(c).is_file():
            return Path(c)
    raise NmusicError(f"no General MIDI soundfont found ({soundfont or ', '.join(SOUNDFONTS)}); install one "
                      f"(Debian/Ubuntu/Colab: `apt-get install fluidsynth fluid-soundfont-gm`) or pass its .sf2 path")


def fluidsynth(midi_path, sample_rate: int = 16000, soundfont=None) -> np.ndarray:
    """A MIDI file rendered by the FluidSynth program with a General MIDI soundfont: float32 mono."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise NmusicError("FluidSynth is not installed, so this MIDI file cannot be rendered with a General MIDI "
                          "soundfont; install it (Debian/Ubuntu/Colab: `apt-get install fluidsynth "
                          "fluid-soundfont-gm`, macOS: `brew install fluid-synth`), or render the embedded "
                          "genres' notes with nmusic.data.perform.perform")
    sf2 = find_soundfont(soundfont)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        done = subprocess.run([exe, "-ni", "-q", "-F", str(out), "-r", str(int(sample_rate)), str(sf2), str(midi_path)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise NmusicError(f"{midi_path}: FluidSynth failed ({(done.stderr or done.stdout).strip()[:300]})")
        y, _ = sf.read(out, dtype="float32", always_2d=True)
    return y.mean(axis=1)
