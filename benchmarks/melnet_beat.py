"""Does MelNet's tier 1 write a beat? Periodicity of its lowest bands, real against sampled, and how well it predicts them.

Tier 1 (``split`` of the spectrogram: every 4th frame and every 2nd mel of ``tiny``, 16 frames a second) of
real held-out clips of one genre (default ``edm``: a kick every 7.4-8 tier-1 frames at 120-130 bpm) and of
tier 1 as the run samples it, unprimed and continuing the first ``--prime`` seconds of each real clip:

* ``autocorrelation``: of the mean of the lowest ``--bands`` bins per frame, at lags 1..16 frames
  (:func:`nmusic.evaluation.metrics.lag_autocorrelation`). A steady beat shows as peaks at one and two beats;
* teacher forced (the real frames before, as in training): the correlation of tier 1's predicted mean of
  its lowest bin (the mixture's mean) with the real value, beside the trivial predictors "the value
  ``k`` frames back" (the best ``k`` is one beat back for a steady beat).

    python benchmarks/melnet_beat.py runs/melnet --genre edm --clips 8

prints the figures and writes ``beat.json`` into the run folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nmusic.data.clips import spaced_chunks
from nmusic.evaluation.data import EvaluationData
from nmusic.evaluation.metrics import lag_autocorrelation
from nmusic.models.melnet.sampling import sample_tier
from nmusic.models.melnet.tiers import split
from nmusic.training.runs import find_cache, load_run
from nmusic.utils.files import atomic_write_json

MAX_LAG = 16   # frames of tier 1: two beats of edm at 16 frames a second


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two ``(N, T)`` tensors, each row centred on its own mean."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a MelNet run folder")
    ap.add_argument("--cache", type=Path, default=None, help="its data cache (default: the one it was trained on)")
    ap.add_argument("--genre", default="edm", help="the genre whose clips are read and asked for")
    ap.add_argument("--clips", type=int, default=8, help="held-out clips of that genre (and as many samples)")
    ap.add_argument("--seconds", type=float, default=8.0, help="clip length")
    ap.add_argument("--prime", type=float, default=2.0, help="seconds of each real clip the primed samples continue")
    ap.add_argument("--bands", type=int, default=12, help="lowest tier-1 bins whose mean per frame is the beat signal")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    recipe, ckpt = load_run(args.run, device="cpu")
    if ckpt.get("model") != "melnet":
        raise SystemExit(f"{args.run}: a {ckpt.get('model')} run; the beat check needs a MelNet run")
    if args.genre not in recipe.genres:
        raise SystemExit(f"--genre {args.genre!r} is not one of the run's genres {recipe.genres}")
    genre = recipe.genres.index(args.genre)
    cache = find_cache(args.run, args.cache)
    data = EvaluationData.of_run(ckpt, cache, torch.device("cpu"))
    if list(recipe.genres) != list(data.cache.genres):
        raise SystemExit(f"{args.run} was trained on genres {recipe.genres} but {cache} holds {data.cache.genres}; "
                         f"pass the cache it was trained on with --cache")
    samples = round(args.seconds * data.rate)
    files = [f for f in data.val_files if int(data.cache.genre_ids[f]) == genre]
    chunks = spaced_chunks(data.cache, files, samples, 8, as_many_as_fit=True, seed=args.seed)[:args.clips]
    if not chunks:
        raise SystemExit(f"no held-out {args.genre} clips of {args.seconds:g} s in {cache}")
    wave, _ = data.clips(chunks, samples)
    real = split(data.mels(wave).transpose(1, 2), recipe.n_tiers)[0][0]          # tier 1 (N, T1, F1)
    n, frames = real.shape[:2]
    rate = frames / args.seconds
    prime = max(1, round(args.prime * rate))
    if frames - prime <= MAX_LAG + 1:
        raise SystemExit(f"--seconds {args.seconds:g} leaves too few tier-1 frames after a {args.prime:g} s prime")
    tier, genres = recipe.tiers()[0], torch.full((n,), genre)
    gen = torch.Generator().manual_seed(args.seed)
    free = sample_tier(tier, frames, genres, generator=gen)
    primed = sample_tier(tier, frames, genres, prime=real[:, :prime], generator=gen)

    def beat(x, start=0):
        return lag_autocorrelation(x[:, start:, :args.bands].mean(-1), MAX_LAG).tolist()

    with torch.no_grad():
        predicted = tier.mixture(tier(real, genres)).distribution().mean[:, :, 0]
    low = real[:, :, 0]
    skip = MAX_LAG                                              # frames with a whole lag window behind them
    back = {k: correlation(low[:, skip:], low[:, skip - k:frames - k]) for k in range(1, MAX_LAG + 1)}
    best = max(back, key=back.get)
    result = {"run": str(args.run), "step": ckpt.get("step"), "genre": args.genre, "clips": n,
              "tier1_frames_per_second": rate, "bands": args.bands,
              "autocorrelation": {"real": beat(real), "sampled": beat(free),
                                  "primed_real": beat(real, prime), "primed_continuation": beat(primed, prime)},
              "teacher_forced_lowest_bin": {"model_mean": correlation(low[:, skip:], predicted[:, skip:]),
                                            "k_frames_back": back, "best_k": best}}
    for name, ac in result["autocorrelation"].items():
        print(f"{name:20s} autocorrelation at lags 1..{MAX_LAG}: " + " ".join(f"{v:+.2f}" for v in ac))
    print(f"teacher forced, lowest bin: model's mean r = {result['teacher_forced_lowest_bin']['model_mean']:.2f}; "
          f"value {best} frames back r = {back[best]:.2f}; previous frame r = {back[1]:.2f}")
    atomic_write_json(args.run / "beat.json", result)
    return result


if __name__ == "__main__":
    main()
