"""The two rationale-conditioning templates of docs/spec.md section 3, as chat message lists.

The chosen response is always in the first slot (as the official code).

- ``"official"``: one user turn ::

      Given the prompt: {x} Which of the following assistant's response is more preferable and strictly
      follows with the prompt question? Response above: "{y_w}" or Response below: "{y_l}"?

  followed by the assistant turn holding r. ``{x}`` is the prompt as text (a message list is flattened to
  ``"{role}: {content}"`` lines joined by a blank line; a plain-string prompt is used as is).
- ``"conversational"`` (packable): the chosen conversation ``[x][y_w]`` continued by a follow-up user turn
  ``F = q1 + y_l + q2`` and the assistant turn r; ``q1 = "Another response to the same prompt:"`` and
  ``q2 = "Which response is better, and why?"`` (the "general" wording). The "detailed" wording asks for a
  detailed, point-by-point rationale; both are :class:`RationaleWording` values and can be replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .schema import Message, PreferenceExample

TEMPLATES = ("official", "conversational")


@dataclasses.dataclass(frozen=True)
class RationaleWording:
    """The words of both templates. ``{x}``, ``{y_w}``, ``{y_l}`` are filled in ``official``."""

    official: str = (
        "Given the prompt: {x} Which of the following assistant's response is more preferable and strictly "
        "follows with the prompt question? Response above: \"{y_w}\" or Response below: \"{y_l}\"?"
    )
    q1: str = "Another response to the same prompt:"
    q2: str = "Which response is better, and why?"
    sep: str = "\n\n"  # between q1, y_l and q2 inside the follow-up turn


WORDINGS: dict[str, RationaleWording] = {
    "general": RationaleWording(),
    "detailed": RationaleWording(
        official=(
            "Given the prompt: {x} Which of the following assistant's response is more preferable and strictly "
            "follows with the prompt question? Response above: \"{y_w}\" or Response below: \"{y_l}\"? Explain "
            "in detail, point by point, why."
        ),
        q2="Which response is better? Explain in detail, point by point, why.",
    ),
}


def _wording(wording: str | RationaleWording) -> RationaleWording:
    if isinstance(wording, RationaleWording):
        return wording
    if wording not in WORDINGS:
        raise ValueError(f"unknown rationale wording {wording!r}; accepted: {sorted(WORDINGS)} or a "
                         "RationaleWording")
    return WORDINGS[wording]


def prompt_text(prompt: str | Sequence[Message]) -> str:
    """The prompt as one text: a string as is; messages as ``"{role}: {content}"`` joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def followup_text(rejected: str, wording: str | RationaleWording = "general") -> str:
    """The follow-up user turn F of the conversational template: ``q1 + sep + y_l + sep + q2``."""
    w = _wording(wording)
    return f"{w.q1}{w.sep}{rejected}{w.sep}{w.q2}"


def rationale_messages(example: PreferenceExample, template: str = "conversational",
                       wording: str | RationaleWording = "general") -> list[Message]:
    """The rationale context c as a message list (without r): generation prompt follows it.

    official: ``[user: official(x, y_w, y_l)]``; conversational: ``x + [assistant: y_w, user: F]``.
    """
    w = _wording(wording)
    if template == "official":
        text = w.official.format(x=prompt_text(example.prompt), y_w=example.chosen, y_l=example.rejected)
        return [{"role": "user", "content": text}]
    if template == "conversational":
        return example.prompt_messages() + [
            {"role": "assistant", "content": example.chosen},
            {"role": "user", "content": followup_text(example.rejected, w)},
        ]
    raise ValueError(f"unknown rationale template {template!r}; accepted: {list(TEMPLATES)}")
