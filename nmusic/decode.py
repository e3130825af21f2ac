"""Decoding and resampling of user audio files (paper section 2.2).

wav/flac/ogg (vorbis and opus)/mp3/aiff decode through libsndfile (the ``soundfile`` package, whose
wheels carry libsndfile). m4a/aac/webm/mka and anything libsndfile cannot read go through the
``ffmpeg`` program when it is on PATH; without it the error says how to get it. Every channel
layout is downmixed to mono, every integer/float PCM becomes float32 in [-1, 1], and resampling
uses ``torchaudio.functional.resample``.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .errors import DecodeError

#: File extensions the manifest looks at. Anything else in a genre folder is ignored.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
    ".m4a", ".mp4", ".aac", ".webm", ".mka", ".wma",
})
#: Extensions that need FFmpeg (libsndfile cannot read them).
FFMPEG_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".webm", ".mka", ".wma"})


@dataclass(frozen=True)
class AudioInfo:
    path: str
    duration: float  # seconds
    sample_rate: int
    channels: int
    frames: int


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def _need_ffmpeg(path: Path, why: str) -> DecodeError:
    return DecodeError(
        f"{path}: {why}. Decoding this format needs FFmpeg: install it (Colab/Debian: 'apt-get install ffmpeg', "
        "conda: 'conda install ffmpeg') or convert the file to .flac/.wav first.")


def _ffmpeg_probe(path: Path) -> tuple[int, int]:
    """Native (sample_rate, channels) of the first audio stream, via a short ffmpeg decode."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        out = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels",
             "-of", "csv=p=0", str(path)], capture_output=True, text=True)
        parts = out.stdout.strip().split(",")
        if out.returncode == 0 and len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return int(parts[0]), int(parts[1])
        raise DecodeError(f"{path}: FFmpeg cannot read it ({out.stderr.strip()[-200:] or 'no audio stream'})")
    raise _need_ffmpeg(path, "ffprobe not found")


def _ffmpeg_decode(path: Path) -> tuple[np.ndarray, int]:
    exe = _ffmpeg()
    if exe is None:
        raise _need_ffmpeg(path, f"'{path.suffix}' files are not supported by libsndfile and ffmpeg is not installed")
    sr, channels = _ffmpeg_probe(path)
    out = subprocess.run([exe, "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
                          "-acodec", "pcm_f32le", "-"], capture_output=True)
    if out.returncode != 0:
        raise DecodeError(f"{path}: FFmpeg could not decode it ({out.stderr.decode(errors='replace').strip()[-200:]})")
    data = np.frombuffer(out.stdout, dtype=np.float32)
    usable = len(data) - len(data) % channels
    return data[:usable].reshape(-1, channels), sr


def _decode_native(path: Path) -> tuple[np.ndarray, int]:
    """``(frames, channels)`` float32 array at the file's own rate."""
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        return _ffmpeg_decode(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        if _ffmpeg() is not None:  # e.g. an mp4 saved as .mp3: let FFmpeg try before giving up
            try:
                return _ffmpeg_decode(path)
            except DecodeError:
                pass
        raise DecodeError(f"{path}: cannot decode as audio ({e}); the file may be truncated, corrupt or "
                          "not audio. Re-export it as .flac/.wav or remove it.") from None
    return data, int(sr)


def audio_info(path: str | Path) -> AudioInfo:
    """Duration, rate and channel count from the file header (no full decode where possible)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and path.suffix.lower() not in FFMPEG_EXTENSIONS:
        try:
            i = sf.info(str(path))
            if i.frames > 0 and i.samplerate > 0:
                return AudioInfo(str(path), i.frames / i.samplerate, int(i.samplerate), int(i.channels), int(i.frames))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            pass
    data, sr = _decode_native(path)
    return AudioInfo(str(path), len(data) / sr, sr, data.shape[1], len(data))


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Decode ``path`` to a mono float32 tensor ``(T,)`` in [-1, 1], resampled to ``sample_rate``.

    Raises :class:`DecodeError` (naming the file) for unreadable, empty or non-finite audio.
    Returns ``(wave, rate)``, where ``rate`` is ``sample_rate`` or the file's own rate.
    """
    path = Path(path)
    data, sr = _decode_native(path)
    if data.size == 0 or len(data) == 0:
        raise DecodeError(f"{path}: contains no audio samples")
    if not (8000 // 2 <= sr <= 384000):
        raise DecodeError(f"{path}: unsupported sample rate {sr} Hz")
    if not np.isfinite(data).all():
        raise DecodeError(f"{path}: contains NaN or infinite samples; re-export the file")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))
    if sample_rate is not None and sample_rate != sr:
        wave = torchaudio.functional.resample(wave, sr, sample_rate)
        sr = sample_rate
    return wave.clamp_(-1.0, 1.0), sr
