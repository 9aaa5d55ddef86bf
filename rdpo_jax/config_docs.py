"""docs/configuration.md, generated from the config dataclasses (`REGENERATE` writes it).

Every key of `rdpo_jax.config.RunConfig` with its type, its default (the empty config's value), what it
accepts and its description, all read from the key's `rdpo_jax.config_fields.setting` declaration; whether
it may change when a run resumes, from `rdpo_jax.train.run_identity`; the rules across keys, from
`rdpo_jax.config_rules`. tests/test_config_docs.py fails when the page is not what this module renders.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from typing import Any

from rdpo_jax import config_rules
from rdpo_jax.config import RunConfig, is_section
from rdpo_jax.config_fields import choices_of, doc_of, range_of
from rdpo_jax.config_types import describe_type, optional_parts
from rdpo_jax.train.run_identity import defines_run

__all__ = ["REGENERATE", "render"]

REGENERATE = "python -m rdpo_jax.config_docs > docs/configuration.md"

_INTRO = """\
# Configuration

<!-- Generated from the config dataclasses by `{regenerate}`; edit the declarations in rdpo_jax/, not this page. -->

A run is one `RunConfig` (`rdpo_jax/config.py`): frozen dataclasses, one per concern (`model`, `data` with its
`synthetic` subsection, `train`, `optim`, `mesh`, `checkpoint`, `logging`, `distributed`). A YAML file mirrors
them as nested mappings; every key has a default, so a file holds only what differs, and no file at all is the
built-in tiny CPU run. A file may start with `extends: base.yaml` (or a list of files, relative to it) whose
values it overrides: sections merge key by key, while the value of a mapping-typed key (`train.loss_kwargs`,
`data.fields`, `data.data_files`) is replaced as a whole.

On the command line, `key=value` overrides follow the file and apply in order. Each names a key by its dotted
path below; the value is parsed as YAML (numbers, `true`/`false`, `null`, lists, mappings), a string key keeps
the text as typed (`name=007` is `"007"`), and `train.loss_kwargs.KEY=V` (likewise `data.fields.KEY`,
`data.data_files.KEY`) sets one key of that mapping:

```bash
# validate and print the resolved config
rdpo-jax config configs/tiny_rdpo.yaml train.loss=dpo 'train.loss_kwargs={{beta: 0.2}}'
rdpo-jax train configs/tiny_rdpo.yaml data.synthetic.u=0.3 train.loss_kwargs.gamma=0.001
# no file: the defaults plus overrides
rdpo-jax train train.max_steps=10
```

`rdpo-jax config` prints every key of the resolved config as YAML (which loads back to the same config). In
Python, `rdpo_jax.config_loader.load_config(path, overrides)` returns the validated `RunConfig`. Everything
is checked before anything is loaded or compiled, and every error names the file or override, the dotted key
and what is accepted: unknown keys (with the closest valid one), a key repeated in one YAML mapping, types
(an integer is a number, a numeric string is a number, only `true`/`false` are booleans, `null` only where
the type says so), the accepted values and ranges below, `train.loss_kwargs` against the loss's keywords, and
the [rules across keys](#rules-across-keys).

The *on resume* column says whether a key may differ when a run resumes from its checkpoint (`must match`:
it decides what is trained, and a resume with another value stops naming it; `may change`: it changes how or
how long the run trains).
"""


_MACHINE_CHECKS = """\
What depends on the machine or the files (the mesh against the device count, the batch against the data-parallel
size, whether `model.source`, the tokenizer and the data files exist, whether the held-out split is the training
file) is checked when the run starts, before any data is read. Whether the data has rationales, and how many
steps it gives, is checked once it is read, before anything is compiled."""


def _cell(text: str) -> str:
    """Markdown table cell text: reST double backticks as code, pipes escaped, whitespace joined."""
    return " ".join(text.replace("``", "`").replace("|", "\\|").split())


def _value(v: Any) -> str:
    """A default as YAML would write it: null, true/false, `text`, `1e-08`, `{}`."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return f"`{v or ('{}' if isinstance(v, dict) else '[]')}`"
    return f"`{v}`"


def _accepted(field: dataclasses.Field, tp: Any) -> str:
    choices = choices_of(field)
    if choices:
        return ", ".join(choices) + (", or null" if optional_parts(tp)[0] else "")
    within = range_of(field)
    return within.accepted if within is not None else ""


def _summary(cls: type) -> str:
    """The first paragraph of a section's docstring."""
    return _cell(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0])


def _section(cls: type, instance: Any, prefix: str) -> list[str]:
    lines = [f"## `{prefix.rstrip('.')}`" if prefix else "## Top level", "", _summary(cls), "",
             "| key | type | default | accepted | on resume | description |", "|---|---|---|---|---|---|"]
    hints = typing.get_type_hints(cls)
    subsections = []
    for field in dataclasses.fields(cls):
        if is_section(field):
            subsections.append((hints[field.name], getattr(instance, field.name), f"{prefix}{field.name}."))
            continue
        key = prefix + field.name
        resume = "must match" if defines_run(key) else "may change"
        lines.append(f"| `{key}` | {describe_type(hints[field.name])} | {_value(getattr(instance, field.name))} | "
                     f"{_cell(_accepted(field, hints[field.name]))} | {resume} | {_cell(doc_of(field) or '')} |")
    lines.append("")
    for sub_cls, sub_instance, sub_prefix in subsections:
        lines += _section(sub_cls, sub_instance, sub_prefix)
    return lines


def _rules() -> list[str]:
    """The rules across keys: the bullet list of `rdpo_jax.config_rules`'s docstring."""
    paragraphs = inspect.cleandoc(config_rules.__doc__ or "").split("\n\n")
    bullets = next(p for p in paragraphs if p.startswith("* "))
    out = ["## Rules across keys", "", _cell(paragraphs[1]), ""]
    out += [f"- {_cell(item.removeprefix('* '))}" for item in re.split(r"\n(?=\* )", bullets)]
    return out + ["", _MACHINE_CHECKS, ""]


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [_INTRO.format(regenerate=REGENERATE)]
    lines += _section(RunConfig, RunConfig(), "")
    lines += _rules()
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
