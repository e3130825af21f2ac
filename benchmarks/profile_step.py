"""Profile one training step of a model preset with torch.profiler: where does the time go?

    python benchmarks/profile_step.py melnet paper-small            # the preset's batch
    python benchmarks/profile_step.py cmelgan paper-small --batch 2 --amp bf16
    python benchmarks/profile_step.py melnet tiny --trace trace.json  # Chrome trace (chrome://tracing)

Prints the operators by self time (CPU, and CUDA on a GPU) after one warm-up step.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.profiler import ProfilerActivity, profile

from nmusic.bench.training_speed import make_batches
from nmusic.data.embedded import synthetic_cache
from nmusic.data.synth import GENRES
from nmusic.device import AMP_DTYPES, resolve_device
from nmusic.frontend import MelFrontEnd, spec_preset
from nmusic.models import registry
from nmusic.models.base import StepContext


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("preset")
    p.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--amp", default="none", choices=sorted(AMP_DTYPES))
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--trace", default=None, help="write a Chrome trace here")
    a = p.parse_args()

    device = resolve_device(a.device)
    presets, recipe_cls = registry()[a.model]
    cfg = presets[a.preset]
    if a.batch:
        cfg = dataclasses.replace(cfg, batch_size=a.batch)
    spec = spec_preset(cfg.spec)
    recipe = recipe_cls(cfg, spec, list(GENRES)).to(device)
    front_end = MelFrontEnd(spec).to(device)
    cache = synthetic_cache(spec.sample_rate, spec.seconds(cfg.clip_frames) + 2)
    batches = make_batches(cache, spec.samples(cfg.clip_frames), cfg.batch_size, 2)

    def step(i: int) -> None:
        wave, genre = (t.to(device) for t in batches[i])
        with torch.no_grad():
            mel = front_end(wave)
        recipe.train_step(mel, genre, StepContext(step=i, device=device, amp_dtype=AMP_DTYPES[a.amp]))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        step(1)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows))
    if a.trace:
        prof.export_chrome_trace(a.trace)


if __name__ == "__main__":
    main()
