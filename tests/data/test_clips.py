"""The clips the models learn from: file-level split, random-chunk batches, evaluation sets (nmusic/data/clips.py)."""
from itertools import islice

import pytest
import torch

from nmusic.data.cache import AudioCache
from nmusic.data.clips import ChunkSampler, balanced_subset, fixed_clips, make_loader, spaced_chunks, split_by_file
from nmusic.errors import ConfigError, NmusicError
from tests.data.random_cache import random_cache


def test_split_is_by_file_stratified_and_deterministic():
    cache, _ = random_cache({"a": [1000] * 10, "b": [1000] * 3, "c": [1000] * 2, "solo": [1000]})
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
    cache, _ = random_cache()
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
    cache, _ = random_cache()
    sampler = ChunkSampler(cache, [1, 4], 1000, 16, seed=0)
    assert {f for batch in islice(sampler, 20) for f, _ in batch} == {1, 4}


@pytest.mark.parametrize("balance", ["genre", "duration", "file"])
def test_balance_options(balance):
    # one long classical file, many short edm files, two lofi files of different length
    cache, _ = random_cache({"classical": [40000], "edm": [2000] * 8, "lofi": [3000, 9000]})
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
    cache, waves = random_cache({"a": [5000, 700], "b": [3000]})  # file 1 is shorter than a clip
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
    cache, _ = random_cache()
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
    cache, _ = random_cache()
    with pytest.raises(ConfigError, match="balance"):
        ChunkSampler(cache, [0], 100, 2, balance="genres")
    with pytest.raises(ConfigError, match="clip_samples"):
        ChunkSampler(cache, [0], 0, 2)
    with pytest.raises(ConfigError, match="rank"):
        ChunkSampler(cache, [0], 100, 2, rank=2, world_size=2)
    with pytest.raises(NmusicError, match="no files"):
        make_loader(cache, [], 100, 2)


def test_fixed_clips_are_deterministic_and_evenly_spaced():
    cache, waves = random_cache({"a": [8000, 500], "b": [4000]})
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


def test_spaced_chunks_as_many_as_fit():
    cache = AudioCache.from_waves([torch.zeros(1000), torch.zeros(250), torch.zeros(90)], [0, 0, 1], ["a", "b"],
                                  ["a/1.wav", "a/2.wav", "b/1.wav"], 8000)
    chunks = spaced_chunks(cache, [0, 1, 2], 100, per_file=4, as_many_as_fit=True)
    assert chunks == [(0, 75), (0, 325), (0, 575), (0, 825), (1, 12), (1, 138), (2, 0)]
    assert len(spaced_chunks(cache, [0, 1, 2], 100, per_file=32, as_many_as_fit=True, max_clips=3)) == 3
    assert spaced_chunks(cache, [0, 1, 2], 100, per_file=2) == [(0, 200), (0, 700), (1, 12), (1, 138), (2, 0)]


def test_balanced_subset():
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 5)
    idx = balanced_subset(labels, 6, seed=0)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 2, 2]
    idx = balanced_subset(labels, 11, seed=0)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [5, 2, 4]
    assert idx.tolist() == sorted(set(idx.tolist()))
    assert balanced_subset(labels, 6, seed=0).tolist() == balanced_subset(labels, 6, seed=0).tolist()
    assert len(balanced_subset(labels, 100)) == len(labels)
