"""Progress bars that suit where they are shown: tqdm's own in a terminal or a notebook, and in a log
(a file, CI, ``nohup``, a subprocess's captured output) one plain line every :data:`LOG_EVERY_S` seconds.

tqdm redraws its bar with a carriage return up to ten times a second; in a log those redraws pile
up on one endless line (a 12-minute demo wrote megabytes). :func:`progress_bar` is tqdm with the
same arguments, and when its stream is not a terminal it redraws at most every few seconds and
each redraw is a line of its own.
"""
from __future__ import annotations

import io
import sys

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

LOG_EVERY_S = 10.0  # seconds between two lines of a progress bar in a log


class _Lines(io.TextIOBase):
    """A stream for tqdm that writes each redraw (``"\\r" + status``) as a line of its own."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        for part in text.split("\r"):
            part = part.rstrip()
            if part:
                self.stream.write(part + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def in_notebook() -> bool:
    """Whether tqdm draws its bars as notebook widgets here (a Jupyter kernel with ipywidgets)."""
    return any(cls.__module__ == "tqdm.notebook" for cls in auto_tqdm.__mro__)


def _terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``: the notebook or terminal bar where there is one, else log lines."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or in_notebook() or _terminal(stream):
        return auto_tqdm(iterable, **kwargs)
    kwargs.update(file=_Lines(stream), dynamic_ncols=False, mininterval=max(kwargs.get("mininterval", 0), LOG_EVERY_S))
    kwargs.setdefault("ascii", True)
    return std_tqdm(iterable, **kwargs)


def say(message: str, file=None) -> None:
    """Print a line without breaking a progress bar that is being drawn (``tqdm.write``)."""
    auto_tqdm.write(message, file=file)
