"""YAML -> validated, typed config.

A task's schema is a tree of dataclasses (see :mod:`medtasks.schema` for the shared sections).
:func:`load_config` reads a YAML file, follows its ``base:`` chain (a path relative to the file
that names it; the child's keys deep-merge over the base's), applies ``a.b=value`` overrides
(values parsed as YAML, so ``train.epochs=3`` is an int and ``model.use_position=false`` a
bool), and converts the result into the schema. Every error names the key path; unknown keys
suggest the closest valid name.

Values are checked before any work starts (no data synthesised, no run directory made): the type of each
field, its declared rules (:func:`checked`: ranges, counts, fractions summing to 1, known registry names), then
each section's ``validate()`` for the rules that relate several fields (``normal`` or ``normal_ratio``, not both).

Example:
    >>> cfg = load_config("medtasks/configs/ich_classify.demo.yaml", IchConfig, ["train.epochs=2"])
    >>> cfg.train.epochs
    2
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

import yaml

from medtasks.config_rules import (  # noqa: F401  (re-exported: `from medtasks.config import checked, ...`)
    CHECK,
    Check,
    ConfigError,
    Options,
    check_config,
    check_fields,
    checked,
    field_rules,
)
from medtasks.registry import did_you_mean

# ---------------------------------------------------------------------------------------------
# reading YAML with base: inheritance and overrides


def deep_merge(base: dict, child: Mapping) -> dict:
    """Return ``base`` updated recursively by ``child`` (child wins; dicts merge, lists replace)."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and merge it over its ``base:`` file(s); the ``base`` key is consumed."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"base: inheritance cycle: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a path string, got {base!r}")
    return deep_merge(read_yaml_chain(path.parent / base, (*_seen, path)), data)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=value`` strings to ``data`` (a copy); values are parsed as YAML scalars/lists."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# dict -> dataclass conversion with key-path errors


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        opts = [str(a) for a in args]
        raise ConfigError(f"{path}: invalid value {value!r}.{did_you_mean(str(value), opts)}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: unsupported schema type {tp!r}")


def from_dict(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ``ConfigError``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(f"{where}: unknown key.{did_you_mean(str(key), list(fields))}")
        kwargs[key] = _convert(value, hints[key], where)
    obj = cls(**kwargs)
    # the given sections were checked as they were built; the defaulted ones are checked here
    check_fields(obj, path, nested=[f for f in fields if f not in data])
    return obj


def to_dict(cfg: Any) -> dict:
    """Plain-python dict of a config dataclass (tuples become lists) for YAML/JSON."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return clean(dataclasses.asdict(cfg))


def config_hash(cfg: Any) -> str:
    """Short stable hash of a resolved config (goes into metrics.json)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def load_config(path: str | Path | None, schema: type, overrides: Sequence[str] = (),
                defaults: Mapping[str, Any] | None = None, overlays: Sequence[str | Path] = ()) -> Any:
    """Read ``path`` (with ``base:``), merge over ``defaults``, then each of ``overlays``, apply
    ``overrides``, validate.

    Args:
        path: YAML file, or None for ``defaults`` alone.
        schema: the task's config dataclass.
        overrides: ``key.path=value`` strings from the command line.
        defaults: a dict merged under the file (e.g. values the API fills in).
        overlays: YAML files whose own keys (their ``base:`` ignored) merge over ``path``'s: a protocol
            profile (``<task>.report.yaml``) laid over the demo profile, so the report's protocol runs on
            the synthetic default at the demo's size.
    """
    data: dict = dict(defaults or {})
    if path is not None:
        data = deep_merge(data, read_yaml_chain(path))
    for overlay in overlays:
        own = yaml.safe_load(Path(overlay).read_text(encoding="utf-8")) or {}
        if not isinstance(own, dict):
            raise ConfigError(f"{overlay}: expected a mapping at the top level")
        own.pop("base", None)
        data = deep_merge(data, own)
    data = apply_overrides(data, overrides)
    return from_dict(schema, data)


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)
