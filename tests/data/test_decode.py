"""nmusic.data.decode on a corpus the tests write: every codec, bit depth, rate and layout, and bad files."""
import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from nmusic.data.decode import audio_info, audio_stats, load_audio, probe, read_audio
from nmusic.errors import DecodeError


def tone(sr, seconds=0.5, channels=1, freq=440.0, amp=0.5):
    """``(frames, channels)`` float32 sine, the same in every channel."""
    t = np.arange(int(sr * seconds)) / sr
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[:, None], channels, axis=1).astype(np.float32)


def peak_freq(wave, sr):
    w = wave.numpy() if hasattr(wave, "numpy") else wave
    return np.argmax(np.abs(np.fft.rfft(w * np.hanning(len(w))))) * sr / len(w)


CASES = [  # ext, format, subtype, sample rate, channels
    ("wav", "WAV", "PCM_U8", 8000, 1),
    ("wav", "WAV", "PCM_16", 11025, 2),
    ("wav", "WAV", "PCM_24", 96000, 6),
    ("wav", "WAV", "PCM_32", 44100, 2),
    ("wav", "WAV", "FLOAT", 48000, 1),
    ("wav", "WAV", "DOUBLE", 88200, 2),
    ("flac", "FLAC", "PCM_16", 22050, 1),
    ("flac", "FLAC", "PCM_24", 96000, 6),
    ("ogg", "OGG", "VORBIS", 44100, 2),
    ("ogg", "OGG", "VORBIS", 8000, 6),
    ("opus", "OGG", "OPUS", 48000, 2),
    ("ogg", "OGG", "OPUS", 16000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 8000, 1),
    ("aiff", "AIFF", "PCM_16", 32000, 2),
]


@pytest.mark.parametrize("ext,fmt,subtype,sr,channels", CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}-{c[4]}ch" for c in CASES])
def test_decodes_every_format_rate_and_layout(tmp_path, ext, fmt, subtype, sr, channels):
    path = tmp_path / f"a.{ext}"
    x = tone(sr, 0.5, channels)
    sf.write(path, x, sr, format=fmt, subtype=subtype)
    wave, rate = load_audio(path)
    assert rate == sr and wave.dtype.is_floating_point and wave.ndim == 1
    assert abs(len(wave) - len(x)) <= 0.1 * len(x)
    assert abs(peak_freq(wave, sr) - 440) < 6
    rms = float(wave.pow(2).mean().sqrt())
    assert 0.5 / np.sqrt(2) * 0.8 < rms < 0.5 / np.sqrt(2) * 1.2
    info, stats = audio_info(path), audio_stats(path)
    assert (info.sample_rate, info.channels) == (stats.sample_rate, stats.channels) == (sr, channels)
    assert stats.frames == len(wave) and stats.finite and 0.4 < stats.peak < 0.7
    light = probe(path)   # the header and a light check: what the manifest reads
    assert (light.sample_rate, light.channels) == (sr, channels) and light.finite and 0.4 < light.peak < 0.7
    assert abs(light.frames - stats.frames) <= 0.1 * stats.frames
    for target in (16000, 22050):
        resampled, rate = load_audio(path, target)
        assert rate == target and abs(len(resampled) - len(wave) * target / sr) <= 2
        assert abs(peak_freq(resampled, target) - 440) < 6


def test_downmix_and_integer_scaling(tmp_path):
    stereo = np.stack([tone(22050)[:, 0], np.zeros(11025, np.float32)], axis=1)  # left only
    sf.write(tmp_path / "lr.wav", stereo, 22050)
    wave, _ = load_audio(tmp_path / "lr.wav")
    assert abs(float(wave.abs().max()) - 0.25) < 0.01  # mean of (0.5 sine, 0)
    ints = np.array([32767, -32768, 16384, 0], dtype=np.int16)
    sf.write(tmp_path / "i16.wav", ints, 8000, subtype="PCM_16")
    data, _ = read_audio(tmp_path / "i16.wav")
    np.testing.assert_allclose(data[:, 0], [32767 / 32768, -1.0, 0.5, 0.0], atol=1e-6)
    x = tone(44100, 0.1)
    sf.write(tmp_path / "24.flac", x, 44100, subtype="PCM_24")
    np.testing.assert_allclose(read_audio(tmp_path / "24.flac")[0], x, atol=1e-6)


def test_content_wins_over_extension(tmp_path):
    sf.write(tmp_path / "real.flac", tone(22050), 22050)
    shutil.copy(tmp_path / "real.flac", tmp_path / "flac_named.mp3")
    sf.write(tmp_path / "wav_named.flac", tone(22050), 22050, format="WAV")
    for name in ("flac_named.mp3", "wav_named.flac"):
        wave, sr = load_audio(tmp_path / name)
        assert sr == 22050 and abs(peak_freq(wave, sr) - 440) < 6


def test_macos_sidecar_does_not_break_mp3(tmp_path):
    sf.write(tmp_path / "song.mp3", tone(44100, 2.5, 2), 44100)
    (tmp_path / "._song.mp3").write_bytes(b"\x00\x05\x16\x07junk")  # AppleDouble file from a macOS archive
    assert audio_stats(tmp_path / "song.mp3").frames == 110250
    assert audio_info(tmp_path / "song.mp3").frames == 110250
    assert len(load_audio(tmp_path / "song.mp3")[0]) == 110250


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"hello, not audio\n" * 40, "cannot decode")])
def test_empty_and_non_audio_files_fail_clearly(tmp_path, content, match):
    path = tmp_path / "song.wav"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=match) as e:
        load_audio(path)
    assert str(path) in str(e.value)
    with pytest.raises(DecodeError):
        audio_stats(path)


def test_missing_file_and_directory(tmp_path):
    (tmp_path / "dir.wav").mkdir()
    for p in (tmp_path / "nope.wav", tmp_path / "dir.wav"):
        with pytest.raises(DecodeError, match="no such file"):
            load_audio(p)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_files_error_or_decode_shorter(tmp_path, fmt, keep):
    full = tmp_path / f"full.{fmt.lower()}"
    sf.write(full, tone(22050, 1.0, 2), 22050, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    try:
        wave, _ = load_audio(cut)
    except DecodeError as e:
        assert str(cut) in str(e)
    else:
        assert 0 < len(wave) < 22050 and bool(wave.isfinite().all())


def test_probe_decodes_a_few_seconds_of_a_long_file_and_all_of_a_truncated_one(tmp_path, monkeypatch):
    sr = 8000
    sf.write(tmp_path / "long.wav", tone(sr, 60.0), sr)
    data = (tmp_path / "long.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 2 * sr * 5])   # the header still says 60 s; 5 s are there
    read = []
    real = sf.SoundFile.read

    def counting(self, frames=-1, *args, **kwargs):
        out = real(self, frames, *args, **kwargs)
        read.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    p = probe(tmp_path / "long.wav")
    assert (p.frames, p.duration, p.finite) == (60 * sr, 60.0, True) and 0.4 < p.peak < 0.6
    assert sum(read) == 3 * sr                     # one second at the start, the middle and the end
    read.clear()
    cut = probe(tmp_path / "cut.wav")
    assert cut.frames == 5 * sr and cut.duration == 5.0   # the end did not decode: counted in full instead


def test_header_only_wav_has_no_samples(tmp_path):
    sf.write(tmp_path / "full.wav", tone(8000), 8000)
    (tmp_path / "head.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:44])
    with pytest.raises(DecodeError, match="no audio samples"):
        load_audio(tmp_path / "head.wav")
    assert audio_stats(tmp_path / "head.wav").frames == 0


def test_nan_and_silence(tmp_path):
    x = tone(16000)
    x[100, 0], x[200, 0] = np.nan, np.inf
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(DecodeError, match="NaN"):
        load_audio(tmp_path / "nan.wav")
    assert not audio_stats(tmp_path / "nan.wav").finite
    sf.write(tmp_path / "silent.wav", np.zeros((16000, 2), np.float32), 16000)
    wave, _ = load_audio(tmp_path / "silent.wav")
    assert len(wave) == 16000 and float(wave.abs().max()) == 0.0
    assert audio_stats(tmp_path / "silent.wav").peak == 0.0


def test_odd_rates(tmp_path):
    sf.write(tmp_path / "odd.wav", tone(44101), 44101)  # gcd(44101, 16000) = 1: naive filter bank is huge
    start = time.perf_counter()
    wave, sr = load_audio(tmp_path / "odd.wav", 16000)
    assert time.perf_counter() - start < 5
    assert sr == 16000 and abs(len(wave) - 8000) <= 2 and abs(peak_freq(wave, sr) - 440) < 6
    sf.write(tmp_path / "low.wav", tone(2000), 2000)
    with pytest.raises(DecodeError, match="sample rate"):
        load_audio(tmp_path / "low.wav")


def test_ffmpeg_formats_fail_clearly_without_ffmpeg(tmp_path, monkeypatch):
    (tmp_path / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    (tmp_path / "bad.mp3").write_bytes(b"not an mp3 at all" * 10)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DecodeError, match="needs FFmpeg.*apt-get install ffmpeg") as e:
        load_audio(tmp_path / "song.m4a")
    assert "song.m4a" in str(e.value)
    with pytest.raises(DecodeError, match="installing FFmpeg"):
        load_audio(tmp_path / "bad.mp3")


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="FFmpeg not installed")
@pytest.mark.parametrize("ext,codec", [("m4a", "aac"), ("webm", "libopus")])
def test_ffmpeg_formats_decode(tmp_path, ext, codec):
    sf.write(tmp_path / "src.wav", tone(48000, 1.0, 2), 48000)
    out = tmp_path / f"song.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(tmp_path / "src.wav"), "-c:a", codec, str(out)],
                   check=True)
    wave, sr = load_audio(out, 16000)
    assert sr == 16000 and abs(len(wave) - 16000) < 1600 and abs(peak_freq(wave, sr) - 440) < 6
    stats, light = audio_stats(out), probe(out)
    assert stats.channels == light.channels == 2 and light.sample_rate == 48000 and light.finite
    assert abs(light.duration - stats.duration) < 0.1 and abs(light.peak - stats.peak) < 0.05
    shutil.copy(out, tmp_path / "misnamed.mp3")  # libsndfile refuses it, FFmpeg takes over
    assert abs(peak_freq(load_audio(tmp_path / "misnamed.mp3", 16000)[0], 16000) - 440) < 6
    (tmp_path / "bad.m4a").write_bytes(b"garbage" * 50)
    with pytest.raises(DecodeError, match="FFmpeg cannot read it") as e:
        load_audio(tmp_path / "bad.m4a")
    assert str(tmp_path) not in str(e.value).split(": ", 1)[1]  # FFmpeg's reason names the file only once
