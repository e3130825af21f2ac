from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from nmusic.config import apply_overrides, from_dict, load_override_file, parse_set_args, resolve, to_dict
from nmusic.errors import ConfigError
from nmusic.training.trainer import TrainConfig


@dataclass(frozen=True)
class Opt:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class Cfg:
    layers: int = 4
    lr: float = 1e-3
    use_ema: bool = True
    name: str = "tiny"
    dropout: float | None = None
    channels: tuple[int, ...] = (32, 64)
    norm: Literal["batch", "layer"] = "batch"
    opt: Opt = field(default_factory=Opt)

    def __post_init__(self):
        if self.layers < 1:
            raise ConfigError(f"Cfg.layers must be >= 1 (got {self.layers})")


def test_apply_overrides_checks_and_converts_types():
    base = Cfg()
    cfg = apply_overrides(base, {"layers": 6, "lr": 1, "dropout": 0.1, "channels": [8, 16, 32], "norm": "layer"})
    assert cfg.layers == 6 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.dropout == 0.1 and cfg.channels == (8, 16, 32) and cfg.norm == "layer"
    assert base.layers == 4 and base.channels == (32, 64)  # the original is untouched
    assert apply_overrides(base, {"dropout": None}).dropout is None
    assert apply_overrides(base, {}) is base


@pytest.mark.parametrize("overrides, words", [
    ({"layers": 2.5}, ["Cfg.layers", "int", "2.5"]),
    ({"layers": True}, ["Cfg.layers", "int"]),
    ({"use_ema": 1}, ["Cfg.use_ema", "bool"]),
    ({"lr": "fast"}, ["Cfg.lr", "float", "'fast'"]),
    ({"channels": [8, "x"]}, ["Cfg.channels[1]", "int"]),
    ({"norm": "group"}, ["Cfg.norm", "batch", "layer"]),
    ({"opt.betas": [0.9]}, ["Cfg.opt.betas", "2 items"]),
])
def test_apply_overrides_wrong_type_names_the_field(overrides, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Cfg(), overrides)
    for w in words:
        assert w in str(e.value)


def test_unknown_field_lists_valid_fields_and_suggests():
    with pytest.raises(ConfigError) as e:
        apply_overrides(Cfg(), {"layer": 3})
    msg = str(e.value)
    assert "'layer'" in msg and "did you mean 'layers'" in msg
    assert "valid fields: layers, lr, use_ema, name, dropout, channels, norm, opt" in msg
    with pytest.raises(ConfigError, match="Cfg.opt: unknown field 'beta'"):
        apply_overrides(Cfg(), {"opt.beta": 0.5})


def test_nested_dataclass_by_dotted_key_or_dict():
    cfg = apply_overrides(Cfg(), {"opt.lr": 0.5})
    assert cfg.opt == Opt(lr=0.5)
    cfg = apply_overrides(Cfg(), {"opt": {"betas": [0.5, 0.9]}})
    assert cfg.opt == Opt(lr=1e-3, betas=(0.5, 0.9))


def test_validation_in_post_init_surfaces_as_config_error():
    with pytest.raises(ConfigError, match="layers must be >= 1"):
        apply_overrides(Cfg(), {"layers": 0})
    with pytest.raises(ConfigError, match="TrainConfig.amp"):
        apply_overrides(TrainConfig(), {"amp": "fp8"})
    with pytest.raises(ConfigError, match="TrainConfig.log_every"):
        TrainConfig(log_every=0)


def test_dict_round_trip():
    cfg = apply_overrides(Cfg(), {"channels": [1, 2], "opt.lr": 0.1})
    d = json.loads(json.dumps(to_dict(cfg)))  # lists instead of tuples, as after JSON
    assert from_dict(Cfg, d) == cfg
    with pytest.raises(ConfigError, match="unknown field 'bogus'"):
        from_dict(Cfg, {**d, "bogus": 1})


def test_parse_set_args():
    got = parse_set_args(["lr=1e-4", "layers=3", "use_ema=false", "name=paper-small", "dropout=None",
                          "channels=[4, 8]", "note=a=b", 'quoted="12"'])
    assert got == {"lr": 1e-4, "layers": 3, "use_ema": False, "name": "paper-small", "dropout": None,
                   "channels": [4, 8], "note": "a=b", "quoted": "12"}
    cfg = apply_overrides(Cfg(), {k: got[k] for k in ("lr", "layers", "use_ema", "channels")})
    assert (cfg.lr, cfg.layers, cfg.use_ema, cfg.channels) == (1e-4, 3, False, (4, 8))
    for bad in ["lr", "=3", ""]:
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_set_args([bad])


def test_load_override_file(tmp_path):
    (tmp_path / "a.json").write_text('{"lr": 0.01, "opt": {"lr": 0.5}}')
    (tmp_path / "b.yaml").write_text("lr: 0.01\nchannels: [1, 2]\nuse_ema: no\n")
    (tmp_path / "empty.yml").write_text("")
    assert load_override_file(tmp_path / "a.json") == {"lr": 0.01, "opt": {"lr": 0.5}}
    assert load_override_file(tmp_path / "b.yaml") == {"lr": 0.01, "channels": [1, 2], "use_ema": False}
    assert load_override_file(tmp_path / "empty.yml") == {}
    cfg = apply_overrides(Cfg(), load_override_file(tmp_path / "b.yaml"))
    assert cfg.channels == (1, 2) and cfg.use_ema is False

    (tmp_path / "bad.json").write_text('{"lr": }')
    (tmp_path / "bad.yaml").write_text("lr: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "c.toml").write_text("lr = 1\n")
    for name, words in [("bad.json", "invalid JSON at line 1"), ("bad.yaml", "invalid YAML"),
                        ("list.yaml", "must be a mapping"), ("c.toml", "unsupported extension"),
                        ("missing.json", "does not exist")]:
        with pytest.raises(ConfigError) as e:
            load_override_file(tmp_path / name)
        assert name in str(e.value) and words in str(e.value)


def test_resolve():
    presets = {"tiny": Cfg(layers=2), "paper-small": Cfg(layers=8)}
    assert resolve(presets, "paper-small").layers == 8
    assert resolve(presets, "tiny", {"lr": 0.5}) == Cfg(layers=2, lr=0.5)
    with pytest.raises(ConfigError) as e:
        resolve(presets, "huge")
    assert "'huge'" in str(e.value) and "tiny, paper-small" in str(e.value)
