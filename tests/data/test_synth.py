"""Tests for nmusic.data.synth: determinism, the traits of each genre, files on disk, learnability."""
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from nmusic.data import synth
from nmusic.data.decode import audio_info, load_audio
from nmusic.data.synth import GENRES, clip_params, file_seed, render, write_dataset
from nmusic.errors import ConfigError
from nmusic.frontend import MelFrontEnd, SpecParams

SR = 16000  # what the models see
HOP = 256


def power_spectrogram(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs (513,), power (513, frames))`` of a mono clip at ``SR``."""
    spec = torch.stft(torch.from_numpy(y), 1024, HOP, window=torch.hann_window(1024), return_complex=True)
    return np.fft.rfftfreq(1024, 1 / SR), spec.abs().numpy().astype(np.float64) ** 2


def kick_autocorrelation(y: np.ndarray) -> np.ndarray:
    """Autocorrelation (1 at lag 0) of the onset envelope below 150 Hz; lag k = k * HOP / SR seconds."""
    freqs, power = power_spectrogram(y)
    flux = np.maximum(np.diff(np.sqrt(power[freqs < 150]), axis=1), 0).sum(axis=0)
    flux -= flux.mean()
    ac = np.correlate(flux, flux, "full")[len(flux) - 1:]
    return ac / ac[0]


def band_flatness(y: np.ndarray, lo: float, hi: float) -> float:
    """Median over frames of the spectral flatness (1 = white noise, ~0 = lines) between lo and hi Hz."""
    freqs, power = power_spectrogram(y)
    band = power[(freqs > lo) & (freqs < hi)] + 1e-12
    return float(np.median(np.exp(np.log(band).mean(axis=0)) / band.mean(axis=0)))


def band_energy_db(y: np.ndarray, lo: float, hi: float) -> float:
    freqs, power = power_spectrogram(y)
    return float(10 * np.log10(power[(freqs > lo) & (freqs < hi)].mean()))


@pytest.mark.parametrize("genre", GENRES)
def test_same_seed_same_samples_other_seed_other_music(genre):
    a, b, c = render(genre, 7, 2.0, SR), render(genre, 7, 2.0, SR), render(genre, 8, 2.0, SR)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01
    assert clip_params(genre, 7) == clip_params(genre, 7) != clip_params(genre, 8)
    assert clip_params(genre, 7)["peak"] == pytest.approx(float(np.abs(a).max()), abs=1e-6)


@pytest.mark.parametrize("genre", GENRES)
@pytest.mark.parametrize("seconds, rate", [(1.37, 22050), (0.5, 44100)])
def test_length_level_and_channels(genre, seconds, rate):
    mono = render(genre, 3, seconds, rate)
    stereo = render(genre, 3, seconds, rate, stereo=True)
    n = int(round(seconds * rate))
    assert mono.dtype == stereo.dtype == np.float32
    assert mono.shape == (n,) and stereo.shape == (n, 2)
    for y in (mono, stereo):
        assert np.isfinite(y).all()
        assert 0.55 < np.abs(y).max() <= 0.9
    assert np.abs(stereo[:, 0] - stereo[:, 1]).max() > 1e-3  # really two channels
    down = stereo.mean(axis=1)  # the mono clip is the re-levelled stereo downmix
    np.testing.assert_allclose(mono, down * (np.abs(mono).max() / np.abs(down).max()), atol=1e-5)


def test_tempo_ranges_and_variety():
    params = {g: [clip_params(g, s) for s in range(60)] for g in GENRES}
    edm = [p["bpm"] for p in params["edm"]]
    lofi = [p["bpm"] for p in params["lofi"]]
    assert 120 <= min(edm) and max(edm) <= 130 and len(set(edm)) > 5
    assert 70 <= min(lofi) and max(lofi) <= 90
    assert all(0.55 < p["swing"] < 0.7 for p in params["lofi"])
    for g in GENRES:  # key, progression and timbre vary per clip
        assert len({p["tonic"] % 12 for p in params[g]}) == 12
        assert len({tuple(p["progression"]) for p in params[g]}) >= 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edm_kicks_repeat_every_beat(seed):
    ac = kick_autocorrelation(render("edm", seed, 8.0, SR))
    beat = 60 / clip_params("edm", seed)["bpm"]
    lags = np.arange(len(ac)) * HOP / SR
    window = (lags > 0.3) & (lags < 1.1)
    best = lags[window][np.argmax(ac[window])]
    assert min(abs(best - beat), abs(best - 2 * beat)) < 1.5 * HOP / SR, (best, beat)
    assert ac[int(round(beat * SR / HOP))] > 0.6  # four on the floor: strongly periodic at the beat...
    assert ac[int(round(beat / 2 * SR / HOP))] < 0.4  # ...and the kicks are on the beats, not between


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edm_side_chain_ducks_after_each_kick(seed):
    y = render("edm", seed, 8.0, SR).astype(np.float64)
    beat = 60 / clip_params("edm", seed)["bpm"]
    f = np.fft.rfftfreq(len(y), 1 / SR)
    mids = np.fft.irfft(np.fft.rfft(y) * ((f > 300) & (f < 1000)), len(y))  # bass harmonics and pads
    phase = np.arange(len(y)) / SR % beat / beat
    ducked = np.mean(mids[(phase > 0.05) & (phase < 0.25)] ** 2)
    recovered = np.mean(mids[phase > 0.6] ** 2)
    assert 10 * np.log10(recovered / ducked) > 3  # about 1-2 dB without the side-chain


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classical_highs_are_tonal_lofi_highs_are_a_noise_floor(seed):
    classical, lofi = render("classical", seed, 4.0, SR), render("lofi", seed, 4.0, SR)
    assert band_flatness(classical, 3500, 7000) < 0.05  # partials, no noise
    assert band_flatness(lofi, 3500, 7000) > 0.3  # hiss and crackle
    _, power = power_spectrogram(lofi)  # the noise floor never goes away
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    floor = power[(freqs > 4000) & (freqs < 7500)].mean(axis=0)
    assert np.percentile(floor, 5) > 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lofi_is_muffled(seed):
    def tilt(y):  # treble relative to the body, dB
        return band_energy_db(y, 3000, 7500) - band_energy_db(y, 100, 1000)

    assert tilt(render("lofi", seed, 4.0, SR)) < tilt(render("edm", seed, 4.0, SR)) - 8


@pytest.mark.parametrize("density", [10.0, 40.0])
def test_vinyl_is_a_steady_hiss_with_crackles_at_the_asked_rate(density):
    hiss, seconds = 0.003, 10
    vinyl = synth._vinyl(seconds * SR, SR, np.random.default_rng(0), density, hiss)
    rms = np.sqrt((vinyl.reshape(-1, SR // 20) ** 2).mean(axis=1))  # 50 ms windows
    assert rms.min() > 0.8 * hiss  # the floor never goes away
    peaks = np.abs(vinyl.reshape(-1, SR // 200)).max(axis=1)  # 5 ms windows
    clicks_per_second = (peaks > 6 * hiss).sum() / seconds  # gaussian hiss alone: ~never above 6 sigma
    assert 0.7 * density < clicks_per_second < 1.3 * density


def test_wow_wobbles_pitch_by_the_asked_cents():
    sr, cents = 16000, 12.0
    t = np.arange(4 * sr) / sr
    tone = np.sin(2 * np.pi * 1000 * t)
    out = synth._wow(np.stack([tone, tone], axis=1), sr, np.random.default_rng(0), cents, 0.5)[:, 0]
    spec = np.fft.fft(out)  # instantaneous frequency from the analytic signal
    spec[len(out) // 2 + 1:] = 0
    spec[1: len(out) // 2] *= 2
    inst = np.diff(np.unwrap(np.angle(np.fft.ifft(spec)))) * sr / (2 * np.pi)
    deviation = 1200 * np.log2(inst[sr // 4: -sr // 4] / 1000)
    assert 0.8 * cents < np.abs(deviation).max() < 1.4 * cents


def test_write_dataset_cycles_formats_rates_and_channels(tmp_path):
    root = write_dataset(tmp_path / "synth", files_per_genre=4, seconds=1.0, seed=5, progress=False)
    assert root == tmp_path / "synth"
    expected = [("wav", 22050, 1, "PCM_16"), ("flac", 44100, 1, "PCM_16"), ("ogg", 22050, 2, "VORBIS"),
                ("wav", 44100, 2, "PCM_16")]
    for genre in GENRES:
        files = sorted(p.name for p in (root / genre).iterdir())
        audio = [f"{genre}_{i:04d}.{ext}" for i, (ext, *_) in enumerate(expected)]
        assert files == sorted(audio + [f"{genre}_{i:04d}.mid" for i in range(4)])   # the notes beside the audio
        for i, (ext, rate, channels, subtype) in enumerate(expected):
            path = root / genre / f"{genre}_{i:04d}.{ext}"
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (rate, channels, subtype)
            assert audio_info(path).duration == pytest.approx(1.0, abs=1e-3)
            wave, sr = load_audio(path)
            assert sr == rate and wave.shape == (rate,)
            assert torch.isfinite(wave).all() and 0.3 < wave.abs().max() <= 1.0
            if ext != "ogg":  # lossless files hold exactly the rendered clip
                clip = render(genre, file_seed(5, i), 1.0, rate, stereo=channels == 2)
                clip = clip.mean(axis=1) if channels == 2 else clip
                np.testing.assert_allclose(wave.numpy(), clip, atol=1e-4)
    no_notes = write_dataset(tmp_path / "audio_only", genres=["edm"], files_per_genre=1, seconds=1.0, progress=False,
                             midi=False)
    assert [p.suffix for p in (no_notes / "edm").iterdir()] == [".wav"]
    for name in ("edm/edm_0001.flac", "lofi/lofi_0002.ogg"):  # the training path: resampled to 16 kHz
        wave, sr = load_audio(root / name, SR)
        assert sr == SR and abs(wave.shape[0] - SR) <= 2 and 0.3 < wave.abs().max() <= 1.0


def test_bad_arguments_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown genre 'jazz'"):
        render("jazz", 0, 1.0)
    with pytest.raises(ConfigError, match="seed"):
        render("edm", -1, 1.0)
    with pytest.raises(ConfigError, match="seconds"):
        render("edm", 0, 0.0)
    with pytest.raises(ConfigError, match="sample_rate"):
        render("edm", 0, 1.0, 4000)
    with pytest.raises(ConfigError, match="formats.*mp3"):
        write_dataset(tmp_path, formats=("mp3",), progress=False)
    with pytest.raises(ConfigError, match="genres.*jazz"):
        write_dataset(tmp_path, genres=("jazz",), progress=False)
    with pytest.raises(ConfigError, match="sample rates"):
        write_dataset(tmp_path, sample_rate=(22050, 1000), progress=False)
    assert not any(tmp_path.iterdir())


def test_nearest_centroid_on_mean_log_mel_separates_held_out_seeds():
    """The dataset is learnable: 2-s clips of unseen seeds fall nearest their own genre's centroid."""
    front_end = MelFrontEnd(SpecParams())

    def features(seeds):
        clips = [render(g, s, 3.0, SR)[SR:] for g in GENRES for s in seeds]  # 2 s, not at the start
        mel = front_end(torch.from_numpy(np.stack(clips)))  # (clips, 64, frames)
        return mel.mean(dim=-1).numpy(), np.repeat(np.arange(len(GENRES)), len(seeds))

    x_train, y_train = features(range(6))
    x_test, y_test = features(range(1000, 1006))
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(len(GENRES))])
    predicted = ((x_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    assert (predicted == y_test).all(), list(zip(y_test, predicted))


def test_speed_report(capsys):
    """Prints CPU seconds per minute of audio (no timed assertion: the machine may be busy)."""
    for genre in GENRES:
        start = time.process_time()
        render(genre, 11, 10.0, 22050)
        used = time.process_time() - start
        with capsys.disabled():
            print(f"\nsynth speed {genre}: {used * 6:.2f} s CPU per minute of 22.05 kHz audio")
