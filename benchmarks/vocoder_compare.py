"""Vocoder vs Griffin-Lim on held-out real clips of the embedded dataset (or any cache).

    python benchmarks/vocoder_compare.py --work /tmp/vocoder-bench --out benchmarks/results/vocoder-compare.json

1. data: the embedded dataset at the demo's size (16 files x 30 s per genre, 16 kHz), made once under
   ``--work`` (or ``--cache``), split by file exactly as the trainer splits it (``split_by_file``, seed 0);
2. budget: "5 CPU minutes" as a fixed number of steps, so that a busy (shared) machine does not change the
   result: the median *CPU time* (``time.process_time``, one torch thread) of ``--calibrate`` training steps
   of a fresh ``tiny`` vocoder, ``steps = 300 s / median``, i.e. five minutes of one core's compute (an idle
   2-core machine does them in five minutes or less); the load average is recorded next to it. Or ``--steps``;
3. train ``nmusic train vocoder --preset tiny`` for those steps (resumes if the run exists);
4. held-out clips (4 evenly spaced 2 s clips per held-out file): real -> mel -> {vocoder, Griffin-Lim 32,
   Griffin-Lim 100} -> audio, and per inversion: multi-resolution STFT spectral convergence and
   log-spectral distance (STFT sizes 512/1024/2048, hop n/4, averaged), the same at the front end's own
   STFT (the README's Griffin-Lim figures), mel L1 after re-analysis (normalised log-mel units), the two
   genre judges' accuracy (trained here on the training files, as ``nmusic evaluate`` trains them), and
   inversion speed in x real time (wall clock, this CPU, ``--threads``);
5. long audio: 60 s of held-out audio vocoded in chunks, x real time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmusic.data.cache import AudioCache  # noqa: E402
from nmusic.data.clips import fixed_clips, split_by_file  # noqa: E402
from nmusic.frontend import MelFrontEnd, log_spectral_distance, spec_preset, spectral_convergence, stft_magnitude  # noqa: E402
from nmusic.inversion import GriffinLim, Vocoded  # noqa: E402

FFT_SIZES = (512, 1024, 2048)


def multires(ref: torch.Tensor, est: torch.Tensor) -> dict:
    sc, lsd = [], []
    for n in FFT_SIZES:
        w = torch.hann_window(n)
        a = torch.stft(ref, n, n // 4, window=w, return_complex=True).abs()
        b = torch.stft(est, n, n // 4, window=w, return_complex=True).abs()
        sc.append(spectral_convergence(a, b))
        lsd.append(log_spectral_distance(a, b))
    return {"mr_spectral_convergence_db": sum(sc) / len(sc), "mr_log_spectral_distance_db": sum(lsd) / len(lsd)}


def calibrate(spec_name: str, n: int) -> float:
    from nmusic.models.base import StepContext
    from nmusic.models.vocoder import PRESETS, VocoderRecipe
    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    recipe = VocoderRecipe(cfg, spec_preset(cfg.spec), ["a"])
    wave = torch.randn(cfg.batch_size, recipe.spec.samples(cfg.clip_frames)) * 0.1
    mel = recipe.front_end(wave)
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for s in range(n + 3):
            t = time.process_time()
            recipe.train_step(mel, None, StepContext(step=s, device=torch.device("cpu"), extras={"wave": wave}))
            times.append(time.process_time() - t)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times[3:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="vocoder-bench", help="folder for the data, the run and the judges")
    p.add_argument("--cache", default=None, help="an audio cache (default: the embedded dataset made under --work)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: what 300 s buys, measured)")
    p.add_argument("--budget-s", type=float, default=300.0)
    p.add_argument("--calibrate", type=int, default=30, help="steps timed to turn the budget into steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--judge-steps", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vocoder-compare.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    spec = spec_preset("default")
    if a.cache:
        cache_path = Path(a.cache)
    else:
        cache_path = work / "data" / "cache.pt"
        if not cache_path.is_file():
            from nmusic.data.embedded import prepare_embedded
            prepare_embedded(work, 16, 30.0, spec.sample_rate, progress=False)
    data_name = "the embedded dataset (16 files x 30 s per genre, 16 kHz)" if not a.cache else Path(a.cache).name
    result: dict = {"data": data_name, "threads": a.threads, "load_average_at_start": os.getloadavg()}

    # --- budget and training ------------------------------------------------------------------------
    if a.steps is None:
        step_s = calibrate("default", a.calibrate)
        steps = int(a.budget_s / step_s)
        result["budget"] = {"cpu_seconds": a.budget_s, "median_step_cpu_s_one_thread": step_s, "steps": steps,
                            "load_average": os.getloadavg()}
    else:
        steps = a.steps
        result["budget"] = {"steps": steps, "given": True}
    print(f"training {steps} steps", file=sys.stderr)
    from nmusic.config import resolve
    from nmusic.models.vocoder import PRESETS
    from nmusic.training.runs import train_model
    run = work / "runs" / "vocoder-tiny"
    summary = train_model("vocoder", "tiny", resolve(PRESETS, "tiny"), cache_path, run, steps=steps, device="cpu",
                          progress=False, train_overrides={"val_every": 250, "ckpt_every": 250})
    result["training"] = {k: summary[k] for k in ("steps", "params", "train_seconds", "train_khz")}

    # --- held-out clips -----------------------------------------------------------------------------
    cache = AudioCache.load(cache_path)
    _, val_files = split_by_file(cache, seed=0)
    wave, labels = fixed_clips(cache, val_files, spec.sample_rate * 2, per_file=4, seed=0)
    fe = MelFrontEnd(spec)
    mel = fe(wave)
    from nmusic.training.runs import load_run
    recipe, ckpt = load_run(run, device="cpu")
    inversions = {"vocoder-tiny": Vocoded(recipe), "griffin-lim-32": GriffinLim(fe, 32),
                  "griffin-lim-100": GriffinLim(fe, 100)}
    from nmusic.evaluation.data import EvaluationData
    data = EvaluationData(cache_path, spec, seed=0, device=torch.device("cpu"))
    data.judges(work / "judges", steps=a.judge_steps, progress=False)

    def judged(w):
        pred, pred_f = data.judge_audio(w, labels).predictions()
        return {"judge_accuracy": float((pred == labels).float().mean()),
                "feature_judge_accuracy": float((pred_f == labels).float().mean())}

    rows = {"real (no inversion)": judged(wave)}
    audio_s = wave.numel() / spec.sample_rate
    for name, inv in inversions.items():
        torch.manual_seed(0)
        t = time.perf_counter()
        rec = inv(mel, samples=wave.shape[-1])
        secs = time.perf_counter() - t
        s_ref, s_rec = stft_magnitude(wave, spec), stft_magnitude(rec, spec)
        rows[name] = {**multires(wave, rec),
                      "spectral_convergence_db": spectral_convergence(s_ref, s_rec),
                      "log_spectral_distance_db": log_spectral_distance(s_ref, s_rec),
                      "mel_l1": float((fe(rec) - mel).abs().mean()),
                      **judged(rec), "x_real_time": audio_s / secs}
        print(name, json.dumps(rows[name]), file=sys.stderr)
    result["clips"] = {"n": len(wave), "seconds_each": 2.0, "heldout_files": len(val_files)}
    result["checkpoint"] = Path(ckpt["checkpoint_path"]).name
    result["rows"] = rows
    v, g = rows["vocoder-tiny"], rows["griffin-lim-32"]
    result["margins_vs_griffin_lim_32_db"] = {
        k: g[k] - v[k] for k in ("mr_spectral_convergence_db", "mr_log_spectral_distance_db",
                                  "spectral_convergence_db", "log_spectral_distance_db")}

    # --- long audio in chunks -----------------------------------------------------------------------
    long = torch.cat([cache.file(f) for f in val_files])[: 60 * spec.sample_rate][None]
    m = fe(long)
    t = time.perf_counter()
    recipe.vocode(m)
    secs = time.perf_counter() - t
    result["long_audio"] = {"seconds": long.shape[-1] / spec.sample_rate, "x_real_time": long.shape[-1] / spec.sample_rate / secs,
                            "chunk_frames": recipe.config.chunk_frames}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
