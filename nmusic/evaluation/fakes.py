"""Trivial fakes that hold a genre judge to account: spectrograms with no music in them.

A judge's genre accuracy on generated clips means something only if clips that are *not* music,
but copy the cheap statistics of a genre, are not assigned that genre. Each fake is built from real
held-out clips of the genre, in the generator's own spectrogram domain (normalised log-mel, as a
generator would output it), and then goes to the judge the way generated clips do: through the
inversion to audio. With ``K`` genres, a judge that cannot tell the genre of a fake scores ``1/K``
on it (chance); :data:`MAX_ABOVE_CHANCE` is the tolerance before the judge is declared invalid.

The three that decide validity (:data:`FAKES`):

``mean-frame``     the genre's mean log-mel frame, repeated over time, plus a little Gaussian noise
``shuffled``       a real clip with its frames shuffled in time (every frame real, no order)
``per-bin-noise``  Gaussian noise with the clip's own per-bin mean and standard deviation

Reported beside them, not deciding (:data:`PROBES`), because they carry real structure on purpose
and show what a judge listens to:

``envelope``       the genre's mean frame under a real clip's loudness envelope (rhythm, no harmony)
``one-frame``      one real frame of the clip, repeated (a real timbre, no time)

Shapes: ``mel (N, n_mels, frames)`` in [-1, 1], ``genre (N,)``; every fake has the shape of ``mel``.
"""
from __future__ import annotations

import torch

#: name -> description of the fakes a valid judge must score at chance.
FAKES = {
    "mean-frame": "the genre's mean log-mel frame repeated + noise",
    "shuffled": "real frames shuffled in time",
    "per-bin-noise": "per-bin Gaussian noise with the clip's per-bin mean and std",
}
#: name -> description of the probes reported beside them (they keep some real structure).
PROBES = {
    "envelope": "the genre's mean frame under a real clip's loudness envelope (rhythm only)",
    "one-frame": "one real frame repeated",
}
#: A judge is valid when every fake of :data:`FAKES` scores at most chance + this.
MAX_ABOVE_CHANCE = 0.10
NOISE_STD = 0.05  # of the mean-frame fake, in normalised log-mel units (about 2 dB)


def make_fakes(mel: torch.Tensor, genre: torch.Tensor, seed: int = 0, probes: bool = True) -> dict[str, torch.Tensor]:
    """The fakes (and probes) of real clips ``mel (N, F, T)`` of genres ``genre (N,)``, seeded."""
    mel = mel.float().cpu()
    genre = genre.long().cpu()
    if mel.dim() != 3 or len(mel) != len(genre) or len(mel) == 0:
        raise ValueError(f"make_fakes needs mel (N, n_mels, frames) and genre (N,), got {tuple(mel.shape)} "
                         f"and {tuple(genre.shape)}")
    g = torch.Generator().manual_seed(int(seed))
    N, F_, T = mel.shape
    mean_frame = torch.zeros(int(genre.max()) + 1, F_)
    for k in genre.unique().tolist():
        mean_frame[k] = mel[genre == k].mean(dim=(0, 2))
    frame = mean_frame[genre][:, :, None]                                         # (N, F, 1)
    out = {"mean-frame": (frame + NOISE_STD * torch.randn(mel.shape, generator=g)).clamp(-1, 1)}
    order = torch.argsort(torch.rand(N, T, generator=g), dim=1)                   # a permutation per clip
    out["shuffled"] = torch.gather(mel, 2, order[:, None, :].expand(N, F_, T))
    mean, std = mel.mean(2, keepdim=True), mel.std(2, keepdim=True)
    out["per-bin-noise"] = (mean + std * torch.randn(mel.shape, generator=g)).clamp(-1, 1)
    if probes:
        loudness = mel.mean(1, keepdim=True)                                      # (N, 1, T)
        out["envelope"] = (frame + loudness - loudness.mean(2, keepdim=True)).clamp(-1, 1)
        pick = torch.randint(T, (N,), generator=g)
        out["one-frame"] = mel[torch.arange(N), :, pick][:, :, None].expand(N, F_, T).contiguous()
    return out


def chance(n_genres: int) -> float:
    return 1.0 / n_genres


def verdict(accuracies: dict[str, float], n_genres: int) -> dict:
    """``{"valid", "chance", "limit", "failed": [names]}`` from the accuracies on :data:`FAKES`."""
    limit = chance(n_genres) + MAX_ABOVE_CHANCE
    failed = [name for name in FAKES if accuracies.get(name) is not None and accuracies[name] > limit]
    missing = [name for name in FAKES if accuracies.get(name) is None]
    return {"valid": not failed and not missing, "chance": chance(n_genres), "limit": limit, "failed": failed,
            "missing": missing}
