"""Typed configuration sections: frozen dataclasses built from YAML mappings, checked once.

:func:`from_mapping` is the one validator of every configuration section (training, model, masks): unknown
keys, wrong types and values outside a ``Literal`` are errors naming the key by its dotted path, e.g.
``optim.lr``; nested dataclasses are built recursively; a ``__post_init__`` may check values further.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from brainjepa.errors import InputError


def from_mapping(cls, values: Mapping[str, Any] | None, where: str = ""):
    """Instantiate dataclass ``cls`` from a mapping; ``where`` is the section's dotted path in messages."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise InputError(f"config section '{where or cls.__name__}' must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = ", ".join(_join(where, k) for k in unknown)
        raise InputError(f"unknown key(s) {keys}; allowed in '{where or cls.__name__}': {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint, path = hints[name], _join(where, name)
        kwargs[name] = from_mapping(hint, value, path) if dataclasses.is_dataclass(hint) else coerce(value, hint, path)
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def coerce(value, hint, where: str):
    """Check a value against its annotation (int, float, bool, str, Literal, optional, tuple, dict).

    '1e-3' counts as a float (YAML reads it as a string); ints are accepted for floats, never bools.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{where}: unsupported annotation {hint}")
        return coerce(value, rest[0], where)
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where} is {value!r}; allowed: {', '.join(map(str, args))}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise InputError(f"config '{where}': expected a list, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"config '{where}': expected {len(args)} values, got {value!r}")
        return tuple(coerce(v, t, where) for v, t in zip(value, args))
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"config '{where}': expected a number, got {value!r}") from None
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"config '{where}': expected an integer, got {value!r}")
    if hint in (bool, str) and not isinstance(value, hint):
        raise InputError(f"config '{where}': expected {hint.__name__}, got {value!r}")
    if (hint is dict or origin is dict) and not isinstance(value, Mapping):
        raise InputError(f"config '{where}': expected a mapping, got {value!r}")
    if origin is list and (isinstance(value, str) or not isinstance(value, (list, tuple))):
        raise InputError(f"config '{where}': expected a list, got {value!r}")
    return value


def choices(hint) -> tuple:
    """The allowed values of a ``Literal`` annotation (one list per setting, read where it is needed)."""
    return typing.get_args(hint)


def to_plain(value):
    """Dataclasses, tuples and mappings -> plain dicts and lists (for YAML, JSON and checkpoints)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    return value
