"""How a time budget is spent: :func:`nmusic.training.runs.train_within` and the recipes' ``budget_sessions``."""
from __future__ import annotations

import pytest
import torch

from nmusic.models.cmelgan import PRESETS as CMELGAN
from nmusic.models.cmelgan import CMelGANRecipe
from nmusic.models.melnet import PRESETS as MELNET
from nmusic.models.melnet import MelNetConfig, MelNetRecipe
from nmusic.models.melnet.model import TIER1_SHARE
from nmusic.training.checkpoint import list_checkpoints, load_checkpoint
from nmusic.training.runs import train_within
from tests.training.toy_model import make_cache


def test_melnet_spends_a_budget_on_tier_1_first_then_on_the_finer_tiers():
    plan = MelNetRecipe.budget_sessions(MELNET["tiny"])
    assert [(c.train_tiers, share) for c, share in plan] == [((1,), TIER1_SHARE), ((2, 3, 4), 1 - TIER1_SHARE)]
    assert all(c.layers == MELNET["tiny"].layers for c, _ in plan)
    chosen = MelNetConfig(layers=[4, 2, 2], train_tiers=[2])      # a schedule the user set is kept
    assert MelNetRecipe.budget_sessions(chosen) == [(chosen, 1.0)]
    assert CMelGANRecipe.budget_sessions(CMELGAN["tiny"]) == [(CMELGAN["tiny"], 1.0)]


def test_train_within_trains_tier_1_alone_then_the_finer_tiers_on_top(tmp_path, one_thread):
    cache = make_cache(sample_rate=16000, seconds=1.0)
    cache.save(tmp_path / "cache.pt")
    cfg = MelNetConfig(clip_frames=16, batch_size=2, dim=4, layers=[1, 1, 1], n_mixtures=2, cond_dim=2,
                       input_noise=[0.1])
    run = tmp_path / "run"
    summary = train_within("melnet", "test", cfg, tmp_path / "cache.pt", run, 4.0, progress=False,
                           train_overrides={"ckpt_every": 0, "sample_every": 0, "keep_last": 10})
    first, second = summary["sessions"]
    assert first["train_tiers"] == (1,) and second["train_tiers"] == (2, 3)
    assert "input_noise" not in first          # a schedule field the sessions share is not listed per session
    assert 0 < first["steps"] < second["steps"] == summary["steps"]
    assert summary["train_seconds"] == pytest.approx(first["train_seconds"] + second["train_seconds"])
    assert 3.0 < summary["train_seconds"] < 8.0
    ends = {state["step"]: state for state in map(load_checkpoint, list_checkpoints(run))}
    a, b = ends[first["steps"]]["modules"], ends[second["steps"]]["modules"]
    for name in a["tier1"]:        # tier 1 is not touched by the second session; tier 2 is trained there
        assert torch.equal(a["tier1"][name], b["tier1"][name])
    assert any(not torch.equal(a["tier2"][n], b["tier2"][n]) for n in a["tier2"])
