"""Frozen, typed configs: (de)serialisation with strict key checking.

Every component (autoencoder, denoiser, diffusion, training) has a frozen dataclass config.
Configs travel inside every checkpoint as JSON, and come back through `config_from_dict`,
which refuses unknown keys by name (a typo in a YAML file must not silently fall back to a
default) and restores tuples / nested configs from their JSON forms.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config could not be built from the given values (unknown key, wrong type, ...)."""


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict of JSON types (tuples become lists, nested configs dicts)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a JSON value back into the annotated type `tp` (best effort, strict on dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, _where=where)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: value {value!r} does not match {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args)) if args else tuple(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], _where: str | None = None) -> T:
    """Build the frozen dataclass `cls` from `data`; unknown keys are an error naming the key."""
    where = _where or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def replace_config(cfg: T, **overrides: Any) -> T:
    """`dataclasses.replace` that names an unknown override instead of a bare TypeError."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"{type(cfg).__name__}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(cfg, **overrides)


def from_presets(presets: Mapping[str, Callable[[], T]], name: str, what: str, **overrides: Any) -> T:
    """`presets[name]()` with `overrides` applied; an unknown `name` is a ValueError listing the `what`s."""
    if name not in presets:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(presets)}")
    return replace_config(presets[name](), **overrides)


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (`.yaml`/`.yml`) or JSON (anything else)."""
    path = Path(path)
    d = config_to_dict(cfg)
    text = yaml.safe_dump(d, sort_keys=False) if path.suffix in (".yaml", ".yml") else json.dumps(d, indent=2)
    path.write_text(text)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML or JSON config file into `cls` (strict keys)."""
    text = Path(path).read_text()
    data = yaml.safe_load(text) if Path(path).suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return config_from_dict(cls, data)
