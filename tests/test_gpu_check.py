"""The one-command GPU check (``benchmarks/gpu_check.py``), run dry: every part on the CPU at toy sizes."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_the_report(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((out / "gpu-check.json").read_text())
    parts = data["parts"]
    assert list(parts) == ["cuda-tests", "train", "resume", "sampling", "inversion", "bench"]
    assert parts["cuda-tests"]["status"] == "skipped" and "no CUDA GPU" in parts["cuda-tests"]["why"]
    assert all(parts[p]["status"] == "ok" for p in list(parts)[1:]), {p: parts[p] for p in parts}
    rows = parts["train"]["rows"]
    assert {(r["model"], r["amp"]) for r in rows} == {(m, a) for m in ("melnet", "cmelgan") for a in ("none", "bf16")}
    assert all(r["status"] == "ok" and r["steps"] >= 1 for r in rows)
    assert parts["resume"]["equal"] and 8 <= parts["resume"]["killed_after_step"] < parts["resume"]["steps"]
    assert set(parts["sampling"]["devices"]) == {"cpu"} and parts["sampling"]["faster"] == "cpu"
    assert all(r["khz"] > 0 for r in parts["bench"]["rows"])
    md = (out / "gpu-check.md").read_text()
    assert data["meta"]["dry_run"] and "dry run on the CPU" in md
    for heading in ("| cuda-tests | skipped", "## Training, each precision", "## Cached MelNet sampling",
                    "## Griffin-Lim", "## Training speed"):
        assert heading in md
