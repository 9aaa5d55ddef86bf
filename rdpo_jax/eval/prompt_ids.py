"""Stable prompt ids: the first 16 hex digits of the SHA-256 of a prompt's chat messages as canonical JSON.

A string prompt ``x`` is the one-turn chat ``[{"role": "user", "content": x}]``, so a prompt stored as a
string and the same prompt stored as one user message share an id. Canonical JSON: keys sorted, separators
``(",", ":")``, non-ASCII characters kept (UTF-8 encoded before hashing).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["as_messages", "prompt_id"]


def as_messages(prompt: Any) -> list[dict]:
    """The prompt as a list of chat messages: a string becomes one user turn; a list is copied message by
    message (each a mapping with ``role`` and ``content``)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list | tuple) and all(isinstance(m, Mapping) for m in prompt):
        return [dict(m) for m in prompt]
    raise TypeError(f"a prompt is a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}")


def prompt_id(prompt: Any) -> str:
    """``sha256(canonical_json(as_messages(prompt)))``, first 16 hex characters."""
    text = json.dumps(as_messages(prompt), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
