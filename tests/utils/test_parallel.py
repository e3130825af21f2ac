"""The one process pool (nmusic/utils/parallel.py): in order, on every core, and never a failed run."""
from concurrent.futures.process import BrokenProcessPool

from nmusic.utils import parallel
from nmusic.utils.parallel import ordered_map, parallel_map


def test_parallel_map_keeps_order():
    assert parallel_map(abs, range(-20, 0), workers=2, progress=False) == list(range(20, 0, -1))
    assert parallel_map(abs, [-1], workers=4, progress=False) == [1]


def test_a_pool_that_breaks_hands_the_rest_to_this_process(monkeypatch, capsys):
    class Broken:
        def __init__(self, *a, **k):
            raise BrokenProcessPool("no /dev/shm here")
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", Broken)
    assert list(ordered_map(abs, range(-6, 0), workers=2, name="probe")) == [6, 5, 4, 3, 2, 1]
    assert "probe: the worker processes failed" in capsys.readouterr().err
