"""The judge interface: a `Judge` reads a batch of `JudgeRequest` s (a conversation and two responses, shown
in that order) and returns one `Verdict` per request: which shown response is better, a tie, or a reply it
could not read (`Verdict.UNPARSED`)."""
from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from rdpo_jax.errors import RdpoError

__all__ = ["Judge", "JudgeError", "JudgeRequest", "Verdict", "parse_answer"]


class JudgeError(RdpoError, ValueError):
    """A judge input, option or endpoint that cannot work: the message names the file, id, URL or option."""


class Verdict(enum.StrEnum):
    """Which of the two shown responses the judge prefers (``FIRST`` is the one shown first)."""

    FIRST = "first"
    SECOND = "second"
    TIE = "tie"
    UNPARSED = "unparsed"


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
    """One comparison: ``prompt`` (a string, one user turn, or chat messages) and two responses in the order
    they are shown."""

    prompt: str | Sequence[Mapping[str, Any]]
    first: str
    second: str


@runtime_checkable
class Judge(Protocol):
    """``name`` identifies the judge (model and template) in cache keys and outputs; ``judge`` is batched."""

    name: str

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]: ...


_ANSWER = re.compile(r"^(?:response\s*)?(1|2|tie)$")


def parse_answer(text: str | None) -> Verdict:
    """A judge's reply as a verdict: its last non-empty line, lower-cased, without quotes, ``*``, ``.`` or a
    ``answer:``/``final answer:`` lead-in, must be ``1``, ``2``, ``tie`` (or ``response 1``/``response 2``);
    anything else is `Verdict.UNPARSED`."""
    if not text:
        return Verdict.UNPARSED
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if not lines:
        return Verdict.UNPARSED
    last = re.sub(r"^(?:final\s+)?(?:answer|verdict)\s*:\s*", "", lines[-1].lower())
    last = last.strip(" \t\"'`*.!()[]")
    m = _ANSWER.match(last)
    if m is None:
        return Verdict.UNPARSED
    return {"1": Verdict.FIRST, "2": Verdict.SECOND, "tie": Verdict.TIE}[m.group(1)]
