"""Crash-safe checkpoint files in a run directory (which may sit on a mounted Google Drive).

A Colab session can die at any moment, including in the middle of writing a checkpoint. So every
file is written *atomically*: to a hidden temporary file in the same folder, flushed and fsync'ed,
then renamed over the final name with ``os.replace``. A reader sees either the old file or the new
one, never half of one. Should a file still end up truncated (a copy tool, a file system without
atomic rename), :func:`latest_checkpoint` skips it and falls back to the previous one.

Layout of a run directory::

    ckpt-00001200.pt   the newest ``keep_last`` checkpoints (step number in the name)
    best.pt            the checkpoint with the lowest validation metric so far
    run.json, history.json, loss.png, samples/...   (written by the trainer)

Checkpoints are plain ``torch.save`` dicts of tensors and builtins (see ``nmusic.trainer`` for the
keys), so they load with ``weights_only=True``: opening one never runs code from the file.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError

FORMAT = "nmusic-checkpoint-1"
BEST = "best.pt"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some mounts, e.g. Drive, do not support it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file next to ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


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


def latest_checkpoint(run_dir) -> Path | None:
    """Newest ``ckpt-*.pt`` in ``run_dir`` that is complete, or ``None``; truncated files are skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        if looks_complete(path):
            return path
    return None


def save_checkpoint(state: dict, run_dir, step: int, keep_last: int = 3, is_best: bool = False) -> Path:
    """Write ``state`` to ``run_dir/ckpt-<step>.pt`` atomically; also ``best.pt`` when ``is_best``.

    Afterwards only the newest ``keep_last`` step checkpoints are kept (``best.pt`` always stays),
    and leftover temporary files of earlier, interrupted writes are removed.
    """
    if keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1 (got {keep_last}); the newest checkpoint is always kept")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(f"{_TMP_PREFIX}*"):
        stale.unlink(missing_ok=True)
    state = {"format": FORMAT, **state, "step": step}
    path = atomic_write(run_dir / checkpoint_name(step), lambda f: torch.save(state, f))
    if is_best:
        atomic_write(run_dir / BEST, lambda f: torch.save(state, f))
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


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
