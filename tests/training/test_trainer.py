"""Trainer: run directory, exact resume (also after SIGKILL), divergence, budget, genres, DDP, load_run."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmusic.config import to_dict
from nmusic.errors import CheckpointError, ConfigError, TrainingDiverged
from nmusic.models.base import StepContext
from nmusic.training.checkpoint import list_checkpoints, load_checkpoint, load_newest
from nmusic.training.runs import load_run
from nmusic.training.trainer import Callback, TrainConfig, Trainer
from tests.training.toy_model import (GENRES, REGISTRY, TOY_SPEC, ToyConfig, ToyRecipe, make_cache, make_trainer,
                                      script_config, split)

TOY_SCRIPT = Path(__file__).with_name("toy_model.py")
REPO = TOY_SCRIPT.parents[2]
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
    assert info["spec"] == to_dict(TOY_SPEC) and info["model_config"]["hidden"] == 16
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
    assert last["genres"] == list(GENRES) and last["spec"] == to_dict(TOY_SPEC) and last["preset"] == "tiny"
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
    killed_at = load_newest(tmp_path / "run")[1]
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
    assert load_newest(run)[1] == run / "ckpt-00000004.pt"
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
    assert load_newest(run)[1] == run / f"ckpt-{trainer.step:08d}.pt"
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
    recipe = ToyRecipe(ToyConfig(), TOY_SPEC.__class__(**{**to_dict(TOY_SPEC), "n_fft": 128}), cache.genres)
    trainer = Trainer(recipe, cache, run, cfg(steps=4), *split(cache), "tiny")
    with pytest.raises(CheckpointError, match="n_fft: checkpoint 64, now 128"):
        trainer.fit()


def test_resume_takes_fields_added_since_the_checkpoint_at_their_defaults(tmp_path):
    """A run saved before a config field existed resumes as long as the field keeps its default."""
    run = tmp_path / "run"
    make_trainer(run, cfg(steps=2)).fit()
    path = list_checkpoints(run)[-1]
    state = torch.load(path, weights_only=True)
    del state["model_config"]["noise"]                        # as written before `noise` was a field
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="noise: checkpoint 0.3, now 0.5"):
        make_trainer(run, cfg(steps=4), ToyConfig(noise=0.5)).fit()
    assert make_trainer(run, cfg(steps=4)).fit()[-1]["step"] == 4


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


def test_step_context_step_is_the_index_and_optimizer_step_clips():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctx = StepContext(step=7, device=torch.device("cpu"), grad_clip=1e-3)
    assert type(ctx.step) is int and ctx.step == 7
    before = net.weight.detach().clone()
    ctx.backward(net(torch.ones(1, 2)).sum() * 1000)
    ctx.optimizer_step(opt)  # clipped to norm 1e-3 over the optimiser's parameters, then zeroed
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


# --- the GPU route: failing samples, fp16 skipped steps, host syncs, Drive-safe run folders ----------------
def test_a_failing_sample_costs_no_checkpoint_and_training_goes_on(tmp_path):
    """Sampling comes after the checkpoint of its step, and its error is reported, not raised."""
    run = tmp_path / "run"
    rec = Recorder()
    trainer = make_trainer(run, cfg(steps=8, sample_every=4, ckpt_every=4, val_every=0), ToyConfig(sample_fails_at=4),
                           callbacks=[rec])
    trainer.fit()
    assert [s for s, _ in rec.checkpoints] == [4, 8] and trainer.step == 8
    assert [s for s, *_ in rec.samples] == [8]
    log = (run / "train.log").read_text()
    assert "sampling at step 4 failed (RuntimeError: CUDA out of memory" in log and "training goes on" in log


def test_fp16_overflow_is_a_skipped_step_not_divergence(tmp_path, monkeypatch):
    """With the grad scaler (fp16), a non-finite step is skipped by the scaler and counted; training
    goes on with unchanged weights. Only a long run of skipped steps is divergence."""
    import nmusic.training.loss_log as loss_log

    trainer = make_trainer(tmp_path / "run", cfg(steps=8, val_every=0), ToyConfig(nan_at=4))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)   # fp16's scaler, on the CPU
    history = trainer.fit()
    assert [h["skipped_steps"] for h in history] == [0, 0, 0, 0, 1, 0, 0, 0]
    assert "loss" not in history[4] and all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    assert all(torch.isfinite(p).all() for p in trainer.recipe.modules["net"].parameters())
    assert trainer.scaler.get_scale() < 2.0 ** 8

    monkeypatch.setattr(loss_log, "MAX_SKIPPED_IN_A_ROW", 3)
    trainer = make_trainer(tmp_path / "nan", cfg(steps=20, val_every=0), ToyConfig(nan_from=4))
    trainer.scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(TrainingDiverged, match="step 7: loss=nan .*after 3 steps in a row skipped"):
        trainer.fit()


DISPATCH_WRAPPERS = (f"torch{os.sep}_compile.py", f"_dynamo{os.sep}eval_frame.py", "_python_dispatch.py")


def _host_reads_in(package: str, fn) -> list[str]:
    """Run ``fn`` counting the host reads of tensor values (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``)
    made directly by code under ``package``; returns their call sites."""
    import sys as _sys

    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        sites: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                caller = _sys._getframe(1)          # the code that asked, past torch's dispatch wrappers
                while caller is not None and caller.f_code.co_filename.endswith(DISPATCH_WRAPPERS):
                    caller = caller.f_back
                if caller is not None and package in caller.f_code.co_filename:
                    self.sites.append(f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}")
            return func(*args, **(kwargs or {}))

    with Reads() as reads:
        fn()
    return reads.sites


@pytest.mark.parametrize("model", ["cmelgan", "melnet"])
def test_losses_are_read_on_the_host_once_per_log_interval(tmp_path, model, one_thread):
    """No host sync in the training step: 12 steps logged every 6 read losses back twice in all (on
    a GPU every ``.item()`` in the step waits for the GPU to finish)."""
    from nmusic.models.cmelgan import CMelGANConfig, CMelGANRecipe
    from nmusic.models.melnet import MelNetConfig, MelNetRecipe

    spec = TOY_SPEC.__class__(sample_rate=8000, n_fft=64, hop_length=32, n_mels=16)
    cache = make_cache()
    torch.manual_seed(0)
    if model == "cmelgan":
        recipe = CMelGANRecipe(CMelGANConfig(clip_frames=16, batch_size=4, z_dim=4, g_channels=(8, 8, 8),
                                             upsample_factors=(2, 2), finetune_kernels=(3,), res_dilations=(1,),
                                             d_channels=(8, 8), d_kernels=(3, 3), d_strides=(2, 2), d_groups=(1, 1),
                                             d_minibatch_std=2), spec, cache.genres)
    else:
        recipe = MelNetRecipe(MelNetConfig(clip_frames=8, batch_size=2, dim=4, layers=[1, 1], n_mixtures=2,
                                           cond_dim=2), spec, cache.genres)
    trainer = Trainer(recipe, cache, tmp_path / "run", cfg(steps=12, log_every=6, ckpt_every=0, val_every=0),
                      *split(cache), "test")
    sites = [s for s in _host_reads_in("nmusic", trainer.fit) if not s.startswith("clips.py")]  # CPU-side loader
    assert len(trainer.history) == 2
    assert len(sites) <= 1, f"host reads of tensor values in nmusic code during training (set-up aside): {sites}"


def test_another_live_session_on_the_run_folder_is_refused(tmp_path):
    import socket

    from nmusic.training.run_lock import LOCK_NAME
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"token": "other", "host": socket.gethostname(), "pid": other.pid, "started": "earlier",
                "updated": time.time()}
        (run / LOCK_NAME).write_text(json.dumps(lock))
        with pytest.raises(CheckpointError, match=f"in use by another training session .*process {other.pid}"):
            make_trainer(run, cfg(steps=4)).fit()
        assert not list_checkpoints(run) and json.loads((run / LOCK_NAME).read_text())["token"] == "other"
        # a session on another machine (another Colab runtime on the same Drive) alive a minute ago: refused too
        (run / LOCK_NAME).write_text(json.dumps({**lock, "host": "elsewhere", "updated": time.time() - 60}))
        with pytest.raises(CheckpointError, match=r"run again in 1\d\d s, when its lock counts as abandoned"):
            make_trainer(run, cfg(steps=4)).fit()
    finally:
        other.kill()
        other.wait()
    # its process is gone (a restarted runtime): taken over at once; then released at the end
    (run / LOCK_NAME).write_text(json.dumps(lock))
    make_trainer(run, cfg(steps=4)).fit()
    assert list_checkpoints(run) and not (run / LOCK_NAME).exists()
    # a silent session elsewhere (a disconnected runtime): taken over once its lock is stale
    (run / LOCK_NAME).write_text(json.dumps({**lock, "host": "elsewhere", "updated": time.time() - 3600}))
    make_trainer(run, cfg(steps=6)).fit(resume=True)
    assert load_checkpoint(load_newest(run)[1])["step"] == 6


def test_a_session_whose_lock_was_taken_over_stops_before_writing(tmp_path):
    from nmusic.training.run_lock import LOCK_NAME
    run = tmp_path / "run"

    def take_over(step, metrics):
        if step == 3:
            lock = json.loads((run / LOCK_NAME).read_text())
            (run / LOCK_NAME).write_text(json.dumps({**lock, "token": "someone else", "pid": 1}))

    with pytest.raises(CheckpointError, match="lost the run folder: another session took it over"):
        make_trainer(run, cfg(steps=8, ckpt_every=2, val_every=0), callbacks=[take_over]).fit()
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000002.pt"]
    assert json.loads((run / LOCK_NAME).read_text())["token"] == "someone else"   # left to its holder


def test_run_lock_heartbeat_and_release(tmp_path):
    from nmusic.training.run_lock import RunLock
    lock = RunLock(tmp_path / "run", refresh_s=0.05).acquire()
    first = lock.read()["updated"]
    time.sleep(0.3)
    assert lock.read()["updated"] > first and lock.read()["token"] == lock.token
    lock.check()
    lock.release()
    assert not lock.path.exists()


def test_saving_leaves_other_writers_temporaries_and_best_is_not_serialised_twice(tmp_path, monkeypatch):
    """Two sessions may share a folder on Drive for a moment: one's save must not delete the other's
    half-written file. best.pt is a copy of the step checkpoint, not a second torch.save."""
    from nmusic.training import checkpoint
    run = tmp_path / "run"
    run.mkdir()
    theirs = run / ".tmp-4242-0badcafe-ckpt-00000010.pt"
    theirs.write_bytes(b"PK half written by another session")
    saves = []
    real_save = torch.save
    monkeypatch.setattr(checkpoint.torch, "save", lambda *a, **k: saves.append(1) or real_save(*a, **k))
    path = checkpoint.save_checkpoint({"x": torch.arange(3)}, run, 5, is_best=True)
    assert theirs.exists() and len(saves) == 1
    assert (run / "best.pt").read_bytes() == path.read_bytes() and load_checkpoint(run / "best.pt")["step"] == 5
    assert checkpoint.remove_stale_temporaries(run) == [theirs]      # what a session holding the lock does


def test_checkpoints_are_written_while_training_goes_on(tmp_path, monkeypatch):
    """A slow write (mounted Drive) does not hold the loop: the next steps run while it is written."""
    import nmusic.training.trainer as trainer_module
    real = trainer_module.save_checkpoint

    def slow(*a, **k):
        time.sleep(1.0)
        return real(*a, **k)

    monkeypatch.setattr(trainer_module, "save_checkpoint", slow)
    run = tmp_path / "run"
    seen = {}
    trainer = make_trainer(run, cfg(steps=6, ckpt_every=2, val_every=0),
                           callbacks=[lambda step, m: seen.setdefault(step, (run / "ckpt-00000002.pt").exists())])
    trainer.fit()
    assert seen[3] is False, "step 3 ran while the checkpoint of step 2 was being written"
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000004.pt", "ckpt-00000006.pt"]
