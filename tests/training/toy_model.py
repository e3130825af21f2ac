"""A toy recipe, a tiny in-memory audio cache and a training entry point for the trainer tests.

The toy model is a per-frame denoiser of log-mel frames, conditioned on genre. Its training step
draws noise from the torch, NumPy and Python RNGs, so an exact resume needs every RNG state back.
Run as a script (``python tests/training/toy_model.py train RUN_DIR ...``) it trains in a subprocess, which
the tests kill with SIGKILL or launch under ``torch.distributed.run``.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmusic.data.cache import AudioCache
from nmusic.frontend import SpecParams
from nmusic.models.base import Recipe
from nmusic.training.trainer import TrainConfig, Trainer

TOY_SPEC = SpecParams(sample_rate=8000, n_fft=64, hop_length=32, n_mels=8)
GENRES = ("classical", "edm", "lofi")
EXTRA_SLEEP_S = 0.0  # per step, set by the script's --sleep: slows a run down without changing its config


@dataclass
class ToyConfig:
    batch_size: int = 4
    clip_frames: int = 9
    hidden: int = 16
    lr: float = 1e-2
    noise: float = 0.3
    nan_at: int | None = None  # train_step index (0-based) whose loss is NaN
    nan_from: int | None = None  # every train_step from this index (0-based) on has a NaN loss
    sample_fails_at: int | None = None  # trainer step (1-based) at which sample() raises
    sleep_s: float = 0.0       # per training step, to make a run slow enough to kill


class ToyNet(torch.nn.Module):
    def __init__(self, n_mels: int, hidden: int, n_genres: int):
        super().__init__()
        self.embed = torch.nn.Embedding(n_genres, hidden)
        self.inp = torch.nn.Linear(n_mels, hidden)
        self.out = torch.nn.Linear(hidden, n_mels)

    def forward(self, x: torch.Tensor, genre: torch.Tensor) -> torch.Tensor:
        """``x (B, T, n_mels)``, ``genre (B,)`` -> ``(B, T, n_mels)``."""
        h = torch.relu(self.inp(x) + self.embed(genre)[:, None])
        return self.out(h)


class ToyRecipe(Recipe):
    name = "toy"

    def __init__(self, config: ToyConfig, spec: SpecParams, genres):
        super().__init__(config, spec, genres)
        net = ToyNet(spec.n_mels, config.hidden, len(genres))
        ema = ToyNet(spec.n_mels, config.hidden, len(genres)).requires_grad_(False).eval()
        ema.load_state_dict(net.state_dict())
        self.modules = {"net": net, "ema": ema}
        self.optimizers = {"net": torch.optim.Adam(net.parameters(), lr=config.lr)}
        self.seen: list[list[int]] = []  # genres of every training batch (for the DDP test)
        self.updates = 0

    def train_step(self, mel, genre, ctx):
        if self.config.sleep_s or EXTRA_SLEEP_S:
            time.sleep(self.config.sleep_s + EXTRA_SLEEP_S)
        self.seen.append(genre.tolist())
        x = mel.transpose(1, 2)
        scale = self.config.noise * (1 + 0.1 * random.random() + 0.1 * float(np.random.rand()))
        noisy = x + scale * torch.randn_like(x)
        with ctx.autocast():
            loss = torch.nn.functional.mse_loss(self.modules["net"](noisy, genre).float(), x)
        if ctx.step == self.config.nan_at or (self.config.nan_from is not None and ctx.step >= self.config.nan_from):
            loss = loss * float("nan")
        ctx.backward(loss)
        ctx.optimizer_step(self.optimizers["net"])
        with torch.no_grad():
            for e, p in zip(self.modules["ema"].parameters(), self.unwrap(self.modules["net"]).parameters()):
                e.lerp_(p, 0.1)
        self.updates += 1
        return {"loss": loss.item(), "scale": scale}

    def eval_step(self, mel, genre):
        x = mel.transpose(1, 2)
        clean = self.modules["ema"](x, genre)
        return {"mse": float(torch.nn.functional.mse_loss(clean, x)), "abs": float((clean - x).abs().mean())}

    def sample(self, genre, generator=None, **kwargs):
        if self.config.sample_fails_at is not None and self.updates == self.config.sample_fails_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (the toy's sampler failing on purpose)")
        frames = self.config.clip_frames
        z = torch.randn(len(genre), frames, self.spec.n_mels, generator=generator, device=genre.device)
        return torch.tanh(self.modules["ema"](z, genre)).transpose(1, 2)

    def extra_state(self):
        return {"updates": self.updates}

    def load_extra_state(self, state):
        self.updates = state.get("updates", 0)


REGISTRY = {"toy": ({"tiny": ToyConfig(), "small": ToyConfig(hidden=32)}, ToyRecipe)}


def make_cache(genres=GENRES, files_per_genre: int = 2, seconds: float = 0.5, sample_rate: int = 8000,
               seed: int = 0) -> AudioCache:
    """Tones + noise, a different pitch per genre: ``files_per_genre`` files per genre."""
    g = torch.Generator().manual_seed(seed)
    waves, ids, paths = [], [], []
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    for gi, name in enumerate(genres):
        for k in range(files_per_genre):
            f0 = 200.0 * (gi + 1) + 37.0 * k
            w = 0.5 * torch.sin(2 * torch.pi * f0 * t) + 0.05 * torch.randn(len(t), generator=g)
            waves.append(w.clamp(-1, 1))
            ids.append(gi)
            paths.append(f"{name}/{k}.wav")
    return AudioCache.from_waves(waves, ids, list(genres), paths, sample_rate)


def split(cache: AudioCache) -> tuple[list[int], list[int]]:
    """First file of each genre for validation, the rest for training."""
    val = [int((cache.genre_ids == g).nonzero()[0]) for g in range(len(cache.genres))]
    return [i for i in range(len(cache)) if i not in val], val


def make_trainer(run_dir, cfg: TrainConfig, toy: ToyConfig | None = None, cache: AudioCache | None = None,
                 callbacks=(), model_seed: int = 0) -> Trainer:
    cache = cache or make_cache()
    torch.manual_seed(model_seed)
    recipe = ToyRecipe(toy or ToyConfig(), TOY_SPEC, cache.genres)
    train, val = split(cache)
    return Trainer(recipe, cache, run_dir, cfg, train, val, "tiny", callbacks=callbacks)


class ProgressFile:
    """Callback writing the newest logged step to a file (the kill test polls it)."""

    def __init__(self, path):
        self.path = Path(path)

    def on_log(self, step, metrics):
        self.path.write_text(str(step))


def script_config(steps: int, ckpt_every: int, val_every: int) -> TrainConfig:
    """The TrainConfig of ``main``: every step logged."""
    return TrainConfig(steps=steps, log_every=1, ckpt_every=ckpt_every, val_every=val_every, sample_every=0,
                       keep_last=2, device="cpu", progress=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "ddp"])
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--val-every", type=int, default=4)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--progress-file", default=None)
    a = p.parse_args(argv)
    global EXTRA_SLEEP_S
    EXTRA_SLEEP_S = a.sleep
    torch.set_num_threads(1)
    cfg = script_config(a.steps, a.ckpt_every, a.val_every)
    callbacks = [ProgressFile(a.progress_file)] if a.progress_file else []
    trainer = make_trainer(a.run_dir, cfg, ToyConfig(), callbacks=callbacks,
                           model_seed=trainer_rank_seed() if a.mode == "ddp" else 0)
    trainer.fit(resume=True)
    if a.mode == "ddp":
        params = {k: v.clone() for k, v in trainer.recipe.modules["net"].state_dict().items()}
        torch.save({"params": params, "seen": trainer.recipe.seen, "rank": trainer.rank,
                    "world_size": trainer.world_size}, Path(a.run_dir) / f"rank{trainer.rank}.pt")
    return 0


def trainer_rank_seed() -> int:
    """A different initialisation per rank: DDP must broadcast rank 0's weights."""
    import os
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    sys.exit(main())
