"""The embedded dataset: procedural classical-, EDM- and lofi-like music (stands in for paper section 2.1).

The paper trained on MAESTRO piano recordings (classical) and YouTube playlists of EDM and lofi.
Those cannot ship with the project, so this module synthesises music with the traits each genre
shows in a 64-mel log spectrogram of a 2-second clip:

classical  piano-like additive tones (inharmonic partials, hammer attack, per-partial exponential
           decay) playing diatonic progressions as Alberti bass, arpeggios or block chords under a
           right-hand melody, in a hall. Sparse harmonic onsets that decay; no drums, no noise.
edm        four-on-the-floor kick at 120-130 bpm, off-beat open hats (often 16th hats and a clap),
           a low-passed saw bass with a filter envelope and supersaw chords, both ducked on every
           kick (side-chain pumping), sometimes a plucked arpeggio lead.
lofi       70-90 bpm swung boom-bap drums (soft kick, snare, hats), e-piano 7th chords, a sine bass
           and sometimes a sparse melody, through a low-passed "tape" bus with wow and flutter,
           saturation and bit reduction; vinyl hiss and crackle on top (a constant noise floor).

Key, mode, tempo, progression, patterns, timbre and mix are drawn per clip from
``numpy.random.default_rng([seed, genre index])``: a (genre, seed) pair always gives the same
samples, and :func:`clip_params` tells what was drawn. Everything is vectorised numpy; Python
loops run over notes and partials, never over samples (about a second of CPU per minute of audio).

The module runs past 400 lines on purpose: it is one synthesiser, read top to bottom (pitch, DSP,
instruments, the three genres, the API); every genre uses most of the helpers, so splitting it
would scatter them without making any part shorter to read.

Usage::

    y = render("lofi", seed=3, seconds=5.0, sample_rate=16000)   # (80000,) float32, peak <= 0.89
    write_dataset("data/synth", files_per_genre=6, seconds=20.0)  # data/synth/<genre>/<genre>_0000.wav ...
"""
from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from ..errors import ConfigError
from ..utils.progress import progress_bar

GENRES = ("classical", "edm", "lofi")
#: extension -> (libsndfile format, subtype) that :func:`write_dataset` writes.
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
TAU = 2 * np.pi

# Chord progressions as scale degrees (0 = tonic), one chord per bar.
CLASSICAL_PROGRESSIONS = ([0, 3, 4, 0], [0, 5, 3, 4], [0, 1, 4, 0], [0, 4, 5, 3], [0, 3, 0, 4],
                          [0, 3, 4, 0, 5, 1, 4, 0], [0, 5, 1, 4, 0, 3, 4, 4])
EDM_PROGRESSIONS = ([0, 5, 2, 6], [5, 6, 0, 0], [0, 6, 5, 6], [0, 3, 5, 4], [5, 3, 0, 4])
LOFI_PROGRESSIONS = ([1, 4, 0, 0], [1, 4, 0, 5], [3, 2, 1, 0], [0, 5, 1, 4], [0, 3, 6, 2], [3, 4, 2, 5])
LOFI_KICKS = ((0, 3, 4), (0, 5), (0, 2, 5), (0, 3, 5, 7), (0, 4, 5))  # eighth-note steps in a bar


# ---------------------------------------------------------------------------------------------- pitch

def _hz(midi):
    """MIDI note number(s) -> frequency in Hz (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=float) - 69) / 12)


def _pitch(tonic: int, scale, degree: int) -> int:
    """MIDI note of scale ``degree`` (any integer; 7 = tonic an octave up) above ``tonic``."""
    octave, step = divmod(degree, 7)
    return tonic + 12 * octave + scale[step]


def _chord(tonic: int, scale, degree: int, size: int = 3) -> list[int]:
    """Diatonic chord stacked in thirds on ``degree``: size 3 = triad, 4 = seventh chord."""
    return [_pitch(tonic, scale, degree + 2 * i) for i in range(size)]


def _fold(tonic: int, scale, degree: int, highest: int) -> int:
    """``degree`` moved down by octaves until its root is at or below MIDI ``highest``."""
    while _pitch(tonic, scale, degree) > highest:
        degree -= 7
    return degree


# ------------------------------------------------------------------------------------------------ dsp

def _sin(cycles: np.ndarray) -> np.ndarray:
    """``sin(2 pi cycles)``: the whole cycles are dropped in float64, the rest is a fast float32 sine."""
    return np.sin((TAU * (cycles - np.floor(cycles))).astype(np.float32))


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _fft_len(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n``: an FFT size numpy transforms fast."""
    best, f5 = 1 << max(n - 1, 1).bit_length(), 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            best = min(best, f35 << ((n - 1) // f35).bit_length())
            f35 *= 3
        f5 *= 5
    return best


def _filter(x: np.ndarray, sr: int, lo: float | None = None, hi: float | None = None, order: int = 2):
    """Zero-phase Butterworth-magnitude high-pass ``lo`` and/or low-pass ``hi`` by FFT along axis 0."""
    m = _fft_len(len(x) + sr // 10)
    f = np.fft.rfftfreq(m, 1 / sr)
    h = np.ones_like(f)
    if hi:
        h /= np.sqrt(1 + (f / hi) ** (2 * order))
    if lo:
        h *= (f / lo) ** order / np.sqrt(1 + (f / lo) ** (2 * order))
    spec = np.fft.rfft(x, m, axis=0)
    return np.fft.irfft(spec * (h if x.ndim == 1 else h[:, None]), m, axis=0)[: len(x)]


def _convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """FFT convolution along axis 0, cut to ``len(x)``."""
    m = _fft_len(len(x) + len(ir))
    return np.fft.irfft(np.fft.rfft(x, m, axis=0) * np.fft.rfft(ir, m, axis=0), m, axis=0)[: len(x)]


def _reverb(x: np.ndarray, sr: int, rng, t60: float, damp_hz: float) -> np.ndarray:
    """Wet signal of a room: ``x (n, 2)`` convolved with decaying, damped noise (one tail per channel)."""
    t = np.arange(int(t60 * sr)) / sr
    ir = _filter(rng.standard_normal((len(t), 2)), sr, hi=damp_hz) * np.exp(-6.9 * t / t60)[:, None]
    ir[: int(0.015 * sr)] = 0  # pre-delay
    return _convolve(x, ir / np.sqrt((ir ** 2).sum(axis=0)))


def _add(track: np.ndarray, start: float, sig: np.ndarray, sr: int, gain: float = 1.0):
    """Mix ``sig`` into ``track`` from ``start`` seconds on (whatever runs past the end is cut)."""
    i = max(int(round(start * sr)), 0)
    sig = sig[: max(len(track) - i, 0)]
    track[i: i + len(sig)] += gain * sig


# The notes a render plays, when :func:`score` listens: (track, midi, start s, seconds, velocity 0..1).
_SCORE: contextvars.ContextVar[list | None] = contextvars.ContextVar("nmusic_synth_score", default=None)
#: General MIDI drum keys of the drum sounds (played on MIDI channel 10).
KICK, SNARE, CLAP, CLOSED_HAT, OPEN_HAT = 36, 38, 39, 42, 46


def _played(track: str, midi: int, start: float, seconds: float, velocity: float = 1.0) -> None:
    """Note what was just mixed in (a no-op unless :func:`score` is listening); draws nothing at random."""
    notes = _SCORE.get()
    if notes is not None:
        notes.append((track, int(midi), float(start), float(seconds), float(velocity)))


def _note(tone: np.ndarray, sr: int, seconds: float, release: float) -> np.ndarray:
    """A note off ``seconds`` into ``tone``, fading out over ``release`` seconds."""
    on, rel = int(seconds * sr), max(int(release * sr), 1)
    out = tone[: on + rel].copy()
    if len(out) > on:
        out[on:] *= np.linspace(1, 0, rel)[: len(out) - on] ** 2
    return out


def _pan(x: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan of mono ``x (n,)`` to ``(n, 2)``; ``pan`` in [-1 (left), 1 (right)]."""
    a = (pan + 1) * np.pi / 4
    return np.stack([x * np.cos(a), x * np.sin(a)], axis=1)


def _sidechain(n: int, sr: int, beat: float, depth: float, release: float) -> np.ndarray:
    """Side-chain gain: ducks by ``depth`` a few ms after every beat, recovers with ``release`` (s)."""
    since = _frac(np.arange(n) / (sr * beat)) * beat
    return 1 - depth * (1 - np.exp(-since / 0.003)) * np.exp(-since / release)


def _wow(x: np.ndarray, sr: int, rng, cents: float, rate: float) -> np.ndarray:
    """Tape wow (slow pitch wobble of ``cents`` at ``rate`` Hz) plus a little flutter, on ``(n, 2)``."""
    t = np.arange(len(x)) / sr
    ratio = cents * np.log(2) / 1200  # relative speed deviation
    shift = ratio / (TAU * rate) * np.sin(TAU * rate * t + rng.uniform(0, TAU))
    shift += ratio / 8 / (TAU * 7.0) * np.sin(TAU * 7.0 * t)  # flutter
    pos = np.clip((t + shift - shift[0]) * sr, 0, len(x) - 1)
    return np.stack([np.interp(pos, np.arange(len(x)), x[:, c]) for c in range(x.shape[1])], axis=1)


# ----------------------------------------------------------------------------------------- instruments

def _piano_tone(midi: int, sr: int, seconds: float, timbre: dict, rng) -> np.ndarray:
    """One piano key, no release: partials ``f_k = k f0 sqrt(1 + B k^2)`` (stiff string), amplitudes
    shaped by the hammer position and felt, each decaying exponentially (higher ones faster) and
    beating like detuned unison strings; a 1.5 ms hammer attack and a short felt thump."""
    f0, n = float(_hz(midi)), int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    inharm = timbre["inharmonicity"] * 2 ** ((midi - 60) / 24)  # treble strings are stiffer
    tau1 = timbre["decay"] * 2 ** (-(midi - 60) / 18)  # bass strings ring longer
    for k in range(1, 30):
        fk = k * f0 * np.sqrt(1 + inharm * k * k)
        if fk > min(0.45 * sr, 9000):
            break
        amp = k ** -timbre["rolloff"] * (0.1 + abs(np.sin(np.pi * k * timbre["strike"])))
        amp /= 1 + (fk / timbre["felt_hz"]) ** 2  # soft hammer felt: a gentle low-pass
        tau = tau1 * (1 + f0 / timbre["damping_hz"]) / (1 + fk / timbre["damping_hz"])
        tk = t[: min(n, int(7 * tau * sr) + 1)]  # to -60 dB
        beating = 1 + timbre["chorus"] * _sin(timbre["detune"] * k * tk + 0.25)
        out[: len(tk)] += amp * np.exp(-tk / tau) * beating * _sin(fk * tk + rng.random())
    out *= 1 - np.exp(-t / 0.0015)
    thump = _filter(rng.standard_normal(min(n, int(0.03 * sr))), sr, hi=2 * f0 + 300)
    out[: len(thump)] += timbre["thump"] * thump * np.exp(-t[: len(thump)] / 0.004)
    return out


def _epiano_tone(midi: int, sr: int, seconds: float, timbre: dict) -> np.ndarray:
    """Rhodes-like FM tone: f0 phase-modulated at f0 by a decaying index (bark on the attack, round
    sustain) plus a fast-decaying high "tine" partial."""
    f0 = float(_hz(midi))
    t = np.arange(int(seconds * sr)) / sr
    index = timbre["bark"] * np.exp(-t / 0.2) + 0.4
    y = _sin(f0 * t + index / TAU * _sin(f0 * t))
    tine_hz = min(f0 * timbre["tine_ratio"], 0.45 * sr)
    y += timbre["tine"] * _sin(tine_hz * t) * np.exp(-t / 0.03)
    decay = timbre["decay"] * 2 ** (-(midi - 60) / 24)
    return y * np.exp(-t / decay) * (1 - np.exp(-t / 0.002))


def _sine_bass(midi: int, sr: int, seconds: float) -> np.ndarray:
    """Round, slightly saturated sine bass with soft attack and release."""
    t = np.arange(int(seconds * sr)) / sr
    env = (1 - np.exp(-t / 0.01)) * np.exp(-t / 1.5) * np.minimum(1, (seconds - t) / 0.05)
    return np.tanh(1.5 * _sin(_hz(midi) * t)) * env


def _saw(freq: float, n: int, sr: int, phase: float = 0.0) -> np.ndarray:
    """Band-limited sawtooth in [-1, 1] (polyBLEP) of ``n`` samples."""
    dt = freq / sr
    p = _frac(phase + dt * np.arange(n))
    y = 2 * p - 1
    lo, hi = p < dt, p > 1 - dt
    x = p[lo] / dt
    y[lo] -= 2 * x - x * x - 1
    x = (p[hi] - 1) / dt
    y[hi] -= x * x + 2 * x + 1
    return y


def _supersaw(midi: int, n: int, sr: int, rng, voices: int, cents: float) -> tuple[np.ndarray, np.ndarray]:
    """Detuned saw stack for one note, split into a (left, right) pair of voice groups."""
    sides = [np.zeros(n), np.zeros(n)]
    for v, c in enumerate(np.linspace(-cents, cents, voices)):
        sides[v % 2] += _saw(float(_hz(midi)) * 2 ** (c / 1200), n, sr, rng.random())
    return sides[0] / np.sqrt(voices), sides[1] / np.sqrt(voices)


def _kick(sr: int, rng, f_start: float, f_end: float, decay: float, click: float) -> np.ndarray:
    """Kick drum: a sine whose pitch falls exponentially from ``f_start`` to ``f_end``, plus a click."""
    t = np.arange(int(5 * decay * sr)) / sr
    sweep = 0.03
    cycles = f_end * t + (f_start - f_end) * sweep * (1 - np.exp(-t / sweep))
    body = np.tanh(1.5 * _sin(cycles)) * np.exp(-t / decay)
    return body + click * _filter(rng.standard_normal(len(t)), sr, lo=1000) * np.exp(-t / 0.002)


def _snare(sr: int, rng, tone_hz: float, decay: float, bright_hz: float) -> np.ndarray:
    """Snare: band-passed noise (the wires) over a short tuned drum-head tone."""
    t = np.arange(int(5 * decay * sr)) / sr
    wires = _filter(rng.standard_normal(len(t)), sr, lo=700, hi=bright_hz) * np.exp(-t / decay)
    head = _sin(tone_hz * t) * np.exp(-t / 0.05)
    return 0.7 * wires / wires.std() / 3 + 0.6 * head


def _clap(sr: int, rng) -> np.ndarray:
    """Hand clap: band-passed noise with three quick bursts and a short tail."""
    t = np.arange(int(0.25 * sr)) / sr
    noise = _filter(rng.standard_normal(len(t)), sr, lo=900, hi=4000)
    env = sum(np.exp(-(t - d) / 0.004) * (t >= d) for d in (0.0, 0.011, 0.022)) + np.exp(-t / 0.06)
    return noise / noise.std() / 3 * env


def _hat(sr: int, rng, decay: float, lo_hz: float) -> np.ndarray:
    """Hi-hat: high-passed noise with an exponential decay (long decay = open hat)."""
    t = np.arange(int(6 * decay * sr)) / sr
    noise = _filter(rng.standard_normal(len(t)), sr, lo=lo_hz)
    return noise / noise.std() / 3 * np.exp(-t / decay)


def _vinyl(n: int, sr: int, rng, density: float, hiss: float) -> np.ndarray:
    """Vinyl surface noise: constant hiss plus crackle (Poisson clicks with heavy-tailed sizes)."""
    noise = _filter(rng.standard_normal(n), sr, lo=100, hi=7000)
    clicks = np.zeros(n)
    count = rng.poisson(density * n / sr)
    sizes = np.minimum(rng.pareto(2.5, count) + 1, 6) * rng.choice([-1.0, 1.0], count)
    np.add.at(clicks, rng.integers(0, n, count), sizes)
    return hiss * noise / noise.std() + 12 * hiss * _filter(clicks, sr, lo=1200, hi=9000)


# -------------------------------------------------------------------------------------- classical

def _classical_params(rng) -> dict:
    return dict(
        tonic=48 + int(rng.integers(12)), mode=str(rng.choice(["major", "minor"], p=[0.65, 0.35])),
        bpm=float(rng.uniform(60, 104)), meter=int(rng.choice([3, 4], p=[0.3, 0.7])),
        progression=list(CLASSICAL_PROGRESSIONS[rng.integers(len(CLASSICAL_PROGRESSIONS))]),
        left_hand=str(rng.choice(["alberti", "arpeggio", "block"])), melody=bool(rng.random() < 0.8),
        piano=dict(inharmonicity=float(rng.uniform(1e-4, 5e-4)), decay=float(rng.uniform(0.8, 2.0)),
                   rolloff=float(rng.uniform(0.8, 1.4)), strike=float(rng.uniform(1 / 9, 1 / 7)),
                   felt_hz=float(rng.uniform(1500, 4000)), damping_hz=float(rng.uniform(300, 1000)),
                   chorus=float(rng.uniform(0.05, 0.3)), detune=float(rng.uniform(0.2, 1.2)),
                   thump=float(rng.uniform(0.02, 0.08))),
        hands=(float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.8, 1.0))),
        reverb=dict(t60=float(rng.uniform(1.2, 2.5)), wet=float(rng.uniform(0.15, 0.35)),
                    damp_hz=float(rng.uniform(2500, 6000))),
        peak=float(rng.uniform(0.6, 0.89)))


def _left_hand(style: str, chord: list[int], meter: int) -> list[tuple[float, int]]:
    """(beat, midi) of the accompaniment in one bar; every note is held to the bar's end (pedal)."""
    low, mid, high = chord
    if style == "block":  # bass note, then the chord on the other beats (a waltz in 3/4)
        return [(0.0, low - 12)] + [(float(b), m) for b in range(1, meter) for m in chord]
    cycle = [low, high, mid, high] if style == "alberti" else [low - 12, low, mid, high, low + 12, high, mid, low]
    return [(i / 2, cycle[i % len(cycle)]) for i in range(2 * meter)]


def _melody(rng, degree: int, chord_degree: int, meter: int) -> tuple[list[tuple[float, float, int]], int]:
    """One bar of right-hand melody as (beat, beats long, scale degree), and the degree it ends on.

    A random walk on the scale (mostly steps) that lands on a chord tone on the downbeat."""
    notes = []
    rhythms = ([(0, 1)], [(0, 0.5), (0.5, 0.5)], [(0, 0.75), (0.75, 0.25)], [])  # quarter, eighths, dotted, rest
    for k in range(meter):
        for at, length in rhythms[rng.choice(4, p=[0.5, 0.3, 0.1, 0.1])]:
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 7, 15))
            if k == 0 and at == 0:
                chord_tones = [d for d in range(5, 18) if (d - chord_degree) % 7 in (0, 2, 4)]
                degree = min(chord_tones, key=lambda d: abs(d - degree))
            notes.append((k + at, length, degree))
    return notes, degree


def _render_classical(p: dict, rng, n: int, sr: int) -> np.ndarray:
    beat = 60 / p["bpm"]
    bar, tonic = beat * p["meter"], p["tonic"]
    scale = MAJOR if p["mode"] == "major" else HARMONIC_MINOR
    tones: dict[int, np.ndarray] = {}
    left, right = np.zeros(n), np.zeros(n)

    def play(track, name, midi, start, seconds, velocity):
        if midi not in tones:
            tones[midi] = _piano_tone(midi, sr, min(bar, n / sr) + 0.3, p["piano"], rng)
        note = _note(tones[midi], sr, seconds, 0.15)
        at, gain = start + rng.normal(0, 0.008), velocity * rng.uniform(0.85, 1.0)
        _add(track, at, note, sr, gain)
        _played(name, midi, at, seconds, gain)

    degree = 7 + int(rng.integers(5))  # melody position in scale steps above the tonic
    for b in range(int(np.ceil(n / sr / bar))):
        t0, chord_degree = b * bar, p["progression"][b % len(p["progression"])]
        velocity = 0.75 + 0.2 * np.sin(TAU * b / 8)  # phrase-long swell
        chord = _chord(tonic, scale, _fold(tonic, scale, chord_degree, 55))
        for at, midi in _left_hand(p["left_hand"], chord, p["meter"]):
            accent = 1.15 if at == 0 else 1.0
            play(left, "chords", midi, t0 + at * beat, bar - at * beat, velocity * p["hands"][0] * accent)
        notes, degree = _melody(rng, degree, chord_degree, p["meter"])
        for at, length, d in notes if p["melody"] else ():
            play(right, "melody", _pitch(tonic, scale, d), t0 + at * beat, 0.95 * length * beat, velocity * p["hands"][1])
    mix = _pan(left, -0.25) + _pan(right, 0.25)  # low notes left, high notes right, as a piano is miked
    rv = p["reverb"]
    return mix + rv["wet"] * _reverb(mix, sr, rng, rv["t60"], rv["damp_hz"])


# -------------------------------------------------------------------------------------------- edm

def _edm_params(rng) -> dict:
    return dict(
        tonic=int(rng.integers(12)), mode=str(rng.choice(["minor", "major"], p=[0.75, 0.25])),
        bpm=float(rng.integers(120, 131)),
        progression=list(EDM_PROGRESSIONS[rng.integers(len(EDM_PROGRESSIONS))]),
        kick=dict(f_start=float(rng.uniform(120, 200)), f_end=float(rng.uniform(42, 58)),
                  decay=float(rng.uniform(0.12, 0.25)), click=float(rng.uniform(0.1, 0.4))),
        hat_decay=float(rng.uniform(0.05, 0.15)), hat_hz=float(rng.uniform(4000, 7000)),
        sixteenths=bool(rng.random() < 0.6), clap=bool(rng.random() < 0.7),
        bass=str(rng.choice(["offbeat", "rolling", "sustained"])), bass_cutoff=float(rng.uniform(250, 900)),
        synths=str(rng.choice(["pad", "lead", "pad+lead"], p=[0.45, 0.15, 0.4])),
        voices=int(rng.integers(5, 8)), detune=float(rng.uniform(8, 25)),
        pad_cutoff=float(rng.uniform(1500, 5000)),
        pump=float(rng.uniform(0.65, 0.92)), pump_release=float(rng.uniform(0.1, 0.2)),
        gains=dict(kick=1.0, hats=float(rng.uniform(0.3, 0.55)), clap=float(rng.uniform(0.3, 0.6)),
                   bass=float(rng.uniform(0.4, 0.7)), pad=float(rng.uniform(0.15, 0.35)),
                   lead=float(rng.uniform(0.1, 0.25))),
        drive=float(rng.uniform(1.2, 2.0)), peak=float(rng.uniform(0.7, 0.89)))


def _edm_harmony(p: dict, bar: int) -> tuple[int, list[int]]:
    """Bass root (MIDI 33-45) and chord (around C4-G5) of bar ``bar``."""
    scale = MINOR if p["mode"] == "minor" else MAJOR
    degree = p["progression"][bar % len(p["progression"])]
    low, mid = 24 + p["tonic"], 60 + p["tonic"]
    return _pitch(low, scale, _fold(low, scale, degree, 45)), _chord(mid, scale, _fold(mid, scale, degree, 67))


def _edm_drums(p: dict, rng, n: int, sr: int) -> np.ndarray:
    """Kick on every beat, open hat on every off-beat, maybe 16th hats and a clap on 2 and 4: ``(n, 2)``."""
    beat, g = 60 / p["bpm"], p["gains"]
    kick, hats, clap = np.zeros(n), np.zeros(n), np.zeros(n)
    kick_one, clap_one = _kick(sr, rng, **p["kick"]), _clap(sr, rng)
    open_hat, closed_hat = _hat(sr, rng, p["hat_decay"], p["hat_hz"]), _hat(sr, rng, 0.02, p["hat_hz"] + 1000)
    for i in range(int(np.ceil(n / sr / beat))):  # machine-exact grid
        t = i * beat
        _add(kick, t, kick_one, sr)
        _add(hats, t + beat / 2, open_hat, sr)
        _played("drums", KICK, t, beat / 4)
        _played("drums", OPEN_HAT, t + beat / 2, beat / 4)
        for s in (1, 3) if p["sixteenths"] else ():
            gain = rng.uniform(0.25, 0.45)
            _add(hats, t + s * beat / 4, closed_hat, sr, gain)
            _played("drums", CLOSED_HAT, t + s * beat / 4, beat / 4, gain)
        if p["clap"] and i % 2 == 1:
            _add(clap, t, clap_one, sr)
            _played("drums", CLAP, t, beat / 4)
    return _pan(g["kick"] * kick, 0) + _pan(g["hats"] * hats, 0.15) + _pan(g["clap"] * clap, -0.1)


def _edm_bass(p: dict, n: int, sr: int) -> np.ndarray:
    """Saw bass on the chord roots through a low-pass whose cutoff jumps up on each note: ``(n,)``."""
    beat = 60 / p["bpm"]
    steps = {"offbeat": [(s + 0.5, 0.4) for s in range(4)],
             "rolling": [(s + q / 4, 0.22) for s in range(4) for q in (1, 2, 3)],
             "sustained": [(0, 3.9)]}[p["bass"]]
    saw, env = np.zeros(n), np.zeros(n)
    for b in range(int(np.ceil(n / sr / (4 * beat)))):
        root, _ = _edm_harmony(p, b)
        for at, length in steps:
            m = int(length * beat * sr)
            ramp = np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / (0.003 * sr))  # no clicks
            _add(saw, (4 * b + at) * beat, _saw(float(_hz(root)), m, sr) * ramp, sr)
            _add(env, (4 * b + at) * beat, np.exp(-np.arange(m) / (0.06 * sr)), sr)
            _played("bass", root, (4 * b + at) * beat, length * beat)
    dark, bright = _filter(saw, sr, hi=p["bass_cutoff"]), _filter(saw, sr, hi=4 * p["bass_cutoff"])
    return (dark + np.minimum(env, 1) * bright) / 2


def _pluck(midi: int, sr: int) -> np.ndarray:
    """Short decaying saw: one note of an arpeggiated lead."""
    m = int(0.2 * sr)
    return _saw(float(_hz(midi)), m, sr) * np.exp(-np.arange(m) / (0.05 * sr))


def _edm_synths(p: dict, rng, n: int, sr: int) -> np.ndarray:
    """Supersaw chords (voices spread left/right) and/or a 16th-note pluck arpeggio, in reverb: ``(n, 2)``."""
    bar, g = 4 * 60 / p["bpm"], p["gains"]
    pad, lead = np.zeros((n, 2)), np.zeros(n)
    m = int(bar * sr)
    fade = np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / (0.02 * sr))
    for b in range(int(np.ceil(n / sr / bar))):
        _, chord = _edm_harmony(p, b)
        for midi in chord if "pad" in p["synths"] else ():
            left, right = _supersaw(midi, m, sr, rng, p["voices"], p["detune"])
            _add(pad, b * bar, np.stack([left, right], axis=1) * fade[:, None], sr)
            _played("chords", midi, b * bar, bar)
        arp = chord + [chord[0] + 12]
        for s in range(16) if "lead" in p["synths"] else ():
            _add(lead, b * bar + s * bar / 16, _pluck(arp[s % len(arp)] + 12, sr), sr)
            _played("melody", arp[s % len(arp)] + 12, b * bar + s * bar / 16, bar / 16)
    synths = g["pad"] * _filter(pad, sr, hi=p["pad_cutoff"]) + _pan(g["lead"] * _filter(lead, sr, hi=3000), 0.3)
    return synths + 0.25 * _reverb(synths, sr, rng, 1.2, 5000)


def _render_edm(p: dict, rng, n: int, sr: int) -> np.ndarray:
    drums = _edm_drums(p, rng, n, sr)
    music = _pan(p["gains"]["bass"] * _edm_bass(p, n, sr), 0) + _edm_synths(p, rng, n, sr)
    pump = _sidechain(n, sr, 60 / p["bpm"], p["pump"], p["pump_release"])[:, None]  # ducks all but drums
    mix = drums + pump * music
    return np.tanh(p["drive"] * mix / np.abs(mix).max())  # loud master


# ------------------------------------------------------------------------------------------- lofi

def _lofi_params(rng) -> dict:
    return dict(
        tonic=int(rng.integers(12)), mode=str(rng.choice(["major", "minor"])), bpm=float(rng.uniform(70, 90)),
        swing=float(rng.uniform(0.56, 0.67)),
        progression=list(LOFI_PROGRESSIONS[rng.integers(len(LOFI_PROGRESSIONS))]),
        kick_steps=list(LOFI_KICKS[rng.integers(len(LOFI_KICKS))]),
        kick=dict(f_start=float(rng.uniform(80, 110)), f_end=float(rng.uniform(45, 55)),
                  decay=float(rng.uniform(0.15, 0.3)), click=0.0),
        snare=dict(tone_hz=float(rng.uniform(160, 230)), decay=float(rng.uniform(0.08, 0.16)),
                   bright_hz=float(rng.uniform(3000, 6000))),
        comp=str(rng.choice(["whole", "two", "stabs"])), ninths=bool(rng.random() < 0.5),
        epiano=dict(bark=float(rng.uniform(0.8, 2.5)), tine=float(rng.uniform(0.05, 0.25)),
                    tine_ratio=float(rng.uniform(6.5, 14.5)), decay=float(rng.uniform(1.0, 2.5))),
        melody=bool(rng.random() < 0.5),
        gains=dict(kick=float(rng.uniform(0.5, 0.8)), snare=float(rng.uniform(0.25, 0.4)),
                   hats=float(rng.uniform(0.08, 0.15)), keys=float(rng.uniform(0.3, 0.5)),
                   bass=float(rng.uniform(0.25, 0.45)), melody=float(rng.uniform(0.12, 0.2))),
        reverb=dict(t60=float(rng.uniform(0.6, 1.4)), wet=float(rng.uniform(0.1, 0.25))),
        cutoff=float(rng.uniform(1800, 3500)), wow_cents=float(rng.uniform(4, 15)),
        wow_hz=float(rng.uniform(0.3, 0.9)), bits=int(rng.integers(9, 13)),
        crackle=float(rng.uniform(8, 40)), hiss=float(10 ** rng.uniform(-3.2, -2.5)),
        peak=float(rng.uniform(0.6, 0.89)))


def _swung(p: dict, rng, bar: int, eighth: int) -> float:
    """Time (s) of eighth note ``eighth`` of bar ``bar``: off-beats late by the swing, plus a human wobble."""
    beat = 60 / p["bpm"]
    return (4 * bar + eighth // 2 + (p["swing"] if eighth % 2 else 0)) * beat + rng.normal(0, 0.008)


def _lofi_drums(p: dict, rng, n: int, sr: int) -> np.ndarray:
    """Boom-bap: soft kick pattern, snare on 2 and 4, swung eighth hats (loud on the beat): ``(n, 2)``."""
    g = p["gains"]
    kick, snare, hats = np.zeros(n), np.zeros(n), np.zeros(n)
    kick_one = _filter(_kick(sr, rng, **p["kick"]), sr, hi=1500)
    snare_one, hat_one = _snare(sr, rng, **p["snare"]), _hat(sr, rng, 0.03, 2500)
    for b in range(int(np.ceil(n / sr / (240 / p["bpm"])))):
        for e in range(8):
            if e in p["kick_steps"]:
                at, gain = _swung(p, rng, b, e), rng.uniform(0.8, 1.0)
                _add(kick, at, kick_one, sr, gain)
                _played("drums", KICK, at, 30 / p["bpm"], gain)
            if e in (2, 6):
                at, gain = _swung(p, rng, b, e), rng.uniform(0.8, 1.0)
                _add(snare, at, snare_one, sr, gain)
                _played("drums", SNARE, at, 30 / p["bpm"], gain)
            if rng.random() < 0.9:
                velocity = rng.uniform(0.3, 0.6) if e % 2 else rng.uniform(0.7, 1.0)  # accent the beat
                at = _swung(p, rng, b, e)
                _add(hats, at, hat_one, sr, velocity)
                _played("drums", CLOSED_HAT, at, 30 / p["bpm"], velocity)
    return _pan(g["kick"] * kick, 0) + _pan(g["snare"] * snare, 0.05) + _pan(g["hats"] * hats, -0.2)


def _lofi_band(p: dict, rng, n: int, sr: int) -> np.ndarray:
    """E-piano 7th (or 9th) chords strummed in a comping rhythm, sine bass, maybe a sparse melody: ``(n, 2)``."""
    beat, g = 60 / p["bpm"], p["gains"]
    scale, low = (MAJOR if p["mode"] == "major" else MINOR), 48 + p["tonic"]
    keys, bass, melody = np.zeros((n, 2)), np.zeros(n), np.zeros(n)
    tones: dict[int, np.ndarray] = {}

    def epiano(midi, seconds):
        if midi not in tones:
            tones[midi] = _epiano_tone(midi, sr, min(4 * beat, n / sr) + 0.3, p["epiano"])
        return _note(tones[midi], sr, seconds, 0.25)

    comp = {"whole": [(0, 8)], "two": [(0, 3), (3, 5)], "stabs": [(0, 2), (3, 2), (5, 3)]}[p["comp"]]
    for b in range(int(np.ceil(n / sr / (4 * beat)))):
        degree = _fold(low, scale, p["progression"][b % len(p["progression"])], 55)
        chord = _chord(low, scale, degree, 5 if p["ninths"] else 4)
        for e, length in comp:
            start = _swung(p, rng, b, e)
            for j, midi in enumerate(chord):  # a slight upward strum, voices alternating left/right
                gain = rng.uniform(0.6, 0.9)
                _add(keys[:, j % 2], start + 0.012 * j, epiano(midi, length * beat / 2), sr, gain)
                _played("chords", midi, start + 0.012 * j, length * beat / 2, gain)
        fifth = chord[0] - 12 + (7 if rng.random() < 0.5 else 0)
        for e, length, midi in ((0, 3, chord[0] - 12), (3, 2, chord[0] - 12), (5, 3, fifth)):
            at, tone = _swung(p, rng, b, e), _sine_bass(midi, sr, length * beat / 2)
            gain = rng.uniform(0.8, 1.0)
            _add(bass, at, tone, sr, gain)
            _played("bass", midi, at, length * beat / 2, gain)
        for e in sorted(rng.choice(8, size=int(rng.integers(0, 4)), replace=False)) if p["melody"] else ():
            midi = _pitch(low + 12, scale, 7 + int(rng.choice([0, 1, 2, 4, 5])))  # pentatonic-ish
            at, tone = _swung(p, rng, b, e), epiano(midi, beat)
            gain = rng.uniform(0.6, 1.0)
            _add(melody, at, tone, sr, gain)
            _played("melody", midi, at, beat, gain)
    return g["keys"] * _pan(keys[:, 0], -0.6) + g["keys"] * _pan(keys[:, 1], 0.6) \
        + _pan(g["bass"] * bass, 0) + _pan(g["melody"] * melody, 0.2)


def _tape(x: np.ndarray, p: dict, rng, sr: int) -> np.ndarray:
    """Lo-fi master: steep low-pass, wow and flutter, saturation, bit reduction (peak ~0.86)."""
    y = _wow(_filter(x, sr, hi=p["cutoff"], order=4), sr, rng, p["wow_cents"], p["wow_hz"])
    y = np.tanh(1.3 * y / np.abs(y).max())
    levels = 2 ** (p["bits"] - 1)
    return np.round(y * levels) / levels


def _render_lofi(p: dict, rng, n: int, sr: int) -> np.ndarray:
    mix = _lofi_drums(p, rng, n, sr) + _lofi_band(p, rng, n, sr)
    mix += p["reverb"]["wet"] * _reverb(mix, sr, rng, p["reverb"]["t60"], 3000)
    return _tape(mix, p, rng, sr) + _vinyl(n, sr, rng, p["crackle"], p["hiss"])[:, None]


_GENRES = {"classical": (_classical_params, _render_classical), "edm": (_edm_params, _render_edm),
           "lofi": (_lofi_params, _render_lofi)}

# ------------------------------------------------------------------------------------------------ api

def _rng(genre: str, seed: int):
    if genre not in _GENRES:
        raise ConfigError(f"unknown genre {genre!r}; the synthesiser makes {list(GENRES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (got {seed!r})")
    return np.random.default_rng([int(seed), GENRES.index(genre)])


def clip_params(genre: str, seed: int) -> dict:
    """The musical parameters ``render(genre, seed, ...)`` draws: key, tempo, progression, timbre, mix."""
    return _GENRES[genre][0](_rng(genre, seed))


def render(genre: str, seed: int, seconds: float, sample_rate: int = 22050, stereo: bool = False) -> np.ndarray:
    """Synthesise ``seconds`` of ``genre`` music: float32 ``(T,)`` (or ``(T, 2)`` with ``stereo``),
    ``T = round(seconds * sample_rate)``, peak in [0.6, 0.89]. The mono clip is the mean of the
    stereo one, re-levelled. Same arguments, same samples."""
    rng = _rng(genre, seed)
    if not seconds > 0:
        raise ConfigError(f"seconds must be > 0 (got {seconds!r})")
    if not 8000 <= sample_rate <= 192000:
        raise ConfigError(f"sample_rate must be between 8000 and 192000 Hz (got {sample_rate!r})")
    make_params, synthesise = _GENRES[genre]
    params = make_params(rng)
    n = int(round(seconds * sample_rate))
    if n < 1:
        raise ConfigError(f"seconds={seconds!r} at {sample_rate} Hz is less than one sample")
    y = synthesise(params, rng, n, int(sample_rate))
    if not stereo:
        y = y.mean(axis=1)
    y = y * (params["peak"] / max(np.abs(y).max(), 1e-9))
    return y.astype(np.float32)


#: General MIDI programs of the pitched tracks per genre (what the MIDI files name; drums are channel 10).
PROGRAMS = {"classical": {"bass": 0, "chords": 0, "melody": 0},                 # acoustic grand piano
            "edm": {"bass": 38, "chords": 81, "melody": 84},                   # synth bass, saw lead, charang
            "lofi": {"bass": 33, "chords": 4, "melody": 4}}                    # finger bass, electric piano


def render_with_score(genre: str, seed: int, seconds: float, sample_rate: int = 22050,
                      stereo: bool = False) -> tuple[np.ndarray, dict]:
    """:func:`render`, and the notes it played: ``{"genre", "bpm", "meter", "notes": [(track, midi,
    start s, seconds, velocity 0..1), ...]}`` with the notes that start inside the clip. The audio is
    exactly :func:`render`'s (recording the notes draws nothing at random)."""
    notes: list = []
    token = _SCORE.set(notes)
    try:
        y = render(genre, seed, seconds, sample_rate, stereo)
    finally:
        _SCORE.reset(token)
    p = clip_params(genre, seed)
    kept = sorted((n for n in notes if 0 <= n[2] < seconds), key=lambda n: (n[2], n[0], n[1]))
    return y, {"genre": genre, "bpm": float(p["bpm"]), "meter": int(p.get("meter", 4)), "notes": kept}


def file_seed(seed: int, index: int) -> int:
    """The render seed of file ``index`` of a :func:`write_dataset` run with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_dataset(out_dir, genres: Sequence[str] = GENRES, files_per_genre: int = 6, seconds: float = 20.0,
                  sample_rate: int | Sequence[int] = (22050, 44100), seed: int = 0,
                  formats: Sequence[str] = ("wav", "flac", "ogg"), channels: Sequence[int] = (1, 2),
                  progress: bool = True, midi: bool = True) -> Path:
    """Write ``files_per_genre`` clips of each genre to ``out_dir/<genre>/<genre>_<index>.<ext>``.

    File ``i`` is ``render(genre, file_seed(seed, i), seconds, rate, stereo=(ch == 2))`` written as
    ``formats[i % len]`` (wav = 16-bit PCM, flac, ogg = Vorbis) at ``rate = rates[i % len]`` with
    ``ch = channels[(i // 2) % len]`` channels, so a handful of files already covers every decode path.
    With ``midi``, the notes each file plays are written beside it as ``<genre>_<index>.mid`` (a track per
    instrument, drums on channel 10; :func:`nmusic.data.midi.write_score`). Returns ``out_dir``.
    """
    rates = [sample_rate] if isinstance(sample_rate, (int, np.integer)) else list(sample_rate)
    choices = {"genres": (genres, GENRES), "formats": (formats, tuple(FORMATS)), "channels": (channels, (1, 2))}
    for name, (values, allowed) in choices.items():
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ConfigError(f"write_dataset: unsupported {name} {bad or '(none given)'}; choose from {list(allowed)}")
    if files_per_genre < 1 or not rates or not all(8000 <= r <= 192000 for r in rates):
        raise ConfigError(f"write_dataset: need files_per_genre >= 1 (got {files_per_genre}) and sample rates in "
                          f"8000..192000 Hz (got {rates})")
    out_dir = Path(out_dir)
    jobs = [(g, i) for g in genres for i in range(files_per_genre)]
    for genre, i in progress_bar(jobs, desc="synthesising", disable=not progress):
        ext, rate, ch = formats[i % len(formats)], int(rates[i % len(rates)]), channels[(i // 2) % len(channels)]
        y, notes = render_with_score(genre, file_seed(seed, i), seconds, rate, stereo=ch == 2)
        (out_dir / genre).mkdir(parents=True, exist_ok=True)
        if midi:
            from .midi import write_score
            write_score(notes, out_dir / genre / f"{genre}_{i:04d}.mid", PROGRAMS[genre])
        fmt, subtype = FORMATS[ext]
        # Written in blocks: one large Ogg Vorbis write can crash libsndfile (python-soundfile #233).
        with sf.SoundFile(str(out_dir / genre / f"{genre}_{i:04d}.{ext}"), "w", rate, ch, subtype, format=fmt) as f:
            for start in range(0, len(y), 1 << 16):
                f.write(y[start:start + (1 << 16)])
    return out_dir
