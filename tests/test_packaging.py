"""Set-up files agree with pyproject, and every notebook pair is in sync."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def colab_packages() -> dict[str, str]:
    text = (ROOT / "colab_setup.sh").read_text()
    block = re.search(r"PIP_PACKAGES=\((.*?)\)", text, re.S).group(1)
    reqs = re.findall(r'"([^"]+)"', block)
    return {requirement_name(r): r for r in reqs}


def test_colab_setup_installs_what_the_notebooks_need_and_nothing_else():
    """The package's dependencies (torch aside) and ipywidgets at a floor Colab's own 7.x meets, so that
    pip leaves Colab's widgets (what its front end renders) alone; no test or notebook-editing tools."""
    proj = pyproject()
    wanted = {requirement_name(r): r for r in proj["dependencies"] if requirement_name(r) not in ("torch", "torchaudio")}
    widgets = next(r for r in proj["optional-dependencies"]["notebooks"] if requirement_name(r) == "ipywidgets")
    wanted["ipywidgets"] = widgets
    assert colab_packages() == wanted
    assert re.fullmatch(r"ipywidgets>=7\.\d+", widgets), "Colab ships ipywidgets 7.x: do not ask pip to replace it"
    text = (ROOT / "colab_setup.sh").read_text()
    for tool in ("pytest", "nbval", "jupytext", "nbclient", "--upgrade", " -U ", "-e ."):
        assert tool not in text, f"colab_setup.sh must not install {tool!r} into the runtime"
    torch_pins = sorted(r for r in proj["dependencies"] if requirement_name(r) in ("torch", "torchaudio"))
    for pin in torch_pins:
        assert f'"{pin}"' in text, f"colab_setup.sh's fallback torch install must use the pin {pin}"


def test_environment_yml_installs_the_dev_extra():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- -e \.\[dev\]\s*$", text, re.M)
    assert re.search(r"^\s*- ffmpeg\s*$", text, re.M)
    py = re.search(r"python=(\d+\.\d+)", text).group(1)
    lo = re.search(r">=\s*(\d+\.\d+)", pyproject()["requires-python"]).group(1)
    assert tuple(map(int, py.split("."))) >= tuple(map(int, lo.split(".")))
    dev = pyproject()["optional-dependencies"]["dev"]
    assert dev == ["nmusic[notebooks,test]"]


def test_console_script_and_help():
    assert pyproject()["scripts"]["nmusic"] == "nmusic.interfaces.cli:main"
    out = subprocess.run([sys.executable, "-m", "nmusic", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("fetch", "manifest", "prepare", "train", "generate", "demo"):
        assert cmd in out.stdout


def notebook_pairs():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_is_paired():
    ipynbs = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    scripts = {p.stem for p in NOTEBOOKS.glob("[0-9]*.py")}
    assert ipynbs and ipynbs == scripts


@pytest.mark.parametrize("ipynb", notebook_pairs(), ids=lambda p: p.name)
def test_notebook_pair_in_sync(ipynb):
    import jupytext

    nb_ipynb = jupytext.read(ipynb)
    nb_py = jupytext.read(ipynb.with_suffix(".py"))
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(nb_ipynb) == cells(nb_py), (
        f"{ipynb.name} and {ipynb.with_suffix('.py').name} differ: run `jupytext --sync {ipynb.with_suffix('.py')}`")
