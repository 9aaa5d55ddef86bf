"""The prompts the annotator sends: a rationale request per pair and a support check per rationale.

The paper does not publish its generation prompts; only the released sets' descriptions are known ("a
general, high-level explanation of why the chosen response is preferred over the rejected response" for
the "general" set, specific points of the two responses for the "detailed" one). These templates are ours,
written from those descriptions, and versioned: the id (``general-v1``, ...) is stored in every row's
provenance and in every cache key, so a changed text is a new id and never reuses old answers.

Three kinds, by the fields they fill (Python format strings; literal braces doubled):

* ``told`` (``{conversation}``, ``{chosen}``, ``{rejected}``): the generator is told which response the
  raters preferred and asked why (``general-v1``, ``detailed-v1``).
* ``blind`` (``{conversation}``, ``{first}``, ``{second}``): for ``--both-orders``; the generator is not told
  which was chosen, picks one on a first line ``Better: 1`` or ``Better: 2`` (:func:`parse_pick`), then
  explains (``general-blind-v1``, ``detailed-blind-v1``).
* ``support`` (``{conversation}``, ``{first}``, ``{second}``, ``{rationale}``): which response does the
  rationale argue for? Answered ``1``, ``2`` or ``tie`` (``support-v1``; read with the judge's
  :func:`~rdpo_jax.eval.judges.base.parse_answer`).

Every template asks the generator to call the responses "the better/preferred response" and "the other
response" rather than by number, so a rationale does not depend on the order it was shown in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import string
from collections.abc import Mapping
from pathlib import Path

from rdpo_jax.errors import RdpoError
from rdpo_jax.eval.judges.templates import render_conversation

__all__ = ["BUILT_IN", "KINDS", "NAMES", "SUPPORT", "AnnotationTemplate", "AnnotationTemplateError", "blind_variant",
           "load_annotation_template", "parse_pick"]

KINDS: dict[str, frozenset[str]] = {
    "told": frozenset({"conversation", "chosen", "rejected"}),
    "blind": frozenset({"conversation", "first", "second"}),
    "support": frozenset({"conversation", "first", "second", "rationale"}),
}


class AnnotationTemplateError(RdpoError, ValueError):
    """A template name or file that cannot be used: the message names it and what is accepted."""


@dataclasses.dataclass(frozen=True)
class AnnotationTemplate:
    """``id`` (versioned), ``kind`` (a key of :data:`KINDS`) and ``text`` (a format string over its fields)."""

    id: str
    kind: str
    text: str

    def render(self, prompt, **fields: str) -> list[dict[str, str]]:
        """The request as chat messages: one user turn, the template filled with the conversation (``prompt``,
        a string or messages, as ``Role: content`` paragraphs) and ``fields``."""
        return [{"role": "user", "content": self.text.format(conversation=render_conversation(prompt), **fields)}]

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


_CONTEXT = """Below is a conversation between a user and an assistant, followed by two candidate replies for the \
assistant's next turn.

{conversation}

"""

_TOLD = _CONTEXT + """Preferred response:
{chosen}
END OF PREFERRED RESPONSE

Other response:
{rejected}
END OF OTHER RESPONSE

Human raters preferred the first of the two responses. """

_NUMBERED = """Response 1:
{first}
END OF RESPONSE 1

Response 2:
{second}
END OF RESPONSE 2

"""

_ASK = {
    "general": "In two or three sentences, give a general, high-level explanation of why {which} is better than "
               "the other response. Call them \"{which}\" and \"the other response\", not by number or position.",
    "detailed": "Explain specifically why {which} is better than the other response: go through the concrete "
                "points where the two differ (what each says, whether it is correct, helpful and harmless, "
                "whether it does what the user asked). Call them \"{which}\" and \"the other response\", not by "
                "number or position.",
}

_PICK = "Which response is better? On the first line write only \"Better: 1\" or \"Better: 2\". Then, "


def _told(style: str) -> AnnotationTemplate:
    ask = _ASK[style].format(which="the preferred response")
    return AnnotationTemplate(f"{style}-v1", "told", _TOLD + ask + " Write only the explanation.")


def _blind(style: str) -> AnnotationTemplate:
    ask = _ASK[style].format(which="the better response")
    return AnnotationTemplate(f"{style}-blind-v1", "blind", _CONTEXT + _NUMBERED + _PICK + ask[0].lower() + ask[1:])


SUPPORT = AnnotationTemplate("support-v1", "support", _CONTEXT + _NUMBERED + """Someone wrote this explanation \
about the two responses:
{rationale}
END OF EXPLANATION

Which response does the explanation argue is the better one? On the last line write only "1", "2", or "tie" \
if it argues for neither.""")

BUILT_IN: dict[str, AnnotationTemplate] = {t.id: t for t in (
    _told("general"), _told("detailed"), _blind("general"), _blind("detailed"), SUPPORT)}
#: Short names accepted on the command line.
NAMES = {"general": "general-v1", "detailed": "detailed-v1", "general-blind": "general-blind-v1",
         "detailed-blind": "detailed-blind-v1", "support": "support-v1"}


def blind_variant(template: AnnotationTemplate) -> AnnotationTemplate:
    """The ``blind`` template ``--both-orders`` uses for a built-in ``told`` one (a blind one is returned
    as is; a told template from a file has no blind variant: write a blind one)."""
    if template.kind == "blind":
        return template
    style = template.id.split("-")[0]
    if template.id in BUILT_IN and f"{style}-blind-v1" in BUILT_IN:
        return BUILT_IN[f"{style}-blind-v1"]
    raise AnnotationTemplateError(f"--both-orders needs a template that does not say which response was chosen "
                                  f"({sorted(KINDS['blind'])}); {template.id} is a told template: pass a blind "
                                  "one with --template FILE")


def load_annotation_template(spec: str | Path, kinds: Mapping[str, frozenset[str]] = KINDS) -> AnnotationTemplate:
    """A built-in template by name or id (:data:`NAMES`, :data:`BUILT_IN`), or a file: a format string whose
    fields are exactly one kind's (:data:`KINDS`); its id is ``file-`` plus 12 hex characters of its sha256."""
    name = str(spec)
    if name in NAMES or name in BUILT_IN:
        return BUILT_IN[NAMES.get(name, name)]
    path = Path(name)
    if not path.is_file():
        raise AnnotationTemplateError(f"template {name!r}: neither a built-in ({sorted(NAMES)}) nor a file")
    text = path.read_text()
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as e:
        raise AnnotationTemplateError(f"template file {path}: not a Python format string ({e}); write literal "
                                      "braces as {{ and }}") from e
    for kind, fields in kinds.items():
        if used == fields or used == fields - {"conversation"}:
            return AnnotationTemplate("file-" + hashlib.sha256(text.encode()).hexdigest()[:12], kind, text)
    accepted = "; ".join(f"{k}: {sorted(v)}" for k, v in kinds.items())
    raise AnnotationTemplateError(f"template file {path}: fields {sorted(used)}; accepted, one kind's fields "
                                  f"({{conversation}} optional): {accepted}")


_PICK_LINE = re.compile(r"^\W*(?:better|answer|verdict)?\W*(?:response\s*)?([12])\b\W*$", re.I)
_PICK_LEAD = re.compile(r"^\W*better\s*:\s*(?:response\s*)?([12])\b[\s.:\-]*", re.I)


def parse_pick(text: str | None) -> tuple[int | None, str]:
    """A blind reply as ``(pick, rationale)``: ``pick`` 1 or 2 from its first non-empty line
    (``Better: 1``, ``Better: Response 2``, ``**Better: 1**``; the rest of that line, if any, starts the
    rationale), None when that line names no response; ``rationale`` is the rest of the reply, stripped."""
    lines = (text or "").strip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None, ""
    first = lines[0].strip()
    m = _PICK_LEAD.match(first) or _PICK_LINE.match(first)
    if m is None:
        return None, "\n".join(lines).strip()
    rest = first[m.end():].strip(" *_") if m.re is _PICK_LEAD else ""
    return int(m.group(1)), "\n".join([rest, *lines[1:]]).strip()
