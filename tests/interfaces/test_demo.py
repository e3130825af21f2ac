"""``nmusic demo``: the README's main job, end to end (quick budget)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = ("model", "preset", "params", "train_seconds", "train_khz", "genres", "judges", "generated",
            "checkpoint")


def test_quick_demo_writes_a_complete_report(quick_demo):
    out, report = quick_demo
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for key in REQUIRED:
        assert key in on_disk, key
    assert on_disk["model"] == "cmelgan" and on_disk["preset"] == "tiny"
    assert on_disk["params"] > 10_000 and on_disk["train_seconds"] > 0 and on_disk["train_khz"] > 0
    assert sorted(on_disk["genres"]) == ["classical", "edm", "lofi"]
    md = (out / "report.md").read_text()
    for genre, g in on_disk["genres"].items():
        assert g["files"], genre
        for f in g["files"]:
            wav = Path(f["wav"])
            data, sr = sf.read(wav)
            assert sr == on_disk["spec"]["sample_rate"] and len(data) > sr  # more than a second of audio
            assert Path(f["png"]).stat().st_size > 1000
            assert wav.relative_to(out).as_posix() in md
        assert 0.0 <= g["judge_accuracy"] <= 1.0 and 0.0 <= g["feature_judge_accuracy"] <= 1.0
    assert (out / "runs" / "cmelgan-tiny" / "run.json").is_file()
    from nmusic.evaluation.fakes import FAKES
    judges = on_disk["judges"]
    assert set(FAKES) <= set(judges["rows"]) and set(judges["valid"]) == {"judge", "features"}
    gen = on_disk["generated"]
    for key in ("judge_accuracy", "feature_judge_accuracy", "ceiling", "fd", "fd_floor", "kd", "kd_floor"):
        assert key in gen, key
    assert "Are the judges fooled?" in md and "(eval/fd.png)" in md and (out / "eval" / "metrics.json").is_file()


def test_demo_cli_rejects_a_bad_budget(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nmusic", "demo", "--out", str(tmp_path), "--budget", "-1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--budget must be positive" in r.stderr and "Traceback" not in r.stderr


def test_quick_melnet_demo_trains_tier_1_first_then_the_finer_tiers(tmp_path, one_thread):
    from nmusic.interfaces.demo import QUICK, run_demo
    from nmusic.models.melnet.model import TIER1_SHARE

    report = run_demo(tmp_path, model="melnet", quick=True, progress=False)
    first, second = report["sessions"]
    assert list(first["train_tiers"]) == [1] and list(second["train_tiers"]) == [2, 3, 4]
    assert 0 < first["steps"] < second["steps"] == report["steps"]
    assert first["train_seconds"] >= TIER1_SHARE * QUICK.train_seconds * 0.9     # shared as the recipe says
    md = (tmp_path / "report.md").read_text()
    assert f"train_tiers=[1] to step {first['steps']:,}" in md and "then train_tiers=[2, 3, 4] to step" in md
    assert all(g["files"] for g in report["genres"].values())
    # the beat check of the README ("Does tier 1 write a beat?") runs on such a run
    spec = importlib.util.spec_from_file_location("melnet_beat", ROOT / "benchmarks" / "melnet_beat.py")
    beat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(beat)
    run = tmp_path / "runs" / "melnet-tiny"
    result = beat.main([str(run), "--clips", "2", "--seconds", "6", "--prime", "0.25"])
    assert set(result["autocorrelation"]) == {"real", "sampled", "primed_real", "primed_continuation"}
    assert all(len(ac) == beat.MAX_LAG and all(-1.01 <= v <= 1.01 for v in ac) for ac in result["autocorrelation"].values())
    assert -1 <= result["teacher_forced_lowest_bin"]["model_mean"] <= 1 and (run / "beat.json").exists()
