"""``nmusic bench --quick`` (the CI smoke run) and the pieces it is built from. No timed asserts."""
import json
import math
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nmusic.bench import format_table, measure, run_bench, sampling_speed
from nmusic.interfaces.cli import main
from nmusic.models.melnet import PRESETS as MELNET_PRESETS


@pytest.fixture(scope="module")
def quick(tmp_path_factory, one_thread):
    """One ``nmusic bench --quick`` run through the CLI, shared by the structure tests."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_bench_json_has_every_section(quick):
    assert quick["meta"]["quick"] is True and quick["meta"]["device"] == "cpu"
    assert quick["meta"]["amp"] == ["none"] and quick["meta"]["threads"] >= 1
    assert {(r["model"], r["preset"]) for r in quick["train"]} == {("melnet", "tiny"), ("cmelgan", "tiny")}
    assert [r["model"] for r in quick["sample"]] == ["melnet", "cmelgan"]
    assert quick["data"]["loaders"]


def test_training_rows_are_in_the_papers_units(quick):
    for r in quick["train"]:
        for key in ("step_s", "khz", "flops_per_step", "flops_per_s", "peak_mem_mb", "params", "clip_seconds"):
            assert positive(r[key]), (r["model"], key, r[key])
        assert len(r["step_s_all"]) == 1 and r["step_s"] == r["step_s_all"][0]
        # kHz = batch x clip samples / seconds per step
        assert r["khz"] == pytest.approx(r["batch"] * r["clip_seconds"] * 16000 / r["step_s"] / 1000, rel=1e-6)
        assert r["peak_tflops"] is None and r["peak_fraction"] is None    # a CPU has no known peak
        assert "reference" not in r                                      # references are for paper presets


def test_sampling_rows_compare_cached_with_both_naive_samplers(quick):
    mel, gan = quick["sample"]
    assert set(mel["methods"]) == {"cached", "frame", "element"}
    for m in mel["methods"].values():
        assert m["measured"] and positive(m["seconds"]) and positive(m["audio_s_per_s"])
        assert len(m["per_tier_s"]) == len(mel["tier_shapes"]) == len(MELNET_PRESETS["tiny"].layers)
    assert set(mel["speedup"]) == {"frame", "element"} and all(positive(v) for v in mel["speedup"].values())
    assert all(positive(m["gflop"]) and positive(m["gflop_per_s"]) for m in mel["methods"].values())
    assert 1 < mel["flop_ratio"]["frame"] < mel["flop_ratio"]["element"]
    assert positive(gan["methods"]["generator"]["audio_s_per_s"]) and gan["batch"] == 8


def test_data_rows(quick):
    d = quick["data"]
    assert d["files"] == 3 and positive(d["decode_resample_hours_per_min"]) and positive(d["audio_hours"])
    for row in d["loaders"]:
        for key in ("ram_batches_per_s", "disk_batches_per_s", "ram_vs_disk", "train_steps_per_s",
                    "loader_share_of_step"):
            assert positive(row[key]), (row["name"], key)


def test_table_prints_every_row(quick):
    table = format_table(quick)
    assert table.count("melnet   tiny") == 4 and table.count("cmelgan  tiny") == 2   # train + sample rows
    assert table.count("melnet tiny") == table.count("cmelgan tiny") == 1               # loader rows
    assert "hours of audio per minute" in table


def test_sampling_flops_match_counted_sampler_runs():
    """The two-pass formula gives what FlopCounterMode counts on the real sampler runs."""
    from nmusic.models.melnet.sampling import sample
    from nmusic.models.melnet.tiers import Tier, tier_shapes
    torch.manual_seed(0)
    genre, T = torch.tensor([0, 2]), 9
    tiers = [Tier(f, 8, layers, 3, n_mixtures=3, conditional=g > 0, genre_cond=g == 0, cond_dim=4).eval()
             for g, ((_, f), layers) in enumerate(zip(tier_shapes(T, 12, 3), [2, 1, 1]))]
    expected = sampling_speed.melnet_sampling_flops(tiers, genre, T, 12)
    for method in ("cached", "frame"):
        counter = FlopCounterMode(display=False, custom_mapping=measure.RNN_FLOPS)
        with counter:
            sample(tiers, genre, T, 12, naive=method if method != "cached" else False,
                   generator=torch.Generator().manual_seed(0))
        counted = counter.get_total_flops()
        if method == "cached":
            # it projects h^t and the carried h^f through W_ih separately (one more (D, 4D) matmul
            # per element and layer), maps x[i, j-1] by a multiply-add, not a 1-wide matmul, and
            # folds the biases once per tier (FrequencySteps)
            for (t, f), layers in zip(tier_shapes(T, 12, 3), [2, 1, 1]):
                counted -= 2 * 2 * t * f * (layers * 8 * 32 - 8) + layers * 2 * 8 * 32 + 2 * 8 * 9
        assert counted == expected[method], method
    assert expected["frame"] > 2 * expected["cached"]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_flops_are_counted_forward_and_backward(bidirectional):
    """FlopCounterMode misses fused RNN kernels; RNN_FLOPS adds 2 x rows x weights (x2 backward)."""
    torch.manual_seed(0)
    N, T, D, H = 3, 5, 4, 6
    rnn = torch.nn.LSTM(D, H, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(N, T, D, requires_grad=True)
    counter = FlopCounterMode(display=False, custom_mapping=measure.RNN_FLOPS)
    with counter:
        rnn(x)[0].sum().backward()
    dirs = 2 if bidirectional else 1
    forward = 2 * N * T * dirs * 4 * H * (D + H)
    assert counter.get_total_flops() == 3 * forward
    plain = FlopCounterMode(display=False)
    with plain:
        rnn(x)[0].sum().backward()
    if torch.backends.mkldnn.is_available():     # the fused kernel is invisible without RNN_FLOPS
        assert plain.get_total_flops() < counter.get_total_flops()


def test_peak_table_knows_the_issue_devices():
    names = {"NVIDIA H100 80GB HBM3": 989, "NVIDIA H200": 989, "NVIDIA A100-SXM4-40GB": 312, "Tesla T4": None,
             "Tesla P100-PCIE-16GB": None}
    for name, bf16 in names.items():
        peaks = next(p for pattern, p in measure.PEAK_TFLOPS if re.search(pattern, name))
        assert peaks.get("bf16") == bf16
    assert measure.peak_tflops(torch.device("cpu"), "bf16") is None


def test_bad_arguments_are_config_errors():
    from nmusic.errors import ConfigError
    with pytest.raises(ConfigError, match="preset"):
        run_bench(out=None, quick=True, presets=["huge"], print_table=False)
    with pytest.raises(ConfigError, match="fp16"):
        run_bench(out=None, quick=True, amp="fp16", device="cpu", print_table=False)
