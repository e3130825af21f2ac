"""The one way nmusic writes a file that must never be seen half-written: atomically.

A Colab session can die at any moment, in the middle of a write too, and the work folder is on a
mounted Google Drive. So checkpoints, the audio cache, the judges, ``loss.png``, ``history.json``
and the reports are written to a hidden temporary file in the same folder (``.tmp-<pid>-<random>-<name>``),
flushed and fsync'ed, then renamed over the final name with ``os.replace``. A reader sees either
the old file or the new one, never half of one. The random part keeps two writers (two Colab
tabs, a background thread) off each other's temporaries.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

TMP_PREFIX = ".tmp-"


def temporary_name(path: Path) -> Path:
    """A hidden, unique temporary file next to ``path``."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some mounts, e.g. Drive, do not support it)."""
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


def _move_into_place(tmp: Path, path: Path) -> Path:
    """Rename ``tmp`` over ``path`` (atomic) and make the rename durable; ``tmp`` is removed on failure."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write(path, write) -> Path:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _move_into_place(tmp, path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_copy(src, dst) -> Path:
    """``dst`` becomes a copy of ``src`` atomically: a hard link where the file system has them (no
    bytes written twice), else a byte copy."""
    src, dst = Path(src), Path(dst)
    tmp = temporary_name(dst)
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as f:
            return atomic_write(dst, lambda out: shutil.copyfileobj(f, out, 16 * 2**20))
    return _move_into_place(tmp, dst)


def read_json(path) -> dict:
    """The JSON object in ``path``, or ``{}`` when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
