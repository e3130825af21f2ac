"""Run folders: train one from a prepared cache (what ``nmusic train`` and ``nmusic demo`` call), open a
trained one (what generation, evaluation, the notebooks and the widgets call), and find them.

Training: cache file -> split by file -> recipe (model config + the cache's genres + the config's
spectrogram preset) -> :class:`~nmusic.training.trainer.Trainer` -> a summary in the paper's
Table 1 units (parameters, seconds, kHz of audio consumed per second).

Loading: the checkpoint carries the model name, preset, config, genre list and spectrogram
parameters, so :func:`load_run` rebuilds the trained recipe with nothing re-specified.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import apply_overrides, from_dict, to_dict
from ..data.clips import VAL_FRACTION
from ..device import resolve_device
from ..errors import CheckpointError, ConfigError
from ..frontend import SpecParams, spec_preset
from ..models.base import Recipe
from ..utils.files import read_json
from .checkpoint import BEST, list_checkpoints, load_checkpoint, load_newest, looks_complete
from .rng import seed_everything
from .trainer import UNTIL_BUDGET, TrainConfig, Trainer

DEFAULT_STEPS = 2000  # optimisation steps when neither a step count nor a time budget is given


# --- training ----------------------------------------------------------------------------------------
def recipe_class(model: str) -> type[Recipe]:
    """The recipe class of family ``model``; a ConfigError naming the families for an unknown one."""
    from ..models import registry
    reg = registry()
    if model not in reg:
        raise ConfigError(f"unknown model {model!r}; choose one of {sorted(reg)}")
    return reg[model][1]


def build_recipe(model: str, cfg, genres: list[str]) -> Recipe:
    return recipe_class(model)(cfg, spec_preset(cfg.spec), list(genres))


def train_model(model: str, preset: str, cfg, cache_path, run_dir, steps: int | None = None,
                time_budget_s: float | None = None, resume: bool = True, device: str = "auto", amp: str = "auto",
                compile: bool = False, num_workers: int = 0, seed: int = 0, progress: bool = True,
                val_fraction: float = VAL_FRACTION, callbacks=(), train_overrides: dict | None = None) -> dict:
    """Train (or continue training) ``model`` with config ``cfg`` into ``run_dir``; returns a summary dict.

    ``train_overrides``: :class:`~nmusic.training.trainer.TrainConfig` fields (``grad_clip``,
    ``ckpt_every``, ``sample_every``, ...), type-checked. ``steps`` defaults to :data:`DEFAULT_STEPS`,
    or to "until the time budget runs out" when only ``time_budget_s`` is given. Everything random is
    seeded from ``seed`` before the model is built, so the same call trains the same run.
    """
    cache, train_files, val_files = recipe_class(model).load_data(cache_path, val_fraction, seed)
    seed_everything(seed)      # the initial weights too: one seed, one run
    recipe = build_recipe(model, cfg, cache.genres)
    if steps is None:
        steps = UNTIL_BUDGET if time_budget_s else DEFAULT_STEPS
    tc = TrainConfig(steps=steps, time_budget_s=time_budget_s, device=device, amp=amp, compile=compile,
                     num_workers=num_workers, seed=seed, progress=progress)
    tc = apply_overrides(tc, train_overrides or {})
    trainer = Trainer(recipe, cache, run_dir, tc, train_files, val_files, preset, callbacks,
                      run_info={"cache": str(Path(cache_path).resolve()), "val_fraction": val_fraction,
                                "cache_sample_rate": getattr(cache, "sample_rate", None),
                                "cache_genres": list(cache.genres)})
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


def train_within(model: str, preset: str, cfg, cache_path, run_dir, time_budget_s: float, **kwargs) -> dict:
    """Train ``model`` into ``run_dir`` within ``time_budget_s`` seconds, spent as the recipe's
    :meth:`~nmusic.models.base.Recipe.budget_sessions` say (MelNet: tier 1 first, then the finer tiers), each
    session a :func:`train_model` call resuming the last. Returns the last session's summary, with the
    seconds and audio rate over all sessions and ``sessions``: what each one trained (its steps, seconds and
    the schedule fields that differ between the sessions)."""
    cls = recipe_class(model)
    plan = cls.budget_sessions(cfg)
    summaries = [train_model(model, preset, session_cfg, cache_path, run_dir, time_budget_s=time_budget_s * share,
                             **kwargs) for session_cfg, share in plan]
    seconds = sum(s["train_seconds"] for s in summaries)
    khz = sum(s["train_khz"] * s["train_seconds"] for s in summaries) / max(seconds, 1e-9)
    configs = [to_dict(session_cfg) for session_cfg, _ in plan]
    changing = [name for name in cls.schedule_fields if len({repr(c[name]) for c in configs}) > 1]
    sessions = [{"steps": s["steps"], "train_seconds": s["train_seconds"], **{name: c[name] for name in changing}}
                for s, c in zip(summaries, configs)]
    return {**summaries[-1], "train_seconds": seconds, "train_khz": khz, "sessions": sessions}


# --- loading -----------------------------------------------------------------------------------------
def describe_checkpoint(state: dict) -> str:
    """``ckpt-00004000.pt (step 4000, the latest)``: which checkpoint :func:`load_run` took, and why."""
    name = Path(state.get("checkpoint_path") or "?").name
    return f"{name} (step {state.get('step', '?')}, {state.get('checkpoint_choice') or 'given'})"


def load_run(run_dir_or_ckpt, device="auto", registry: dict | None = None, which: str = "best") -> tuple[Recipe, dict]:
    """Rebuild the trained recipe of a run (in eval mode on ``device``; ``auto``: the GPU when there is
    one) and return it with its checkpoint.

    ``run_dir_or_ckpt``: a run directory or a checkpoint file. In a directory, ``which="best"`` takes
    ``best.pt`` when the model selects one by validation (MelNet: held-out likelihood), else the newest
    checkpoint that loads (cMelGAN keeps no ``best.pt``: its validation statistic is not a quality
    measure); ``which="latest"`` takes the newest. The returned dict also says which file it was
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
        best = path / BEST
        if which == "best" and best.is_file() and looks_complete(best):
            state = load_checkpoint(best)
            entry = registry.get(state.get("model"))
            if entry is not None and entry[1].selects_best:
                path, choice = best, f"the best by validation {(state.get('best') or {}).get('metric', '')}".strip()
            else:
                state = None  # a best.pt this model family does not select by (older cMelGAN runs)
        if state is None:
            state, newest = load_newest(path)
            if state is None:
                raise CheckpointError(f"no complete checkpoint in {path}; train a model into it first "
                                      f"(`nmusic train MODEL --run {path}`)")
            path, choice = newest, "the latest"
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
        spec = from_dict(SpecParams, state["spec"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config does not fit this nmusic version ({e})") from None
    recipe = recipe_cls(config, spec, list(state["genres"]))
    recipe.load_state(state, path)
    recipe.to(resolve_device(device))
    for m in recipe.modules.values():
        m.eval()
    state["checkpoint_path"], state["checkpoint_choice"] = str(path), choice
    return recipe, state


# --- finding runs and their data ---------------------------------------------------------------------
def run_label(run_dir) -> str:
    """The name a run goes by in tables, plots and listening tests: its folder name."""
    return Path(run_dir).name


def find_runs(folder) -> list[Path]:
    """Sub-folders of ``folder`` (or ``folder`` itself) holding a complete checkpoint, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []

    def trained(d: Path) -> bool:
        return any(looks_complete(p) for p in [d / BEST, *list_checkpoints(d)] if p.is_file())
    return [folder] if trained(folder) else sorted(d for d in folder.iterdir() if d.is_dir() and trained(d))


def find_cache(run_dir, cache_path=None) -> Path:
    """The audio cache a run was trained on: ``cache_path`` if given, else the demo layout, else run.json."""
    if cache_path is not None:
        p = Path(cache_path)
        if not p.is_file():
            raise ConfigError(f"--cache {p}: no such file; give the cache file `nmusic prepare` wrote")
        return p
    run_dir = Path(run_dir)
    candidates = [run_dir.parent.parent / "data" / "cache.pt"]  # nmusic demo: OUT/runs/NAME and OUT/data/cache.pt
    recorded = read_json(run_dir / "run.json").get("cache")
    if recorded:
        candidates.insert(0, Path(recorded) if Path(recorded).is_absolute() else run_dir / recorded)
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"{run_dir}: cannot tell which audio cache this run was trained on (looked for "
                      f"{', '.join(str(c) for c in candidates)}); pass it with --cache PATH (the file that "
                      f"`nmusic prepare` wrote)")
