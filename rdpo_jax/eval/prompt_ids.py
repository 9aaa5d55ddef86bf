"""Prompt ids shared by ``rdpo-jax generate`` (which writes them) and ``rdpo-jax judge`` (which joins on them).

``prompt_id(p) = sha256(canonical_json(messages(p)))[:16]`` (hex), where ``messages(p)`` is the chat
message list (a string prompt is ``[{"role": "user", "content": p}]``) and the canonical JSON has sorted
keys, no whitespace (``","`` and ``":"`` separators) and UTF-8 text (``ensure_ascii=False``). Two prompts
get the same id exactly when they are the same conversation, whichever way they were written.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ID_HEX_CHARS", "canonical_messages", "prompt_id"]

ID_HEX_CHARS = 16


def canonical_messages(prompt: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The prompt as a list of plain message dicts (a string is one user message)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, Sequence) or not all(isinstance(m, Mapping) for m in prompt):
        raise TypeError(f"a prompt is a string or a list of chat messages (dicts), not {type(prompt).__name__}")
    return [dict(m) for m in prompt]


def prompt_id(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """The first 16 hex characters of sha256 of the prompt's canonical message-list JSON (module docstring)."""
    text = json.dumps(canonical_messages(prompt), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_HEX_CHARS]
