"""An in-memory audio cache of random waves, shared by the cache and clips tests."""
import torch

from nmusic.data.cache import AudioCache

SR = 8000


def random_cache(lengths_by_genre=None, seed=0) -> tuple[AudioCache, list[torch.Tensor]]:
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
