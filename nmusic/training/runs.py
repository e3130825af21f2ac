"""One training run from a prepared cache: what ``nmusic train`` and ``nmusic demo`` call.

cache file -> split by file -> recipe (model config + the cache's genres + the config's
spectrogram preset) -> :class:`~nmusic.training.trainer.Trainer` -> a summary in the paper's Table 1 units
(parameters, seconds, kHz of audio consumed per second).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..frontend import spec_preset
from ..data.cache import AudioCache, split_by_file
from ..errors import ConfigError
from ..config import apply_overrides
from .trainer import UNTIL_BUDGET, TrainConfig, Trainer, seed_everything

DEFAULT_STEPS = 2000  # optimisation steps when neither a step count nor a time budget is given


def build_recipe(model: str, cfg, genres: list[str]):
    from ..models import registry
    reg = registry()
    if model not in reg:
        raise ConfigError(f"unknown model {model!r}; choose one of {sorted(reg)}")
    return reg[model][1](cfg, spec_preset(cfg.spec), list(genres))


def train_model(model: str, preset: str, cfg, cache_path, run_dir, steps: int | None = None,
                time_budget_s: float | None = None, resume: bool = True, device: str = "auto", amp: str = "auto",
                compile: bool = False, num_workers: int = 0, seed: int = 0, progress: bool = True,
                val_fraction: float = 0.25, callbacks=(), train_overrides: dict | None = None) -> dict:
    """Train (or continue training) ``model`` with config ``cfg`` into ``run_dir``; returns a summary dict.

    ``train_overrides``: :class:`~nmusic.training.trainer.TrainConfig` fields (``grad_clip``, ``ckpt_every``,
    ``sample_every``, ...), type-checked. ``steps`` defaults to :data:`DEFAULT_STEPS`, or to "until the
    time budget runs out" when only ``time_budget_s`` is given. Everything random is seeded from
    ``seed`` before the model is built, so the same call trains the same run.
    """
    cache = AudioCache.load(cache_path)
    train_files, val_files = split_by_file(cache, val_fraction=val_fraction, seed=seed)
    seed_everything(seed)      # the initial weights too: one seed, one run
    recipe = build_recipe(model, cfg, cache.genres)
    if steps is None:
        steps = UNTIL_BUDGET if time_budget_s else DEFAULT_STEPS
    tc = TrainConfig(steps=steps, time_budget_s=time_budget_s, device=device, amp=amp, compile=compile,
                     num_workers=num_workers, seed=seed, progress=progress)
    tc = apply_overrides(tc, train_overrides or {})
    trainer = Trainer(recipe, cache, run_dir, tc, train_files, val_files, preset, callbacks,
                      run_info={"cache": str(Path(cache_path).resolve()), "val_fraction": val_fraction,
                                "cache_sample_rate": int(cache.sample_rate), "cache_genres": list(cache.genres)})
    t0 = time.perf_counter()
    trainer.fit(resume=resume)
    seconds = time.perf_counter() - t0
    done = trainer.step - trainer.session_start_step
    clip_samples = trainer.clip_samples
    return {
        "model": model, "preset": preset, "run_dir": str(Path(run_dir)), "steps": trainer.step,
        "params": recipe.n_params(), "device": str(trainer.device), "train_seconds": seconds,
        "train_khz": done * trainer.batch_size * trainer.world_size * clip_samples / max(seconds, 1e-9) / 1000,
        "history_tail": trainer.history[-1] if trainer.history else None,
    }
