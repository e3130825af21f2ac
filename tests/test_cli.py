"""The headless route: ``nmusic synth/fetch/manifest/prepare/train`` as a user types them."""
import subprocess
import sys

import pytest

from nmusic.dataset import AudioCache


def nmusic(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "nmusic", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"nmusic {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    nmusic("synth", d / "music", "--files", 2, "--seconds", 4)
    (d / "music" / "edm" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    r = nmusic("fetch", d / "music", "--dest", d / "raw")
    assert "data folder" in r.stdout
    r = nmusic("manifest", d / "music", "--out", d / "manifest.csv", "--workers", 1)
    assert "broken.wav" in r.stdout, "the skipped-files report names the bad file"
    r = nmusic("prepare", d / "manifest.csv", "--out", d / "cache.pt")
    assert "reloads in" in r.stdout and "edm" in r.stdout
    return d


def test_fetch_manifest_prepare(prepared):
    cache = AudioCache.load(prepared / "cache.pt")
    assert cache.genres == ["classical", "edm", "lofi"] and cache.sample_rate == 16000
    assert len(cache.paths) == 6


def test_train_then_resume_then_bad_config(prepared):
    run = prepared / "run"
    args = ["train", "cmelgan", "--cache", prepared / "cache.pt", "--run", run, "--preset", "tiny",
            "--set", "batch_size=2"]
    nmusic(*args, "--steps", 2)
    r = nmusic(*args, "--steps", 3)
    assert '"steps": 3' in r.stdout
    r = nmusic(*args, "--set", "bacth_size=4", check=False)
    assert r.returncode == 2 and "bacth_size" in r.stderr and "Traceback" not in r.stderr
    r = nmusic("train", "cmelgan", "--cache", prepared / "cache.pt", "--run", run, "--preset", "huge", check=False)
    assert r.returncode == 2 and "tiny" in r.stderr and "Traceback" not in r.stderr
    r = nmusic("train", "cmelgan", "--cache", prepared / "nope.pt", "--run", run, check=False)
    assert r.returncode == 2 and "nope.pt" in r.stderr and "Traceback" not in r.stderr


def test_errors_are_one_clear_line(tmp_path):
    r = nmusic("manifest", tmp_path / "missing", "--out", tmp_path / "m.csv", check=False)
    assert r.returncode == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "evil.tar"
    import io
    import tarfile
    with tarfile.open(bad, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"hi!"))
    r = nmusic("fetch", bad, "--dest", tmp_path / "dest", check=False)
    assert r.returncode == 2 and "escape.txt" in r.stderr and not (tmp_path / "escape.txt").exists()
