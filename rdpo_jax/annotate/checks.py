"""Quality checks on generated rationales, and the keep / flag / drop policy applied to each.

A check *fails* for a rationale when:

* ``empty``: the rationale is empty or only whitespace (always dropped: an empty rationale has no tokens to
  train on, and the rationale format refuses it);
* ``truncated``: the generator stopped at its length limit (finish reason ``length``): the text is cut off;
* ``refusal``: it opens with a refusal (:func:`is_refusal`: "I'm sorry", "I cannot", "As an AI", ...);
* ``position_only``: it names a position or label and says nothing else (:func:`names_only_position`:
  "Response A is better.", "The first one.");
* ``inconsistent``: it does not argue for the chosen response: the checker (the generator, or another
  model) was shown the two responses in a seeded random order with the rationale and named the rejected
  one, a tie, or nothing readable; with ``--both-orders``, the generator preferred the rejected response in
  both orders;
* ``position_bias`` (``--both-orders`` only): the generator's pick changed with the order (it preferred the
  response shown first, or the one shown second, both times), or a reply had no readable ``Better:`` line.

Policies (:data:`POLICIES`): ``keep`` (the row is written; the failure is counted and recorded in its
provenance), ``flag`` (also written, and its provenance lists the check under ``flags``), ``drop`` (not
written). A row fails as many checks as apply; it is dropped if any failed check's policy is ``drop``.
"""
from __future__ import annotations

import re

__all__ = ["ALWAYS_DROP", "CHECKS", "POLICIES", "is_refusal", "names_only_position", "resolve_policies",
           "text_checks"]

CHECKS: dict[str, str] = {
    "empty": "the rationale is empty",
    "truncated": "the generator stopped at the length limit",
    "refusal": "the rationale opens with a refusal",
    "position_only": "the rationale only names a position (\"Response A is better\")",
    "inconsistent": "the rationale does not argue for the chosen response",
    "position_bias": "--both-orders: the pick changed when the order was swapped (or was unreadable)",
}
POLICIES = ("keep", "flag", "drop")
ALWAYS_DROP = frozenset({"empty"})

_REFUSAL = re.compile(
    r"^\W*(?:i'?m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+apologi[sz]e|i\s+can(?:not|'t|\s+not)\b|"
    r"i\s+(?:am|'m)\s+(?:unable|not\s+able)\b|i'?m\s+(?:unable|not\s+able)\b|as\s+an\s+ai\b|"
    r"i\s+won'?t\b|i\s+will\s+not\b|i\s+must\s+decline\b)", re.I)
_POSITION = re.compile(
    r"\b(?:response|answer|assistant|reply|option|candidate)\s*(?:[ab12]|one|two)\b|"
    r"\b(?:first|second|former|latter|above|below|preferred|other|chosen|rejected|left|right)\b", re.I)
_FILLER = frozenset("""a an the is was it this that one response answer reply option i think prefer choose
better best more much clearly obviously definitely superior preferable preferred than because so and of
to be""".split())
#: At least this many other words, or the rationale only names a position.
MIN_CONTENT_WORDS = 2


def _plain(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").strip()


def is_refusal(text: str) -> bool:
    """Whether ``text`` opens with a refusal phrase (the first words only: a rationale that *describes* a
    refusal, "The other response refuses ...", is not one)."""
    return bool(_REFUSAL.match(_plain(text)))


def names_only_position(text: str) -> bool:
    """Whether ``text``, with every position reference ("Response A", "the first", "above") and filler words
    ("is", "better", "the", ...) taken out, has fewer than :data:`MIN_CONTENT_WORDS` words left."""
    rest = re.findall(r"[a-z']+", _POSITION.sub(" ", _plain(text).lower()))
    return sum(w not in _FILLER for w in rest) < MIN_CONTENT_WORDS


def text_checks(text: str, finish_reason: str | None) -> dict[str, bool]:
    """The checks read off the text alone: name -> failed (``empty`` fails alone: the others need text)."""
    if not text.strip():
        return {"empty": True, "truncated": False, "refusal": False, "position_only": False}
    return {"empty": False, "truncated": finish_reason == "length", "refusal": is_refusal(text),
            "position_only": names_only_position(text)}


def resolve_policies(default: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The policy of every check: ``default``, with ``overrides`` (check -> policy) applied; ``empty`` is
    always ``drop`` (asking otherwise is an error)."""
    overrides = dict(overrides or {})
    bad = [f"{k}={v}" for k, v in overrides.items() if k not in CHECKS or v not in POLICIES]
    if default not in POLICIES or bad:
        raise ValueError(f"policies {[default, *bad]}: accepted: a policy in {list(POLICIES)}, and overrides "
                         f"CHECK=POLICY with CHECK in {list(CHECKS)}")
    for name in ALWAYS_DROP:
        if overrides.get(name, "drop") != "drop":
            raise ValueError(f"--on {name}={overrides[name]}: an empty rationale is always dropped (it has no "
                             "tokens to train on)")
    return {name: ("drop" if name in ALWAYS_DROP else overrides.get(name, default)) for name in CHECKS}
