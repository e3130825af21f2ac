"""``nmusic evaluate`` on the quick demo's run: Table 1, judges held to account, distances with floors, originality."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmusic.data.cache import AudioCache
from nmusic.data.clips import VAL_FRACTION, split_by_file
from nmusic.errors import ConfigError
from nmusic.evaluation.data import EvaluationData
from nmusic.evaluation.evaluate import training_speed
from nmusic.evaluation.report import table1_markdown
from nmusic.frontend import SpecParams
from nmusic.training.runs import find_cache, find_runs


def nmusic(*args):
    return subprocess.run([sys.executable, "-m", "nmusic", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def evaluated(quick_demo, tmp_path_factory):
    """``nmusic evaluate RUN --out DIR`` as the lead will type it, on the demo's layout (no --cache)."""
    out_dir, report = quick_demo
    out = tmp_path_factory.mktemp("eval")
    r = nmusic("evaluate", report["run_dir"], "--out", out, "--n", 3, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return out_dir, report, out, r


def test_evaluate_writes_table1_and_metrics(evaluated):
    demo, report, out, r = evaluated
    m = json.loads((out / "metrics.json").read_text())
    md = (out / "metrics.md").read_text()
    assert "Table 1" in r.stdout and md in r.stdout
    assert "reusing the judge" in r.stderr and "reusing the feature judge" in r.stderr, "the demo's judges are reused"
    assert "ckpt-" in r.stderr and "the latest" in r.stderr, "it says which checkpoint it evaluates"
    (run,) = m["runs"]
    genres = report["genre_list"]
    assert run["name"] == "cmelgan-tiny" and run["model"] == "cmelgan" and run["n_generated"] == 3 * len(genres)
    assert run["checkpoint"] == report["checkpoint"], "the demo's samples and the evaluation use one checkpoint"
    from nmusic.training.runs import load_run
    recipe, _ = load_run(report["run_dir"])
    trained = sum(p.numel() for n in ("generator", "discriminator") for p in recipe.modules[n].parameters())
    assert run["params"] == trained, "the EMA copy of the generator is not counted"
    speed = run["speed"]
    assert speed["steps"] == run["step"] >= 1 and speed["train_khz"] > 0
    assert speed["samples_seen"] == run["step"] * speed["batch_size"] * SpecParams().samples(run["clip_frames"])
    cache = AudioCache.load(demo / "data" / "cache.pt")
    train, val = split_by_file(cache, VAL_FRACTION, 0)
    assert run["epoch_seconds"] == pytest.approx(float(cache.lengths[train].sum()) / (speed["train_khz"] * 1000))
    for key in ("accuracy_generated", "accuracy_generated_features", "accuracy_ceiling", "accuracy_ceiling_features"):
        acc = run[key]
        assert 0 <= acc["accuracy"] <= 1 and sorted(acc["per_genre"]) == sorted(genres), key
    assert sum(map(sum, run["accuracy_generated"]["confusion"])) == run["n_generated"]
    assert 0 <= run["judges_agree"] <= 1
    assert run["inversion"] == "griffin-lim-32"
    bounds = m["reference"][0]["inversions"]
    assert list(bounds["rows"]) == ["griffin-lim-32"] and "Upper bound per inversion" in md
    assert run["fd"] > 0 and run["n_reference"] >= 2
    assert (run["fd_floor"] is None) == (run["n_floor"] < 2)
    o = run["originality"]
    assert len(o["clips"]) == run["n_generated"] and o["flagged"] == sum(c["flagged"] for c in o["clips"])
    train_paths = {cache.paths[i] for i in train}
    for c in o["clips"]:
        assert c["nearest_path"] in train_paths, "neighbours are training clips, never held-out ones"
        assert c["distance"] >= 0 and (c["distance"] < o["threshold"]) <= c["flagged"]
        assert f"`{c['nearest_path']}`" in md
    (ref,) = m["reference"]
    gl = ref["griffin_lim"]
    assert gl["spectral_convergence_db"] < 0 and gl["log_spectral_distance_db"] > 0
    assert ref["dataset"]["val_files"] == len(val) and ref["judge"]["reused"]
    from nmusic.evaluation.fakes import FAKES, PROBES
    assert set(ref["rows"]) == {"real", "real-inverted", *FAKES, *PROBES}
    for row in ref["rows"].values():
        assert sum(row["assigned"].values()) == row["judge"]["n"] == sum(row["assigned_features"].values())
    for kind in ("judge", "features"):
        v = ref["verdict"][kind]
        assert v["valid"] == all(ref["rows"][f][kind]["accuracy"] <= v["limit"] for f in FAKES)
        assert ("INVALID" in md) >= (not v["valid"]), "an invalid judge is reported as such"
    assert "Are the judges fooled?" in md
    table = table1_markdown(m)
    assert table in md and "cMelGAN (tiny)" in table and "| Griffin-Lim |" in table and "| Real audio |" in table
    for png in ["fd.png", *run["images"].values(), *ref["images"].values()]:
        assert (out / png).stat().st_size > 1000 and f"]({png})" in md


def test_mos_column_from_a_listening_test(evaluated, tmp_path):
    from nmusic.evaluation import listening_test as mos
    from nmusic.evaluation.report import render_markdown

    demo, report, out, _ = evaluated
    m = json.loads((out / "metrics.json").read_text())
    test = mos.make_blind_test([{"source": s, "genre": "edm", "wave": torch.randn(100), "sample_rate": 16000}
                                for s in ("cmelgan-tiny", "real", "griffin-lim") for _ in range(2)])
    csv_path = tmp_path / "listening_test.csv"
    for k, c in enumerate(test.clips):
        mos.save_rating(csv_path, test, c, {"real": 5, "griffin-lim": 3}.get(c.source, 1 + k % 2))
    m["mos"] = mos.mos_by_source(csv_path)
    md = render_markdown(m)
    assert "| Real audio | - | 5.00 ± 0.00 (n=2) |" in md and "Blind listening test" in md


def test_find_cache_and_runs(quick_demo, tmp_path):
    demo, report = quick_demo
    run = Path(report["run_dir"])
    assert find_cache(run) == demo / "data" / "cache.pt"  # the demo's layout
    assert find_runs(demo / "runs") == [run] and find_runs(run) == [run] and find_runs(tmp_path) == []
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match="--cache"):
        find_cache(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="no such file"):
        find_cache(run, tmp_path / "missing.pt")
    (tmp_path / "elsewhere" / "run.json").write_text(json.dumps({"cache": "../c.pt"}))
    shutil.copy(demo / "data" / "cache.pt", tmp_path / "c.pt")
    assert find_cache(tmp_path / "elsewhere").resolve() == (tmp_path / "c.pt").resolve()


def test_evaluate_cli_errors(quick_demo, tmp_path):
    _, report = quick_demo
    r = nmusic("evaluate", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    moved = tmp_path / "runs" / "moved"  # a run copied away from its data, run.json without "cache"
    shutil.copytree(report["run_dir"], moved)
    info = json.loads((moved / "run.json").read_text())
    info.pop("cache", None)
    (moved / "run.json").write_text(json.dumps(info))
    r = nmusic("evaluate", tmp_path / "runs" / "moved", "--out", tmp_path / "o", "--device", "cpu")
    assert r.returncode == 2 and "--cache" in r.stderr and "Traceback" not in r.stderr
    r = nmusic("evaluate", report["run_dir"], "--out", tmp_path / "o", "--judge-steps", 0)
    assert r.returncode == 2 and "--judge-steps" in r.stderr and "Traceback" not in r.stderr
    r = nmusic("evaluate", report["run_dir"], "--out", tmp_path / "o", "--temperature", -1)
    assert r.returncode == 2 and "--temperature" in r.stderr and "Traceback" not in r.stderr


def test_judges_are_trained_once_per_setting_then_reused(quick_demo, tmp_path):
    demo, _ = quick_demo
    cache_path = tmp_path / "data" / "cache.pt"  # no demo judges next to this copy
    cache_path.parent.mkdir()
    shutil.copy(demo / "data" / "cache.pt", cache_path)
    data = EvaluationData(cache_path, SpecParams(), 0, torch.device("cpu"))
    judge, feature_judge = data.judges(tmp_path / "out", steps=2, progress=False)
    assert not data.reused["judge"] and not data.reused["feature_judge"]
    assert Path(data.judge_paths["judge"]).parent == cache_path.parent and Path(data.judge_paths["judge"]).is_file()
    assert judge.metrics["data_fingerprint"] == data.fingerprint and judge.metrics["steps"] == 2
    again = EvaluationData(cache_path, SpecParams(), 0, torch.device("cpu"))
    again.judges(tmp_path / "out", steps=2, progress=False)
    assert again.reused == {"judge": True, "feature_judge": True} and again.judge_paths == data.judge_paths
    other_split = EvaluationData(cache_path, SpecParams(), 1, torch.device("cpu"))
    same = split_by_file(data.cache, VAL_FRACTION, 1) == split_by_file(data.cache, VAL_FRACTION, 0)
    assert (other_split.fingerprint == data.fingerprint) == same, "another split needs other judges"
    other_spec = EvaluationData(cache_path, SpecParams(n_mels=32), 0, torch.device("cpu"))
    assert other_spec.fingerprint != data.fingerprint and other_spec.name.startswith("spec-")


def test_training_speed():
    spec = SpecParams()
    s = training_speed({"step": 10, "elapsed_s": 2.0, "batch_size": 4, "clip_frames": 33, "world_size": 2}, spec)
    assert s["train_khz"] == pytest.approx(10 * 4 * 2 * 32 * 256 / 2.0 / 1000)
    assert training_speed({"step": 0, "elapsed_s": 0.0, "model_config": {"batch_size": 4, "clip_frames": 8}},
                          spec)["train_khz"] is None


def test_upper_bound_per_inversion_with_a_vocoder(quick_demo, tmp_path):
    """real -> vocoder -> judges next to Griffin-Lim; a vocoder of another spectrogram is left to its own section."""
    from nmusic.config import resolve
    from nmusic.evaluation.evaluate import inversion_bounds
    from nmusic.evaluation.report import inversions_markdown
    from nmusic.models.vocoder import PRESETS
    from nmusic.training.runs import train_model
    demo, report = quick_demo
    small = {"dim": 16, "intermediate_dim": 32, "num_layers": 2, "clip_frames": 16, "batch_size": 2}
    voc = tmp_path / "voc"
    train_model("vocoder", "tiny", resolve(PRESETS, "tiny", small), demo / "data" / "cache.pt", voc, steps=2,
                progress=False, device="cpu")
    data = EvaluationData(demo / "data" / "cache.pt", SpecParams(), 0, torch.device("cpu"))
    data.judges(tmp_path, 20, progress=False)          # the demo's, reused
    bounds = inversion_bounds(data, [voc], seed=0)
    assert list(bounds["rows"]) == ["griffin-lim-32", "vocoder:voc"]
    for r in bounds["rows"].values():
        assert 0 <= r["judge_accuracy"] <= 1 and r["mel_l1"] >= 0 and r["log_spectral_distance_db"] > 0
    assert "| vocoder:voc |" in "\n".join(inversions_markdown(bounds))
