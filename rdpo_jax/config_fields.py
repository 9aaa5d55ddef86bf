"""Config fields that carry what they mean: a description, the accepted values or range, checked on creation.

A config dataclass declares each key once, with `setting`::

    loss: str = setting("rdpo", choices=tuple(LOSSES), doc="the preference loss")
    epochs: int = setting(1, within=POSITIVE, doc="passes over the training pairs")

and calls `check_settings` in ``__post_init__``, so no instance holds a value outside its choices or range.
The loader (`rdpo_jax.config_loader`) reads the same metadata to reject a bad value where it was written,
and `rdpo_jax.config_docs` renders it into docs/configuration.md. This module imports nothing heavy: the
modules that own a setting (the synthetic task, the mesh) import it too.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any

from rdpo_jax.errors import ConfigError

__all__ = ["NON_NEGATIVE", "POSITIVE", "POSITIVE_NUMBER", "POSITIVE_NUMBER_OR_NULL", "POSITIVE_OR_NULL",
           "UNIT_INTERVAL", "Range", "check_settings", "choices_of", "doc_of", "not_accepted", "out_of_range",
           "range_of", "setting", "suggest"]


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number setting accepts: ``accepted`` says it in words, ``contains`` decides it."""

    accepted: str
    contains: Callable[[Any], bool]


POSITIVE = Range("a positive integer", lambda v: v > 0)
POSITIVE_OR_NULL = Range("a positive integer or null", lambda v: v is None or v > 0)
NON_NEGATIVE = Range("an integer >= 0", lambda v: v >= 0)
POSITIVE_NUMBER = Range("a positive number", lambda v: v > 0)
POSITIVE_NUMBER_OR_NULL = Range("a positive number or null", lambda v: v is None or v > 0)
UNIT_INTERVAL = Range("a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)

_DOC, _CHOICES, _RANGE = "rdpo_doc", "rdpo_choices", "rdpo_range"


def setting(default: Any = dataclasses.MISSING, *, doc: str, choices: Sequence[str] | None = None,
            within: Range | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its description, and optionally its accepted strings or its range."""
    metadata: dict[str, Any] = {_DOC: doc}
    if choices is not None:
        metadata[_CHOICES] = tuple(choices)
    if within is not None:
        metadata[_RANGE] = within
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def doc_of(field: dataclasses.Field) -> str | None:
    return field.metadata.get(_DOC)


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    return field.metadata.get(_CHOICES)


def range_of(field: dataclasses.Field) -> Range | None:
    return field.metadata.get(_RANGE)


def suggest(name: Any, valid: Sequence[Any], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest valid name (difflib), else ``"."``; ends a sentence."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean {prefix + close[0]!r}?" if close else "."


def not_accepted(key: str, value: Any, accepted: Sequence[str]) -> str:
    """``"key='x' is not accepted; did you mean 'y'? Accepted: a, b"``."""
    return f"{key}={value!r} is not accepted{suggest(value, accepted)} Accepted: {', '.join(accepted)}"


def out_of_range(key: str, value: Any, accepted: str) -> str:
    return f"{key}={value!r} is out of range; accepted: {accepted}"


def check_settings(obj: Any) -> None:
    """Raises `ConfigError` for the first field of dataclass ``obj`` outside its choices or range (the
    message starts with the field name; the loader puts the section's dotted path before it)."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        accepted = choices_of(field)
        if accepted is not None and value is not None and value not in accepted:
            raise ConfigError(not_accepted(field.name, value, accepted))
        within = range_of(field)
        if within is not None and not within.contains(value):
            raise ConfigError(out_of_range(field.name, value, within.accepted))
