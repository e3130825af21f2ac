"""RAM cache, file-level split, random-chunk batches, prepare (nmusic/dataset.py)."""
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import pytest
import soundfile as sf
import torch

from nmusic.data.cache import (AudioCache, CacheError, ChunkSampler, fixed_clips, make_loader, prepare,
                            split_by_file)
from nmusic.errors import ConfigError, NmusicError

SR = 8000


def _cache(lengths_by_genre=None, seed=0) -> tuple[AudioCache, list[torch.Tensor]]:
    """A cache of random float waves: {genre: [length, ...]} at SR; returns it and the float waves."""
    lengths_by_genre = lengths_by_genre or {"classical": [4000, 9000, 6000], "edm": [12000, 5000, 7000, 3000],
                                            "lofi": [8000, 2000]}
    g = torch.Generator().manual_seed(seed)
    waves, genre_ids, paths = [], [], []
    for gi, (genre, lengths) in enumerate(sorted(lengths_by_genre.items())):
        for k, n in enumerate(lengths):
            waves.append(torch.rand(n, generator=g) * 1.8 - 0.9)
            genre_ids.append(gi)
            paths.append(f"{genre}/song{k}.wav")
    return AudioCache.from_waves(waves, genre_ids, sorted(lengths_by_genre), paths, SR), waves


def test_save_load_round_trip_is_exact(tmp_path):
    cache, waves = _cache()
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


def test_load_refuses_missing_corrupt_and_wrong_rate(tmp_path):
    with pytest.raises(CacheError, match=r"nope\.pt.*not found.*nmusic prepare"):
        AudioCache.load(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(CacheError, match=r"garbage\.pt.*corrupt.*nmusic prepare"):
        AudioCache.load(garbage)
    cache, _ = _cache()
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


def test_split_is_by_file_stratified_and_deterministic():
    cache, _ = _cache({"a": [1000] * 10, "b": [1000] * 3, "c": [1000] * 2, "solo": [1000]})
    train, val = split_by_file(cache, val_fraction=0.2, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(cache)))
    val_genres = [cache.genres[int(cache.genre_ids[i])] for i in val]
    train_genres = {cache.genres[int(cache.genre_ids[i])] for i in train}
    assert sorted(val_genres) == ["a", "a", "b", "c"]  # round(10*0.2)=2; >= 1 per genre with >= 2 files
    assert train_genres == {"a", "b", "c", "solo"}      # a genre's last file stays in training
    assert split_by_file(cache, 0.2, seed=3) == (train, val)
    assert any(split_by_file(cache, 0.2, seed=s)[1] != val for s in range(4, 10))
    assert split_by_file(cache, 0.0) == (list(range(len(cache))), [])
    with pytest.raises(ConfigError, match="val_fraction"):
        split_by_file(cache, 1.0)


def test_sampler_is_a_function_of_seed_and_step():
    cache, _ = _cache()
    files = list(range(len(cache)))
    run = list(islice(ChunkSampler(cache, files, 1500, 8, seed=7), 12))
    assert run == list(islice(ChunkSampler(cache, files, 1500, 8, seed=7), 12))
    assert list(ChunkSampler(cache, files, 1500, 8, seed=7, start_step=5, steps=12)) == run[5:]
    assert len(ChunkSampler(cache, files, 1500, 8, seed=7, start_step=5, steps=12)) == 7
    assert list(islice(ChunkSampler(cache, files, 1500, 8, seed=8), 12)) != run
    rank1 = list(islice(ChunkSampler(cache, files, 1500, 8, seed=7, rank=1, world_size=2), 12))
    assert rank1 != run and all(len(b) == 8 for b in rank1)
    for batch in run:
        for f, start in batch:
            assert f in files and 0 <= start <= max(int(cache.lengths[f]) - 1500, 0)


def test_sampler_only_uses_the_given_files():
    cache, _ = _cache()
    sampler = ChunkSampler(cache, [1, 4], 1000, 16, seed=0)
    assert {f for batch in islice(sampler, 20) for f, _ in batch} == {1, 4}


@pytest.mark.parametrize("balance", ["genre", "duration", "file"])
def test_balance_options(balance):
    # one long classical file, many short edm files, two lofi files of different length
    cache, _ = _cache({"classical": [40000], "edm": [2000] * 8, "lofi": [3000, 9000]})
    sampler = ChunkSampler(cache, range(len(cache)), 1000, 64, seed=1, balance=balance)
    picks = torch.tensor([f for batch in islice(sampler, 150) for f, _ in batch])  # 9600 draws
    per_file = torch.bincount(picks, minlength=len(cache)).double() / len(picks)
    per_genre = torch.zeros(3, dtype=torch.float64).index_add_(0, cache.genre_ids, per_file)
    lengths = cache.lengths.double()
    if balance == "genre":
        expected_genre = torch.full((3,), 1 / 3, dtype=torch.float64)
        assert per_file[10] / per_file[9] == pytest.approx(3.0, rel=0.15)  # within lofi: by duration
    elif balance == "duration":
        expected_genre = torch.zeros(3, dtype=torch.float64).index_add_(0, cache.genre_ids, lengths / lengths.sum())
    else:
        expected_genre = torch.tensor([1, 8, 2], dtype=torch.float64) / 11
    assert torch.allclose(per_genre, expected_genre, atol=0.025), (per_genre, expected_genre)


def test_loader_batches_are_slices_of_the_original_audio():
    cache, waves = _cache({"a": [5000, 700], "b": [3000]})  # file 1 is shorter than a clip
    clip = 1000
    loader = make_loader(cache, [0, 1, 2], clip, batch_size=6, seed=2, steps=10)
    sampler = loader.batch_sampler
    seen_short = False
    for step, (wave, genre) in enumerate(loader):
        assert wave.shape == (6, clip) and wave.dtype == torch.float32
        assert genre.shape == (6,) and genre.dtype == torch.int64
        assert wave.abs().max() <= 1.0
        for row, (f, start) in enumerate(sampler.batch(step)):
            ref = waves[f][start:start + clip]
            assert torch.allclose(wave[row, :len(ref)], ref, atol=0.5 / 32767 + 1e-7)
            assert torch.all(wave[row, len(ref):] == 0)  # zero padding of a short file
            assert int(genre[row]) == int(cache.genre_ids[f])
            seen_short |= f == 1
    assert seen_short
    assert step == 9


def test_loader_workers_resume_and_global_rng():
    cache, _ = _cache()
    files = list(range(len(cache)))
    rng = torch.get_rng_state()
    plain = [b for b in make_loader(cache, files, 1200, 4, seed=5, steps=6)]
    workers = [b for b in make_loader(cache, files, 1200, 4, seed=5, steps=6, num_workers=2)]
    resumed = [b for b in make_loader(cache, files, 1200, 4, seed=5, start_step=3, steps=6)]
    assert torch.equal(torch.get_rng_state(), rng)  # the training RNG is left alone
    assert len(plain) == len(workers) == 6 and len(resumed) == 3
    for (w0, g0), (w1, g1) in zip(plain, workers):
        assert torch.equal(w0, w1) and torch.equal(g0, g1)
    for (w0, g0), (w1, g1) in zip(plain[3:], resumed):
        assert torch.equal(w0, w1) and torch.equal(g0, g1)
    infinite = iter(make_loader(cache, files, 1200, 4, seed=5))
    assert torch.equal(next(infinite)[0], plain[0][0])


def test_bad_arguments_raise_clear_errors():
    cache, _ = _cache()
    with pytest.raises(ConfigError, match="balance"):
        ChunkSampler(cache, [0], 100, 2, balance="genres")
    with pytest.raises(ConfigError, match="clip_samples"):
        ChunkSampler(cache, [0], 0, 2)
    with pytest.raises(ConfigError, match="rank"):
        ChunkSampler(cache, [0], 100, 2, rank=2, world_size=2)
    with pytest.raises(NmusicError, match="no files"):
        make_loader(cache, [], 100, 2)


def test_fixed_clips_are_deterministic_and_evenly_spaced():
    cache, waves = _cache({"a": [8000, 500], "b": [4000]})
    wave, genre = fixed_clips(cache, [0, 1, 2], 1000, per_file=4)
    assert wave.shape == (4 + 1 + 4, 1000) and genre.tolist() == [0] * 5 + [1] * 4
    # file 0 (8000 samples): chunks centred at 1000, 3000, 5000, 7000
    for k, centre in enumerate((1000, 3000, 5000, 7000)):
        assert torch.allclose(wave[k], waves[0][centre - 500:centre + 500], atol=0.5 / 32767 + 1e-7)
    assert torch.allclose(wave[4, :500], waves[1], atol=0.5 / 32767 + 1e-7) and torch.all(wave[4, 500:] == 0)
    assert torch.allclose(wave[5], waves[2][0:1000], atol=0.5 / 32767 + 1e-7)  # clamped to the file
    again = fixed_clips(cache, [0, 1, 2], 1000, per_file=4)
    assert torch.equal(again[0], wave) and torch.equal(again[1], genre)
    sub, sub_genre = fixed_clips(cache, [0, 1, 2], 1000, per_file=4, max_clips=4, seed=1)
    assert sub.shape == (4, 1000) and sorted(sub_genre.tolist()) == [0, 0, 1, 1]  # genres take turns
    assert torch.equal(fixed_clips(cache, [0, 1, 2], 1000, per_file=4, max_clips=4, seed=1)[0], sub)
    assert any(not torch.equal(fixed_clips(cache, [0, 1, 2], 1000, max_clips=4, seed=s)[0], sub) for s in (2, 3, 4))


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
