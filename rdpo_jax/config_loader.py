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
import difflib
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from rdpo_jax.config import CHOICES, RunConfig
from rdpo_jax.config_rules import check_rules
from rdpo_jax.errors import ConfigError

__all__ = ["ConfigError", "cmd_config", "config_to_dict", "dump_config", "load_config", "parse_override",
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
# types


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional_parts(tp: Any) -> tuple[bool, Any]:
    """(accepts None, the non-None type) of ``X | None``; other types: (False, tp)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return type(None) in args, rest[0]
    return False, tp


def _bare(words: str) -> str:
    """'an integer' -> 'integer'."""
    return words.split(" ", 1)[1] if words.split(" ", 1)[0] in ("a", "an") else words


def _describe(tp: Any) -> str:
    """Human words for a field type: 'an integer or null', 'a mapping of string to string', ..."""
    nullable, tp = _optional_parts(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
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
        words = "a mapping" if v is Any else f"a mapping of {_bare(_describe(k))} to {_bare(_describe(v))}"
    elif origin is list:
        (e,) = typing.get_args(tp)
        words = f"a list of {_bare(_describe(e))}s"
    elif _is_dataclass_type(tp):
        words = f"a mapping (section with keys {', '.join(f.name for f in dataclasses.fields(tp))})"
    else:
        words = str(tp)
    return words + (" or null" if nullable else "")


class _BadType(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or `_BadType`. An int is a float; a numeric string (YAML 1.1 reads
    ``5e-7`` as a string) is a float; bools are never numbers."""
    nullable, tp = _optional_parts(tp)
    if value is None:
        if nullable or tp is Any:
            return None
        raise _BadType
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _BadType
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise _BadType from None
            if f.is_integer():
                return int(f)
        raise _BadType
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _BadType from None
        raise _BadType
    if tp is str:
        if isinstance(value, str):
            return value
        raise _BadType
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise _BadType
        return {_coerce(k, kt): _coerce(v, vt) for k, v in value.items()}
    if origin is list:
        (et,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _BadType
        return [_coerce(v, et) for v in value]
    raise _BadType


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


def _suggest(name: Any, valid: Sequence[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest valid name (difflib), else ``"."``; ends a sentence."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean {prefix + close[0]!r}?" if close else "."


def _unknown_key(where: str, cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    section = prefix.rstrip(".") or "the top level"
    return ConfigError(f"{where}: unknown key {prefix + str(key)!r}{_suggest(key, names, prefix)} "
                       f"Valid keys of {section}: {', '.join(names)}")


def _check_choice(where: str, dotted: str, value: Any) -> None:
    accepted = CHOICES.get(dotted)
    if accepted is not None and value is not None and value not in accepted:
        raise ConfigError(f"{where}: {dotted}={value!r} is not accepted{_suggest(value, accepted)} "
                          f"Accepted: {', '.join(accepted)}")


def _set_value(where: str, tree: dict, cls: type, key: str, value: Any, prefix: str, *, raw: str | None = None):
    """Assigns one field of section ``cls`` (type-checked); a dataclass field merges a mapping recursively."""
    hints = _hints(cls)
    if key not in hints or key not in {f.name for f in dataclasses.fields(cls)}:
        raise _unknown_key(where, cls, key, prefix)
    tp, dotted = hints[key], prefix + key
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {dotted} expects {_describe(tp)}, got {value!r}")
        _apply_mapping(where, tree[key], tp, value, dotted + ".")
        return
    nullable, base = _optional_parts(tp)
    if raw is not None and base is str and value is not None and not isinstance(value, str):
        value = raw  # an override such as name=007 keeps its text
    try:
        coerced = _coerce(value, tp)
    except _BadType:
        hint = " (quote it to make it a string)" if base is str and value is not None else ""
        raise ConfigError(f"{where}: {dotted} expects {_describe(tp)}, got {value!r}{hint}") from None
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
        hints = _hints(cls)
        if part not in hints:
            raise _unknown_key(where, cls, part, prefix)
        tp = hints[part]
        last = i == len(parts) - 1
        if last:
            _set_value(where, node, cls, part, value, prefix, raw=raw)
            return
        if _is_dataclass_type(tp):
            cls, node, prefix = tp, node[part], prefix + part + "."
            continue
        _, base = _optional_parts(tp)
        if typing.get_origin(base) is dict and i == len(parts) - 2:
            kt, vt = typing.get_args(base)
            current = dict(node[part] or {})
            sub = parts[-1]
            if vt is str and value is not None and not isinstance(value, str):
                value = raw
            try:
                current[sub] = _coerce(value, vt)
            except _BadType:
                raise ConfigError(f"{where}: {key} expects {_describe(vt)}, got {value!r}") from None
            node[part] = current
            return
        raise ConfigError(f"{where}: {prefix + part} is {_describe(tp)}, not a section; "
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
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        v = tree[f.name]
        kwargs[f.name] = _build(hints[f.name], v, prefix + f.name + ".") if _is_dataclass_type(hints[f.name]) else v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        section = prefix.rstrip(".") or "config"
        msg = str(e)
        raise ConfigError(msg if msg.startswith(section + ".") else f"{section}: {msg}") from None


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
            raise ConfigError(f"train.loss_kwargs.{k}: not a keyword of loss {name!r}{_suggest(k, params)} "
                              f"Accepted: {', '.join(params)}" + (f". Hint: {hint}" if hint else ""))
        try:
            out[k] = _coerce(v, hints.get(k, Any))
        except _BadType:
            raise ConfigError(f"train.loss_kwargs.{k} (loss {name!r}) expects {_describe(hints[k])}, "
                              f"got {v!r}") from None
    x = jax.ShapeDtypeStruct((1,), np.float32)
    logps = SequenceLogps(*([x] * len(SequenceLogps._fields)))
    try:  # the loss's own trace-time checks (choices, ranges), without computing anything
        jax.eval_shape(lambda lp: LOSSES[name](lp, **out), logps)
    except (TypeError, ValueError) as e:
        named = [k for k in out if f"{k}=" in str(e)]
        raise ConfigError(f"train.loss_kwargs{'.' + named[0] if named else ''}: {e}") from None
    return out


def _range_rules(cfg: RunConfig) -> list[tuple[str, Any, bool, str]]:
    """(dotted key, value, ok, what is accepted) for every range rule."""
    d, s, t, m, o = cfg.data, cfg.data.synthetic, cfg.train, cfg.model, cfg.optim
    pos = "a positive integer"
    opt_pos = "a positive integer or null"

    def positive(v):
        return v > 0

    def opt_positive(v):
        return v is None or v > 0

    def unit(v):
        return 0.0 <= v <= 1.0

    rules = [(f"model.{k}", getattr(m, k), positive(getattr(m, k)), pos)
             for k in ("tiny_hidden_size", "tiny_intermediate_size", "tiny_num_layers", "tiny_num_heads",
                       "tiny_num_kv_heads")]
    rules += [
        ("model.tiny_num_heads", m.tiny_num_heads,
         m.tiny_num_kv_heads > 0 and m.tiny_num_heads % m.tiny_num_kv_heads == 0,
         f"a multiple of model.tiny_num_kv_heads={m.tiny_num_kv_heads}"),
        ("model.tiny_hidden_size", m.tiny_hidden_size,
         m.tiny_num_heads > 0 and m.tiny_hidden_size % m.tiny_num_heads == 0,
         f"a multiple of model.tiny_num_heads={m.tiny_num_heads}"),
        ("data.max_length", d.max_length, positive(d.max_length), pos),
        ("data.max_prompt_length", d.max_prompt_length, 0 < d.max_prompt_length < d.max_length,
         f"a positive integer below data.max_length={d.max_length}"),
        ("data.max_rationale_length", d.max_rationale_length, opt_positive(d.max_rationale_length), opt_pos),
        ("data.n_examples", d.n_examples, opt_positive(d.n_examples), opt_pos),
        ("data.eval_fraction", d.eval_fraction, d.eval_fraction is None or 0.0 < d.eval_fraction < 1.0,
         "a number in (0, 1) or null"),
        ("data.pairs_per_row", d.pairs_per_row, positive(d.pairs_per_row), pos),
        ("data.min_bucket", d.min_bucket, positive(d.min_bucket) and d.min_bucket <= d.max_length,
         f"a positive integer at most data.max_length={d.max_length}"),
        ("data.synthetic.u", s.u, unit(s.u), "a number in [0, 1]"),
        ("data.synthetic.eps", s.eps, unit(s.eps), "a number in [0, 1]"),
        ("data.synthetic.eta", s.eta, unit(s.eta), "a number in [0, 1]"),
        ("data.synthetic.parity_bits", s.parity_bits, positive(s.parity_bits), pos),
        ("data.synthetic.n_train", s.n_train, positive(s.n_train), pos),
        ("data.synthetic.n_eval", s.n_eval, s.n_eval >= 0, "an integer >= 0"),
        ("train.global_batch_size", t.global_batch_size, positive(t.global_batch_size), pos),
        ("train.micro_batches", t.micro_batches, positive(t.micro_batches), pos),
        ("train.global_batch_size", t.global_batch_size,
         t.micro_batches > 0 and t.global_batch_size % t.micro_batches == 0,
         f"a multiple of train.micro_batches={t.micro_batches}"),
        ("train.epochs", t.epochs, positive(t.epochs), pos),
        ("train.max_steps", t.max_steps, opt_positive(t.max_steps), opt_pos),
        ("train.eval_every", t.eval_every, t.eval_every >= 0, "an integer >= 0 (0: no evaluation during training)"),
        ("train.eval_batches", t.eval_batches, opt_positive(t.eval_batches), opt_pos),
        ("train.block_size", t.block_size, positive(t.block_size), pos),
        ("train.max_skipped_steps", t.max_skipped_steps, positive(t.max_skipped_steps), pos),
        ("optim.total_steps", o.total_steps, opt_positive(o.total_steps), opt_pos),
        ("optim.final_lr_ratio", o.final_lr_ratio, unit(o.final_lr_ratio), "a number in [0, 1]"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, "a number >= 0"),
        ("optim.b1", o.b1, 0.0 <= o.b1 < 1.0, "a number in [0, 1)"),
        ("optim.b2", o.b2, 0.0 <= o.b2 < 1.0, "a number in [0, 1)"),
        ("optim.eps", o.eps, o.eps > 0, "a positive number"),
        ("checkpoint.every", cfg.checkpoint.every, positive(cfg.checkpoint.every), pos),
        ("checkpoint.keep", cfg.checkpoint.keep, positive(cfg.checkpoint.keep), pos),
        ("logging.every", cfg.logging.every, positive(cfg.logging.every), pos),
    ]
    for axis in ("data", "fsdp", "tensor"):
        v = getattr(cfg.mesh, axis)
        rules.append((f"mesh.{axis}", v, v > 0 or v == -1, "a positive integer, or -1 for the remaining devices"))
    free = [a for a in ("data", "fsdp", "tensor") if getattr(cfg.mesh, a) == -1]
    rules.append(("mesh", cfg.mesh.sizes(), len(free) <= 1, "at most one axis set to -1"))
    dist = cfg.distributed
    rules.append(("distributed.num_processes", dist.num_processes, opt_positive(dist.num_processes), opt_pos))
    if dist.process_id is not None:
        n = dist.num_processes
        rules.append(("distributed.process_id", dist.process_id,
                      dist.process_id >= 0 and (n is None or dist.process_id < n),
                      "an integer in [0, distributed.num_processes)"))
    return rules


def validate_config(cfg: RunConfig) -> RunConfig:
    """Checks choices, ranges, the loss keywords and the rules across keys (`rdpo_jax.config_rules`) of a
    built config; returns it with ``loss_kwargs`` coerced to the loss's keyword types. Raises `ConfigError`
    naming the dotted key."""
    for dotted in CHOICES:
        obj: Any = cfg
        for part in dotted.split("."):
            obj = getattr(obj, part)
        _check_choice("config", dotted, obj)
    for dotted, value, ok, accepted in _range_rules(cfg):
        if not ok:
            raise ConfigError(f"{dotted}={value!r} is out of range; accepted: {accepted}")
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


def cmd_config(argv: Sequence[str]) -> int:
    """``rdpo-jax config [CONFIG.yaml] [key=value ...]``: validate and print the resolved config."""
    import sys

    path = argv[0] if argv and "=" not in argv[0] else None
    try:
        cfg = load_config(path, argv[1:] if path is not None else argv)
    except ConfigError as e:
        print(f"rdpo-jax config: {e}", file=sys.stderr)
        return 2
    print(dump_config(cfg), end="")
    return 0
