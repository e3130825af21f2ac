"""Trainer: run directory, exact resume (also after SIGKILL), divergence, budget, genres, DDP, load_run."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _trainer_toy import (GENRES, REGISTRY, TOY_SPEC, ToyConfig, ToyRecipe, make_cache, make_trainer, script_config,
                          split)
from nmusic.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from nmusic.errors import CheckpointError, ConfigError, TrainingDiverged
from nmusic.recipe import StepContext
from nmusic.trainer import Callback, TrainConfig, Trainer, load_run

TOY_SCRIPT = Path(__file__).with_name("_trainer_toy.py")
REPO = TOY_SCRIPT.parents[1]
TIMING_KEYS = ("elapsed_s", "steps_per_s")


def cfg(**kw) -> TrainConfig:
    base = dict(steps=8, log_every=1, ckpt_every=4, val_every=4, sample_every=0, keep_last=2, device="cpu",
                progress=False)
    return TrainConfig(**{**base, **kw})


def losses(history: list[dict]) -> list[dict]:
    """History without the wall-clock fields."""
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def assert_same_modules(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}.{k} differs"


class Recorder(Callback):
    def __init__(self):
        self.logs, self.samples, self.checkpoints, self.ended = [], [], [], None

    def on_log(self, step, metrics):
        self.logs.append(dict(metrics))

    def on_sample(self, step, mel, genres, path):
        self.samples.append((step, tuple(mel.shape), genres, path))

    def on_checkpoint(self, step, path):
        self.checkpoints.append((step, path))

    def on_end(self, history):
        self.ended = len(history)


def test_fit_fills_the_run_directory(tmp_path):
    rec, plain_calls = Recorder(), []
    trainer = make_trainer(tmp_path / "run", cfg(steps=8, log_every=2, val_every=2, sample_every=4),
                           callbacks=[rec, lambda step, m: plain_calls.append(step)])
    history = trainer.fit()
    run = tmp_path / "run"

    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "toy" and info["preset"] == "tiny" and info["genres"] == list(GENRES)
    assert info["spec"] == TOY_SPEC.to_dict() and info["model_config"]["hidden"] == 16
    assert info["train_config"]["steps"] == 8 and info["clip_frames"] == 9 and info["batch_size"] == 4

    train = [h for h in history if h["split"] == "train"]
    val = [h for h in history if h["split"] == "val"]
    assert [h["step"] for h in train] == [2, 4, 6, 8] and [h["step"] for h in val] == [2, 4, 6, 8]
    assert all(set(h) >= {"loss", "scale", "elapsed_s"} for h in train) and all("val_mse" in h for h in val)
    assert json.loads((run / "history.json").read_text()) == history
    assert rec.logs == history and plain_calls == [h["step"] for h in history] and rec.ended == len(history)

    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000006.pt", "ckpt-00000008.pt"]  # keep_last=2
    best_step = min(val, key=lambda h: h["val_mse"])["step"]
    best = load_checkpoint(run / "best.pt")
    assert best["step"] == best_step and best["best"]["metric"] == "val_mse"
    assert best["best"]["value"] == min(h["val_mse"] for h in val)
    last = load_checkpoint(run / "ckpt-00000008.pt")
    assert last["genres"] == list(GENRES) and last["spec"] == TOY_SPEC.to_dict() and last["preset"] == "tiny"
    assert last["model_config"]["hidden"] == 16 and last["train_config"]["steps"] == 8
    assert set(last["modules"]) == {"net", "ema"} and set(last["optimizers"]) == {"net"}
    assert {"torch", "numpy", "python"} <= set(last["rng"][0]) and last["extra"] == {"updates": 8}
    assert last["history"] == history
    assert [s for s, _ in rec.checkpoints] == [2, 4, 6, 8]  # every improvement of val_mse is saved too

    assert [(s, shape) for s, shape, _, _ in rec.samples] == [(4, (3, 8, 9)), (8, (3, 8, 9))]
    assert rec.samples[0][2] == list(GENRES)
    for step in (4, 8):
        png = run / "samples" / f"step-{step:08d}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.glob(".tmp-*"))
    # the recipe is handed back unwrapped, its modules in their original modes
    assert trainer.recipe.modules["net"].training and not trainer.recipe.modules["ema"].training


def test_resume_in_process_is_exact(tmp_path):
    ref = make_trainer(tmp_path / "ref", cfg(steps=8))
    ref_history = ref.fit()
    first = make_trainer(tmp_path / "run", cfg(steps=5))  # stops at 5: between the checkpoints at 4 and 8
    first.fit()
    second = make_trainer(tmp_path / "run", cfg(steps=8), model_seed=123)  # other init: must be overwritten
    history = second.fit(resume=True)
    assert second.resumed_from.name == "ckpt-00000005.pt"
    assert losses(history) == losses(ref_history)
    assert_same_modules(load_checkpoint(tmp_path / "ref" / "ckpt-00000008.pt")["modules"],
                        load_checkpoint(tmp_path / "run" / "ckpt-00000008.pt")["modules"])
    assert second.recipe.updates == 8  # extra_state restored


def _toy_process(run_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(TOY_SCRIPT), *args, str(run_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_gives_the_same_losses(tmp_path):
    """A run killed with SIGKILL at some step, resumed, matches an uninterrupted run exactly."""
    args = ["--steps", "16", "--ckpt-every", "4"]
    reference = _toy_process(tmp_path / "ref", "train", *args)
    progress = tmp_path / "progress"
    victim = _toy_process(tmp_path / "run", "train", *args, "--sleep", "0.2", "--progress-file", str(progress))
    deadline, seen = time.monotonic() + 90, 0
    while seen < 6:  # a checkpoint was written (step 4) and training moved on; kill it, likely mid-step
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the training subprocess made no progress"
        time.sleep(0.01)
        text = progress.read_text() if progress.exists() else ""
        seen = int(text) if text.strip().isdigit() else 0
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = latest_checkpoint(tmp_path / "run")
    assert killed_at is not None and 4 <= load_checkpoint(killed_at)["step"] < 16

    # Resume here (the same config and thread count as the script: saves a process start).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = make_trainer(tmp_path / "run", script_config(16, 4, 4), ToyConfig())
        run_history = resumed.fit(resume=True)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from == killed_at
    assert reference.wait(timeout=120) == 0, reference.communicate()[0]

    ref_history = json.loads((tmp_path / "ref" / "history.json").read_text())
    assert len(ref_history) == 16 + 4  # every step logged, validation every 4
    assert losses(run_history) == losses(ref_history)
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == run_history
    ref_final = load_checkpoint(tmp_path / "ref" / "ckpt-00000016.pt")
    run_final = load_checkpoint(tmp_path / "run" / "ckpt-00000016.pt")
    assert_same_modules(ref_final["modules"], run_final["modules"])
    for a, b in zip(ref_final["optimizers"]["net"]["state"].values(), run_final["optimizers"]["net"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path):
    ref_history = make_trainer(tmp_path / "ref", cfg(steps=8)).fit()
    run = tmp_path / "run"
    make_trainer(run, cfg(steps=8)).fit()
    newest = run / "ckpt-00000008.pt"
    newest.write_bytes(newest.read_bytes()[:1000])            # killed mid-write without atomic rename
    (run / ".tmp-1-ckpt-00000012.pt").write_bytes(b"PK\x03\x04")  # an interrupted atomic write
    trainer = make_trainer(run, cfg(steps=8))
    history = trainer.fit(resume=True)
    assert trainer.resumed_from.name == "ckpt-00000004.pt"
    assert "skipping incomplete checkpoint ckpt-00000008.pt" in (run / "train.log").read_text()
    assert losses(history) == losses(ref_history)
    assert load_checkpoint(newest)["step"] == 8  # rewritten whole


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    snapshots = {}

    class Snapshot(Callback):
        def on_checkpoint(self, step, path):
            snapshots[step] = path.read_bytes()

    trainer = make_trainer(run, cfg(steps=20, ckpt_every=2, val_every=0), ToyConfig(nan_at=4),
                           callbacks=[Snapshot()])
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert "step 5" in msg and "loss=nan" in msg and "ckpt-00000004.pt is intact" in msg and "learning rate" in msg
    assert latest_checkpoint(run) == run / "ckpt-00000004.pt"
    assert (run / "ckpt-00000004.pt").read_bytes() == snapshots[4]
    state = load_checkpoint(run / "ckpt-00000004.pt")
    assert all(torch.isfinite(t).all() for t in state["modules"]["net"].values())
    assert not torch.isfinite(next(trainer.recipe.modules["net"].parameters())).all()  # the step did happen
    assert [h["step"] for h in json.loads((run / "history.json").read_text())] == [1, 2, 3, 4]


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    trainer = make_trainer(run, cfg(steps=100_000, ckpt_every=0, val_every=0, log_every=1000, time_budget_s=0.6),
                           ToyConfig(sleep_s=0.02))
    t0 = time.monotonic()
    history = trainer.fit()
    assert time.monotonic() - t0 < 20
    assert 1 <= trainer.step < 100_000
    assert latest_checkpoint(run) == run / f"ckpt-{trainer.step:08d}.pt"
    assert history[-1]["step"] == trainer.step  # the stop is logged
    assert "time budget of 0.6 s reached" in (run / "train.log").read_text()


def test_resume_refuses_other_genres_spec_or_model_config(tmp_path):
    run = tmp_path / "run"
    make_trainer(run, cfg(steps=2)).fit()
    other = make_cache(genres=("classical", "edm", "jazz"))
    with pytest.raises(CheckpointError) as e:
        make_trainer(run, cfg(steps=4), cache=other).fit()
    msg = str(e.value)
    assert "['classical', 'edm', 'lofi']" in msg and "['classical', 'edm', 'jazz']" in msg
    assert "new run directory" in msg
    with pytest.raises(CheckpointError, match="hidden: checkpoint 16, now 32"):
        make_trainer(run, cfg(steps=4), ToyConfig(hidden=32)).fit()
    with pytest.raises(CheckpointError, match="resume=False"):
        make_trainer(run, cfg(steps=4)).fit(resume=False)
    cache = make_cache()
    recipe = ToyRecipe(ToyConfig(), TOY_SPEC.__class__(**{**TOY_SPEC.to_dict(), "n_fft": 128}), cache.genres)
    trainer = Trainer(recipe, cache, run, cfg(steps=4), *split(cache), "tiny")
    with pytest.raises(CheckpointError, match="n_fft: checkpoint 64, now 128"):
        trainer.fit()


def test_user_errors_at_construction(tmp_path):
    cache = make_cache()
    with pytest.raises(ConfigError, match="amp='fp16' needs a CUDA GPU"):
        make_trainer(tmp_path, cfg(amp="fp16"))
    with pytest.raises(ConfigError, match="8000 Hz"):
        make_trainer(tmp_path, cfg(), cache=make_cache(sample_rate=16000))
    recipe = ToyRecipe(ToyConfig(), TOY_SPEC, ["a", "b"])
    with pytest.raises(ConfigError, match="cache.genres"):
        Trainer(recipe, cache, tmp_path, cfg(), *split(cache), "tiny")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            make_trainer(tmp_path, cfg(device="cuda"))


def test_bf16_autocast_on_cpu(tmp_path):
    trainer = make_trainer(tmp_path / "run", cfg(steps=3, amp="bf16", val_every=0, grad_clip=1.0))
    history = trainer.fit()
    assert len(history) == 3 and all(h["loss"] == h["loss"] for h in history)


def test_compile_option_wraps_and_saves_raw_weights(tmp_path):
    """torch.compile (the quick "eager" backend here; inductor on GPU) changes nothing but speed."""
    kinds = []
    trainer = make_trainer(tmp_path / "c", cfg(steps=3, val_every=2, compile=True, compile_backend="eager"),
                           callbacks=[lambda step, m: kinds.append(type(trainer.recipe.modules["net"]).__name__)])
    history = trainer.fit()
    assert kinds[0] == "OptimizedModule" and type(trainer.recipe.modules["net"]).__name__ == "ToyNet"
    state = load_checkpoint(tmp_path / "c" / "ckpt-00000003.pt")
    assert set(state["modules"]["net"]) == set(trainer.recipe.modules["net"].state_dict())  # no _orig_mod.
    assert losses(history) == losses(make_trainer(tmp_path / "e", cfg(steps=3, val_every=2)).fit())


def test_step_context_step_is_an_index_and_a_call():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctx = StepContext(step=7, device=torch.device("cpu"), grad_clip=1e-3)
    assert ctx.step == 7 and ctx.step + 1 == 8 and f"{ctx.step}" == "7"
    assert type(pickle.loads(pickle.dumps(ctx.step))) is int and json.dumps({"s": ctx.step}) == '{"s": 7}'
    before = net.weight.detach().clone()
    ctx.backward(net(torch.ones(1, 2)).sum() * 1000)
    ctx.step(opt)  # clipped to norm 1e-3 over the optimiser's parameters, then zeroed
    assert 0 < (net.weight - before).norm() <= 0.1 * 1e-3 * 1.001
    assert net.weight.grad is None


def test_load_run_rebuilds_the_recipe(tmp_path):
    run = tmp_path / "run"
    make_trainer(run, cfg(steps=8, val_every=2)).fit()
    recipe, state = load_run(run, registry=REGISTRY)
    best = load_checkpoint(run / "best.pt")
    assert state["step"] == best["step"] and isinstance(recipe, ToyRecipe) and recipe.genres == list(GENRES)
    assert recipe.spec == TOY_SPEC and recipe.config == ToyConfig()
    assert_same_modules({n: m.state_dict() for n, m in recipe.modules.items()}, best["modules"])
    assert not any(m.training for m in recipe.modules.values())
    latest, state = load_run(run, registry=REGISTRY, which="latest")
    assert state["step"] == 8 and latest.updates == 8
    _, state = load_run(run / "ckpt-00000006.pt", registry=REGISTRY)
    assert state["step"] == 6
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_run(tmp_path / "empty", registry=REGISTRY)
    with pytest.raises(CheckpointError, match="'toy' model, which this nmusic does not know"):
        load_run(run, registry={"melnet": REGISTRY["toy"]})


def test_ddp_two_cpu_processes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           str(TOY_SCRIPT), "ddp", "--steps", "6", "--ckpt-every", "3", str(run)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = (torch.load(run / f"rank{r}.pt") for r in (0, 1))
    assert (r0["world_size"], r1["world_size"], r0["rank"], r1["rank"]) == (2, 2, 0, 1)
    assert r0["seen"] != r1["seen"]  # each rank drew its own batches...
    for k in r0["params"]:  # ...yet the weights (initialised differently per rank) stay identical
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    state = load_checkpoint(run / "ckpt-00000006.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert_same_modules({"net": r0["params"]}, {"net": state["modules"]["net"]})
    assert (run / "train.log").read_text().count("new run") == 1  # only rank 0 writes
