"""The headless route: ``nmusic synth/fetch/manifest/prepare/train`` as a user types them."""
import subprocess
import sys

import pytest

from nmusic.data.cache import AudioCache


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


def test_set_reaches_trainer_settings_and_train_help_lists_models(prepared, capsys, one_thread):
    import json

    from nmusic.interfaces.cli import main
    from nmusic.training.runs import DEFAULT_STEPS
    run = prepared / "run-set"
    args = ["train", "cmelgan", "--cache", str(prepared / "cache.pt"), "--run", str(run)]
    assert main([*args, "--steps", "2", "--set", "batch_size=2", "--set", "grad_clip=1", "--set", "ckpt_every=1",
                 "--set", "keep_last=5", "--set", "sample_every=0", "--set", "train.val_every=0"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["model_config"]["batch_size"] == 2
    tc = info["train_config"]
    assert (tc["grad_clip"], tc["ckpt_every"], tc["keep_last"], tc["sample_every"], tc["val_every"]) == (1.0, 1, 5, 0, 0)
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    capsys.readouterr()
    assert main([*args, "--set", "grad_clip=big"]) == 2
    assert "grad_clip" in capsys.readouterr().err
    assert main([*args, "--set", "ckpt_evry=5"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'ckpt_every'" in err and "trainer settings:" in err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "cmelgan" in out and "melnet" in out and "paper-small-original" in out and "grad_clip" in out
    assert f"default {DEFAULT_STEPS}" in " ".join(out.split())


def _train_process(prepared, run, *extra):
    import os
    env = {**os.environ, "OMP_NUM_THREADS": "1"}      # the same arithmetic in every process
    args = [sys.executable, "-m", "nmusic", "train", "cmelgan", "--cache", str(prepared / "cache.pt"), "--run", str(run),
            "--seed", "3", "--steps", "24", "--set", "batch_size=2", "--set", "clip_frames=32", "--set", "log_every=1",
            "--set", "ckpt_every=4", "--set", "val_every=0", "--set", "sample_every=0", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_same_seed_trains_the_same_run_also_when_killed_and_resumed(prepared):
    """Two identical `nmusic train ... --seed 3` processes log the same losses (the initial weights come
    from the seed); one killed with SIGKILL after a checkpoint and run again ends where the other did."""
    import json
    import signal
    import time

    def losses(run):
        return [{k: v for k, v in h.items() if k not in ("elapsed_s", "steps_per_s")}
                for h in json.loads((run / "history.json").read_text())]

    a, b = prepared / "seed-a", prepared / "seed-b"
    first, second = _train_process(prepared, a), _train_process(prepared, b)
    deadline = time.monotonic() + 120
    while not (b / "ckpt-00000008.pt").exists():                # kill b after its second checkpoint
        assert second.poll() is None, second.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.005)
    second.send_signal(signal.SIGKILL)
    assert second.wait() == -signal.SIGKILL
    assert first.wait(timeout=300) == 0, first.communicate()[0]
    killed = json.loads((b / "history.json").read_text())
    assert 8 <= killed[-1]["step"] < 24, "killed mid-run"
    resumed = _train_process(prepared, b)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resumed from ckpt-" in (b / "train.log").read_text()
    assert len(losses(a)) == 24 and losses(a) == losses(b)


def test_help_texts_are_plain_text():
    """--help is read in a terminal: no reST or markdown markup in it."""
    from nmusic.interfaces.cli import build_parser

    parser = build_parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:
        texts += [sub.format_help() for sub in action.choices.values()]
    assert len(texts) > 9 and not [t for t in texts if "`" in t]
