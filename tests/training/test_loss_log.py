"""LossLog: losses read back once per interval, each averaged over the steps that reported it."""
import torch

from nmusic.training.loss_log import LossLog


def test_a_loss_missing_from_some_steps_is_averaged_over_the_steps_that_have_it():
    log = LossLog(grad_scaler=False)
    for step in range(4):   # "fine" is reported on every other step only (e.g. MelNet's fine_every=2)
        losses = {"nll": torch.tensor(float(step))}
        if step % 2 == 0:
            losses["fine"] = torch.tensor(10.0 + step)
        log.add(step, losses)
    assert log.read_back() is None
    assert log.entry() == {"nll": 1.5, "fine": 11.0}
    assert log.entry() == {}


def test_pending_sums_survive_a_checkpoint_and_older_checkpoints_load():
    log = LossLog(grad_scaler=False)
    log.add(0, {"nll": torch.tensor(2.0), "fine": torch.tensor(4.0)})
    log.add(1, {"nll": torch.tensor(4.0)})
    log.read_back()
    resumed = LossLog(grad_scaler=False)
    resumed.load_state_dict(log.state_dict())
    assert resumed.entry() == {"nll": 3.0, "fine": 4.0}
    old = LossLog(grad_scaler=False)     # a checkpoint written before per-loss counts
    old.load_state_dict({"log_pending": {"sums": {"nll": 6.0}, "count": 2}})
    assert old.entry() == {"nll": 3.0}
