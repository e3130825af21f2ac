"""Music of any length: sampling speed for 30 s of audio, long cMelGAN clips and MelNet continuations judged.

    python benchmarks/length.py speed --out benchmarks/results/length/speed.json
    python benchmarks/length.py judged --cache DATA/cache.pt --cmelgan RUNS/cmelgan-tiny --melnet RUNS/melnet-tiny \
        --out benchmarks/results/length/judged.json

``speed``: seconds of audio per second of sampling (the spectrogram; Griffin-Lim timed apart) for one
clip of ``--seconds`` (30) per model and preset, with freshly initialised weights (speed does not
depend on training). The cMelGAN paper presets keep the paper's one noise vector per clip, so they are
measured with ``time_latent=true`` (the only way they make 30 s). ``others`` is how many cores other
processes kept busy meanwhile: on a shared machine the figures are only as good as that is small.

``judged``: on the run's own data and split, the honest judge (trained on the real training clips, or
reused from next to the cache) scores (1) cMelGAN clips of ``--long`` (10) s against its native clip,
per 2 s window, with the seam profile; (2) MelNet continuations of held-out real clips, the continued
part only, per genre, next to the real audio that followed; (3) a blend path for notebook 04.
Figures go next to the JSON (``*.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from nmusic.bench.measure import OtherLoad
from nmusic.compose import frames_for_seconds
from nmusic.frontend import MelFrontEnd, spec_preset
from nmusic.generate import invert
from nmusic.models import registry
from nmusic.utils.files import atomic_write_json

GENRES = ["classical", "edm", "lofi"]


def _short(path) -> str:
    """The last two parts of a path: results name the run and the data, not the machine's folders."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _command() -> str:
    return " ".join(["python benchmarks/length.py"] + [_short(a) if os.path.isabs(a) else a for a in sys.argv[1:]])


def speed(args) -> dict:
    rows = []
    for model in args.models:
        presets, recipe_cls = registry()[model]
        for preset in args.presets:
            cfg = presets[preset]
            note = ""
            if model == "cmelgan" and not cfg.time_latent:
                cfg, note = replace(cfg, time_latent=True), "time_latent=true"
            torch.manual_seed(0)
            recipe = recipe_cls(cfg, spec_preset(cfg.spec), GENRES)
            for m in recipe.modules.values():
                m.eval()
            spec = recipe.spec
            n_frames = frames_for_seconds(spec, args.seconds)
            g = torch.Generator().manual_seed(0)
            genre = torch.tensor([1])
            if model == "cmelgan":      # one warm-up pass (allocator, oneDNN kernels)
                recipe.sample(genre, generator=g, n_frames=n_frames)
            with OtherLoad() as load:
                t0 = time.perf_counter()
                mel = recipe.sample(genre, generator=g, n_frames=n_frames)
                t_sample = time.perf_counter() - t0
            fe = MelFrontEnd(spec)
            t0 = time.perf_counter()
            invert(mel, fe)
            t_invert = time.perf_counter() - t0
            audio_s = spec.seconds(mel.shape[-1])
            row = {"model": model, "preset": preset, "note": note, "audio_seconds": audio_s, "frames": mel.shape[-1],
                   "sample_seconds": t_sample, "audio_s_per_s": audio_s / t_sample,
                   "griffin_lim_seconds": t_invert, "audio_s_per_s_with_griffin_lim": audio_s / (t_sample + t_invert),
                   "params": recipe.n_params(), "others_cores": load.cores}
            rows.append(row)
            print(json.dumps(row), flush=True)
            atomic_write_json(args.out, {"rows": rows, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                         "torch": torch.__version__, "command": _command()})
    return {"rows": rows}


def judged(args) -> dict:
    from nmusic.evaluation.data import EvaluationData
    from nmusic.evaluation.long_clips import blend_probabilities, continuation_accuracy, long_clip_accuracy
    from nmusic.training.runs import describe_checkpoint, load_run

    out = {"command": _command()}
    device = torch.device("cpu")
    data = None
    for kind in ("cmelgan", "melnet"):
        run = getattr(args, kind)
        if not run:
            continue
        recipe, ckpt = load_run(run, device=device)
        if data is None:
            data = EvaluationData(Path(args.cache), recipe.spec, args.seed, device)
            judge, _ = data.judges(Path(args.out).parent, args.judge_steps, True)
            out["judge"] = {"path": _short(data.judge_paths.get("judge", "")), "heldout_2s": _heldout(data, judge)}
        info = {"run": _short(run), "checkpoint": describe_checkpoint(ckpt), "step": ckpt.get("step")}
        t0 = time.perf_counter()
        if kind == "cmelgan":
            native = recipe.spec.seconds(recipe.config.clip_frames)
            info["long"] = long_clip_accuracy(recipe, judge, data.fe, args.long, native, args.n, args.seed)
            a, b = args.blend
            info["blend"] = blend_probabilities(recipe, judge, data.fe, a, b, steps=6, n=args.n, seed=args.seed)
        else:
            info["continuation"] = continuation_accuracy(recipe, judge, data, args.prime, args.cont, args.n_cont,
                                                         args.seed)
        info["seconds"] = time.perf_counter() - t0
        out[kind] = info
        atomic_write_json(args.out, out)
        print(json.dumps(info)[:2000], flush=True)
    figures(out, Path(args.out).parent)
    return out


def _heldout(data, judge) -> float:
    """The judge's accuracy on 2 s held-out real clips (its ceiling), decided as for generated clips."""
    from nmusic.data.clips import spaced_chunks
    from nmusic.evaluation.judge import decide
    samples = round(2.0 * data.rate)
    wave, labels = data.clips(spaced_chunks(data.cache, data.val_files, samples, 8, as_many_as_fit=True), samples)
    return float((decide(judge.embed(wave, data.rate)[1]) == labels).float().mean())


def figures(out: dict, folder: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "cmelgan" in out:
        long = out["cmelgan"]["long"]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
        pw = long["long"]["per_window"]
        ax[0].bar([f"{2 * i}-{2 * i + 2} s" for i in range(len(pw))], pw, color="tab:blue", label="10 s clip")
        ax[0].axhline(long["native"]["all"], color="k", ls="--", label=f"native {long['native']['seconds']:.1f} s clip")
        ax[0].axhline(out["judge"]["heldout_2s"], color="tab:green", ls=":", label="real held-out (ceiling)")
        ax[0].set_ylim(0, 1.05)
        ax[0].set_ylabel("judged as the genre asked for")
        ax[0].set_title(f"cMelGAN tiny, step {out['cmelgan']['step']}: per 2 s window")
        ax[0].legend(fontsize=7, loc="lower left")
        blend = out["cmelgan"]["blend"]
        probs = torch.tensor(blend["probabilities"])
        for g, name in enumerate(blend["genres"]):
            ax[1].plot(blend["weight_of_end"], probs[:, g], marker="o", label=name)
        ax[1].set_xlabel(f"weight of {blend['end']} (rest: {blend['start']})")
        ax[1].set_ylabel("judge's mean probability")
        ax[1].set_title("cMelGAN genre blend")
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "cmelgan_long_and_blend.png", dpi=110)
        plt.close(fig)
    if "melnet" in out:
        c = out["melnet"]["continuation"]
        genres = list(c["continued"]["per_genre"])
        x = torch.arange(len(genres)).float()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar(x - 0.2, [c["continued"]["per_genre"][g] for g in genres], 0.4, label="MelNet continuation")
        ax.bar(x + 0.2, [c["real_continuation_round_trip"]["per_genre"][g] for g in genres], 0.4,
               label="what really followed (round trip)")
        ax.set_xticks(x, genres)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("judged as the prime's genre")
        ax.set_title(f"MelNet tiny, step {out['melnet']['step']}: {c['continued_seconds']:.1f} s after a "
                     f"{c['prime_seconds']:.1f} s prime", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "melnet_continuation.png", dpi=110)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--out", default="benchmarks/results/length/speed.json")
    s.add_argument("--models", nargs="+", default=["cmelgan", "melnet"])
    s.add_argument("--presets", nargs="+", default=["tiny", "paper-small", "paper-large"])
    s.add_argument("--seconds", type=float, default=30.0)
    s = sub.add_parser("judged")
    s.add_argument("--out", default="benchmarks/results/length/judged.json")
    s.add_argument("--cache", required=True)
    s.add_argument("--cmelgan", default=None)
    s.add_argument("--melnet", default=None)
    s.add_argument("--n", type=int, default=16, help="cMelGAN clips per genre (long, native, each blend step)")
    s.add_argument("--long", type=float, default=10.0)
    s.add_argument("--blend", nargs=2, default=["classical", "edm"])
    s.add_argument("--n-cont", type=int, default=8, help="MelNet continuations per genre")
    s.add_argument("--prime", type=float, default=1.0)
    s.add_argument("--cont", type=float, default=2.0)
    s.add_argument("--judge-steps", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    (speed if args.what == "speed" else judged)(args)


if __name__ == "__main__":
    main()
