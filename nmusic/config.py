"""Config dataclasses: presets plus type-checked overrides from the command line and small files.

Every model family defines a config dataclass and named presets (``tiny``, ``paper-small``,
``paper-large``: the paper's section 4 sizes); the trainer's :class:`~nmusic.training.trainer.TrainConfig`
and the spectrogram's :class:`~nmusic.frontend.SpecParams` are dataclasses too. A run is
*preset + overrides*:

    cfg = resolve(PRESETS, "tiny", {"lr": 1e-4})                 # from Python
    cfg = resolve(PRESETS, "tiny", parse_set_args(["lr=1e-4"]))  # from ``--set lr=1e-4``
    cfg = resolve(PRESETS, "tiny", load_override_file("my.yaml"))

Overrides are checked against the dataclass field types, so a typo or a wrong type is a
:class:`~nmusic.errors.ConfigError` naming the field (and listing the valid ones) instead of a
failure deep inside training. Nested dataclass fields take a dict or dotted keys (``"opt.lr"``).

Every config checks itself when it is made, in ``__post_init__``, with :func:`require` (so a bad
value is refused where it is set, naming the field), and holds sequences as tuples
(:func:`tuples_from_lists`: a list is accepted and stored as a tuple). :func:`to_dict` and
:func:`from_dict` are the one way a config goes into a checkpoint and comes back.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from pathlib import Path

from .errors import ConfigError


def require(ok: bool, cfg, field: str, message: str) -> None:
    """The one way a config checks a field: :class:`ConfigError` ``"<Config>.<field>: <message> (got <value>)"``."""
    if not ok:
        value = f" (got {getattr(cfg, field)!r})" if hasattr(cfg, field) else ""
        raise ConfigError(f"{type(cfg).__name__}.{field}: {message}{value}")


@functools.lru_cache(maxsize=None)
def _tuple_fields(cls) -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls)
                 if typing.get_origin(hints.get(f.name)) is tuple or hints.get(f.name) is tuple)


def tuples_from_lists(cfg) -> None:
    """Store every ``tuple[...]`` field of dataclass ``cfg`` given as a list as a tuple (call it in
    ``__post_init__``); anything else there is a :class:`ConfigError`."""
    for name in _tuple_fields(type(cfg)):
        value = getattr(cfg, name)
        require(isinstance(value, (list, tuple)), cfg, name, "must be a list")
        object.__setattr__(cfg, name, tuple(value))


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, where: str):
    """Return ``value`` checked (and mildly converted: int->float, list->tuple) against type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is typing.Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise bad
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        container = origin or tp
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)} ({value!r})")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else typing.Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return container(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return _apply(tp(), value, where) if _has_defaults(tp) else from_dict(tp, value)
        raise bad
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise bad
    return value  # an annotation we do not understand: accept


def _has_defaults(cls) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def _unknown_field(cls, name: str, where: str) -> ConfigError:
    valid = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown field {name!r}{hint}; valid fields: {', '.join(valid)}")


def _nest(overrides: dict) -> dict:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``."""
    out: dict = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"config override keys must be non-empty strings, got {key!r}")
        head, _, rest = key.partition(".")
        if rest:
            sub = out.setdefault(head, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"config override {key!r} conflicts with {head!r}={sub!r}")
            sub[rest] = value
        else:
            out[head] = value
    return out


def _construct(cls, values: dict, where: str):
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _apply(cfg, overrides: dict, where: str):
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    changes = {}
    for name, value in _nest(overrides).items():
        if name not in fields:
            raise _unknown_field(cls, name, where)
        tp = hints.get(name, typing.Any)
        current = getattr(cfg, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            changes[name] = _apply(current, value, f"{where}.{name}")
        else:
            changes[name] = _coerce(value, tp, f"{where}.{name}")
    if not changes:
        return cfg
    kept = {n: getattr(cfg, n) for n, f in fields.items() if f.init}
    kept.update(changes)
    return _construct(cls, kept, where)


def apply_overrides(cfg, overrides: dict | None):
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied, type-checked field by field.

    ``overrides`` maps field names (or dotted paths into nested dataclasses) to values. ints are
    accepted for float fields and lists for tuple fields; anything else of the wrong type, or an
    unknown field, raises :class:`ConfigError` naming the field.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"apply_overrides needs a dataclass instance, got {cfg!r}")
    if overrides is None:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError(f"config overrides must be a mapping of field -> value, got {type(overrides).__name__}")
    return _apply(cfg, overrides, type(cfg).__name__)


def to_dict(cfg) -> dict:
    """Dataclass -> plain dict (nested dataclasses included), as stored in checkpoints and run.json."""
    return dataclasses.asdict(cfg)


def from_dict(cls, values: dict):
    """Rebuild dataclass ``cls`` from :func:`to_dict` output, type-checked (unknown fields are errors)."""
    where = cls.__name__
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(values).__name__}")
    if _has_defaults(cls):
        return _apply(cls(), values, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name in values:
        if name not in names:
            raise _unknown_field(cls, name, where)
    checked = {n: _coerce(v, hints.get(n, typing.Any), f"{where}.{n}") for n, v in values.items()}
    return _construct(cls, checked, where)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    specials = {"True": True, "False": False, "None": None, "none": None, "null": None}
    return specials.get(text, text)


def parse_set_args(items: list[str] | tuple[str, ...]) -> dict:
    """``["lr=1e-4", "amp=bf16", "layers=[4,3]"]`` -> ``{"lr": 0.0001, "amp": "bf16", "layers": [4, 3]}``.

    Values are JSON literals (numbers, true/false/null, lists, quoted strings); anything that is not
    valid JSON is taken as a plain string, and Python's ``True``/``False``/``None`` are understood.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (for example --set lr=1e-4), got {item!r}")
        out[key] = _parse_value(value.strip())
    return out


def load_override_file(path) -> dict:
    """Read a small ``.json`` / ``.yaml`` / ``.yml`` file of overrides (a mapping of field -> value)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a .json or .yaml file of field: value lines")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path}: invalid JSON at line {e.lineno} column {e.colno}: "
                              f"{e.msg}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"config file {path}: reading YAML needs PyYAML (pip install pyyaml); "
                              f"or write the overrides as .json") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: invalid YAML: {e}") from None
        data = {} if data is None else data
    else:
        raise ConfigError(f"config file {path}: unsupported extension {path.suffix!r}; use .json, .yaml or .yml")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of field: value, "
                          f"got {type(data).__name__}")
    return data


def resolve(presets: dict, name: str, overrides: dict | None = None):
    """Preset ``name`` from ``presets`` with ``overrides`` applied (see :func:`apply_overrides`)."""
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return apply_overrides(presets[name], overrides or {})
