"""YAML run configs onto the frozen dataclasses of `rdpo_jax.config`, with dotted ``key=value`` overrides.

``load_config(path, overrides)`` reads a YAML file whose nested mappings mirror the dataclasses
(``train: {loss: rdpo, loss_kwargs: {gamma: 0.001}}``), applies command-line overrides such as
``train.loss=dpo``, ``optim.lr=5e-7``, ``data.synthetic.u=0.3``, ``train.loss_kwargs.gamma=0.001``,
``mesh.fsdp=-1`` or ``model.init_from=null`` (values parsed with ``yaml.safe_load``), and validates the
result before anything is compiled. Every error is a `ConfigError` that names the file or override, the full
dotted key, and what would be accepted.

Merging rules: a file may start with ``extends: base.yaml`` (or a list of files; paths relative to the
file) whose values it overrides. Sections (dataclasses) merge key by key; the value of a mapping-typed
field (``train.loss_kwargs``, ``data.fields``, ``data.data_files``) is replaced as a whole by a file, while
an override ``train.loss_kwargs.KEY=V`` sets one key of it (``train.loss_kwargs={}`` clears it).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from rdpo_jax.config import CHOICES, RunConfig, settings
from rdpo_jax.config_fields import not_accepted, out_of_range, range_of, suggest
from rdpo_jax.config_rules import check_rules
from rdpo_jax.config_types import BadType, coerce, describe_type, is_dataclass_type, optional_parts
from rdpo_jax.errors import ConfigError

__all__ = ["ConfigError", "config_to_dict", "dump_config", "load_config", "parse_override",
           "validate_config"]


# ----------------------------------------------------------------------------------------------
# YAML with unique keys


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise _DuplicateKey(key, line, seen[key])
                seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text: Any, where: str) -> Any:
    """``yaml.safe_load`` refusing duplicate keys; errors name ``where`` (a file or an override)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{where} line {e.line}: duplicate key {e.key!r} (first at line {e.first_line}); "
                          "each key may appear once per mapping") from None


# ----------------------------------------------------------------------------------------------
# applying YAML mappings and overrides onto a plain nested dict of the config


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists/scalars (what `dump_config` writes)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return config_to_dict(v)
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _unknown_key(where: str, cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    section = prefix.rstrip(".") or "the top level"
    return ConfigError(f"{where}: unknown key {prefix + str(key)!r}{suggest(key, names, prefix)} "
                       f"Valid keys of {section}: {', '.join(names)}")


def _check_choice(where: str, dotted: str, value: Any) -> None:
    accepted = CHOICES.get(dotted)
    if accepted is not None and value is not None and value not in accepted:
        raise ConfigError(f"{where}: {not_accepted(dotted, value, accepted)}")


def _set_value(where: str, tree: dict, cls: type, key: str, value: Any, prefix: str, *, raw: str | None = None):
    """Assigns one field of section ``cls`` (type-checked); a dataclass field merges a mapping recursively."""
    hints = typing.get_type_hints(cls)
    if key not in hints or key not in {f.name for f in dataclasses.fields(cls)}:
        raise _unknown_key(where, cls, key, prefix)
    tp, dotted = hints[key], prefix + key
    if is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {dotted} expects {describe_type(tp)}, got {value!r}")
        _apply_mapping(where, tree[key], tp, value, dotted + ".")
        return
    nullable, base = optional_parts(tp)
    if raw is not None and base is str and value is not None and not isinstance(value, str):
        value = raw  # an override such as name=007 keeps its text
    try:
        coerced = coerce(value, tp)
    except BadType:
        hint = " (quote it to make it a string)" if base is str and value is not None else ""
        raise ConfigError(f"{where}: {dotted} expects {describe_type(tp)}, got {value!r}{hint}") from None
    _check_choice(where, dotted, coerced)
    tree[key] = coerced


def _apply_mapping(where: str, tree: dict, cls: type, mapping: Mapping, prefix: str = "") -> None:
    for key, value in mapping.items():
        _set_value(where, tree, cls, key, value, prefix)


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=v"`` -> ``("a.b", yaml.safe_load("v"))`` (a leading ``--`` is allowed)."""
    body = text[2:] if text.startswith("--") else text
    key, sep, value = body.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.loss=dpo)")
    try:
        parsed = _yaml_load(value, f"override {text!r}") if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e})") from None
    return key.strip(), parsed


def _apply_override(tree: dict, text: str) -> None:
    key, value = parse_override(text)
    raw = text.partition("=")[2]
    where = f"override {text!r}"
    parts = key.split(".")
    cls, node, prefix = RunConfig, tree, ""
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise _unknown_key(where, cls, part, prefix)
        tp = hints[part]
        last = i == len(parts) - 1
        if last:
            _set_value(where, node, cls, part, value, prefix, raw=raw)
            return
        if is_dataclass_type(tp):
            cls, node, prefix = tp, node[part], prefix + part + "."
            continue
        _, base = optional_parts(tp)
        if typing.get_origin(base) is dict and i == len(parts) - 2:
            kt, vt = typing.get_args(base)
            current = dict(node[part] or {})
            sub = parts[-1]
            if vt is str and value is not None and not isinstance(value, str):
                value = raw
            try:
                current[sub] = coerce(value, vt)
            except BadType:
                raise ConfigError(f"{where}: {key} expects {describe_type(vt)}, got {value!r}") from None
            node[part] = current
            return
        raise ConfigError(f"{where}: {prefix + part} is {describe_type(tp)}, not a section; "
                          f"{key!r} does not name a key")


# ----------------------------------------------------------------------------------------------
# files


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = _yaml_load(f, path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, train, ...), "
                          f"got {type(data).__name__}")
    return dict(data)


def _apply_file(tree: dict, path: str, stack: tuple[str, ...] = ()) -> None:
    real = os.path.realpath(path)
    if real in stack:
        raise ConfigError(f"{path}: 'extends' cycle: {' -> '.join((*stack, real))}")
    data = _read_yaml(path)
    bases = data.pop("extends", None)
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
            raise ConfigError(f"{path}: extends expects a file path or a list of file paths, got {bases!r}")
        for base in bases:
            _apply_file(tree, os.path.join(os.path.dirname(path), base), (*stack, real))
    _apply_mapping(path, tree, RunConfig, data)


# ----------------------------------------------------------------------------------------------
# building and validating


def _build(cls: type, tree: Mapping, prefix: str = "") -> Any:
    """The section ``cls`` from its plain ``tree``; its own checks (``__post_init__``) become a `ConfigError`
    naming the dotted key: a message that starts with a field name gets the section's path before it."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        v = tree[f.name]
        kwargs[f.name] = _build(hints[f.name], v, prefix + f.name + ".") if is_dataclass_type(hints[f.name]) else v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e)
        if msg.startswith(prefix) and prefix:
            raise ConfigError(msg) from None
        names_a_field = any(msg.startswith(f"{f.name}=") for f in dataclasses.fields(cls))
        raise ConfigError(prefix + msg if names_a_field else f"{prefix.rstrip('.') or 'config'}: {msg}") from None


def _loss_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """train.loss_kwargs checked against ``LOSSES[train.loss]``'s keywords (types coerced, ranges checked)."""
    import jax
    import numpy as np

    from rdpo_jax.losses import _KEYWORD_HINTS, LOSSES, SequenceLogps

    name, given = cfg.train.loss, dict(cfg.train.loss_kwargs)
    fn = LOSSES[name].__wrapped__
    params = [p for p in inspect.signature(fn).parameters if p != "logps"]
    hints = typing.get_type_hints(fn)
    out = {}
    for k, v in given.items():
        if k not in params:
            hint = _KEYWORD_HINTS.get(name, {}).get(k)
            raise ConfigError(f"train.loss_kwargs.{k}: not a keyword of loss {name!r}{suggest(k, params)} "
                              f"Accepted: {', '.join(params)}" + (f". Hint: {hint}" if hint else ""))
        try:
            out[k] = coerce(v, hints.get(k, Any))
        except BadType:
            raise ConfigError(f"train.loss_kwargs.{k} (loss {name!r}) expects {describe_type(hints[k])}, "
                              f"got {v!r}") from None
    x = jax.ShapeDtypeStruct((1,), np.float32)
    logps = SequenceLogps(*([x] * len(SequenceLogps._fields)))
    try:  # the loss's own trace-time checks (choices, ranges), without computing anything
        jax.eval_shape(lambda lp: LOSSES[name](lp, **out), logps)
    except (TypeError, ValueError) as e:
        named = [k for k in out if f"{k}=" in str(e)]
        raise ConfigError(f"train.loss_kwargs{'.' + named[0] if named else ''}: {e}") from None
    return out


def _get(cfg: RunConfig, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate_config(cfg: RunConfig) -> RunConfig:
    """Checks every key's choices and range (its `rdpo_jax.config_fields.setting`), the loss keywords and the
    rules across keys (`rdpo_jax.config_rules`) of a built config; returns it with ``loss_kwargs`` coerced to
    the loss's keyword types. Raises `ConfigError` naming the dotted key."""
    for dotted, field in settings():
        value = _get(cfg, dotted)
        _check_choice("config", dotted, value)
        within = range_of(field)
        if within is not None and not within.contains(value):
            raise ConfigError(out_of_range(dotted, value, within.accepted))
    kwargs = _loss_kwargs(cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss_kwargs=kwargs))
    check_rules(cfg)
    return cfg


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> RunConfig:
    """The run config of YAML file ``path`` (None: the built-in defaults) with dotted ``key=value``
    ``overrides`` applied in order, validated. Raises `ConfigError` naming the key at fault."""
    if isinstance(overrides, str):
        overrides = [overrides]
    tree = config_to_dict(RunConfig())
    if path is not None:
        _apply_file(tree, os.fspath(path))
    for text in overrides:
        _apply_override(tree, text)
    try:
        return validate_config(_build(RunConfig, tree))
    except ConfigError as e:
        if path is None:
            raise
        raise ConfigError(f"{os.fspath(path)}{' with overrides' if overrides else ''}: {e}") from None


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML (every key; `load_config` reads it back to an equal config)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
