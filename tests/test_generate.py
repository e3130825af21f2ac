"""``nmusic generate`` on a trained run."""
import subprocess
import sys

import pytest
import soundfile as sf

from nmusic.errors import NmusicError
from nmusic.generate import generate


def test_generate_writes_wavs_and_pngs(quick_demo, tmp_path):
    out, report = quick_demo
    run = report["run_dir"]
    files = generate(run, genre="edm", n=2, out_dir=tmp_path, seed=3, device="cpu")
    assert len(files) == 2
    for f in files:
        data, sr = sf.read(f)
        assert sr == report["spec"]["sample_rate"] and abs(data).max() > 0
        assert f.with_suffix(".png").is_file()
    again = generate(run, genre="edm", n=2, out_dir=tmp_path / "again", seed=3, device="cpu")
    a, _ = sf.read(files[0])
    b, _ = sf.read(again[0])
    assert a.shape == b.shape


def test_unknown_genre_is_a_clear_error(quick_demo, tmp_path):
    _, report = quick_demo
    with pytest.raises(NmusicError, match="choose one of"):
        generate(report["run_dir"], genre="polka", n=1, out_dir=tmp_path, device="cpu")
    r = subprocess.run([sys.executable, "-m", "nmusic", "generate", report["run_dir"], "--genre", "polka",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "polka" in r.stderr and "Traceback" not in r.stderr


def test_missing_run_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nmusic", "generate", str(tmp_path / "nope"), "--genre", "edm"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
