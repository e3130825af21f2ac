import os

import pytest
import torch

from nmusic.errors import CheckpointError
from nmusic.training.checkpoint import (checkpoint_name, list_checkpoints, load_checkpoint, load_newest,
                                        remove_stale_temporaries, save_checkpoint)


def _state(value: float) -> dict:
    return {"modules": {"net": {"w": torch.full((3,), value)}}, "history": [{"step": 1, "loss": value}]}


def test_save_load_round_trip_keeps_last_and_best(tmp_path):
    for step in (10, 20, 30, 40):
        path = save_checkpoint(_state(step), tmp_path, step, keep_last=2, is_best=step == 20)
        assert path == tmp_path / checkpoint_name(step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000030.pt", "ckpt-00000040.pt"]
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "ckpt-00000030.pt", "ckpt-00000040.pt"]  # no temp files
    state = load_checkpoint(tmp_path / "ckpt-00000040.pt")
    assert state["step"] == 40 and torch.equal(state["modules"]["net"]["w"], torch.full((3,), 40.0))
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 20
    assert load_newest(tmp_path)[1] == tmp_path / "ckpt-00000040.pt"
    with pytest.raises(CheckpointError, match="keep_last"):
        save_checkpoint(_state(0), tmp_path, 50, keep_last=0)


def test_newest_skips_partial_and_truncated_files(tmp_path):
    """A kill during a write leaves a temp file (or, without atomic rename, a truncated file)."""
    save_checkpoint(_state(1), tmp_path, 100)
    save_checkpoint(_state(2), tmp_path, 200)
    good = (tmp_path / "ckpt-00000200.pt").read_bytes()
    (tmp_path / ".tmp-999-ckpt-00000300.pt").write_bytes(good[: len(good) // 2])  # interrupted atomic write
    (tmp_path / "ckpt-00000400.pt").write_bytes(good[: len(good) - 100])       # truncated newest file
    (tmp_path / "ckpt-00000500.pt").write_bytes(b"")
    assert load_newest(tmp_path)[1] == tmp_path / "ckpt-00000200.pt"
    assert load_checkpoint(load_newest(tmp_path)[1])["step"] == 200
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ckpt-00000400.pt")
    assert "ckpt-00000400.pt" in str(e.value) and "incomplete or corrupt" in str(e.value)
    save_checkpoint(_state(3), tmp_path, 600, keep_last=10)  # another session's temp file may be in flight: kept
    assert [p.name for p in tmp_path.glob(".tmp-*")] == [".tmp-999-ckpt-00000300.pt"]
    assert load_newest(tmp_path)[1] == tmp_path / "ckpt-00000600.pt"
    remove_stale_temporaries(tmp_path)                        # what the session holding the run's lock does
    assert not list(tmp_path.glob(".tmp-*"))


def test_newest_of_empty_or_missing_dir(tmp_path):
    assert load_newest(tmp_path)[1] is None
    assert load_newest(tmp_path / "nope")[1] is None


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt is not an nmusic checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "nmusic-checkpoint-1", "obj": ValueError("code")}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="unsafe.pt could not be loaded"):
        load_checkpoint(tmp_path / "unsafe.pt")  # weights_only: no arbitrary objects
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt is incomplete or corrupt"):
        load_checkpoint(tmp_path / "text.pt")
