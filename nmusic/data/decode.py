"""Decoding and resampling of user audio files (paper section 2.2).

wav/flac/ogg (vorbis and opus)/mp3/aiff decode through libsndfile (the ``soundfile`` package, whose
wheels carry libsndfile >= 1.1). The container is recognised from the file's content, so a FLAC file
named ``.mp3`` still decodes. m4a/aac/webm/mka/wma, and anything libsndfile cannot read, go through
the ``ffmpeg`` program when it is on PATH; without it the error says how to get it. Every channel
layout is downmixed to mono, every integer/float PCM becomes float32 in [-1, 1], and resampling
uses ``torchaudio.functional.resample``.

What a file holds is known three ways, from cheap to thorough: :func:`audio_info` reads the header,
:func:`probe` reads the header and decodes a few short blocks (what the manifest uses), and
:func:`audio_stats` decodes everything.

Shapes: :func:`read_audio` gives ``(frames, channels)`` float32 at the file's own rate;
:func:`load_audio` gives a mono ``(T,)`` float32 tensor at the requested rate.
"""
from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ..errors import DecodeError

#: File extensions the manifest looks at. Anything else in a genre folder is ignored.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
    ".m4a", ".mp4", ".aac", ".webm", ".mka", ".wma",
})
#: Extensions that need FFmpeg (libsndfile cannot read them).
FFMPEG_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".webm", ".mka", ".wma"})
#: Accepted native sample rates (Hz).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 384000
_SF_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)
# Files are handed to libsndfile as Python file objects, not names: given a name, libsndfile also
# opens a macOS "._<name>" sidecar next to the file as a resource fork, and then fails on a good
# mp3 ("bad data offset"). Such sidecars are common in archives made on macOS.
_BLOCK = 1 << 18  # frames per block when streaming a file (bounded memory for hour-long mixes)
CHECK_SECONDS = 1.0  # decoded at the start, the middle and the end of a file by probe()


@dataclass(frozen=True)
class AudioInfo:
    path: str
    duration: float  # seconds
    sample_rate: int
    channels: int
    frames: int


@dataclass(frozen=True)
class AudioStats(AudioInfo):
    """:class:`AudioInfo` from a full decode, plus what the manifest needs to judge the file."""
    peak: float = 0.0     # max |sample| over all channels
    finite: bool = True   # False if any sample is NaN or inf


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def _need_ffmpeg(path: Path, why: str) -> DecodeError:
    return DecodeError(
        f"{path}: {why}. Decoding this format needs FFmpeg: install it (Colab/Debian: 'apt-get install ffmpeg', "
        "conda: 'conda install ffmpeg') or convert the file to .flac/.wav first.")


def _last_line(stderr: str, path: Path) -> str:
    """FFmpeg's last error line, with the file's path shortened to its name."""
    lines = [line for line in stderr.replace(str(path), path.name).splitlines() if line.strip()]
    return lines[-1][-200:] if lines else ""


def _ffmpeg_probe(path: Path) -> tuple[int, int]:
    """Native (sample_rate, channels) of the first audio stream, via ffprobe."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise _need_ffmpeg(path, "ffprobe (part of FFmpeg) not found")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    parts = out.stdout.strip().split(",")
    if out.returncode == 0 and len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[0]), int(parts[1])
    raise DecodeError(f"{path}: FFmpeg cannot read it ({_last_line(out.stderr, path) or 'no audio stream'})")


def _ffmpeg_duration(path: Path) -> float | None:
    """The container's duration in seconds, via ffprobe (``None`` when it does not say)."""
    out = subprocess.run([shutil.which("ffprobe") or "ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    try:
        duration = float(out.stdout.strip())
    except ValueError:
        return None
    return duration if out.returncode == 0 and duration > 0 else None


def _ffmpeg_decode(path: Path, start: float | None = None, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream (from ``start``, ``seconds`` long, when given) through FFmpeg."""
    if _ffmpeg() is None:
        raise _need_ffmpeg(path, f"'{path.suffix}' files are not supported by libsndfile and ffmpeg is not installed")
    sr, channels = _ffmpeg_probe(path)
    window = (["-ss", f"{start:.3f}"] if start else []) + (["-t", f"{seconds:.3f}"] if seconds else [])
    out = subprocess.run([_ffmpeg(), "-v", "error", "-nostdin", *window, "-i", str(path), "-map", "0:a:0",
                          "-f", "f32le", "-acodec", "pcm_f32le", "-"], capture_output=True)
    if out.returncode != 0:
        why = _last_line(out.stderr.decode(errors="replace"), path)
        raise DecodeError(f"{path}: FFmpeg could not decode it ({why})")
    data = np.frombuffer(out.stdout, dtype=np.float32)
    return data[: len(data) - len(data) % channels].reshape(-1, channels), sr


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: the file is empty (0 bytes)")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``(frames, channels)`` float32 at its own rate. Raises :class:`DecodeError`."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        return _ffmpeg_decode(path)
    try:
        with open(path, "rb") as fh:  # a file object: see the note at _SF_ERRORS
            data, sr = sf.read(fh, dtype="float32", always_2d=True)
    except _SF_ERRORS as e:
        if _ffmpeg() is not None:  # e.g. an mp4 saved as .mp3: let FFmpeg try before giving up
            try:
                return _ffmpeg_decode(path)
            except DecodeError:
                pass
        hint = "" if _ffmpeg() else " (installing FFmpeg lets nmusic try more codecs)"
        why = getattr(e, "error_string", None) or str(e)  # libsndfile's reason, without the file object
        raise DecodeError(f"{path}: cannot decode as audio ({why}); the file may be truncated, corrupt or not "
                          f"audio{hint}. Re-export it as .flac/.wav or remove it.") from None
    return data, int(sr)


def audio_info(path: str | Path) -> AudioInfo:
    """Duration, rate and channel count from the file header (no full decode where possible)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and path.suffix.lower() not in FFMPEG_EXTENSIONS:
        try:
            with open(path, "rb") as fh:
                i = sf.info(fh)
            if i.frames > 0 and i.samplerate > 0:
                return AudioInfo(str(path), i.frames / i.samplerate, int(i.samplerate), int(i.channels), int(i.frames))
        except _SF_ERRORS:
            pass
    data, sr = read_audio(path)
    return AudioInfo(str(path), len(data) / sr, sr, data.shape[1], len(data))


def _stream_stats(path: Path) -> AudioStats:
    frames, peak, finite = 0, 0.0, True
    with open(path, "rb") as fh, sf.SoundFile(fh) as f:
        sr, channels = int(f.samplerate), int(f.channels)
        while len(block := f.read(_BLOCK, dtype="float32", always_2d=True)):
            frames += len(block)
            finite = finite and bool(np.isfinite(block).all())
            peak = max(peak, float(np.nan_to_num(np.abs(block), nan=0.0, posinf=0.0).max()))
    return AudioStats(str(path), frames / sr, sr, channels, frames, peak, finite)


def audio_stats(path: str | Path) -> AudioStats:
    """Decode the whole file (streamed in blocks for libsndfile formats) and measure it.

    Unlike :func:`audio_info` this counts the frames that really decode (headers of truncated or
    VBR files can be wrong) and reports the peak and whether every sample is finite.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() not in FFMPEG_EXTENSIONS:
        try:
            return _stream_stats(path)
        except _SF_ERRORS:
            pass  # FFmpeg fallback and the error message live in read_audio
    data, sr = read_audio(path)
    frames, channels = data.shape
    finite = bool(np.isfinite(data).all())
    peak = float(np.nan_to_num(np.abs(data), nan=0.0, posinf=0.0).max()) if data.size else 0.0
    return AudioStats(str(path), frames / sr, sr, channels, frames, peak, finite)


def _measure(blocks, path: Path, duration: float, sr: int, channels: int, frames: int) -> AudioStats:
    finite = all(bool(np.isfinite(b).all()) for b in blocks)
    peak = max((float(np.nan_to_num(np.abs(b), nan=0.0, posinf=0.0).max()) for b in blocks if b.size), default=0.0)
    return AudioStats(str(path), duration, sr, channels, frames, peak, finite)


def _probe_sndfile(path: Path) -> AudioStats | None:
    """The header and three short blocks through libsndfile; ``None`` when the header cannot be trusted
    (no frame count, a block that does not decode in full: a truncated file) or seeking fails."""
    with open(path, "rb") as fh, sf.SoundFile(fh) as f:
        sr, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        if frames <= 0 or sr <= 0:
            return None
        block = min(frames, max(1, round(CHECK_SECONDS * sr)))
        blocks = []
        for start in sorted({0, (frames - block) // 2, frames - block}):
            f.seek(start)
            data = f.read(block, dtype="float32", always_2d=True)
            if len(data) < block:
                return None
            blocks.append(data)
    return _measure(blocks, path, frames / sr, sr, channels, frames)


def _probe_ffmpeg(path: Path) -> AudioStats | None:
    """ffprobe's header, and the first and the last second decoded by FFmpeg; ``None`` when the container
    does not say how long it is or the end does not decode (a truncated file)."""
    sr, channels = _ffmpeg_probe(path)
    duration = _ffmpeg_duration(path)
    if duration is None:
        return None
    seconds = min(CHECK_SECONDS, duration)
    head, _ = _ffmpeg_decode(path, seconds=seconds)
    tail, _ = _ffmpeg_decode(path, start=max(0.0, duration - seconds), seconds=seconds)
    if not len(head) or len(tail) < 0.5 * seconds * sr:
        return None
    return _measure([head, tail], path, duration, sr, channels, round(duration * sr))


def probe(path: str | Path) -> AudioStats:
    """Header facts and a light check, without decoding the whole file (what the manifest needs).

    Duration, rate and channels come from the header; :data:`CHECK_SECONDS` at the start, the middle
    and the end (FFmpeg formats: the start and the end) are decoded to check that the file decodes
    to its end, and ``peak``/``finite`` describe those blocks. Where the header cannot be trusted (no
    frame count, or a block does not decode in full, as in a truncated file) the whole file is
    decoded instead (:func:`audio_stats`). Raises :class:`DecodeError` as :func:`read_audio` does.
    """
    path = Path(path)
    _check_file(path)
    try:
        stats = _probe_ffmpeg(path) if path.suffix.lower() in FFMPEG_EXTENSIONS and _ffmpeg() else _probe_sndfile(path)
    except (DecodeError, *_SF_ERRORS):
        stats = None   # audio_stats says why, or decodes it another way (FFmpeg for a misnamed file)
    return stats if stats is not None else audio_stats(path)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of ``(..., T)`` from ``orig_rate`` to ``new_rate``.

    The polyphase filter bank has ``new_rate / gcd`` phases, so an odd rate such as 44101 Hz would
    need tens of thousands of them (minutes of CPU). Such rates are snapped to the nearest multiple
    of 25 Hz first (an error of at most 12.5 Hz: 0.16 % in pitch at 8 kHz, 0.03 % at 44.1 kHz).
    """
    if orig_rate == new_rate:
        return wave
    if max(orig_rate, new_rate) // math.gcd(orig_rate, new_rate) > 2000:
        orig_rate = max(25, round(orig_rate / 25) * 25)
        if orig_rate == new_rate:
            return wave
    return torchaudio.functional.resample(wave, orig_rate, new_rate)


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Decode ``path`` to a mono float32 tensor ``(T,)`` in [-1, 1], resampled to ``sample_rate``.

    Raises :class:`DecodeError` (naming the file) for unreadable, empty or non-finite audio.
    Returns ``(wave, rate)``, where ``rate`` is ``sample_rate`` or the file's own rate.
    """
    path = Path(path)
    data, sr = read_audio(path)
    if len(data) == 0 or data.shape[1] == 0:
        raise DecodeError(f"{path}: contains no audio samples")
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise DecodeError(f"{path}: unsupported sample rate {sr} Hz (need {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    if not np.isfinite(data).all():
        raise DecodeError(f"{path}: contains NaN or infinite samples; re-export the file")
    wave = torch.from_numpy(data.mean(axis=1, dtype=np.float32))  # downmix (frames, channels) -> (T,)
    if sample_rate is not None:
        wave, sr = resample(wave, sr, sample_rate), sample_rate
    return wave.clamp_(-1.0, 1.0), sr
