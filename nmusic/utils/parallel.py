"""The one process pool: a function over many items on every core, in order, with a fallback.

The manifest probes every file and ``prepare`` decodes every file this way (paper section 4.1: use
the whole dataset, fast). Results come back in the items' order with at most a few of them
waiting in memory (a decoded hour of audio is large). When the pool cannot start or breaks (a
sandbox without ``/dev/shm``, a killed worker), the remaining items run in this process: a
slower run, never a failed one.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from .progress import progress_bar

_END = object()


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core already


def ordered_map(fn: Callable, items: Iterable, workers: int | None = None, name: str = "") -> Iterator:
    """``fn(x) for x in items`` over a pool of ``workers`` processes (default: :func:`cpu_count`), in order.

    Runs in this process for one worker or fewer than 4 items. ``fn`` must be a module-level
    function; each worker uses one torch thread. ``name`` labels the note printed when the pool fails.
    """
    items = list(items)
    workers = cpu_count() if workers is None else max(1, workers)
    done = 0
    if workers > 1 and len(items) >= 4:
        pool = None
        try:
            pool = ProcessPoolExecutor(min(workers, len(items)), initializer=_one_thread)
            rest = iter(items)
            pending = deque(pool.submit(fn, x) for _, x in zip(range(4 * workers), rest))
            while pending:
                result = pending.popleft().result()
                item = next(rest, _END)
                if item is not _END:
                    pending.append(pool.submit(fn, item))
                done += 1
                yield result
        except (BrokenProcessPool, OSError) as e:
            print(f"{name or 'nmusic'}: the worker processes failed ({type(e).__name__}: {e}); "
                  "the rest runs in this process", file=sys.stderr)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    for item in items[done:]:
        yield fn(item)


def parallel_map(fn: Callable, items: Iterable, workers: int | None = None, progress: bool = True,
                 desc: str = "", unit: str = "file") -> list:
    """``[fn(x) for x in items]`` by :func:`ordered_map`, with a progress bar."""
    items = list(items)
    with progress_bar(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        results = []
        for result in ordered_map(fn, items, workers, name=desc):
            results.append(result)
            bar.update()
    return results
