r"""Leakage control for E2 (docs/spec.md section 5, after RoRa): mask slot and label words in rationales.

A rationale that names a *slot* ("the response above wins") makes the swap score
$\Delta=\ell(r\mid\text{chosen first})-\ell(r\mid\text{chosen second})$ large without saying anything about
the responses' content. The control recomputes every $\Delta$ after replacing, in the rationale text and
before tokenising, each whole word of a per-template list by a neutral token (default ``"-"``, a plain token
of any vocabulary). The replacement is a function of the rationale text only, so the masked rationale is
the same token sequence in both orders. The placeholders stay in the input but their own log-probs (of every
token whose text contains one) are not scored (:func:`rdpo_jax.analysis.lm.rationale_logps`): how likely a
model finds ``"-"`` where it expected a word is off its training distribution and carries order-dependent
noise, not information; the masked $\Delta$ sums the remaining rationale tokens (and the end-of-turn token).

Word lists (case-insensitive, whole words):

* slot words shared by both templates: "above", "below", "first", "second", "former", "latter", "top",
  "bottom", "earlier", "later", "previous", "next" (the labels "A"/"B" are not masked: "a" is an article);
* label words: "better", "worse", "best", "worst", "wins", "win", "winner", "loses", "preferable",
  "preferred", "prefer", "chosen", "rejected";
* the slot nouns of each template: official "response", "responses" (its slots are "Response above" /
  "Response below"); conversational "response", "responses", "another", "other", "mine", "my", "your",
  "yours" (its slots are the assistant's own reply and "Another response to the same prompt").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MASK_WORDS", "DEFAULT_MASK_TOKEN", "mask_words_for", "mask_rationale"]

DEFAULT_MASK_TOKEN = "-"

_SLOT = ("above", "below", "first", "second", "former", "latter", "top", "bottom", "earlier", "later",
         "previous", "next")
_LABEL = ("better", "worse", "best", "worst", "wins", "win", "winner", "loses", "preferable", "preferred",
          "prefer", "chosen", "rejected")

#: Words masked per rationale template (see the module docstring).
MASK_WORDS: dict[str, tuple[str, ...]] = {
    "official": _SLOT + _LABEL + ("response", "responses"),
    "conversational": _SLOT + _LABEL + ("response", "responses", "another", "other", "mine", "my", "your",
                                        "yours"),
}


def mask_words_for(template: str) -> tuple[str, ...]:
    """The masked words of a rationale template ("official" or "conversational")."""
    if template not in MASK_WORDS:
        raise ValueError(f"no mask-word list for template {template!r}; accepted: {sorted(MASK_WORDS)}")
    return MASK_WORDS[template]


def mask_rationale(text: str, words: Sequence[str], token: str = DEFAULT_MASK_TOKEN) -> str:
    """``text`` with every whole-word, case-insensitive occurrence of ``words`` replaced by ``token``.

    >>> mask_rationale("Response above wins.", ["response", "above", "wins"])
    '- - -.'
    """
    if not words:
        return text
    pattern = r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b"
    return re.sub(pattern, token, text, flags=re.IGNORECASE)
