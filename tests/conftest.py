"""Shared fixtures: one torch thread for modules of tiny tensors, and one quick end-to-end demo run
that several tests look at."""
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread is faster, and much faster on a busy machine (whole module)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``nmusic demo --quick`` (embedded data -> prepare -> train -> classify -> report), run once."""
    from nmusic.interfaces.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    report = run_demo(out, model="cmelgan", quick=True, progress=False)
    return out, report
