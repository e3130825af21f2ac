"""The RAM cache: prepare (decode + resample), save, the memory-mapped reload (nmusic/data/cache.py)."""
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile as sf
import torch

from nmusic.data.cache import AudioCache, CacheError, prepare
from nmusic.errors import NmusicError
from tests.data.random_cache import SR, random_cache


def test_save_load_round_trip_is_exact(tmp_path):
    cache, waves = random_cache()
    cache.skipped = [{"path": "edm/bad.wav", "reason": "cannot decode"}]
    path = cache.save(tmp_path / "sub" / "cache.pt")
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left behind
    back = AudioCache.load(path, sample_rate=SR)
    assert back.audio.dtype == torch.int16 and torch.equal(back.audio, cache.audio)
    assert torch.equal(back.offsets, cache.offsets) and torch.equal(back.genre_ids, cache.genre_ids)
    assert (back.genres, back.paths, back.sample_rate, back.skipped) == (
        cache.genres, cache.paths, cache.sample_rate, cache.skipped)
    for i, w in enumerate(waves):  # int16 quantisation is the only loss
        assert back.file(i).dtype == torch.float32
        assert (back.file(i) - w).abs().max() <= 0.5 / 32767 + 1e-7
    hours = back.hours_per_genre()
    assert hours["edm"] == pytest.approx(27000 / SR / 3600)
    assert list(hours) == ["classical", "edm", "lofi"]


def test_reload_maps_the_file_instead_of_reading_it(tmp_path, monkeypatch):
    """The audio is memory-mapped: pages are read when a clip needs them, and every process that loads
    the cache (DataLoader workers, DDP ranks) shares them; a cache replaced while mapped stays readable."""
    cache, waves = random_cache()
    path = cache.save(tmp_path / "cache.pt")
    asked = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: asked.append(k) or real_load(*a, **k))
    back = AudioCache.load(path)
    assert asked == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    random_cache(seed=1)[0].save(path)                        # prepared again meanwhile (an atomic replace)
    assert (back.file(2) - waves[2]).abs().max() <= 0.5 / 32767 + 1e-7


def test_load_refuses_missing_corrupt_and_wrong_rate(tmp_path):
    with pytest.raises(CacheError, match=r"nope\.pt.*not found.*nmusic prepare"):
        AudioCache.load(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(CacheError, match=r"garbage\.pt.*corrupt.*nmusic prepare"):
        AudioCache.load(garbage)
    cache, _ = random_cache()
    good = cache.save(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CacheError, match=r"truncated\.pt.*nmusic prepare"):
        AudioCache.load(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CacheError, match=r"other\.pt.*not an nmusic audio cache"):
        AudioCache.load(other)
    with pytest.raises(CacheError, match=r"8000 Hz.*16000 Hz.*--sample-rate 16000"):
        AudioCache.load(good, sample_rate=16000)
    assert issubclass(CacheError, NmusicError)


# --- prepare on real files ------------------------------------------------------------------------------
@dataclass
class _Manifest:  # what prepare reads of a manifest
    root: str
    rows: list
    genres: list
    skipped: list = field(default_factory=list)


def _write_files(root):
    """Three decodable files at different rates/channels and one corrupt one."""
    specs = [("classical/a.wav", 22050, 2, 1.0), ("classical/sub/b.flac", 16000, 1, 0.5),
             ("edm/c.wav", 44100, 2, 0.75)]
    rows = []
    for rel, rate, channels, seconds in specs:
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.4 * np.sin(2 * np.pi * 440 * t)
        data = np.stack([tone, 0.5 * tone], axis=1) if channels == 2 else tone  # mono mix: 0.75 / 0.4
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, data.astype(np.float32), rate)
        rows.append({"genre": rel.split("/")[0], "path": rel, "duration": seconds, "sample_rate": rate,
                     "channels": channels})
    (root / "edm" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    rows.insert(2, {"genre": "edm", "path": "edm/broken.wav", "duration": 1.0, "sample_rate": 44100, "channels": 2})
    return rows


def test_prepare_resamples_downmixes_and_skips_broken_files(tmp_path, capsys):
    root = tmp_path / "data"
    rows = _write_files(root)
    manifest = _Manifest(str(root), rows, ["classical", "edm"])
    out = tmp_path / "cache.pt"
    cache = prepare(manifest, SR, out, workers=2, progress=False)  # the real process pool
    assert cache.paths == ["classical/a.wav", "classical/sub/b.flac", "edm/c.wav"]
    assert cache.genre_ids.tolist() == [0, 0, 1] and cache.genres == ["classical", "edm"]
    assert cache.lengths.tolist() == [8000, 4000, 6000]  # resampled to 8 kHz
    assert [s["path"] for s in cache.skipped] == ["edm/broken.wav"]
    assert "cannot decode" in cache.skipped[0]["reason"] and "edm/broken.wav: cannot decode" in capsys.readouterr().err
    t = torch.arange(8000, dtype=torch.float64) / SR
    expected_a = (0.3 * torch.sin(2 * torch.pi * 440 * t)).float()  # (0.4 + 0.2) / 2: downmixed
    middle = slice(500, 7500)  # away from the resampler's edges
    assert torch.allclose(cache.file(0)[middle], expected_a[middle], atol=2e-3)
    assert torch.allclose(cache.file(1)[500:3500], (0.4 * torch.sin(2 * torch.pi * 440 * t[500:3500])).float(),
                          atol=2e-3)
    back = AudioCache.load(out, sample_rate=SR)
    assert torch.equal(back.audio, cache.audio) and back.skipped == cache.skipped
    # the in-process path gives the same cache
    same = prepare(manifest, SR, tmp_path / "again.pt", workers=0, progress=False)
    assert torch.equal(same.audio, cache.audio) and torch.equal(same.offsets, cache.offsets)


def test_prepare_fails_clearly_when_nothing_decodes(tmp_path):
    root = tmp_path / "data"
    (root / "edm").mkdir(parents=True)
    (root / "edm" / "x.wav").write_bytes(b"not audio at all")
    manifest = _Manifest(str(root), [{"genre": "edm", "path": "edm/x.wav", "duration": 1.0}], ["edm"])
    with pytest.raises(NmusicError, match="no file of the manifest could be decoded"):
        prepare(manifest, SR, tmp_path / "cache.pt", workers=0, progress=False)
    assert not (tmp_path / "cache.pt").exists()
    with pytest.raises(NmusicError, match="no audio files"):
        prepare(_Manifest(str(root), [], ["edm"]), SR, tmp_path / "cache.pt", progress=False)


def test_prepare_from_a_real_manifest(tmp_path):
    manifest_mod = pytest.importorskip("nmusic.data.manifest")
    root = tmp_path / "data"
    _write_files(root)
    (root / "edm" / "broken.wav").unlink()
    m = manifest_mod.build_manifest(root, clip_seconds=0.25, workers=1, progress=False)
    (root / "edm" / "c.wav").write_bytes(b"changed since the manifest was made")
    cache = prepare(m, SR, tmp_path / "cache.pt", workers=0, progress=False)
    assert cache.paths == ["classical/a.wav", "classical/sub/b.flac"]
    assert cache.genres == ["classical", "edm"] and cache.hours_per_genre()["edm"] == 0
    assert [s["path"] for s in cache.skipped] == ["edm/c.wav"]
