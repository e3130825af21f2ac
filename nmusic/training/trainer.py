"""The training loop shared by MelNet and cMelGAN (paper section 4: training set-up).

The paper trained on Colab, where a session can disconnect at any time. So the loop is built
around the run directory (put it on mounted Drive): everything needed to continue *exactly* is
checkpointed atomically, and ``fit(resume=True)`` picks the newest complete checkpoint up again.

What the :class:`Trainer` owns (the :class:`~nmusic.models.base.Recipe` owns the model-specific rest):

* data: random clips from :func:`nmusic.data.cache.make_loader`, whose batches depend only on
  ``(seed, rank, step)``, turned into normalised log-mel on the training device by
  :class:`~nmusic.frontend.MelFrontEnd`; each clip is ``clip_frames`` frames long;
* device (``auto``: the GPU when there is one), mixed precision (``amp``: bf16/fp16 through
  :class:`~nmusic.models.base.StepContext`; ``auto`` picks per model and GPU, :func:`resolve_amp`),
  cuDNN autotuning and TF32 matmuls on CUDA, ``torch.compile`` and multi-GPU DDP (launched by
  ``torchrun``; only rank 0 writes files);
* checkpoints (modules, optimisers, grad scaler, step, RNG states of every rank, configs, genres,
  spectrogram parameters, history): the newest ``keep_last`` plus ``best.pt`` by validation;
* validation every ``val_every`` steps on fixed held-out clips (``recipe.eval_step``; its first
  key, lower is better, picks ``best.pt``), sample spectrograms every ``sample_every`` steps;
* logs: a tqdm progress bar with the losses, ``history.json`` + ``loss.png``, ``train.log``,
  ``run.json`` (what was trained, readable without loading tensors), and callbacks (``on_log``)
  for live plots in notebooks;
* no host syncs per step: the losses a step returns stay on the device and are read back once
  per log interval (and before validation, samples and checkpoints);
* safety: a NaN/inf loss stops the run with :class:`~nmusic.errors.TrainingDiverged` before it can
  overwrite a checkpoint (under fp16 the grad scaler skips such a step instead, and only a long run
  of skipped steps counts as divergence); ``time_budget_s`` stops cleanly with a checkpoint; a
  failing periodic sample is reported and training goes on (the checkpoint is written first);
  checkpoints are written from a background thread, and one session at a time holds the run
  folder (:class:`~nmusic.training.checkpoint.RunLock`).

Run directory::

    run.json  train.log  history.json  loss.png  ckpt-XXXXXXXX.pt ...  best.pt  samples/step-XXXXXXXX.png
    session.lock   (while a session trains in it)

What a recipe must respect (so that DDP, compile, AMP and exact resume work):

* reach modules through ``self.modules[name]`` inside ``train_step`` (the trainer swaps in DDP /
  compiled wrappers for modules with trainable parameters while training, and the raw modules
  back for ``eval_step``/``sample`` and after ``fit``); ``Recipe.unwrap`` gives the raw module;
* call each wrapped module at most once per backward (concatenate real and fake batches), and
  only through ``forward``: DDP synchronises gradients of what ``forward`` computed;
* use ``ctx.autocast()``, ``ctx.backward(loss)`` and ``ctx.step(optimizer)``;
* draw randomness from the global torch/NumPy/Python RNGs (or a generator seeded from
  ``ctx.step``): they are checkpointed per rank; return the losses as detached 0-dim tensors (or
  floats), NaN included (the trainer stops every rank together), rather than raising inside
  ``train_step``, and never read a device value on the host there (``.item()``, ``float()``);
* ``extra_state()`` and the config hold tensors and builtins only (checkpoints load with
  ``weights_only=True``).
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .. import __version__
from ..frontend import MelFrontEnd, SpecParams
from .checkpoint import (BEST, BackgroundWriter, RunLock, atomic_write_json, cpu_snapshot, list_checkpoints,
                         load_checkpoint, looks_complete, remove_stale_temporaries, save_checkpoint)
from ..config import from_dict, to_dict
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..models.base import Recipe, StepContext

UNTIL_BUDGET = 10**9  # ``steps`` meaning "until the time budget runs out"
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)
MAX_SKIPPED_IN_A_ROW = 25  # fp16: this many steps in a row skipped by the grad scaler count as divergence


@dataclass
class TrainConfig:
    """How to train (the model's own hyper-parameters live in the recipe's config).

    Intervals are in optimisation steps; 0 switches the event off (a final checkpoint is always
    written). ``batch_size`` and ``clip_frames`` come from the model config and are per process.
    """

    steps: int = 1000
    log_every: int = 10
    ckpt_every: int = 200
    keep_last: int = 3
    val_every: int = 200
    val_clips: int | None = 256       # at most this many fixed validation clips (None: all)
    sample_every: int = 1000
    samples_per_genre: int = 1
    amp: str = "auto"                 # "auto" | "none" | "bf16" | "fp16" (see resolve_amp)
    compile: bool = False             # torch.compile the trainable modules
    compile_backend: str = "inductor"  # torch.compile backend ("eager"/"aot_eager" to debug compile issues)
    device: str = "auto"              # "auto" | "cpu" | "cuda" | "cuda:N"
    num_workers: int = 0              # DataLoader worker processes
    seed: int = 0
    grad_clip: float | None = None    # max gradient norm per optimiser step (None: no clipping)
    time_budget_s: float | None = None  # stop cleanly (with a checkpoint) after this many seconds
    progress: bool = True             # tqdm progress bar
    deterministic: bool = False       # deterministic CUDA kernels (slower; exact reruns on one GPU)

    def __post_init__(self):
        checks = [
            (self.steps >= 0, "steps", "must be >= 0"),
            (self.log_every >= 1, "log_every", "must be >= 1"),
            (self.keep_last >= 1, "keep_last", "must be >= 1"),
            (min(self.ckpt_every, self.val_every, self.sample_every) >= 0, "ckpt_every/val_every/sample_every",
             "must be >= 0 (0 = off)"),
            (self.val_clips is None or self.val_clips >= 1, "val_clips", "must be >= 1 or None"),
            (self.samples_per_genre >= 1, "samples_per_genre", "must be >= 1"),
            (self.amp in AMP_CHOICES, "amp", f"must be one of {list(AMP_CHOICES)}"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
            (self.num_workers >= 0, "num_workers", "must be >= 0"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be > 0 or None"),
            (self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s", "must be > 0 or None"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(f"TrainConfig.{name} {message} (got {self})")


class Callback:
    """Hooks called on rank 0; override what you need. A plain function is taken as ``on_log``.

    ``on_checkpoint`` is called from the checkpoint writer's thread, once the file is in place."""

    def on_log(self, step: int, metrics: dict) -> None:
        """Every history entry: ``{"step", "split": "train"|"val", <losses>...}``."""

    def on_sample(self, step: int, mel: torch.Tensor, genres: list[str], path: Path) -> None:
        """Sample spectrograms ``(N, n_mels, frames)`` (genre name per row) and their PNG."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_end(self, history: list[dict]) -> None:
        pass


# --- RNG state (every source the recipes may draw from) ---------------------------------------------
def rng_state(device: torch.device) -> dict:
    """Torch CPU, CUDA (training device), NumPy and Python RNG states as tensors/builtins."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate()}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- device, distributed -----------------------------------------------------------------------------
def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets (0, 1, 0 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)))


def resolve_device(name="auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The one device resolver: ``"auto"`` is the GPU when there is one, else the CPU; ``"cuda"`` the
    current GPU (under DDP this process's ``local_rank``); ``"cpu"``, ``"cuda:N"`` or a ``torch.device``."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name == "cuda" or re.fullmatch(r"cuda:\d+", name or "")):
        raise ConfigError(f"device {name!r} is not one of 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use 'cpu' or 'auto'")
        if name == "cuda":
            return torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    return torch.device(name)


def bf16_native(device: torch.device) -> bool:
    """Whether the GPU computes bfloat16 in hardware (compute capability 8.0+: A100, L4, H100, ...).
    ``torch.cuda.is_bf16_supported()`` also says yes where it is only emulated (a T4)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_amp(amp: str, device: torch.device, recipe) -> str:
    """The training precision for ``amp`` ("auto", "none", "bf16", "fp16") of ``recipe`` (an instance
    or class; its ``recurrent`` flag matters) on ``device``; raises :class:`ConfigError` for a
    combination that would run but not safely.

    ``auto``: fp32 on a CPU. On CUDA, fp16 with the grad scaler for recurrent models (autocast runs
    cuDNN RNNs in fp16 whatever was asked, so fp16 with its scaler is the safe and fast choice), and
    for the others bf16 where the GPU has it natively, else fp16 with the scaler. Asked-for bf16 runs
    MelNet's RNNs outside autocast in fp32 (:func:`nmusic.models.melnet.layers.call_rnn`).
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp must be one of {list(AMP_CHOICES)} (got {amp!r})")
    cuda = device.type == "cuda"
    if amp == "auto":
        if not cuda:
            return "none"
        return "fp16" if getattr(recipe, "recurrent", False) or not bf16_native(device) else "bf16"
    if amp == "fp16" and not cuda:
        raise ConfigError("amp='fp16' needs a CUDA GPU (fp16 on a CPU is unsupported); use amp='auto', 'bf16' or "
                          "'none' on a CPU")
    if amp == "bf16" and cuda and not bf16_native(device):
        raise ConfigError(f"amp='bf16': {torch.cuda.get_device_name(device)} has no native bfloat16 (it would "
                          f"be emulated, slowly); use amp='auto' (fp16 with a grad scaler there) or 'none'")
    return amp


def configure_cuda(deterministic: bool = False) -> None:
    """Settings for fixed-shape training on CUDA: cuDNN picks its fastest kernels (autotuning), fp32
    matmuls and convolutions use TF32 tensor cores. ``deterministic``: reproducible kernels instead."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def plain(obj):
    """Tensors and builtins only (what ``torch.load(weights_only=True)`` accepts), recursively.

    str/int/float subclasses (``torch.__version__``, numpy scalars, ...) become the builtin, any
    other object its ``str``.
    """
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, torch.Tensor) or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, (torch.dtype, torch.device)):
        return obj
    return str(obj)


def _config_diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# --- the trainer ---------------------------------------------------------------------------------------
class Trainer:
    """Train ``recipe`` on the clips of ``cache`` (files ``train_files``), validating on ``val_files``.

    >>> trainer = Trainer(recipe, cache, "runs/cmelgan-tiny", TrainConfig(steps=2000), train, val, "tiny")
    >>> history = trainer.fit(resume=True)   # continues from the newest checkpoint in the run dir

    ``clip_frames``/``batch_size`` default to ``recipe.config.clip_frames``/``.batch_size``.
    """

    def __init__(self, recipe: Recipe, cache, run_dir, cfg: TrainConfig, train_files, val_files,
                 model_preset: str, callbacks=(), *, clip_frames: int | None = None, batch_size: int | None = None,
                 run_info: dict | None = None):
        if not isinstance(cfg, TrainConfig):
            raise ConfigError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
        self.recipe, self.cache, self.cfg, self.model_preset = recipe, cache, cfg, model_preset
        self.run_dir = Path(run_dir)
        self.train_files, self.val_files = list(train_files), list(val_files)
        self.callbacks = list(callbacks)
        self.extra_run_info = dict(run_info or {})  # e.g. where the data came from, for `nmusic evaluate`
        self.clip_frames = int(clip_frames or self._from_model_config("clip_frames"))
        self.batch_size = int(batch_size or self._from_model_config("batch_size"))
        if self.clip_frames < 2 or self.batch_size < 1:
            raise ConfigError(f"need clip_frames >= 2 and batch_size >= 1 (got {self.clip_frames}, {self.batch_size})")
        self.spec: SpecParams = recipe.spec
        self.clip_samples = self.spec.samples(self.clip_frames)
        if int(cache.sample_rate) != self.spec.sample_rate:
            raise ConfigError(
                f"the audio cache holds {cache.sample_rate} Hz audio but the model's spectrogram needs "
                f"{self.spec.sample_rate} Hz; re-create the cache with `nmusic prepare ... --sample-rate "
                f"{self.spec.sample_rate}` or pick a model config whose spec matches")
        if list(cache.genres) != list(recipe.genres):
            raise ConfigError(f"the recipe was built for genres {recipe.genres} but the audio cache has "
                              f"{list(cache.genres)}; build the recipe with cache.genres")
        if not self.train_files:
            raise ConfigError("train_files is empty: there is no audio to train on")
        self.rank, self.world_size, self.local_rank = distributed_env()
        self.device = resolve_device(cfg.device, self.local_rank, self.world_size)
        self.amp = resolve_amp(cfg.amp, self.device, recipe)
        self.amp_dtype = AMP_DTYPES[self.amp]
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.step = 0
        self.session_start_step = 0  # the step this fit() started from
        self.history: list[dict] = []
        self.best: dict | None = None
        self.checkpoint_path: Path | None = None  # newest checkpoint written or resumed from
        self.resumed_from: Path | None = None
        self._pending = {"sums": {}, "count": 0}  # losses since the last log entry, read back
        self._unread: list[tuple[int, dict]] = []  # (step, losses) not read back from the device yet
        self._skipped = {"total": 0, "in_a_row": 0, "since_log": 0}  # steps the fp16 grad scaler skipped
        self._writer = BackgroundWriter()
        self._lock: RunLock | None = None
        self._elapsed_before = 0.0  # training seconds of earlier sessions
        self._raw_modules = dict(recipe.modules)
        self._owns_process_group = False
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_plot = time.monotonic()

    def _from_model_config(self, name: str) -> int:
        value = getattr(self.recipe.config, name, None)
        if value is None:
            raise ConfigError(f"the model config has no {name!r} field; pass {name}= to Trainer")
        return value

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- public ----------------------------------------------------------------------------------
    def fit(self, resume: bool = True) -> list[dict]:
        """Train until ``cfg.steps`` (or the time budget); returns the history (list of log entries)."""
        started = time.monotonic()
        self._init_distributed()
        try:
            self._setup(resume)
            self._loop(started)
            self._writer.wait()
            self._emit("on_end", self.history)
            return self.history
        finally:
            try:
                self._writer.wait()
            finally:
                self.recipe.modules.update(self._raw_modules)
                if self.is_main and self.history:
                    self._write_history(plot=True)
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                if self._owns_process_group:
                    dist.destroy_process_group()
                    self._owns_process_group = False

    # --- set-up ------------------------------------------------------------------------------------
    def _init_distributed(self) -> None:
        if self.world_size > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(hours=1))
            self._owns_process_group = True

    def _setup(self, resume: bool) -> None:
        recipe = self.recipe
        if self.is_main:   # one session per run folder, held before anything in it is read
            self._lock = RunLock(self.run_dir).acquire()
            for stale in remove_stale_temporaries(self.run_dir):
                self._say(f"removed {stale.name}, left by an interrupted write")
        if self.device.type == "cuda":
            configure_cuda(self.cfg.deterministic)
        recipe.modules.update(self._raw_modules)
        recipe.to(self.device)
        for m in recipe.modules.values():
            if any(p.requires_grad for p in m.parameters()):
                m.train()
        self.front_end = MelFrontEnd(self.spec).to(self.device)
        existing = list_checkpoints(self.run_dir)
        state, path = self._find_checkpoint(existing) if resume else (None, None)
        if state is not None:
            self._restore(state, path)
        else:
            if existing and not resume:
                raise CheckpointError(
                    f"{self.run_dir} already holds checkpoints ({existing[-1].name}, ...) and resume=False; "
                    f"use another run directory for a fresh run, delete its ckpt-*.pt files, or resume")
            seed_everything(self.cfg.seed + 10007 * self.rank)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "run.json", self._run_info())
            hours = float(self.cache.lengths.sum()) / self.cache.sample_rate / 3600
            self._say(f"training data: {self.extra_run_info.get('cache', 'an in-memory cache')} ({hours:.2f} h at "
                      f"{self.cache.sample_rate} Hz, genres {list(self.cache.genres)}; {len(self.train_files)} files "
                      f"for training, {len(self.val_files)} held out)")
            self._say(f"{'resumed from ' + path.name if path else 'new run'} at step {self.step}"
                      f"{'' if self.cfg.steps >= UNTIL_BUDGET else '/' + str(self.cfg.steps)}: "
                      f"{recipe.name} ({self.model_preset}), {recipe.n_params():,} parameters, "
                      f"device {self.device}, amp {self.amp}"
                      f"{' (auto)' if self.cfg.amp == 'auto' else ''}, world size {self.world_size}")
        self._wrap_modules()

    def _find_checkpoint(self, paths: list[Path]) -> tuple[dict | None, Path | None]:
        """Newest checkpoint that loads; incomplete ones (an interrupted write) are skipped with a note.

        If checkpoints exist but none loads, the error is raised: never silently start afresh.
        """
        errors = []
        for path in reversed(paths):
            if not looks_complete(path):
                self._say(f"skipping incomplete checkpoint {path.name} (interrupted write)")
                continue
            try:
                return load_checkpoint(path), path
            except CheckpointError as e:
                self._say(f"skipping unreadable checkpoint: {e}")
                errors.append(e)
        if errors:
            raise errors[0]
        return None, None

    def _restore(self, state: dict, path: Path) -> None:
        recipe = self.recipe
        if state.get("model") != recipe.name:
            raise CheckpointError(f"{path} is a {state.get('model')!r} checkpoint, not {recipe.name!r}; "
                                  f"use another run directory for a {recipe.name} run")
        if list(state["genres"]) != list(self.cache.genres):
            raise CheckpointError(
                f"{path} was trained on genres {list(state['genres'])} but the dataset now has "
                f"{list(self.cache.genres)}; genre ids would change meaning. Resume with the same genre folders "
                f"(add/remove folders to match), or start a new run directory")
        if state["spec"] != self.spec.to_dict():
            raise CheckpointError(f"{path} used other spectrogram parameters ("
                                  + "; ".join(_config_diff(state["spec"], self.spec.to_dict()))
                                  + "); resume with the same model config, or start a new run directory")
        saved, now = dict(state["model_config"]), plain(to_dict(recipe.config))
        for name in recipe.schedule_fields:
            saved.pop(name, None)
            now.pop(name, None)
        diff = _config_diff(saved, now)
        if diff:
            raise CheckpointError(f"{path} was trained with another model config ({'; '.join(diff)}); resume with "
                                  f"the preset and overrides in run.json ({state.get('preset')!r}), or start a "
                                  f"new run directory")
        load_states(recipe, state, path, optimizers=True)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state.get("rng") or []
        if self.rank < len(rngs) and len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank], self.device)
        else:  # another world size: reseed deterministically (data stays exact: it is keyed by step)
            seed_everything(self.cfg.seed + 10007 * self.rank + state["step"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.best = state.get("best")
        self._pending = state.get("log_pending") or {"sums": {}, "count": 0}
        self._skipped = {"total": 0, "in_a_row": 0, "since_log": 0, **(state.get("skipped_steps") or {})}
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self.checkpoint_path = self.resumed_from = path
        changed = _config_diff(state.get("train_config", {}), plain(to_dict(self.cfg)))
        if changed and self.is_main:
            self._say("train config changed since the checkpoint: " + "; ".join(changed))

    def _wrap_modules(self) -> None:
        """DDP (when distributed) then ``torch.compile`` around every module with trainable parameters."""
        for name, module in self._raw_modules.items():
            if not any(p.requires_grad for p in module.parameters()):
                continue
            wrapped = module
            if self.world_size > 1:
                ids = [self.device.index] if self.device.type == "cuda" else None
                wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
            if self.cfg.compile:
                wrapped = torch.compile(wrapped, backend=self.cfg.compile_backend)
            self.recipe.modules[name] = wrapped

    def _run_info(self) -> dict:
        return {"model": self.recipe.name, "preset": self.model_preset, "model_config": to_dict(self.recipe.config),
                "train_config": to_dict(self.cfg), "genres": list(self.recipe.genres), "spec": self.spec.to_dict(),
                "clip_frames": self.clip_frames, "batch_size": self.batch_size, "world_size": self.world_size,
                "n_params": self.recipe.n_params(), "train_files": len(self.train_files),
                "val_files": len(self.val_files), "nmusic_version": __version__,
                "torch_version": str(torch.__version__), **self.extra_run_info}

    # --- the loop ----------------------------------------------------------------------------------
    def _loop(self, started: float) -> None:
        from ..data.cache import make_loader

        cfg = self.cfg
        self.session_start_step = self.step
        if self.step >= cfg.steps:
            if self.is_main:
                self._say(f"already at step {self.step} >= steps={cfg.steps}; raise steps to train further")
            return
        loader = make_loader(self.cache, self.train_files, self.clip_samples, self.batch_size, seed=cfg.seed,
                             start_step=self.step, steps=cfg.steps, num_workers=cfg.num_workers,
                             pin_memory=self.device.type == "cuda", rank=self.rank, world_size=self.world_size)
        open_ended = cfg.time_budget_s is not None and cfg.steps >= UNTIL_BUDGET  # the clock decides
        bar = tqdm(total=None if open_ended else cfg.steps, initial=self.step, desc=f"{self.recipe.name}", unit="step", dynamic_ncols=True,
                   disable=not (self.is_main and cfg.progress))
        try:
            for wave, genre in loader:
                wave = wave.to(self.device, non_blocking=True)
                genre = genre.to(self.device, non_blocking=True)
                with torch.no_grad():
                    mel = self.front_end(wave)
                ctx = StepContext(step=self.step, device=self.device, amp_dtype=self.amp_dtype, scaler=self.scaler,
                                  grad_clip=cfg.grad_clip, rank=self.rank, world_size=self.world_size)
                self._unread.append((self.step, self.recipe.train_step(mel, genre, ctx)))
                out_of_time = cfg.time_budget_s is not None and time.monotonic() - started >= cfg.time_budget_s
                out_of_time = self._agree(out_of_time and self.is_main) if cfg.time_budget_s is not None else False
                self.step += 1
                bar.update(1)
                s, final = self.step, self.step >= cfg.steps
                log = s % cfg.log_every == 0 or final or out_of_time
                validate = bool(self.val_files and cfg.val_every and s % cfg.val_every == 0)
                sample = bool(cfg.sample_every and (s % cfg.sample_every == 0 or final))
                ckpt = bool(cfg.ckpt_every and s % cfg.ckpt_every == 0) or final or out_of_time
                if log or validate or sample or ckpt:
                    self._read_back()          # the one host sync; a divergence stops here, before any write
                if log:
                    self._log_train(started, bar)
                is_best = self._validate() if validate else False
                if ckpt or is_best:
                    self._checkpoint(started, is_best)
                if sample and self.is_main:
                    self._sample_safely()
                if out_of_time:
                    if self.is_main:
                        self._say(f"time budget of {cfg.time_budget_s:g} s reached at step {s}; checkpoint saved, "
                                  f"resume to continue")
                    break
        finally:
            bar.close()

    def _agree(self, flag: bool) -> bool:
        """All ranks decide together: true on any rank is true on every rank (one all-reduce)."""
        if self.world_size == 1:
            return flag
        flags = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0])

    def _read_back(self) -> None:
        """Bring the losses of the steps since the last read back to the host (one transfer for all),
        add the finite ones to the log sums, and stop on divergence (every rank together).

        With the fp16 grad scaler a non-finite step is one the scaler skipped (it lowers its scale);
        it is counted, not logged, and only ``MAX_SKIPPED_IN_A_ROW`` of them in a row are divergence.
        """
        unread, self._unread = self._unread, []
        tensors = [v for _, losses in unread for v in losses.values() if isinstance(v, torch.Tensor)]
        values = iter(torch.stack([t.detach().reshape(()).double() for t in tensors]).tolist() if tensors else [])
        bad = None
        for index, losses in unread:
            floats = {k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()}
            if all(math.isfinite(v) for v in floats.values()):
                self._skipped["in_a_row"] = 0
                self._accumulate(floats)
                continue
            if self.scaler is not None:
                self._skipped["total"] += 1
                self._skipped["since_log"] += 1
                self._skipped["in_a_row"] += 1
                if self._skipped["in_a_row"] < MAX_SKIPPED_IN_A_ROW:
                    continue
            bad = (index + 1, {k: v for k, v in floats.items() if not math.isfinite(v)})
            break
        if self._agree(bad is not None):
            self._diverged(*(bad or (self.step, {})))

    def _diverged(self, step: int, bad: dict) -> None:
        self._writer.wait()            # the last good checkpoint, if one is being written, is complete
        where = (f"the last good checkpoint {self.checkpoint_path} is intact" if self.checkpoint_path
                 else "no checkpoint was written yet")
        shown = ", ".join(f"{k}={v}" for k, v in bad.items()) or "a loss on another rank"
        skipped = (f" after {self._skipped['in_a_row']} steps in a row skipped by the fp16 grad scaler"
                   if self.scaler is not None else "")
        raise TrainingDiverged(
            f"training diverged at step {step}: {shown} (not finite){skipped}; stopped without saving, {where}. "
            f"Lower the learning rate, set grad_clip (`--set grad_clip=1.0`, or train_overrides={{'grad_clip': 1.0}}), "
            f"or use amp='bf16'/'none' instead of 'fp16', then resume")

    def _accumulate(self, losses: dict) -> None:
        sums = self._pending["sums"]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        self._pending["count"] += 1

    def _log_train(self, started: float, bar) -> None:
        count = max(self._pending["count"], 1)
        entry = {"step": self.step, "split": "train", **{k: v / count for k, v in self._pending["sums"].items()}}
        if self.scaler is not None:
            entry["skipped_steps"] = self._skipped["since_log"]
            self._skipped["since_log"] = 0
        session = time.monotonic() - started
        entry["elapsed_s"] = round(self._elapsed_before + session, 3)
        entry["steps_per_s"] = round((self.step - self.session_start_step) / max(session, 1e-9), 3)
        self._pending = {"sums": {}, "count": 0}
        self._record(entry)
        bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k not in ("step", "split", "elapsed_s")},
                        refresh=False)

    def _record(self, entry: dict) -> None:
        self.history.append(entry)
        self._emit("on_log", entry["step"], entry)

    # --- validation and samples (rank 0, raw modules, eval mode, training RNG untouched) ---------------
    @contextlib.contextmanager
    def _inference(self):
        wrapped = dict(self.recipe.modules)
        modes = {name: m.training for name, m in self._raw_modules.items()}
        saved = rng_state(self.device)
        self.recipe.modules.update(self._raw_modules)
        try:
            for m in self._raw_modules.values():
                m.eval()
            with torch.no_grad():
                yield
        finally:
            set_rng_state(saved, self.device)
            for name, m in self._raw_modules.items():
                m.train(modes[name])
            self.recipe.modules.update(wrapped)

    def _validate(self) -> bool:
        """Validation losses into the history; True when the first one is the best so far (all ranks)."""
        is_best = False
        if self.is_main:
            if self._val is None:
                from ..data.cache import fixed_clips
                self._val = fixed_clips(self.cache, self.val_files, self.clip_samples, seed=self.cfg.seed,
                                        max_clips=self.cfg.val_clips)
            wave, genre = self._val
            totals: dict[str, float] = {}
            with self._inference():
                for i in range(0, len(wave), self.batch_size):
                    w = wave[i:i + self.batch_size].to(self.device)
                    metrics = self.recipe.eval_step(self.front_end(w), genre[i:i + self.batch_size].to(self.device))
                    for k, v in metrics.items():
                        totals[k] = totals.get(k, 0.0) + float(v) * len(w)
            if totals:
                entry = {"step": self.step, "split": "val", **{f"val_{k}": v / len(wave) for k, v in totals.items()}}
                self._record(entry)
                key = next(iter(totals))
                value = entry[f"val_{key}"]
                if self.recipe.selects_best and math.isfinite(value) and (
                        self.best is None or value < self.best["value"]):
                    self.best = {"metric": f"val_{key}", "value": value, "step": self.step}
                    is_best = True
        if self.world_size > 1:
            flag = [is_best]
            dist.broadcast_object_list(flag, src=0)
            is_best = flag[0]
        return is_best

    def _sample_safely(self) -> None:
        """Periodic samples are a by-product: one that fails (out of memory, a bug) is reported in the
        log and training goes on; the checkpoint of this step is already written."""
        try:
            self._sample()
        except Exception as e:  # noqa: BLE001 - anything but an interrupt
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            detail = (str(e).strip().splitlines() or [""])[0][:300]
            self._say(f"sampling at step {self.step} failed ({type(e).__name__}: {detail}); no samples this time, "
                      f"training goes on")

    def _sample(self) -> None:
        genres = self.recipe.genres
        ids = torch.arange(len(genres), device=self.device).repeat_interleave(self.cfg.samples_per_genre)
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed)
        with self._inference():
            try:
                mel = self.recipe.sample(ids, generator=generator)
            except NotImplementedError:
                return
        names = [genres[i] for i in ids.tolist()]
        path = self.run_dir / "samples" / f"step-{self.step:08d}.png"
        from .. import plots
        plots.spectrogram_grid(mel.float().cpu(), [f"{g} (step {self.step})" for g in names], path=path,
                               cols=self.cfg.samples_per_genre if self.cfg.samples_per_genre > 1 else 3)
        self._emit("on_sample", self.step, mel, names, path)

    # --- files -----------------------------------------------------------------------------------------
    def state_dict(self, elapsed_s: float, rngs: list) -> dict:
        """Everything :func:`save_checkpoint` writes (see the module docstring of nmusic.training.checkpoint)."""
        recipe = self.recipe
        return plain({
            "model": recipe.name, "preset": self.model_preset, "model_config": to_dict(recipe.config),
            "train_config": to_dict(self.cfg), "spec": self.spec.to_dict(), "genres": list(recipe.genres),
            "step": self.step,
            "modules": {n: Recipe.unwrap(m).state_dict() for n, m in recipe.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in recipe.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs, "history": list(self.history), "best": self.best, "extra": recipe.extra_state(),
            "log_pending": {"sums": dict(self._pending["sums"]), "count": self._pending["count"]},
            "skipped_steps": dict(self._skipped),
            "elapsed_s": elapsed_s, "world_size": self.world_size, "clip_frames": self.clip_frames,
            "batch_size": self.batch_size, "nmusic_version": __version__, "torch_version": str(torch.__version__),
        })

    def _checkpoint(self, started: float, is_best: bool) -> None:
        """Snapshot the state to the CPU now, write it from the background writer (training goes on)."""
        mine = rng_state(self.device)
        if self.world_size > 1:
            rngs = [None] * self.world_size
            dist.all_gather_object(rngs, mine)
        else:
            rngs = [mine]
        if not self.is_main:
            return
        self._lock.check()            # another session took the run folder over: stop before writing
        elapsed = self._elapsed_before + time.monotonic() - started
        state, step = cpu_snapshot(self.state_dict(elapsed, rngs)), self.step

        def write():
            path = save_checkpoint(state, self.run_dir, step, keep_last=self.cfg.keep_last, is_best=is_best)
            self.checkpoint_path = path
            self._emit("on_checkpoint", step, path)

        self._writer.submit(write)
        self._write_history()

    def _write_history(self, plot: bool = False) -> None:
        """history.json; loss.png too when ``plot`` or when the last plot is a minute old."""
        atomic_write_json(self.run_dir / "history.json", self.history)
        keys = [k for k in dict.fromkeys(k for h in self.history for k in h)
                if k not in ("step", "split", "elapsed_s", "steps_per_s", "skipped_steps")]
        if keys and (plot or time.monotonic() - self._last_plot >= 60):
            self._last_plot = time.monotonic()
            from .. import plots
            tmp = self.run_dir / f".tmp-{os.getpid()}-{threading.get_ident()}-loss.png"
            plots.loss_curves(self.history, path=tmp, keys=keys)
            os.replace(tmp, self.run_dir / "loss.png")

    def _say(self, message: str) -> None:
        if not self.is_main:
            return
        if self.cfg.progress:
            tqdm.write(f"[nmusic] {message}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{datetime.datetime.now().isoformat(timespec='seconds')} {message}\n")

    def _emit(self, hook: str, *args) -> None:
        if not self.is_main:
            return
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is None and hook == "on_log" and callable(cb):
                fn = cb
            if fn is not None:
                fn(*args)


# --- loading trained runs ------------------------------------------------------------------------------
def load_states(recipe: Recipe, state: dict, path, optimizers: bool = False) -> None:
    """Load module (and optimiser) states and the recipe's extra state from checkpoint dict ``state``."""
    try:
        missing = sorted(set(recipe.modules) - set(state["modules"]))
        if missing:
            raise KeyError(f"no state for module(s) {missing}")
        for name, module in recipe.modules.items():
            Recipe.unwrap(module).load_state_dict(state["modules"][name])
        if optimizers:
            for name, opt in recipe.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        recipe.load_extra_state(state.get("extra") or {})
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit this {recipe.name} model ({str(e).splitlines()[0][:300]}); it was "
                              f"written with another config or code version; use a matching run directory") from None


def describe_checkpoint(state: dict) -> str:
    """``ckpt-00004000.pt (step 4000, the latest)``: which checkpoint :func:`load_run` took, and why."""
    name = Path(state.get("checkpoint_path") or "?").name
    return f"{name} (step {state.get('step', '?')}, {state.get('checkpoint_choice') or 'given'})"


def load_run(run_dir_or_ckpt, device="auto", registry: dict | None = None, which: str = "best") -> tuple[Recipe, dict]:
    """Rebuild the trained recipe of a run (in eval mode on ``device``; ``auto``: the GPU when there is
    one) and return it with its checkpoint.

    ``run_dir_or_ckpt``: a run directory or a checkpoint file. In a directory, ``which="best"`` takes
    ``best.pt`` when the model selects one by validation (MelNet: held-out likelihood), else the newest
    checkpoint (cMelGAN keeps no ``best.pt``: its validation statistic is not a quality measure);
    ``which="latest"`` takes the newest. The returned dict also says which file it was
    (``checkpoint_path``) and why (``checkpoint_choice``; :func:`describe_checkpoint` prints both).
    ``registry`` maps model names to ``(presets, RecipeClass)`` (default: :func:`nmusic.models.registry`).
    """
    path = Path(run_dir_or_ckpt)
    if which not in ("best", "latest"):
        raise ConfigError(f"which must be 'best' or 'latest' (got {which!r})")
    if registry is None:
        try:
            from ..models import registry as model_registry
            registry = model_registry()
        except ImportError as e:
            raise CheckpointError(f"{path}: the model code could not be imported ({e}); reinstall nmusic") from None
    choice = "given"
    state = None
    if path.is_dir():
        newest = [p for p in reversed(list_checkpoints(path)) if looks_complete(p)]
        best = path / BEST
        if which == "best" and best.is_file() and looks_complete(best):
            state = load_checkpoint(best)
            entry = registry.get(state.get("model"))
            if entry is not None and entry[1].selects_best:
                path, choice = best, f"the best by validation {(state.get('best') or {}).get('metric', '')}".strip()
            else:
                state = None  # a best.pt this model family does not select by (older cMelGAN runs)
        if state is None:
            if not newest:
                raise CheckpointError(f"no complete checkpoint in {path}; train a model into it first "
                                      f"(`nmusic train MODEL --run {path}`)")
            path, choice = newest[0], "the latest"
    if state is None:
        state = load_checkpoint(path)
    model = state.get("model")
    if model not in registry:
        raise CheckpointError(f"{path} holds a {model!r} model, which this nmusic does not know "
                              f"(known: {sorted(registry)})")
    presets, recipe_cls = registry[model]
    config_cls = type(next(iter(presets.values())))
    try:
        config = from_dict(config_cls, state["model_config"])
        spec = SpecParams.from_dict(state["spec"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config does not fit this nmusic version ({e})") from None
    recipe = recipe_cls(config, spec, list(state["genres"]))
    load_states(recipe, state, path)
    recipe.to(resolve_device(device) if isinstance(device, str) else torch.device(device))
    for m in recipe.modules.values():
        m.eval()
    state["checkpoint_path"], state["checkpoint_choice"] = str(path), choice
    return recipe, state
