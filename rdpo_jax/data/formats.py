"""Row formats of the supported sources, each turned into the four canonical fields.

A converter takes one raw row (a mapping of column name to value, after any ``fields`` renaming) and
returns ``(fields, problems)``: ``fields`` maps ``prompt/chosen/rejected/rationale`` to candidate values
(validated afterwards by :func:`rdpo_jax.data.schema.validate_example`), ``problems`` lists structural
problems found while converting (``(field, reason, detail)``). A row with any problem is a bad row.

Formats:

- ``preference`` (also redsgnaoh/orcaratgen and orcaratspec): ``prompt`` (string or messages),
  ``chosen``, ``rejected`` strings, ``rationale`` string (optional for ``preference``).
- ``orca_dpo_pairs`` (Intel/orca_dpo_pairs): ``system``, ``question``, ``chosen``, ``rejected``; a non-blank
  system prompt is kept as a system message before the user question.
- ``ultrafeedback`` (HuggingFaceH4/ultrafeedback_binarized): ``prompt`` string, ``chosen``/``rejected``
  message lists whose last message is the assistant response; the earlier messages must agree and hold
  the prompt.
- ``hh`` (Anthropic/hh-rlhf): ``chosen``/``rejected`` whole transcripts
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``; the shared earlier turns become the prompt
  (user/assistant messages, consecutive same-role turns kept), the final assistant turns the responses.
- ``conversational`` (TRL's conversational format): ``chosen``/``rejected`` message lists whose last message
  is the assistant response; an optional ``prompt`` (string or messages) comes first, then the turns that
  precede the responses, which must agree between chosen and rejected (TRL's implicit conversational prompt).
- ``implicit_prompt`` (TRL's standard format without a prompt column): ``chosen``/``rejected`` strings that
  share a prompt prefix; the longest common prefix is the prompt (a space right before the point where they
  differ goes with the responses, as TRL's ``extract_prompt``), the remainders are the responses.

:func:`detect_format` picks one of these for a local file when no format is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .schema import Message, Problem, check_messages, check_text, normalise_prompt

# Stands in for a value whose problem the converter already reported, so that the generic checks run
# afterwards do not report it a second time under another field name.
_PLACEHOLDER = "x"

Converted = tuple[dict[str, Any], list[Problem]]
Converter = Callable[[Mapping[str, Any]], Converted]


def convert_preference(row: Mapping[str, Any]) -> Converted:
    """Generic rows already in canonical form (orcaratgen/orcaratspec, user JSONL)."""
    prompt = row.get("prompt")
    if isinstance(prompt, list | tuple) and not check_messages(prompt, "prompt"):
        prompt = normalise_prompt(list(prompt))
    fields = {k: row.get(k) for k in ("chosen", "rejected", "rationale")}
    return {"prompt": prompt, **fields}, []


def convert_orca_dpo_pairs(row: Mapping[str, Any]) -> Converted:
    """Intel/orca_dpo_pairs: ``[system?, user question]`` prompt; a blank system prompt is dropped."""
    system, question = row.get("system"), row.get("question")
    problems: list[Problem] = []
    if system is not None and not isinstance(system, str):
        problems.append(("system", "not_a_string", f"got {type(system).__name__}"))
        system = None
    prompt: Any = question
    if isinstance(question, str) and isinstance(system, str) and system.strip():
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if question is None:
        problems.append(("question", "missing_field", "absent or null"))
        prompt = _PLACEHOLDER
    elif not isinstance(question, str):
        problems.append(("question", "not_a_string", f"got {type(question).__name__}"))
        prompt = _PLACEHOLDER
    elif not question.strip():
        problems.append(("question", "empty", "blank text"))
        prompt = _PLACEHOLDER
    return {"prompt": prompt, "chosen": row.get("chosen"), "rejected": row.get("rejected")}, problems


def _final_assistant(messages: Any, field: str) -> tuple[list[Message] | None, Any, list[Problem]]:
    """Split a message list into (earlier messages, final assistant content, problems)."""
    if messages is None:
        return None, None, [(field, "missing_field", "absent or null")]
    problems = check_messages(messages, field)
    if problems:
        return None, None, problems
    last = messages[-1]
    if last["role"] != "assistant":
        detail = f"last message has role {last['role']!r}, not 'assistant'"
        return None, None, [(f"{field}[-1]", "malformed", detail)]
    return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], last["content"], []


def _compare_prefixes(a: list[Message], b: list[Message]) -> list[Problem]:
    """A ``prompt_mismatch`` problem when two conversation prefixes differ (names the first such turn)."""
    if len(a) != len(b):
        return [("prompt", "prompt_mismatch",
                 f"{len(a)} turns precede the chosen response, {len(b)} the rejected one")]
    for i, (ma, mb) in enumerate(zip(a, b, strict=True)):
        if ma["role"] != mb["role"] or ma["content"].strip() != mb["content"].strip():
            return [("prompt", "prompt_mismatch", f"earlier turn {i} differs between chosen and rejected")]
    return []


def convert_ultrafeedback(row: Mapping[str, Any]) -> Converted:
    """HuggingFaceH4/ultrafeedback_binarized: responses are the last (assistant) messages of the lists."""
    prefix_c, chosen, problems = _final_assistant(row.get("chosen"), "chosen")
    prefix_r, rejected, more = _final_assistant(row.get("rejected"), "rejected")
    problems += more
    prompt: Any = row.get("prompt")
    if problems:
        return {"prompt": _PLACEHOLDER, "chosen": _PLACEHOLDER, "rejected": _PLACEHOLDER + "y"}, problems
    assert prefix_c is not None and prefix_r is not None
    problems += _compare_prefixes(prefix_c, prefix_r)
    if prefix_c:
        users = [m["content"] for m in prefix_c if m["role"] == "user"]
        if isinstance(prompt, str) and (not users or users[0].strip() != prompt.strip()):
            detail = "the prompt field is not the conversation's first user turn"
            problems.append(("prompt", "prompt_mismatch", detail))
        prompt = normalise_prompt(prefix_c)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, problems


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[Message]:
    """Split an HH transcript into messages (contents stripped); raises ValueError when malformed.

    ``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", "content": "a"},
    {"role": "assistant", "content": "b"}]``. The last message must be an assistant turn.
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' marker")
    messages: list[Message] = [
        {"role": _HH_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)
    ]
    if not messages:
        raise ValueError("no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the transcript does not end with an assistant turn")
    return messages


def convert_hh(row: Mapping[str, Any]) -> Converted:
    """Anthropic/hh-rlhf: shared earlier turns -> prompt; final assistant turns -> chosen/rejected."""
    parsed: dict[str, list[Message]] = {}
    problems: list[Problem] = []
    for field in ("chosen", "rejected"):
        value = row.get(field)
        if value is None:
            problems.append((field, "missing_field", "absent or null"))
        elif not isinstance(value, str):
            problems.append((field, "not_a_string", f"got {type(value).__name__}"))
        else:
            try:
                parsed[field] = parse_hh_transcript(value)
            except ValueError as e:
                problems.append((field, "malformed", str(e)))
    if problems:
        return {"prompt": _PLACEHOLDER, "chosen": _PLACEHOLDER, "rejected": _PLACEHOLDER + "y"}, problems
    chosen, rejected = parsed["chosen"], parsed["rejected"]
    problems += _compare_prefixes(chosen[:-1], rejected[:-1])
    prompt: Any = normalise_prompt(chosen[:-1]) if chosen[:-1] else []
    return {"prompt": prompt, "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"]}, problems


def _as_messages(prompt: Any) -> tuple[list[Message], list[Problem]]:
    """An optional ``prompt`` field (string or messages) as a message list."""
    if prompt is None:
        return [], []
    if isinstance(prompt, str):
        return ([{"role": "user", "content": prompt}] if prompt.strip() else []), []
    problems = check_messages(prompt, "prompt")
    if problems:
        return [], problems
    return [{"role": m["role"], "content": m["content"]} for m in prompt], []


def convert_conversational(row: Mapping[str, Any]) -> Converted:
    """TRL's conversational rows: [prompt messages] + shared earlier turns + the final assistant responses."""
    prefix_c, chosen, problems = _final_assistant(row.get("chosen"), "chosen")
    prefix_r, rejected, more = _final_assistant(row.get("rejected"), "rejected")
    prompt_msgs, prompt_problems = _as_messages(row.get("prompt"))
    problems += more + prompt_problems
    if problems:
        return {"prompt": _PLACEHOLDER, "chosen": _PLACEHOLDER, "rejected": _PLACEHOLDER + "y",
                "rationale": row.get("rationale")}, problems
    assert prefix_c is not None and prefix_r is not None
    problems += _compare_prefixes(prefix_c, prefix_r)
    messages = prompt_msgs + prefix_c
    if not messages:
        problems.append(("prompt", "missing_field", "no prompt column and no turns before the responses"))
        return {"prompt": _PLACEHOLDER, "chosen": chosen, "rejected": rejected}, problems
    return {"prompt": normalise_prompt(messages), "chosen": chosen, "rejected": rejected,
            "rationale": row.get("rationale")}, problems


def split_shared_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of two texts that start with the same prompt: the prompt
    is their longest common prefix, less a space right before the first difference (TRL's rule)."""
    n, limit = 0, min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    if 0 < n < limit and chosen[n - 1] == " ":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def convert_implicit_prompt(row: Mapping[str, Any]) -> Converted:
    """TRL's standard rows without a prompt column: the shared prefix of chosen and rejected is the prompt."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    problems = check_text(chosen, "chosen") + check_text(rejected, "rejected")
    if problems:
        return {"prompt": _PLACEHOLDER, "chosen": chosen, "rejected": rejected}, []
    prompt, chosen, rejected = split_shared_prefix(chosen, rejected)
    if not prompt.strip():
        problems.append(("prompt", "empty", "chosen and rejected share no prompt prefix"))
        prompt = _PLACEHOLDER
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "rationale": row.get("rationale")}, problems


#: format name -> (converter, required columns, optional columns)
FORMATS: dict[str, tuple[Converter, tuple[str, ...], tuple[str, ...]]] = {
    "preference": (convert_preference, ("prompt", "chosen", "rejected"), ("rationale",)),
    "rationale": (convert_preference, ("prompt", "chosen", "rejected", "rationale"), ()),
    "orca_dpo_pairs": (convert_orca_dpo_pairs, ("system", "question", "chosen", "rejected"), ()),
    "ultrafeedback": (convert_ultrafeedback, ("prompt", "chosen", "rejected"), ()),
    "hh": (convert_hh, ("chosen", "rejected"), ()),
    "conversational": (convert_conversational, ("chosen", "rejected"), ("prompt", "rationale")),
    "implicit_prompt": (convert_implicit_prompt, ("chosen", "rejected"), ("rationale",)),
}


def detect_format(rows: Sequence[Mapping[str, Any]], fields: Mapping[str, str] | None = None) -> str:
    """The format of rows that declare none, from the columns present and the first row's values, in order:

    - ``system`` and ``question`` columns: ``orca_dpo_pairs``;
    - no ``chosen`` column: ``preference`` (whose error then names the missing columns);
    - message-list ``chosen``: ``ultrafeedback`` when a string ``prompt`` repeats the conversation's first user
      turn, else ``conversational``;
    - a ``prompt`` column (or a ``fields`` entry for it): ``preference``;
    - string ``chosen`` transcripts starting with ``"\\n\\nHuman:"``: ``hh``;
    - otherwise ``implicit_prompt``.

    ``fields`` (format field -> column) is applied first.
    """
    fields = dict(fields or {})
    columns = {k for r in rows[:100] if isinstance(r, Mapping) for k in r}

    def col(name: str) -> str:
        return fields.get(name, name)

    first = next((r for r in rows if isinstance(r, Mapping) and r.get(col("chosen")) is not None), {})
    chosen, prompt = first.get(col("chosen")), first.get(col("prompt"))
    if col("system") in columns and col("question") in columns:
        return "orca_dpo_pairs"
    if col("chosen") not in columns:
        return "preference"  # the canonical format: its error then names every missing column
    if isinstance(chosen, list | tuple):
        head = chosen[0] if chosen and isinstance(chosen[0], Mapping) else {}
        if isinstance(prompt, str) and head.get("role") == "user" and str(head.get("content", "")).strip() == \
                prompt.strip():
            return "ultrafeedback"
        return "conversational"
    if col("prompt") in columns or "prompt" in fields:
        return "preference"
    if isinstance(chosen, str) and chosen.startswith("\n\nHuman:"):
        return "hh"
    return "implicit_prompt"
