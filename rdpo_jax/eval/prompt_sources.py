"""Prompts to generate for: a dataset split through the data layer, or a JSONL file of ``prompt`` records;
deduplicated by prompt id and drawn with a seeded shuffle (the paper's protocol: ``n`` prompts of the test
split in an order shuffled with the seed).

Draw: with ``N`` unique prompts in source order, ``perm = numpy.random.default_rng(seed).permutation(N)`` and
the prompts ``perm[:n]`` are taken in that order (all ``N`` when ``n`` is None or ``n >= N``).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rdpo_jax.data.local_files import DataFileError, read_rows
from rdpo_jax.data.schema import ROLES
from rdpo_jax.eval.prompt_ids import prompt_id

__all__ = ["PromptItem", "dataset_prompts", "draw_prompts", "file_prompts", "unique_prompts"]


@dataclasses.dataclass(frozen=True)
class PromptItem:
    """A prompt to answer: ``id`` (:func:`~rdpo_jax.eval.prompt_ids.prompt_id`), ``prompt`` (a string or chat
    messages, as read) and, for prompts of a preference set, the ``chosen`` response of its (first) pair."""

    id: str
    prompt: Any
    chosen: str | None = None


def _message_problem(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return None if prompt.strip() else "'prompt' is an empty string"
    if not isinstance(prompt, list) or not prompt:
        return f"'prompt' is a {type(prompt).__name__}, not a string or a non-empty list of messages"
    for j, m in enumerate(prompt):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return (f"message {j} of 'prompt' is {m!r}; each message is {{'role': one of {list(ROLES)}, "
                    "'content': a string}")
    if prompt[-1]["role"] == "assistant":
        return "the last message of 'prompt' is an assistant turn; a prompt ends with a user (or system) turn"
    return None


def file_prompts(path: str | os.PathLike) -> list[PromptItem]:
    """The prompts of a JSON Lines (or JSON array) file whose records hold ``prompt``: a string or a list
    of ``{"role", "content"}`` messages; other keys are ignored. Errors name the file and the record."""
    items = []
    for i, row in enumerate(read_rows(path)):
        if "prompt" not in row:
            raise DataFileError(path, f"record {i + 1} has no 'prompt' key (keys: {sorted(row)}); each record "
                                      "needs 'prompt': a string or a list of chat messages")
        problem = _message_problem(row["prompt"])
        if problem:
            raise DataFileError(path, f"record {i + 1}: {problem}")
        items.append(PromptItem(prompt_id(row["prompt"]), row["prompt"]))
    return items


def dataset_prompts(source: Any, split: str = "test", *, data_files: Any = None, **kwargs: Any
                    ) -> list[PromptItem]:
    """The prompts of a preference split read with :func:`rdpo_jax.data.load_preferences` (named sources,
    local files, ``save_to_disk`` directories; ``kwargs`` are passed on), in row order."""
    from rdpo_jax.data import load_preferences

    examples, _ = load_preferences(source, split=split, data_files=data_files, **kwargs)
    return [PromptItem(prompt_id(ex.prompt), ex.prompt, ex.chosen) for ex in examples]


def unique_prompts(items: Sequence[PromptItem]) -> list[PromptItem]:
    """The first item of each prompt id, in order (several preference pairs can share one prompt)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            out.append(item)
    return out


def draw_prompts(items: Sequence[PromptItem], n: int | None, seed: int) -> list[PromptItem]:
    """``n`` unique prompts in an order shuffled with ``seed`` (see the module docstring)."""
    items = unique_prompts(items)
    if n is not None and n < 1:
        raise ValueError(f"n={n}: the number of prompts must be >= 1 (or None for all)")
    perm = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in perm[:n]]
