"""Which MelNet tier falls short? Sample a run with its first tiers taken from real held-out clips.

For ``k = 0 .. G`` tiers given, MelNet samples tiers ``k+1 .. G`` conditioned on the real coarser
ones (``MelNetRecipe.sample(given=..., given_tiers=k)``); the result goes through Griffin-Lim to the
two judges of ``nmusic evaluate`` (trained, or reused, for the run's data and split), like any
generated clip. ``k = 0`` is MelNet alone; ``k = G`` is the real clip after Griffin-Lim (the ceiling).

    python benchmarks/melnet_tier_oracle.py runs/melnet --cache data/cache.pt --per-genre 16

prints one line per ``k`` and writes ``tier_oracle.json`` into the run folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nmusic.data.clips import balanced_subset, spaced_chunks
from nmusic.evaluation.data import EvaluationData
from nmusic.evaluation.evaluate import JUDGE_STEPS, accuracy_report
from nmusic.generate import invert
from nmusic.training.runs import find_cache, load_run
from nmusic.utils.files import atomic_write_json


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a MelNet run folder")
    ap.add_argument("--cache", type=Path, default=None, help="its data cache (default: the one it was trained on)")
    ap.add_argument("--per-genre", type=int, default=16, help="real held-out clips per genre")
    ap.add_argument("--judge-steps", type=int, default=JUDGE_STEPS, help="network-judge steps if none is saved")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    recipe, ckpt = load_run(args.run, device="cpu")
    if ckpt.get("model") != "melnet":
        raise SystemExit(f"{args.run}: a {ckpt.get('model')} run; the tier oracle needs a MelNet run")
    cache = find_cache(args.run, args.cache)
    data = EvaluationData.of_run(ckpt, cache, torch.device("cpu"))
    data.judges(args.run, args.judge_steps, progress=True)
    samples = round(data.judge.spec.clip_seconds * data.rate)
    held = spaced_chunks(data.cache, data.val_files, samples, 8, as_many_as_fit=True, seed=args.seed)
    wave, labels = data.clips(held, samples)
    pick = balanced_subset(labels, args.per_genre * len(data.cache.genres), args.seed)
    wave, labels = wave[pick], labels[pick]
    real = data.mels(wave)
    rows = []
    for k in range(recipe.n_tiers + 1):
        mel = recipe.sample(labels, generator=torch.Generator().manual_seed(args.seed), n_frames=real.shape[-1],
                            given=real, given_tiers=k)
        pred, pred_f = data.judge_audio(invert(mel, data.fe, samples), labels).predictions()
        net, feat = accuracy_report(pred, labels, data.cache.genres), accuracy_report(pred_f, labels, data.cache.genres)
        rows.append({"given_tiers": k, "judge": net["accuracy"], "judge_per_genre": net["per_genre"],
                     "features": feat["accuracy"], "features_per_genre": feat["per_genre"]})
        per = " ".join(f"{g} {100 * a:.0f}%" for g, a in net["per_genre"].items())
        print(f"tiers 1..{k} real: network judge {100 * net['accuracy']:.0f}% ({per}), "
              f"feature judge {100 * feat['accuracy']:.0f}%", flush=True)
    result = {"run": str(args.run), "step": ckpt.get("step"), "checkpoint": ckpt.get("checkpoint_path"),
              "n_clips": len(labels), "clip_seconds": samples / data.rate, "rows": rows}
    atomic_write_json(args.run / "tier_oracle.json", result)
    return result


if __name__ == "__main__":
    main()
