"""One training session per run folder, also across machines (two Colab runtimes on one Drive).

A second Colab tab, or a reconnect while the old session still runs, can open the same run folder.
:class:`RunLock` lets one session at a time train in it: a second one is refused with a message
saying who holds the folder and what to do, and a session whose lock was taken over stops before it
writes anything (the trainer calls :meth:`RunLock.check` before every checkpoint).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..errors import CheckpointError
from ..utils.files import atomic_write_json

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
