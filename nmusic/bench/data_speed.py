"""The data pipeline's speed (paper section 4.1): ``nmusic prepare`` in hours of audio per minute, and
batches per second from the RAM cache (log-mel on the device included) against the same batches
decoded from disk clip by clip, the pipeline the paper replaced (its "~50x" loading speed-up).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..data.cache import prepare
from ..data.clips import ChunkSampler, make_loader
from ..data.decode import load_audio
from ..data.manifest import build_manifest
from ..data.synth import write_dataset
from ..frontend import MelFrontEnd
from .measure import timed


def bench_data(sample_rate: int, geometries: list[dict], device: torch.device, files_per_genre: int,
               seconds: float, batches: int = 10, workdir: str | None = None) -> dict:
    """``nmusic prepare`` throughput and loader batches per second for each ``{"name", "clip_samples",
    "batch", "step_s"}`` geometry (RAM cache + on-device log-mel vs. decoding clips from disk)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = write_dataset(Path(tmp) / "audio", files_per_genre=files_per_genre, seconds=seconds,
                             sample_rate=(44100, 22050, 48000), progress=False)
        manifest = build_manifest(root, clip_seconds=1.0, progress=False)
        t0 = time.perf_counter()
        cache = prepare(manifest, sample_rate, Path(tmp) / "cache.pt", progress=False)
        prep_s = time.perf_counter() - t0
        hours = sum(cache.hours_per_genre().values())
        out = {"sample_rate": sample_rate, "files": len(cache), "audio_hours": hours, "prepare_s": prep_s,
               "decode_resample_hours_per_min": hours / (prep_s / 60), "workers": os.cpu_count(), "loaders": []}
        files = list(range(len(cache)))
        for geo in geometries:
            spec = geo["spec"]
            front_end = MelFrontEnd(spec).to(device)
            clip, bs = geo["clip_samples"], geo["batch"]
            if clip > int(cache.lengths.min()):
                continue
            loader = iter(make_loader(cache, files, clip, bs, seed=0, steps=batches + 1))

            def ram_batch():
                wave, genre = next(loader)
                with torch.no_grad():
                    front_end(wave.to(device, non_blocking=True))
                genre.to(device)
            ram_batch()                                         # warm-up
            ram_s = statistics.median(timed(ram_batch, device) for _ in range(batches))
            chunks = ChunkSampler(cache, files, clip, bs, seed=0)

            def disk_batch(step: int):       # what the paper replaced: decode + resample every clip's file
                waves = []
                for f, start in chunks.batch(step):
                    wave = load_audio(str(Path(manifest.root) / cache.paths[f]), sample_rate)[0][start:start + clip]
                    waves.append(torch.nn.functional.pad(wave, (0, clip - len(wave))))
                with torch.no_grad():
                    front_end(torch.stack(waves).to(device))
            disk_s = statistics.median(timed(lambda s=s: disk_batch(s), device) for s in range(max(2, batches // 5)))
            row = {"name": geo["name"], "batch": bs, "clip_seconds": clip / sample_rate,
                   "ram_batches_per_s": 1 / ram_s, "disk_batches_per_s": 1 / disk_s, "ram_vs_disk": disk_s / ram_s}
            if geo.get("step_s"):
                row["train_steps_per_s"] = 1 / geo["step_s"]
                row["loader_share_of_step"] = ram_s / geo["step_s"]   # < 1: one loader process keeps up
            out["loaders"].append(row)
    return out
