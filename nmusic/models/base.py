"""What every model family gives the trainer (:class:`Recipe`), and what the trainer hands it per step
(:class:`StepContext`).

The :class:`~nmusic.training.trainer.Trainer` owns the loop (data, device, mixed precision,
checkpoints, resume, DDP, logging). A :class:`Recipe` owns the model: which modules and optimisers
exist, what one optimisation step does, how to sample. Every model family (``models/<family>/``)
subclasses it and adds itself to :func:`nmusic.models.registry`, so the trainer, ``nmusic train``,
``nmusic generate`` and ``nmusic evaluate`` are written once.

What a recipe must respect (so that DDP, compile, AMP and exact resume work):

* reach modules through ``self.modules[name]`` inside ``train_step`` (the trainer swaps in DDP /
  compiled wrappers for modules with trainable parameters while training, and the raw modules
  back for ``eval_step``/``sample`` and after ``fit``); ``Recipe.unwrap`` gives the raw module;
* call each wrapped module at most once per backward (concatenate real and fake batches), and
  only through ``forward``: DDP synchronises gradients of what ``forward`` computed;
* use ``ctx.autocast()``, ``ctx.backward(loss)`` and ``ctx.optimizer_step(optimizer)``;
* draw randomness from the global torch/NumPy/Python RNGs (or a generator seeded from
  ``ctx.step``): they are checkpointed per rank; return the losses as detached 0-dim tensors (or
  floats), NaN included (the trainer stops every rank together), rather than raising inside
  ``train_step``, and never read a device value on the host there (``.item()``, ``float()``);
* ``extra_state()`` and the config hold tensors and builtins only (checkpoints load with
  ``weights_only=True``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError
from ..frontend import SpecParams


@dataclass
class StepContext:
    """What the trainer hands to :meth:`Recipe.train_step`.

    ``step`` is the 0-based index of the training step. ``autocast()`` is a context manager for the
    forward pass (bf16/fp16 on GPU, no-op otherwise); ``backward(loss)`` scales the loss when fp16
    is on; ``optimizer_step(optimizer)`` unscales, clips and steps through the grad scaler. Recipes
    must use these three so that mixed precision works. ``rank``/``world_size`` describe
    distributed training (0/1 on a single device). ``extras["wave"]`` is the batch's real waveform
    ``(B, samples)`` the ``mel`` was analysed from (a vocoder learns from it).
    """

    step: int
    device: torch.device
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    grad_clip: float | None = None
    extras: dict = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, parameters=None) -> None:
        """Unscale (fp16), clip to ``grad_clip``, step, zero grads.

        ``parameters`` (default: the optimiser's) are what the gradient norm is clipped over.

        The grad scaler is updated after every optimiser step, so one optimiser may step several
        times per batch (e.g. extra critic steps).
        """
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if self.grad_clip:
            if parameters is None:
                parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)


class Recipe:
    """Base class: subclasses set ``name``, ``config``, ``modules`` and ``optimizers``.

    - ``modules``: ``dict[str, nn.Module]``, saved and loaded by name; the trainer may wrap them in
      DDP (then reach the raw module with :meth:`unwrap`).
    - ``optimizers``: ``dict[str, Optimizer]``, saved and loaded by name.
    - :meth:`train_step` does forward, backward and optimiser steps for one batch and returns
      its losses for logging as detached 0-dim tensors (no host sync in the step). It must call each (possibly DDP-wrapped) module at most once per
      backward pass (concatenate real and fake batches, for instance).
    """

    name: str = "recipe"
    #: Config fields that may change between sessions of one run because they steer what is
    #: trained, not what the model is (e.g. MelNet's ``train_tiers``: train tier by tier).
    schedule_fields: tuple[str, ...] = ()
    #: Whether the first validation metric (lower is better) picks ``best.pt``. False when it does not
    #: measure sample quality (cMelGAN's per-bin statistics, which a trivial fake would win): then
    #: there is no ``best.pt`` and generation uses the latest checkpoint.
    selects_best: bool = True
    #: The model is built of RNNs (cuDNN on CUDA): ``amp="auto"`` picks fp16 with the grad scaler
    #: for it (see :func:`nmusic.device.resolve_amp`).
    recurrent: bool = False

    def __init__(self, config, spec: SpecParams, genres: list[str]):
        self.config = config
        self.spec = spec
        self.genres = list(genres)
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # --- training -------------------------------------------------------------------------------
    def train_step(self, mel: torch.Tensor, genre: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """``mel``: ``(B, n_mels, frames)`` normalised log-mel; ``genre``: ``(B,)`` int64 ids. Returns the
        losses as detached 0-dim tensors (floats are accepted too), read on the host only by the trainer."""
        raise NotImplementedError

    @torch.no_grad()
    def eval_step(self, mel: torch.Tensor, genre: torch.Tensor) -> dict[str, float]:
        """Validation losses on a held-out batch (lower is better for the first key)."""
        return {}

    @torch.no_grad()
    def sample(self, genre: torch.Tensor, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """``(B,)`` genre ids -> ``(B, n_mels, frames)`` normalised log-mel."""
        raise NotImplementedError

    @classmethod
    def budget_sessions(cls, config) -> list[tuple[object, float]]:
        """How a run that is given one time budget (``nmusic demo``) spends it: ``(config, share)`` per
        session, each session resuming the run the last one left. One session of ``config`` by default."""
        return [(config, 1.0)]

    @classmethod
    def load_data(cls, cache_path, val_fraction: float, seed: int):
        """``(cache, train_files, val_files)`` for ``nmusic train --cache PATH``: by default the audio cache and
        its split by file (:func:`nmusic.data.clips.split_by_file`); a family with its own data overrides it."""
        from ..data.cache import AudioCache
        from ..data.clips import split_by_file
        cache = AudioCache.load(cache_path)
        return (cache, *split_by_file(cache, val_fraction=val_fraction, seed=seed))

    def training_data(self, cache, clip_frames: int, train_files=None):
        """What the trainer draws batches from (``train_files`` are the ones it trains on): by default random
        ``clip_frames``-long clips of the audio ``cache`` as normalised log-mel (:class:`nmusic.data.clips.AudioClips`, which documents the
        members); a family that learns from something else (notes) returns its own."""
        from ..data.clips import AudioClips
        return AudioClips(cache, self.spec, clip_frames)

    # --- bookkeeping ----------------------------------------------------------------------------
    def to(self, device) -> "Recipe":
        for m in self.modules.values():
            m.to(device)
        return self

    @staticmethod
    def unwrap(module: torch.nn.Module) -> torch.nn.Module:
        """The raw module under ``torch.compile`` (``_orig_mod``) and/or DDP (``module``) wrappers."""
        while True:
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                module = module.module
            elif hasattr(module, "_orig_mod"):
                module = module._orig_mod
            else:
                return getattr(module, "module", module) if isinstance(module, torch.nn.DataParallel) else module

    def _device(self) -> torch.device:
        """Where the ``"generator"`` module's weights are (the recipes that have one: cMelGAN, MidiNet, the vocoder)."""
        return next(self.unwrap(self.modules["generator"]).parameters()).device

    @staticmethod
    def distributed(module) -> bool:
        """Whether DDP wraps ``module`` somewhere in its chain of wrappers (``torch.compile``'s
        ``OptimizedModule(DDP(D))`` included)."""
        while True:
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                return True
            inner = getattr(module, "_orig_mod", None)
            if inner is None:
                return False
            module = inner

    @contextlib.contextmanager
    def frozen(self, D):
        """A GAN's generator step needs gradients through ``D``, not of its weights: skip computing them
        (a third of ``D``'s backward). Under DDP every rank must produce the same gradients, so there
        ``D`` is left alone (its weight gradients are cleared before the next discriminator step)."""
        params = [] if self.distributed(D) else [p for p in self.unwrap(D).parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def n_params(self, names: list[str] | None = None) -> int:
        """Trainable parameters (frozen copies such as an EMA generator are not counted)."""
        names = names or list(self.modules)
        return sum(p.numel() for n in names for p in self.unwrap(self.modules[n]).parameters() if p.requires_grad)

    def load_state(self, state: dict, path, optimizers: bool = False) -> None:
        """Load module (and optimiser) states and the extra state from checkpoint ``state`` (read from
        ``path``); :class:`CheckpointError` when they do not fit this model."""
        try:
            missing = sorted(set(self.modules) - set(state["modules"]))
            if missing:
                raise KeyError(f"no state for module(s) {missing}")
            for name, module in self.modules.items():
                self.unwrap(module).load_state_dict(state["modules"][name])
            if optimizers:
                for name, opt in self.optimizers.items():
                    opt.load_state_dict(state["optimizers"][name])
            self.load_extra_state(state.get("extra") or {})
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path} does not fit this {self.name} model ({str(e).splitlines()[0][:300]}); it "
                                  f"was written with another config or code version; use a matching run "
                                  f"directory") from None

    def extra_state(self) -> dict:
        """Anything beyond modules/optimisers to checkpoint (EMA weights live in modules)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
