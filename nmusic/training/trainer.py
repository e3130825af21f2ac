"""The training loop shared by MelNet and cMelGAN (paper section 4: training set-up).

The paper trained on Colab, where a session can disconnect at any time. So the loop is built
around the run directory (put it on mounted Drive): everything needed to continue *exactly* is
checkpointed atomically, and ``fit(resume=True)`` picks the newest complete checkpoint up again.

What the :class:`Trainer` owns (the :class:`~nmusic.models.base.Recipe` owns the model-specific rest):

* data: what ``recipe.training_data`` gives, by default random clips from
  :func:`nmusic.data.clips.make_loader` (:class:`~nmusic.data.clips.AudioClips`), whose batches depend
  only on ``(seed, rank, step)``, turned into normalised log-mel on the training device by
  :class:`~nmusic.frontend.MelFrontEnd`; each clip is ``clip_frames`` frames long (a note-based family,
  MidiNet, brings piano-roll bars instead);
* device (``auto``: the GPU when there is one), mixed precision (``amp``: bf16/fp16 through
  :class:`~nmusic.models.base.StepContext`; ``auto`` picks per model and GPU,
  :func:`nmusic.device.resolve_amp`), cuDNN autotuning and TF32 matmuls on CUDA, ``torch.compile``
  and multi-GPU DDP (launched by ``torchrun``, :mod:`nmusic.training.distributed`; only rank 0
  writes files);
* checkpoints (:mod:`nmusic.training.checkpoint`: modules, optimisers, grad scaler, step, RNG states
  of every rank (:mod:`nmusic.training.rng`), configs, genres, spectrogram parameters, history): the
  newest ``keep_last`` plus ``best.pt`` by validation;
* validation every ``val_every`` steps on fixed held-out clips (``recipe.eval_step``; its first
  key, lower is better, picks ``best.pt``), sample spectrograms every ``sample_every`` steps;
* logs: a progress bar with the losses, ``history.json`` + ``loss.png`` (one panel per group of
  losses), ``train.log``, ``run.json`` (what was trained, readable without loading tensors), and
  callbacks (``on_log``) for live plots in notebooks;
* no host syncs per step: the losses a step returns stay on the device and are read back once
  per log interval (and before validation, samples and checkpoints, :mod:`nmusic.training.loss_log`);
* safety: a NaN/inf loss stops the run with :class:`~nmusic.errors.TrainingDiverged` before it can
  overwrite a checkpoint (under fp16 the grad scaler skips such a step instead, and only a long run
  of skipped steps counts as divergence); ``time_budget_s`` stops cleanly with a checkpoint; a
  failing periodic sample is reported and training goes on (the checkpoint is written first);
  checkpoints are written from a background thread, and one session at a time holds the run
  folder (:class:`~nmusic.training.run_lock.RunLock`).

Run directory::

    run.json  train.log  history.json  loss.png  ckpt-XXXXXXXX.pt ...  best.pt  samples/step-XXXXXXXX.png
    session.lock   (while a session trains in it)

The contract a recipe keeps (so that DDP, compile, AMP and exact resume work) is in
:mod:`nmusic.models.base`. Opening a trained run, and ``nmusic train``'s entry point, are in
:mod:`nmusic.training.runs`.

This module runs past 400 lines on purpose: it is the one training loop, kept whole so that it
reads top to bottom in the order a step runs; everything that is not the loop (checkpoint files,
the run lock, RNG states, DDP collectives, the loss read-back, the precision choice, run loading)
lives in its own module.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__, plots
from ..config import require, to_dict
from ..device import AMP_CHOICES, AMP_DTYPES, configure_cuda, resolve_amp, resolve_device
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..frontend import SpecParams
from ..models.base import Recipe, StepContext
from ..utils.files import atomic_write_json
from ..utils.progress import progress_bar, say
from . import distributed
from .checkpoint import (BackgroundWriter, check_resumable, config_diff, cpu_snapshot, list_checkpoints, load_newest,
                         remove_stale_temporaries, save_checkpoint, tensors_and_builtins)
from .loss_log import LossLog
from .rng import rng_state, seed_everything, set_rng_state
from .run_lock import RunLock

UNTIL_BUDGET = 10**9  # ``steps`` meaning "until the time budget runs out"


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
    progress: bool = True             # progress bar (nmusic.utils.progress)
    deterministic: bool = False       # deterministic CUDA kernels (slower; exact reruns on one GPU)

    def __post_init__(self):
        require(self.steps >= 0, self, "steps", "must be >= 0")
        require(self.log_every >= 1, self, "log_every", "must be >= 1")
        require(self.keep_last >= 1, self, "keep_last", "must be >= 1")
        for name in ("ckpt_every", "val_every", "sample_every"):
            require(getattr(self, name) >= 0, self, name, "must be >= 0 (0 = off)")
        require(self.val_clips is None or self.val_clips >= 1, self, "val_clips", "must be >= 1 or None")
        require(self.samples_per_genre >= 1, self, "samples_per_genre", "must be >= 1")
        require(self.amp in AMP_CHOICES, self, "amp", f"must be one of {list(AMP_CHOICES)}")
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), self, "device",
                "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        require(self.num_workers >= 0, self, "num_workers", "must be >= 0")
        require(self.grad_clip is None or self.grad_clip > 0, self, "grad_clip", "must be > 0 or None")
        require(self.time_budget_s is None or self.time_budget_s > 0, self, "time_budget_s", "must be > 0 or None")


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
        if not self.train_files:
            raise ConfigError("train_files is empty: there is nothing to train on")
        self.clip_frames = int(clip_frames or self._from_model_config("clip_frames"))
        self.batch_size = int(batch_size or self._from_model_config("batch_size"))
        if self.clip_frames < 2 or self.batch_size < 1:
            raise ConfigError(f"need clip_frames >= 2 and batch_size >= 1 (got {self.clip_frames}, {self.batch_size})")
        self.spec: SpecParams = recipe.spec
        # audio clips as log-mel, unless the model family brings its own data (notes)
        self.data = recipe.training_data(cache, self.clip_frames, self.train_files)
        self.clip_frames, self.clip_samples = self.data.clip_frames, self.data.clip_samples
        if list(self.data.genres) != list(recipe.genres):
            raise ConfigError(f"the recipe was built for genres {recipe.genres} but the data cache has "
                              f"{list(self.data.genres)}; build the recipe with cache.genres")
        self.rank, self.world_size, self.local_rank = distributed.distributed_env()
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
        self.losses = LossLog(grad_scaler=self.scaler is not None)
        self._writer = BackgroundWriter()
        self._lock: RunLock | None = None
        self._elapsed_before = 0.0  # training seconds of earlier sessions
        self._raw_modules = dict(recipe.modules)
        self._owns_process_group = False  # this trainer started the DDP process group (and ends it)
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
        self._owns_process_group = distributed.start_process_group(self.device, self.world_size)
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
                    distributed.end_process_group()
                    self._owns_process_group = False

    # --- set-up ------------------------------------------------------------------------------------
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
        self.data.to(self.device)
        self.losses = LossLog(grad_scaler=self.scaler is not None)
        existing = list_checkpoints(self.run_dir)
        state, path = load_newest(self.run_dir, say=self._say) if resume else (None, None)
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
            self._say(f"training data: {self.extra_run_info.get('cache', 'an in-memory cache')} ({self.data.describe()}, "
                      f"genres {list(self.data.genres)}; {len(self.train_files)} files "
                      f"for training, {len(self.val_files)} held out)")
            self._say(f"{'resumed from ' + path.name if path else 'new run'} at step {self.step}"
                      f"{'' if self.cfg.steps >= UNTIL_BUDGET else '/' + str(self.cfg.steps)}: "
                      f"{recipe.name} ({self.model_preset}), {recipe.n_params():,} parameters, "
                      f"device {self.device}, amp {self.amp}"
                      f"{' (auto)' if self.cfg.amp == 'auto' else ''}, world size {self.world_size}")
        self._wrap_modules()

    def _restore(self, state: dict, path: Path) -> None:
        recipe = self.recipe
        check_resumable(state, path, recipe, self.data.genres)
        recipe.load_state(state, path, optimizers=True)
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
        self.losses.load_state_dict(state)
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self.checkpoint_path = self.resumed_from = path
        changed = config_diff(state.get("train_config", {}), tensors_and_builtins(to_dict(self.cfg)))
        if changed and self.is_main:
            self._say("train config changed since the checkpoint: " + "; ".join(changed))

    def _wrap_modules(self) -> None:
        """DDP (when distributed) then ``torch.compile`` around every module with trainable parameters."""
        for name, module in self._raw_modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.recipe.modules[name] = distributed.wrap_for_training(
                    module, self.device, self.world_size, self.cfg.compile, self.cfg.compile_backend)

    def _run_info(self) -> dict:
        return {"model": self.recipe.name, "preset": self.model_preset, "model_config": to_dict(self.recipe.config),
                "train_config": to_dict(self.cfg), "genres": list(self.recipe.genres), "spec": to_dict(self.spec),
                "clip_frames": self.clip_frames, "batch_size": self.batch_size, "world_size": self.world_size,
                "n_params": self.recipe.n_params(), "train_files": len(self.train_files),
                "val_files": len(self.val_files), "nmusic_version": __version__,
                "torch_version": str(torch.__version__), **self.extra_run_info}

    # --- the loop ----------------------------------------------------------------------------------
    def _loop(self, started: float) -> None:
        cfg = self.cfg
        self.session_start_step = self.step
        if self.step >= cfg.steps:
            if self.is_main:
                self._say(f"already at step {self.step} >= steps={cfg.steps}; raise steps to train further")
            return
        loader = self.data.loader(self.train_files, self.batch_size, seed=cfg.seed, start_step=self.step,
                                  steps=cfg.steps, num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                                  rank=self.rank, world_size=self.world_size)
        open_ended = cfg.time_budget_s is not None and cfg.steps >= UNTIL_BUDGET  # the clock decides
        bar = progress_bar(total=None if open_ended else cfg.steps, initial=self.step, desc=self.recipe.name,
                           unit="step", dynamic_ncols=True, disable=not (self.is_main and cfg.progress))
        try:
            for wave, genre in loader:
                wave = wave.to(self.device, non_blocking=True)
                genre = genre.to(self.device, non_blocking=True)
                mel = self.data.model_input(wave)
                ctx = StepContext(step=self.step, device=self.device, amp_dtype=self.amp_dtype, scaler=self.scaler,
                                  grad_clip=cfg.grad_clip, rank=self.rank, world_size=self.world_size,
                                  extras={"wave": wave})   # the real audio too (a vocoder learns from it)
                self.losses.add(self.step, self.recipe.train_step(mel, genre, ctx))
                out_of_time = False
                if cfg.time_budget_s is not None:   # rank 0's clock decides, for every rank
                    out_of_time = distributed.any_rank(self.is_main and time.monotonic() - started >= cfg.time_budget_s,
                                                       self.device, self.world_size)
                self.step += 1
                bar.update(1)
                s, final = self.step, self.step >= cfg.steps
                log = s % cfg.log_every == 0 or final or out_of_time
                validate = bool(self.val_files and cfg.val_every and s % cfg.val_every == 0)
                sample = bool(cfg.sample_every and (s % cfg.sample_every == 0 or final))
                ckpt = bool(cfg.ckpt_every and s % cfg.ckpt_every == 0) or final or out_of_time
                if log or validate or sample or ckpt:   # the one host sync; a divergence stops here, before any write
                    bad = self.losses.read_back()
                    if distributed.any_rank(bad is not None, self.device, self.world_size):
                        self._diverged(*(bad or (self.step, {})))
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

    def _diverged(self, step: int, bad: dict) -> None:
        self._writer.wait()            # the last good checkpoint, if one is being written, is complete
        where = (f"the last good checkpoint {self.checkpoint_path} is intact" if self.checkpoint_path
                 else "no checkpoint was written yet")
        shown = ", ".join(f"{k}={v}" for k, v in bad.items()) or "a loss on another rank"
        skipped = (f" after {self.losses.skipped['in_a_row']} steps in a row skipped by the fp16 grad scaler"
                   if self.scaler is not None else "")
        raise TrainingDiverged(
            f"training diverged at step {step}: {shown} (not finite){skipped}; stopped without saving, {where}. "
            f"Lower the learning rate, set grad_clip (`--set grad_clip=1.0`, or train_overrides={{'grad_clip': 1.0}}), "
            f"or use amp='bf16'/'none' instead of 'fp16', then resume")

    def _log_train(self, started: float, bar) -> None:
        entry = {"step": self.step, "split": "train", **self.losses.entry()}
        session = time.monotonic() - started
        entry["elapsed_s"] = round(self._elapsed_before + session, 3)
        entry["steps_per_s"] = round((self.step - self.session_start_step) / max(session, 1e-9), 3)
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
                self._val = self.data.fixed(self.val_files, self.cfg.seed, self.cfg.val_clips)
            wave, genre = self._val
            totals: dict[str, float] = {}
            with self._inference():
                for i in range(0, len(wave), self.batch_size):
                    w = wave[i:i + self.batch_size].to(self.device)
                    metrics = self.recipe.eval_step(self.data.model_input(w), genre[i:i + self.batch_size].to(self.device))
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
        return distributed.from_rank0(is_best, self.world_size)

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
        plots.spectrogram_grid(mel.float().cpu(), [f"{g} (step {self.step})" for g in names], path=path,
                               cols=self.cfg.samples_per_genre if self.cfg.samples_per_genre > 1 else 3)
        self._emit("on_sample", self.step, mel, names, path)

    # --- files -----------------------------------------------------------------------------------------
    def state_dict(self, elapsed_s: float, rngs: list) -> dict:
        """Everything :func:`save_checkpoint` writes: the keys of a checkpoint."""
        recipe = self.recipe
        return tensors_and_builtins({
            "model": recipe.name, "preset": self.model_preset, "model_config": to_dict(recipe.config),
            "train_config": to_dict(self.cfg), "spec": to_dict(self.spec), "genres": list(recipe.genres),
            "step": self.step,
            "modules": {n: Recipe.unwrap(m).state_dict() for n, m in recipe.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in recipe.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs, "history": list(self.history), "best": self.best, "extra": recipe.extra_state(),
            **self.losses.state_dict(),
            "elapsed_s": elapsed_s, "world_size": self.world_size, "clip_frames": self.clip_frames,
            "batch_size": self.batch_size, "nmusic_version": __version__, "torch_version": str(torch.__version__),
        })

    def _checkpoint(self, started: float, is_best: bool) -> None:
        """Snapshot the state to the CPU now, write it from the background writer (training goes on)."""
        rngs = distributed.gather(rng_state(self.device), self.world_size)
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
        if plots.loss_panels(self.history) and (plot or time.monotonic() - self._last_plot >= 60):
            self._last_plot = time.monotonic()
            plots.loss_curves(self.history, path=self.run_dir / "loss.png")

    def _say(self, message: str) -> None:
        if not self.is_main:
            return
        if self.cfg.progress:
            say(f"[nmusic] {message}")
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
