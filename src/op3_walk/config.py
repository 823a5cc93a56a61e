"""Typed configuration: YAML files loaded into dataclasses, strictly.

Every config section is a ``@dataclass`` whose fields carry their documentation in ``metadata["doc"]``.
``from_dict`` rejects unknown keys, wrong types and missing required keys with an error that names the file and the
key path, so a typo in a YAML file never silently falls back to a default.
"""
import dataclasses
import math
import os
import typing
from typing import Any, Dict, Mapping, Optional, Type, TypeVar

import yaml

from op3_walk import CONFIG_DIR

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping does not match its dataclass."""


def doc(text: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its documentation (shown by ``describe``)."""
    kwargs = {"metadata": {"doc": text}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, where)
        raise ConfigError("%s: unsupported union type %r" % (where, tp))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError("%s: expected a mapping for %s, got %r" % (where, tp.__name__, value))
        return from_dict(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError("%s: expected a list, got %r" % (where, value))
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError("%s: expected %d items, got %d" % (where, len(args), len(value)))
            return tuple(_convert(a, v, "%s[%d]" % (where, i)) for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, "%s[%d]" % (where, i)) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError("%s: expected a mapping, got %r" % (where, value))
        key_tp, val_tp = args if args else (Any, Any)
        return {_convert(key_tp, k, where): _convert(val_tp, v, "%s.%s" % (where, k)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError("%s: expected true/false, got %r" % (where, value))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("%s: expected an integer, got %r" % (where, value))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("%s: expected a number, got %r" % (where, value))
        if not math.isfinite(float(value)):
            raise ConfigError("%s: expected a finite number, got %r" % (where, value))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError("%s: expected a string, got %r" % (where, value))
        return value
    raise ConfigError("%s: unsupported field type %r" % (where, tp))


def from_dict(cls: Type[T], data: Optional[Mapping[str, Any]], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and missing keys raise ``ConfigError``."""
    where = where or cls.__name__
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError("%s: expected a mapping, got %r" % (where, data))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError("%s: unknown key(s) %s; allowed: %s" % (where, ", ".join(map(str, unknown)),
                                                                   ", ".join(sorted(fields))))
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], "%s.%s" % (where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError("%s: missing required key '%s'" % (where, name))
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError("%s: %s" % (where, exc)) from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError("%s: %s" % (where, exc)) from exc
    return obj


def to_dict(obj: Any) -> Dict[str, Any]:
    """Plain-data (YAML/JSON-safe) copy of a config dataclass."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(obj)


def resolve(path: str) -> str:
    """Resolve a config path: absolute, relative to the working directory, or relative to ``config/``."""
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    candidate = os.path.join(CONFIG_DIR, path)
    if os.path.exists(candidate):
        return candidate
    raise ConfigError("config file not found: %s (looked in the working directory and %s)" % (path, CONFIG_DIR))


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML mapping; a syntax error or a non-mapping top level raises ``ConfigError``."""
    full = resolve(path)
    try:
        with open(full, "r") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError("%s: invalid YAML: %s" % (full, exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("%s: top level must be a mapping" % full)
    return data


def load(cls: Type[T], path: str, overrides: Optional[Mapping[str, Any]] = None) -> T:
    """Load ``cls`` from a YAML file, with optional key overrides (shallow, validated like the file)."""
    data = load_yaml(path)
    if overrides:
        data = dict(data)
        data.update(overrides)
    return from_dict(cls, data, where=resolve(path))


def describe(cls: Type[Any], indent: str = "") -> str:
    """Human-readable list of a dataclass's keys, types, defaults and docs (for README tables and --help)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        tp = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("typing.", ""))
        lines.append("%s%s (%s, default %r): %s" % (indent, f.name, tp, default, f.metadata.get("doc", "")))
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(describe(hints[f.name], indent + "  "))
    return "\n".join(lines)
