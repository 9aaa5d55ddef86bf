"""The two sides of a comparison: JSONL files with one record per prompt (``prompt_id``, ``prompt``,
``response``; optional ``response_tokens``, the response's token count), or a dataset's chosen responses
(`chosen_records`, ids from `rdpo_jax.eval.prompt_ids`). `join` pairs A with B by ``prompt_id``: an id on
one side only is an error naming the file and the id (``allow_missing`` skips it and counts it), and the
prompts of a joined id must be the same conversation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rdpo_jax.eval.judges.base import JudgeError
from rdpo_jax.eval.prompt_ids import canonical_messages, prompt_id

__all__ = ["REQUIRED", "chosen_records", "join", "read_records"]

REQUIRED = ("prompt_id", "prompt", "response")


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """``prompt_id -> record`` of a JSONL file, in file order; a bad line or repeated id raises naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise JudgeError(f"{path}: cannot read it ({e.strerror or e})") from e
    out: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise JudgeError(f"{path} line {i}: not JSON ({e})") from e
        missing = [k for k in REQUIRED if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise JudgeError(f"{path} line {i}: missing {', '.join(missing)}; each record needs "
                             f"{', '.join(REQUIRED)}")
        if not isinstance(rec["response"], str):
            raise JudgeError(f"{path} line {i}: response must be a string")
        pid = str(rec["prompt_id"])
        if pid in out:
            raise JudgeError(f"{path} line {i}: prompt_id {pid} appears twice")
        out[pid] = rec
    return out


def chosen_records(source: str, split: str = "test") -> tuple[dict[str, dict[str, Any]], int]:
    """The dataset's chosen responses as records keyed by prompt id, and how many repeated prompts were not
    used (the first example of a prompt is kept)."""
    from rdpo_jax.data import load_preferences

    examples, _ = load_preferences(source, split=split)
    out: dict[str, dict[str, Any]] = {}
    repeats = 0
    for ex in examples:
        pid = prompt_id(ex.prompt)
        if pid in out:
            repeats += 1
            continue
        out[pid] = {"prompt_id": pid, "prompt": ex.prompt, "response": ex.chosen}
    return out, repeats


def join(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], *, a_name: str, b_name: str,
         allow_missing: bool = False, b_may_have_more: bool = False
         ) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], dict[str, list[str]]]:
    """``[(a_record, b_record)]`` in A's order and the ids skipped per side (`allow_missing`)."""
    only_a = [k for k in a if k not in b]
    only_b = [] if b_may_have_more else [k for k in b if k not in a]
    if (only_a or only_b) and not allow_missing:
        side, where, ids = (b_name, a_name, only_a) if only_a else (a_name, b_name, only_b)
        raise JudgeError(f"prompt_id {ids[0]} of {where} is missing from {side} ({len(ids)} such ids); "
                         "pass --allow-missing to judge only the ids on both sides")
    pairs = []
    for k, ra in a.items():
        if k not in b:
            continue
        rb = b[k]
        if canonical_messages(ra["prompt"]) != canonical_messages(rb["prompt"]):
            raise JudgeError(f"prompt_id {k}: the prompt in {a_name} differs from the one in {b_name}")
        pairs.append((ra, rb))
    return pairs, {"only_in_a": only_a, "only_in_b": only_b}
