"""Checkpoint files in a run folder (which may sit on a mounted Google Drive), crash-safe.

Every file is written atomically (:mod:`nmusic.utils.files`). Should one still end up truncated (a
copy tool, a file system without atomic rename), :func:`looks_complete` spots it and
:func:`load_newest` falls back to the previous checkpoint.

Layout of a run folder::

    ckpt-00001200.pt   the newest ``keep_last`` checkpoints (step number in the name)
    best.pt            the checkpoint with the lowest validation metric so far
    session.lock       the training session writing here (nmusic.training.run_lock)
    run.json, history.json, loss.png, samples/...   (written by the trainer)

Checkpoints are plain ``torch.save`` dicts of tensors and builtins (:func:`tensors_and_builtins`;
``Trainer.state_dict`` lists the keys), so they load with ``weights_only=True``: opening one never
runs code from the file.

Drive is slow to write to: ``best.pt`` is a copy of the step checkpoint just written (a hard link
where the file system has them), never a second serialisation, and the trainer writes checkpoints
from a background thread (:class:`BackgroundWriter`) on a CPU snapshot of the state
(:func:`cpu_snapshot`), so training goes on meanwhile.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import CheckpointError
from ..utils.files import TMP_PREFIX, atomic_copy, atomic_write

FORMAT = "nmusic-checkpoint-1"
BEST = "best.pt"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


def list_checkpoints(run_dir) -> list[Path]:
    """``ckpt-*.pt`` files in ``run_dir``, oldest step first (temporary files are ignored)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def looks_complete(path) -> bool:
    """Cheap structural check: the file is a readable torch zip archive with its pickle inside.

    A truncated write loses the zip's central directory (at the end of the file), so this catches
    interrupted copies without reading the tensors.
    """
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def save_checkpoint(state: dict, run_dir, step: int, keep_last: int = 3, is_best: bool = False) -> Path:
    """Write ``state`` to ``run_dir/ckpt-<step>.pt`` atomically; also ``best.pt`` when ``is_best``.

    ``best.pt`` is the same file (hard-linked, or copied where links are not supported, e.g. on
    mounted Drive), written atomically too. Afterwards only the newest ``keep_last`` step
    checkpoints are kept (``best.pt`` always stays).
    """
    if keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1 (got {keep_last}); the newest checkpoint is always kept")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, **state, "step": step}
    path = atomic_write(run_dir / checkpoint_name(step), lambda f: torch.save(state, f))
    if is_best:
        atomic_copy(path, run_dir / BEST)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Delete the temporary files interrupted writes left in ``run_dir`` (call it holding the :class:`RunLock`)."""
    run_dir = Path(run_dir)
    stale = sorted(run_dir.glob(f"{TMP_PREFIX}*")) if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def tensors_and_builtins(obj):
    """``obj`` with tensors and builtins only (what ``torch.load(weights_only=True)`` accepts), recursively.

    str/int/float subclasses (``torch.__version__``, numpy scalars, ...) become the builtin, any
    other object its ``str``.
    """
    if isinstance(obj, dict):
        return {tensors_and_builtins(k): tensors_and_builtins(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [tensors_and_builtins(v) for v in obj]
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


def cpu_snapshot(obj):
    """A copy of nested dicts/lists/tuples with every tensor copied to the CPU (a point-in-time state
    that training may go on changing the original of)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [cpu_snapshot(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    return obj


class BackgroundWriter:
    """Runs one write at a time in a background thread, in submission order.

    :meth:`submit` waits for the previous write first; an error of a write is raised by the next
    :meth:`submit` or :meth:`wait`, so none is lost.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, fn) -> None:
        self.wait()

        def run():
            try:
                fn()
            except BaseException as e:  # handed to the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=run, name="nmusic-checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and builtins only).

    Raises :class:`CheckpointError` naming the file and saying what to do when it is missing,
    truncated, or not an nmusic checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; point to a ckpt-*.pt/best.pt file or a run folder")
    if not looks_complete(path):
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt (probably an interrupted write or copy); delete it and "
            f"use an older checkpoint of the run (resuming picks the newest complete one automatically)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError for bad files
        raise CheckpointError(
            f"checkpoint {path} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            f"it may be corrupt or written by another program; delete it and use an older checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an nmusic checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def config_diff(saved: dict, now: dict) -> list[str]:
    """``"field: checkpoint X, now Y"`` for every field that differs (tuples and lists compare equal)."""
    saved, now = _as_lists(saved), _as_lists(now)
    return [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]


def _as_lists(obj):
    """Tuples as lists, recursively: a config saved before a field became a tuple still compares equal."""
    if isinstance(obj, dict):
        return {k: _as_lists(v) for k, v in obj.items()}
    return [_as_lists(v) for v in obj] if isinstance(obj, (list, tuple)) else obj


def _added_since(config, saved: dict) -> dict:
    """Fields of ``config``'s dataclass that a checkpoint's ``saved`` config lacks (added to the code after
    it was written), at their defaults: the checkpoint was trained as they are by default."""
    out = {}
    for f in dataclasses.fields(config):
        if f.name in saved:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return tensors_and_builtins(out)


def check_resumable(state: dict, path, recipe, genres: list[str]) -> None:
    """Raise :class:`CheckpointError` saying what to do unless checkpoint ``state`` (from ``path``) can go
    on training as ``recipe`` on data of ``genres``: same model, genres, spectrogram and model config
    (the recipe's ``schedule_fields`` may differ; fields the checkpoint predates count at their defaults)."""
    if state.get("model") != recipe.name:
        raise CheckpointError(f"{path} is a {state.get('model')!r} checkpoint, not {recipe.name!r}; "
                              f"use another run directory for a {recipe.name} run")
    if list(state["genres"]) != list(genres):
        raise CheckpointError(
            f"{path} was trained on genres {list(state['genres'])} but the dataset now has "
            f"{list(genres)}; genre ids would change meaning. Resume with the same genre folders "
            f"(add/remove folders to match), or start a new run directory")
    spec = to_dict(recipe.spec)
    if state["spec"] != spec:
        raise CheckpointError(f"{path} used other spectrogram parameters ({'; '.join(config_diff(state['spec'], spec))}"
                              f"); resume with the same model config, or start a new run directory")
    now = tensors_and_builtins(to_dict(recipe.config))
    saved = {**_added_since(recipe.config, state["model_config"]), **state["model_config"]}
    for name in recipe.schedule_fields:
        saved.pop(name, None)
        now.pop(name, None)
    diff = config_diff(saved, now)
    if diff:
        raise CheckpointError(f"{path} was trained with another model config ({'; '.join(diff)}); resume with "
                              f"the preset and overrides in run.json ({state.get('preset')!r}), or start a "
                              f"new run directory")


def load_newest(run_dir, say=None) -> tuple[dict | None, Path | None]:
    """The newest checkpoint of ``run_dir`` that loads, and its path; ``(None, None)`` when there is none.

    Incomplete ones (an interrupted write) and unreadable ones are skipped, with a note through
    ``say(message)`` when given. If checkpoints exist but none loads, the first error is raised:
    never silently start afresh.
    """
    errors = []
    for path in reversed(list_checkpoints(run_dir)):
        if not looks_complete(path):
            if say is not None:
                say(f"skipping incomplete checkpoint {path.name} (interrupted write)")
            continue
        try:
            return load_checkpoint(path), path
        except CheckpointError as e:
            if say is not None:
                say(f"skipping unreadable checkpoint: {e}")
            errors.append(e)
    if errors:
        raise errors[0]
    return None, None
