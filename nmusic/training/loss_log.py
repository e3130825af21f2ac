"""The losses of the training steps, read back from the device once per log interval.

A recipe's ``train_step`` returns its losses as 0-dim tensors on the device; reading each one on
the host would wait for the GPU after every step. :class:`LossLog` keeps them unread and brings
all of them back in one transfer when the trainer logs, validates, samples or checkpoints
(:meth:`LossLog.read_back`); the finite ones are summed into the next log entry
(:meth:`LossLog.entry`: each loss's mean over the steps since the last entry that reported it; a
recipe may leave a loss out of a step, e.g. MelNet's finer tiers when they train on every n-th step).

A non-finite loss is divergence, except under the fp16 grad scaler: there it is a step the scaler
skipped (it lowers its scale and tries again), counted in the log entry, and only
:data:`MAX_SKIPPED_IN_A_ROW` of them in a row are divergence.
"""
from __future__ import annotations

import math

import torch

MAX_SKIPPED_IN_A_ROW = 25  # fp16: this many steps in a row skipped by the grad scaler count as divergence


class LossLog:
    """Unread losses, the sums of the read ones since the last entry, and the fp16-skipped steps."""

    def __init__(self, grad_scaler: bool):
        self.grad_scaler = grad_scaler
        self.unread: list[tuple[int, dict]] = []     # (step index, losses) not read back from the device yet
        self.pending = {"sums": {}, "counts": {}}     # read back, not logged yet: per loss, its sum and steps
        self.skipped = {"total": 0, "in_a_row": 0, "since_log": 0}

    def add(self, step: int, losses: dict) -> None:
        """The losses (tensors or floats) of 0-based step ``step``, left on the device."""
        self.unread.append((step, losses))

    def read_back(self) -> tuple[int, dict] | None:
        """Read every unread loss back (one transfer); ``None``, or ``(step, the non-finite losses)`` of
        the step at which training diverged (1-based)."""
        unread, self.unread = self.unread, []
        tensors = [v for _, losses in unread for v in losses.values() if isinstance(v, torch.Tensor)]
        values = iter(torch.stack([t.detach().reshape(()).double() for t in tensors]).tolist() if tensors else [])
        for index, losses in unread:
            floats = {k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()}
            if all(math.isfinite(v) for v in floats.values()):
                self.skipped["in_a_row"] = 0
                for k, v in floats.items():
                    self.pending["sums"][k] = self.pending["sums"].get(k, 0.0) + v
                    self.pending["counts"][k] = self.pending["counts"].get(k, 0) + 1
                continue
            if self.grad_scaler:
                self.skipped["total"] += 1
                self.skipped["since_log"] += 1
                self.skipped["in_a_row"] += 1
                if self.skipped["in_a_row"] < MAX_SKIPPED_IN_A_ROW:
                    continue
            return index + 1, {k: v for k, v in floats.items() if not math.isfinite(v)}
        return None

    def entry(self) -> dict:
        """The mean of every loss since the last entry (and, under fp16, the steps skipped meanwhile)."""
        entry = {k: v / self.pending["counts"][k] for k, v in self.pending["sums"].items()}
        if self.grad_scaler:
            entry["skipped_steps"] = self.skipped["since_log"]
            self.skipped["since_log"] = 0
        self.pending = {"sums": {}, "counts": {}}
        return entry

    def state_dict(self) -> dict:
        return {"log_pending": {"sums": dict(self.pending["sums"]), "counts": dict(self.pending["counts"])},
                "skipped_steps": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        pending = state.get("log_pending") or {}
        sums = dict(pending.get("sums") or {})
        counts = pending.get("counts") or {k: pending.get("count", 1) for k in sums}   # older checkpoints: one count
        self.pending = {"sums": sums, "counts": dict(counts)}
        self.skipped = {"total": 0, "in_a_row": 0, "since_log": 0, **(state.get("skipped_steps") or {})}
