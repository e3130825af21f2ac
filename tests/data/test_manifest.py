"""nmusic.data.manifest on a mixed corpus of good and bad files written by the test."""
import json
import re

import numpy as np
import pytest
import soundfile as sf

from nmusic.data.manifest import MANIFEST_COLUMNS, Manifest, build_manifest
from nmusic.errors import ConfigError, FetchError


def tone(sr, seconds, channels=1, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return np.repeat((amp * np.sin(2 * np.pi * 330 * t))[:, None], channels, axis=1).astype(np.float32)


GOOD = {  # path: (seconds, rate, channels, format, subtype)
    "classical/a.flac": (2.5, 44100, 2, "FLAC", "PCM_16"),
    "classical/op1/b.wav": (3.0, 96000, 6, "WAV", "PCM_24"),
    "classical/c.ogg": (2.2, 22050, 1, "OGG", "VORBIS"),
    "edm/d.mp3": (2.5, 44100, 2, "MP3", "MPEG_LAYER_III"),
    "edm/e.opus": (2.5, 48000, 2, "OGG", "OPUS"),
    "edm/f.wav": (2.5, 8000, 1, "WAV", "PCM_U8"),
}
BAD = {  # path: expected reason (regular expression)
    "lofi/short.wav": "shorter than a clip",
    "lofi/silent.wav": "pure silence",
    "lofi/nan.wav": "non-finite",
    "lofi/empty.wav": r"empty \(0 bytes\)",
    "lofi/header_only.wav": r"empty \(no audio samples\)",
    "lofi/text.wav": "cannot decode",
    "lofi/trunc.flac": "cannot decode|shorter than a clip",  # FFmpeg, when installed, decodes the first 0.1 s
    "stray.wav": "not inside a genre folder",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for rel, (seconds, sr, ch, fmt, subtype) in GOOD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(sr, seconds, ch), sr, format=fmt, subtype=subtype)
    (root / "lofi").mkdir()
    sf.write(root / "lofi/short.wav", tone(22050, 1.0), 22050)
    sf.write(root / "lofi/silent.wav", np.full((22050 * 3, 2), 1e-6, np.float32), 22050, subtype="FLOAT")
    nan = tone(22050, 3.0)
    nan[5000] = np.nan
    sf.write(root / "lofi/nan.wav", nan, 22050, subtype="FLOAT")
    (root / "lofi/empty.wav").write_bytes(b"")
    (root / "lofi/header_only.wav").write_bytes((root / "edm/f.wav").read_bytes()[:44])
    (root / "lofi/text.wav").write_text("this is not audio\n" * 20)
    (root / "lofi/trunc.flac").write_bytes((root / "classical/a.flac").read_bytes()[:3000])
    sf.write(root / "stray.wav", tone(22050, 3.0), 22050)
    for ignored in ("edm/notes.txt", "edm/._d.mp3", ".hidden/x.wav", "__MACOSX/classical/._a.flac"):
        (root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (root / ignored).write_bytes(b"junk")
    return root


@pytest.fixture(scope="module")
def manifest(corpus):
    return build_manifest(corpus, clip_seconds=2.0, workers=2, progress=False)


def test_rows_skips_and_genres(manifest, corpus):
    assert manifest.genres == ["classical", "edm"]  # lofi has no usable file
    assert manifest.genre_ids == {"classical": 0, "edm": 1}
    rows = {r["path"]: r for r in manifest.rows}
    assert sorted(rows) == sorted(GOOD)
    for rel, (seconds, sr, ch, _, _) in GOOD.items():
        r = rows[rel]
        assert r["genre"] == rel.split("/")[0] and set(r) == set(MANIFEST_COLUMNS)
        assert (r["sample_rate"], r["channels"]) == (sr, ch) and r["duration"] == pytest.approx(seconds, abs=0.06)
    reasons = {s["path"]: s["reason"] for s in manifest.skipped}
    assert sorted(reasons) == sorted(BAD)
    for rel, why in BAD.items():
        assert re.search(why, reasons[rel]), (rel, reasons[rel])
    assert str(corpus) not in " ".join(reasons.values())  # reasons are short, paths are relative
    assert manifest.paths()[0].is_file()


def test_serial_and_pool_agree(manifest, corpus):
    serial = build_manifest(corpus, clip_seconds=2.0, workers=1, progress=False)
    assert (serial.rows, serial.skipped, serial.genres) == (manifest.rows, manifest.skipped, manifest.genres)
    longer = build_manifest(corpus, clip_seconds=2.4, workers=2, progress=False)
    assert "classical/c.ogg" in {s["path"] for s in longer.skipped}


def test_hours_and_summary(manifest):
    hours = manifest.hours_per_genre()
    assert hours["classical"] == pytest.approx((2.5 + 3.0 + 2.2) / 3600, rel=0.02)
    assert hours["edm"] == pytest.approx(7.5 / 3600, rel=0.02)
    text = manifest.summary()
    assert "6 files" in text and "8 skipped" in text and "lofi/nan.wav: non-finite" in text
    assert "... and 6 more" in manifest.summary(max_skipped=2)


def test_save_load_round_trip(manifest, tmp_path, monkeypatch):
    path = manifest.save(tmp_path / "out" / "manifest.csv")
    assert (tmp_path / "out/manifest.skipped.csv").is_file()
    meta = json.loads((tmp_path / "out/manifest.genres.json").read_text())
    assert meta["genres"] == ["classical", "edm"] and not meta["root"].startswith("/")
    monkeypatch.chdir(tmp_path / "out")  # root is stored relative to the csv, not the working directory
    loaded = Manifest.load(path)
    assert (loaded.rows, loaded.skipped, loaded.genres, loaded.clip_seconds) == (
        manifest.rows, manifest.skipped, manifest.genres, manifest.clip_seconds)
    assert [p.resolve() for p in loaded.paths()] == [p.resolve() for p in manifest.paths()]


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no manifest there"):
        Manifest.load(tmp_path / "missing.csv")
    (tmp_path / "cols.csv").write_text("genre,path,duration,sample_rate\nedm,a.wav,3.0,22050\n")
    with pytest.raises(ConfigError, match="channels"):
        Manifest.load(tmp_path / "cols.csv")
    (tmp_path / "value.csv").write_text("genre,path,duration,sample_rate,channels\nedm,a.wav,long,22050,2\n")
    with pytest.raises(ConfigError, match="line 2"):
        Manifest.load(tmp_path / "value.csv")
    (tmp_path / "g.csv").write_text("genre,path,duration,sample_rate,channels\nedm,a.wav,3.0,22050,2\n")
    (tmp_path / "g.genres.json").write_text(json.dumps({"genres": ["lofi"], "root": ".", "clip_seconds": 2}))
    with pytest.raises(ConfigError, match="edm"):
        Manifest.load(tmp_path / "g.csv")


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(FetchError, match="data folder not found"):
        build_manifest(tmp_path / "nope", progress=False)
    m = build_manifest(tmp_path, progress=False)
    assert (m.rows, m.skipped, m.genres) == ([], [], [])


def test_the_manifest_probes_files_and_leaves_decoding_to_prepare(tmp_path, monkeypatch):
    """Headers and a light check only: no good file is decoded in full (prepare does that, once)."""
    import nmusic.data.decode as decode_mod
    import nmusic.data.manifest as manifest_mod

    for genre in ("classical", "edm"):
        (tmp_path / genre).mkdir()
        sf.write(tmp_path / genre / "long.flac", tone(8000, 30.0), 8000)
    full = []
    monkeypatch.setattr(decode_mod, "audio_stats", full.append)
    monkeypatch.setattr(manifest_mod, "audio_stats", full.append)
    m = build_manifest(tmp_path, workers=1, progress=False)
    assert [r["duration"] for r in m.rows] == [30.0, 30.0] and not m.skipped and not full
