"""The Colab route, simulated on this machine: the notebooks' first cell as Colab runs it, and the data
a notebook trains on.

Colab runs a notebook in a kernel whose working folder is ``/content``; the first run clones the
code into ``/content/nmusic``; after a runtime restart the kernel starts again in ``/content``,
where the clone already is. ``COLAB_RELEASE_TAG`` is what tells nmusic it is in Colab. Here a
temporary folder plays ``/content``, the clone is a copy of this working tree, and ``WORK_DIR`` (the
notebooks' one setting for where work is kept, Google Drive by default) is a local folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

import nmusic
from nmusic.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.py"))


def code_cells(notebook: Path) -> list[str]:
    return [c.source for c in jupytext.read(notebook).cells if c.cell_type == "code"]


def bootstrap(work_dir: Path) -> str:
    """The first cell of the notebooks, with ``WORK_DIR`` set to ``work_dir``."""
    cell = code_cells(NOTEBOOKS[0])[0]
    assert "WORK_DIR = None\n" in cell
    return cell.replace("WORK_DIR = None\n", f"WORK_DIR = {str(work_dir)!r}\n")


def test_the_notebooks_share_one_first_cell_for_this_version():
    cells = {nb.name: code_cells(nb)[0] for nb in NOTEBOOKS}
    assert len(set(cells.values())) == 1, "the first cell differs between notebooks: " + ", ".join(cells)
    cell = next(iter(cells.values()))
    assert f'NMUSIC_VERSION, NMUSIC_REF = "{nmusic.__version__}", "main"' in cell
    assert "https://github.com/nmusic-dev/nmusic" in cell


@pytest.fixture
def content(tmp_path, monkeypatch):
    """``/content`` with the clone of the code in it, and Colab's environment for the kernels."""
    content = tmp_path / "content"
    clone = content / "nmusic"
    shutil.copytree(ROOT / "nmusic", clone / "nmusic", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("colab_setup.sh", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-simulated")
    monkeypatch.setenv("NMUSIC_PROFILE", "test")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")         # toy sizes: one thread is faster, also on a busy machine
    monkeypatch.delenv("PYTHONPATH", raising=False)   # only what the first cell sets up may import nmusic
    return content


def run_kernel(cells: list[str], cwd: Path) -> list[str]:
    """Run ``cells`` in a fresh kernel (a Colab runtime after a restart) started in ``cwd``; their text output."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return ["".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream") for cell in nb.cells]


def test_first_cell_in_colab_and_after_a_restart_then_notebook_02_trains_on_your_data(content, tmp_path):
    """Started in /content with the clone there (first run after cloning, and again after a runtime
    restart), the first cell imports nmusic from the clone; then notebook 02, on a user cache prepared
    at 22.05 kHz for a 22.05 kHz spectrogram, trains on that cache, not on the embedded dataset."""
    from nmusic.data.cache import prepare
    from nmusic.data.manifest import build_manifest
    from nmusic.data.synth import write_dataset

    work = tmp_path / "drive" / "nmusic"
    music = write_dataset(tmp_path / "music", genres=["classical", "edm"], files_per_genre=2, seconds=4.0,
                          progress=False)
    for old, new in (("classical", "baroque"), ("edm", "techno")):       # your genres, not the embedded ones
        (music / old).rename(music / new)
    manifest = build_manifest(music, clip_seconds=1.0, workers=1, progress=False)
    manifest.save(work / "manifest.csv")
    prepare(manifest, 22050, work / "cache.pt", workers=1, progress=False)   # notebook 01, SPEC_PRESET="melnet-paper"

    where = "import nmusic, os; print(nmusic.__file__, os.getcwd(), WORK, sep='\\n')"
    clone = content / "nmusic"
    first = run_kernel([bootstrap(work), where], content)
    assert first[1].split() == [str(clone / "nmusic" / "__init__.py"), str(clone), str(work)]

    cells = code_cells(ROOT / "notebooks" / "02_melnet.py")
    config = next(c for c in cells if "OVERRIDES = {}" in c)
    config = config.replace("OVERRIDES = {}", 'OVERRIDES = {"spec": "melnet-paper", "batch_size": 2, "clip_frames": 16}')
    data = next(c for c in cells if "ensure_cache(WORK" in c)
    train = next(c for c in cells if "for tier in range(1, n_tiers + 1)" in c)
    train = train.replace("time_budget_s=PROFILE.train_seconds / n_tiers", "time_budget_s=0.5")  # a step per tier
    after_restart = run_kernel([bootstrap(work), where, config, data, train], content)
    assert after_restart[1].split() == first[1].split()
    assert f"training data: your data (notebook 01): {work / 'cache.pt'}" in after_restart[3]
    assert "genres ['baroque', 'techno'], 22050 Hz" in after_restart[3]
    info = json.loads((work / "runs" / "melnet-tiny" / "run.json").read_text())
    assert info["cache"] == str(work / "cache.pt") and info["genres"] == ["baroque", "techno"]
    assert info["spec"]["sample_rate"] == 22050
    assert "training data: " + str(work / "cache.pt") in (work / "runs" / "melnet-tiny" / "train.log").read_text()


def test_first_cell_fails_loudly_when_the_clone_fails(tmp_path, monkeypatch):
    """No clone yet and cloning fails (here: no such repository): an error saying so, not a half set-up."""
    content = tmp_path / "content"
    content.mkdir()
    cell = bootstrap(tmp_path / "work").replace("https://github.com/nmusic-dev/nmusic", str(tmp_path / "no-repo"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", cell], cwd=content, capture_output=True, text=True, timeout=60,
                       env={**env, "COLAB_RELEASE_TAG": "release-colab-simulated", "GIT_TERMINAL_PROMPT": "0"})
    assert r.returncode != 0 and "RuntimeError: could not clone nmusic main into" in r.stderr, r.stderr
    assert not (content / "nmusic" / "nmusic").exists()


# --- which data a notebook trains on ------------------------------------------------------------------------
@pytest.fixture
def notebook01(tmp_path):
    """A work folder as notebook 01 leaves it: your music's manifest and its cache at 22.05 kHz."""
    from nmusic.data.cache import prepare
    from nmusic.data.manifest import build_manifest
    from nmusic.data.synth import write_dataset

    music = write_dataset(tmp_path / "scratch" / "music", genres=["lofi", "edm"], files_per_genre=1, seconds=3.0,
                          progress=False)
    work = tmp_path / "work"
    manifest = build_manifest(music, clip_seconds=1.0, workers=1, progress=False)
    manifest.save(work / "manifest.csv")
    prepare(manifest, 22050, work / "cache.pt", workers=1, progress=False)
    return work, music


def test_a_model_at_another_rate_trains_on_your_data_prepared_again(notebook01, capsys):
    from nmusic.data.cache import AudioCache
    from nmusic.interfaces.notebook import ensure_cache, profile

    work, _ = notebook01
    assert ensure_cache(work, profile("test"), 22050) == work / "cache.pt"
    path = ensure_cache(work, profile("test"), 16000)
    assert path == work / "cache-16000.pt"
    cache = AudioCache.load(path)
    assert cache.sample_rate == 16000 and cache.genres == ["edm", "lofi"]
    out = capsys.readouterr().out
    assert "preparing your data again at 16000 Hz" in out and "training data: your data (notebook 01)" in out
    assert ensure_cache(work, profile("test"), 16000) == path          # kept for next time


def test_data_is_never_swapped_silently(notebook01, tmp_path, capsys):
    from nmusic.interfaces.notebook import ensure_cache, profile

    work, music = notebook01
    shutil.rmtree(music)                                              # a disconnect wiped the runtime's disk
    with pytest.raises(ConfigError, match="audio files listed in .*manifest.csv are gone.*run notebook 01 again"):
        ensure_cache(work, profile("test"), 16000)
    (work / "manifest.csv").unlink()
    with pytest.raises(ConfigError, match="holds 22050 Hz audio but the model needs 16000 Hz.*SPEC_PRESET"):
        ensure_cache(work, profile("test"), 16000)
    fresh = tmp_path / "fresh"                                         # notebook 01 never ran here
    path = ensure_cache(fresh, profile("test"), 16000)
    assert "the embedded procedural dataset: notebook 01 was not run" in capsys.readouterr().out
    assert path.is_file() and fresh in path.parents


def test_in_colab_the_work_folder_is_on_google_drive_mounted_on_first_use(tmp_path, monkeypatch, capsys):
    """No WORK_DIR given: the work goes to Drive (mounted if it is not yet); Colab's own ``drive.mount``
    cannot run here, so a stand-in for it mounts a local folder."""
    import types

    from nmusic.interfaces import notebook

    drive, mounts = tmp_path / "drive", []

    def mount(path):
        mounts.append(path)
        (Path(path) / "MyDrive").mkdir(parents=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-simulated")
    monkeypatch.setattr(notebook, "COLAB_DRIVE", drive)
    monkeypatch.setattr(notebook, "COLAB_DRIVE_WORK", drive / "MyDrive" / "nmusic")
    monkeypatch.setattr(notebook, "COLAB_SCRATCH", tmp_path / "scratch")
    prof, work = notebook.setup(version=nmusic.__version__)
    assert mounts == [str(drive)] and work == drive / "MyDrive" / f"nmusic{'.test' if prof.name == 'test' else ''}"
    assert work.is_dir() and "on Google Drive" in capsys.readouterr().out
    assert notebook.scratch_dir(work) == tmp_path / "scratch"          # extracted audio: the runtime's disk
    notebook.setup(version=nmusic.__version__)
    assert len(mounts) == 1                                              # mounted once per runtime
    with pytest.raises(ConfigError, match="this notebook is for nmusic 0.0.1 .*rm -rf"):
        notebook.setup(version="0.0.1")
