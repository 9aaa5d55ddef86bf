"""The value types of config keys: how a YAML value becomes one (`coerce`) and how it is named in an error
or in docs/configuration.md (`describe_type`).

The rules: an integer is a number; a numeric string is a number (YAML 1.1 reads ``5e-7`` as a string); a
number with no fractional part is an integer (``1e3`` is 1000); bools are never numbers and only ``true`` /
``false`` are bools; ``null`` only where the type says ``X | None``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["BadType", "coerce", "describe_type", "is_dataclass_type", "optional_parts"]


class BadType(Exception):
    """A value that `coerce` cannot turn into the type (the caller names the key)."""


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def optional_parts(tp: Any) -> tuple[bool, Any]:
    """(accepts None, the non-None type) of ``X | None``; other types: (False, tp)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return type(None) in args, rest[0]
    return False, tp


def union_parts(tp: Any) -> tuple[Any, ...]:
    """The non-None members of a union with more than one of them (``str | list[str]``); else ()."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
        if len(rest) > 1:
            return rest
    return ()


def _bare(words: str) -> str:
    """'an integer' -> 'integer'."""
    return words.split(" ", 1)[1] if words.split(" ", 1)[0] in ("a", "an") else words


def describe_type(tp: Any) -> str:
    """Human words for a field type: 'an integer or null', 'a mapping of string to string', ..."""
    nullable, tp = optional_parts(tp)
    origin = typing.get_origin(tp)
    if union_parts(tp):
        nullable = type(None) in typing.get_args(tp)
        words = " or ".join(describe_type(part) for part in union_parts(tp))
    elif tp is bool:
        words = "true or false"
    elif tp is int:
        words = "an integer"
    elif tp is float:
        words = "a number"
    elif tp is str:
        words = "a string"
    elif tp is Any:
        words = "any value"
    elif origin is dict:
        k, v = typing.get_args(tp)
        words = "a mapping" if v is Any else f"a mapping of {_bare(describe_type(k))} to {_bare(describe_type(v))}"
    elif origin is list:
        (e,) = typing.get_args(tp)
        words = f"a list of {_bare(describe_type(e))}s"
    elif is_dataclass_type(tp):
        words = f"a mapping (section with keys {', '.join(f.name for f in dataclasses.fields(tp))})"
    else:
        words = str(tp)
    return words + (" or null" if nullable else "")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadType from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise BadType


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise BadType from None
    raise BadType


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (the module docstring's rules), or `BadType`."""
    nullable, tp = optional_parts(tp)
    if value is None:
        if nullable or tp is Any:
            return None
        raise BadType
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    for part in union_parts(tp):  # the first member that accepts the value
        try:
            return coerce(value, part)
        except BadType:
            continue
    if union_parts(tp):
        raise BadType
    if tp is bool or tp is str:
        if isinstance(value, tp):
            return value
        raise BadType
    if tp is int:
        return _integer(value)
    if tp is float:
        return _number(value)
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise BadType
        return {coerce(k, kt): coerce(v, vt) for k, v in value.items()}
    if origin is list:
        (et,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise BadType
        return [coerce(v, et) for v in value]
    raise BadType
