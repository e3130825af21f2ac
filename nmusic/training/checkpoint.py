"""Crash-safe checkpoint files in a run directory (which may sit on a mounted Google Drive).

A Colab session can die at any moment, including in the middle of writing a checkpoint. So every
file is written *atomically*: to a hidden temporary file in the same folder, flushed and fsync'ed,
then renamed over the final name with ``os.replace``. A reader sees either the old file or the new
one, never half of one. Should a file still end up truncated (a copy tool, a file system without
atomic rename), :func:`latest_checkpoint` skips it and falls back to the previous one.

Layout of a run directory::

    ckpt-00001200.pt   the newest ``keep_last`` checkpoints (step number in the name)
    best.pt            the checkpoint with the lowest validation metric so far
    session.lock       the training session writing here (see RunLock)
    run.json, history.json, loss.png, samples/...   (written by the trainer)

Checkpoints are plain ``torch.save`` dicts of tensors and builtins (see ``nmusic.training.trainer`` for the
keys), so they load with ``weights_only=True``: opening one never runs code from the file.

Drive is slow to write to, and a second Colab tab can open the same run folder:

* ``best.pt`` is a copy of the step checkpoint just written (a hard link where the file system has
  them), never a second serialisation; the trainer writes checkpoints from a background thread
  (:class:`BackgroundWriter`) on a CPU snapshot of the state, so training goes on meanwhile;
* :class:`RunLock` lets one training session at a time write a run folder: a second one is refused
  with a message saying who holds it and what to do, and a session whose lock was taken over stops
  before it writes anything. Temporary files carry a random part in their names, so no session ever
  touches another one's.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError

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
    tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
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
        _replace_with_copy(path, run_dir / BEST)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def _replace_with_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` atomically: a hard link where possible, else a byte copy."""
    tmp = dst.with_name(f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{dst.name}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, 16 * 2**20)
                fo.flush()
                os.fsync(fo.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Delete the temporary files interrupted writes left in ``run_dir`` (call it holding the :class:`RunLock`)."""
    run_dir = Path(run_dir)
    stale = sorted(run_dir.glob(f"{_TMP_PREFIX}*")) if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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


# --- one session per run folder ---------------------------------------------------------------------
LOCK_NAME = "session.lock"
LOCK_REFRESH_S = 30.0     # a live session rewrites its lock this often
LOCK_STALE_S = 180.0      # a lock not rewritten for this long belongs to a session that is gone
_HELD: set[str] = set()   # tokens of the locks this process holds


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class RunLock:
    """One training session per run folder, also across machines (two Colab runtimes on one Drive).

    The lock is a small JSON file (``session.lock``) naming its holder (host, process, a random
    token) and rewritten every ``LOCK_REFRESH_S`` seconds by a background thread. A session finding
    another's lock refuses to start, unless that lock was left behind: its process on this machine
    is gone (a restarted runtime), or it was not rewritten for ``LOCK_STALE_S`` seconds (a
    disconnected one). :meth:`check` (before every checkpoint) stops a session whose lock another
    one took over, before it writes anything.
    """

    def __init__(self, run_dir, refresh_s: float | None = None, stale_s: float | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.refresh_s = LOCK_REFRESH_S if refresh_s is None else refresh_s
        self.stale_s = LOCK_STALE_S if stale_s is None else stale_s
        self.token = uuid.uuid4().hex
        self.started = datetime.datetime.now().isoformat(timespec="seconds")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}          # unreadable: a write in progress, or garbage; judged by the file's age
        return info if isinstance(info, dict) else {}

    def _age_s(self, info: dict) -> float:
        updated = info.get("updated")
        if not isinstance(updated, (int, float)):
            try:
                updated = self.path.stat().st_mtime
            except OSError:
                return float("inf")
        return time.time() - updated

    def abandoned(self, info: dict) -> bool:
        """Whether the session that wrote ``info`` is gone."""
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if info["pid"] == os.getpid():
                return info.get("token") not in _HELD
            if not _pid_alive(info["pid"]):
                return True
        return self._age_s(info) > self.stale_s

    def _write(self) -> None:
        atomic_write_json(self.path, {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                                      "started": self.started, "updated": time.time()})

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        other = self.read()
        if other is not None and other.get("token") != self.token and not self.abandoned(other):
            age = self._age_s(other)
            wait = max(0.0, self.stale_s - age)
            raise CheckpointError(
                f"{self.run_dir} is in use by another training session (host {other.get('host', '?')}, "
                f"process {other.get('pid', '?')}, started {other.get('started', '?')}, alive {age:.0f} s ago). "
                f"Stop that session first, or train into another run folder. If it is gone (e.g. a "
                f"disconnected Colab runtime), run again in {wait:.0f} s, when its lock counts as abandoned, "
                f"or delete {self.path}")
        self._write()
        _HELD.add(self.token)
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="nmusic-run-lock", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                if (self.read() or {}).get("token") != self.token:
                    return                                        # taken over: check() says so
                self._write()
            except OSError:
                pass                                              # e.g. Drive hiccup: try again next time

    def check(self) -> None:
        """Raise :class:`CheckpointError` if this session no longer holds the lock."""
        other = self.read()
        if other is None or other.get("token") != self.token:
            who = "its lock file was deleted" if other is None else (
                f"another session took it over (host {other.get('host', '?')}, process {other.get('pid', '?')})")
            raise CheckpointError(f"{self.run_dir}: this training session lost the run folder: {who}. It stopped "
                                  f"without writing; the checkpoints there are the other session's now")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        _HELD.discard(self.token)
        try:
            if (self.read() or {}).get("token") == self.token:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass


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
