"""The preference-example schema, row validation and the skip report.

A preference example is ``(x, y_w, y_l, r)``: a prompt ``x`` (a string, or a list of chat messages), the
chosen (preferred) final assistant response ``y_w``, the rejected one ``y_l``, and an optional rationale
``r`` explaining why ``y_w`` wins (docs/spec.md section 4).

Normal form, shared by every source: a prompt that is exactly one user turn is stored as a plain string;
anything else (a system prompt, earlier turns) is a list of ``{"role", "content"}`` messages with roles
``system``/``user``/``assistant``. Consecutive messages of the same role are kept as they are (templates
that demand alternation merge them later).

Bad rows are described by :class:`BadRow` (dataset, row index, field, reason, detail). The policy
``on_bad_row="error"`` (default) raises one :class:`DataValidationError` listing every bad row;
``"skip"`` drops them and counts them in a :class:`DataReport`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from rdpo_jax.errors import RdpoError

ROLES = ("system", "user", "assistant")

#: Reasons a row can be rejected, with a one-line meaning (used in error messages and the README).
REASONS: dict[str, str] = {
    "missing_field": "a required field is absent or null",
    "not_a_string": "a text field holds something other than a string",
    "empty": "a text field is empty or only whitespace",
    "identical": "chosen and rejected are the same text",
    "prompt_mismatch": "the chosen and rejected transcripts disagree before their final assistant turn",
    "malformed": "a message list or transcript does not have the documented structure",
    "no_scored_tokens": "a completion was truncated to zero scored tokens",
}

ON_BAD_ROW = ("error", "skip")


class Message(TypedDict):
    """One chat message: ``role`` in :data:`ROLES`, ``content`` a string."""

    role: str
    content: str


Prompt = str | list[Message]


@dataclasses.dataclass(frozen=True)
class PreferenceExample:
    """One preference pair with an optional rationale.

    Attributes:
      prompt: the context ``x``: a string (a single user turn) or a list of :class:`Message`.
      chosen: the preferred final assistant response ``y_w`` (non-empty string).
      rejected: the dispreferred final assistant response ``y_l`` (non-empty, differs from ``chosen``).
      rationale: why ``chosen`` wins, or ``None`` when the source has no rationale.
    """

    prompt: Prompt
    chosen: str
    rejected: str
    rationale: str | None = None

    def prompt_messages(self) -> list[Message]:
        """The prompt as a message list (a string prompt becomes one user message)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [dict(m) for m in self.prompt]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with the four fields."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BadRow:
    """One problem found in one row: which dataset, which row (0-based in the split), which field, why."""

    dataset: str
    row: int
    field: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.dataset} row {self.row}, field '{self.field}': {self.reason}{extra}"


@dataclasses.dataclass
class DataReport:
    """What loading a source did: rows read, kept, and every skipped row with its reasons.

    ``counts`` counts skipped rows per reason (a row with two problems counts under both);
    ``flags`` lists rows that were kept but are worth knowing about (e.g. ``consecutive_same_role``).
    """

    dataset: str
    split: str
    origin: str = ""
    n_rows: int = 0
    n_kept: int = 0
    bad_rows: list[BadRow] = dataclasses.field(default_factory=list)
    flags: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    format: str = ""
    columns: list[str] = dataclasses.field(default_factory=list)
    fields: dict[str, str] = dataclasses.field(default_factory=dict)  # format field -> the column read for it
    kept_rows: list[int] = dataclasses.field(default_factory=list)  # source row of each kept example, in order

    @property
    def skipped_rows(self) -> list[int]:
        """Sorted indices of the skipped rows."""
        return sorted({b.row for b in self.bad_rows})

    @property
    def n_skipped(self) -> int:
        return len(self.skipped_rows)

    @property
    def counts(self) -> dict[str, int]:
        """Number of skipped rows per reason."""
        return dict(Counter(reason for reason, _ in {(b.reason, b.row) for b in self.bad_rows}))

    def rows_by_reason(self) -> dict[str, list[int]]:
        """Sorted row indices per reason."""
        out: dict[str, set[int]] = {}
        for b in self.bad_rows:
            out.setdefault(b.reason, set()).add(b.row)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (for logs)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "origin": self.origin,
            "format": self.format,
            "columns": list(self.columns),
            "fields": dict(self.fields),
            "n_rows": self.n_rows,
            "n_kept": self.n_kept,
            "n_skipped": self.n_skipped,
            "counts": self.counts,
            "rows_by_reason": self.rows_by_reason(),
            "flags": {k: list(v) for k, v in self.flags.items()},
        }

    def __str__(self) -> str:
        where = f" from {self.origin}" if self.origin else ""
        head = (
            f"{self.dataset} [{self.split}]{where}: {self.n_rows} rows read, {self.n_kept} kept, "
            f"{self.n_skipped} skipped"
        )
        lines = [head] + [f"  {reason}: rows {rows}" for reason, rows in self.rows_by_reason().items()]
        lines += [f"  (kept, flagged) {name}: rows {rows}" for name, rows in self.flags.items()]
        return "\n".join(lines)


class DataValidationError(RdpoError, ValueError):
    """Raised under ``on_bad_row="error"``; ``bad_rows`` holds every problem found, not only the first."""

    MAX_LISTED = 25

    def __init__(self, dataset: str, split: str, n_rows: int, bad_rows: Sequence[BadRow], origin: str = "",
                 all_skipped: bool = False):
        self.dataset, self.split, self.n_rows, self.origin = dataset, split, n_rows, origin
        self.bad_rows = list(bad_rows)
        n_bad = len({b.row for b in self.bad_rows})
        where = f", read from {origin}" if origin else ""
        if all_skipped:
            head = (f"dataset '{dataset}' (split '{split}'{where}): all {n_rows} rows skipped (on_bad_row='skip'), "
                    "so nothing is left to train on; the first problems:")
        else:
            head = (f"dataset '{dataset}' (split '{split}'{where}): {n_bad} of {n_rows} rows are bad; fix them, "
                    f"or pass on_bad_row='skip' to drop and count them:")
        lines = [head]
        lines += [f"  {b}" for b in self.bad_rows[: self.MAX_LISTED]]
        if len(self.bad_rows) > self.MAX_LISTED:
            lines.append(f"  ... and {len(self.bad_rows) - self.MAX_LISTED} more problems")
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------
# Field checks. Each returns a list of (field, reason, detail) problems; an empty list: the value is good.

Problem = tuple[str, str, str]


def check_text(value: Any, field: str, *, required: bool = True) -> list[Problem]:
    """Check one text field: present (unless optional), a string, not blank."""
    if value is None:
        return [(field, "missing_field", "absent or null")] if required else []
    if not isinstance(value, str):
        return [(field, "not_a_string", f"got {type(value).__name__}")]
    if not value.strip():
        return [(field, "empty", "blank text")]
    return []


def check_messages(value: Any, field: str) -> list[Problem]:
    """Check a message list: a list of ``{"role" in ROLES, "content": str}`` dicts."""
    if not isinstance(value, list | tuple):
        return [(field, "not_a_string", f"expected a string or a message list, got {type(value).__name__}")]
    if not value:
        return [(field, "empty", "no messages")]
    problems: list[Problem] = []
    for i, m in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            problems.append((where, "malformed", "a message must be a mapping with 'role' and 'content'"))
        elif m["role"] not in ROLES:
            problems.append((where, "malformed", f"role {m['role']!r} is not one of {list(ROLES)}"))
        elif not isinstance(m["content"], str):
            problems.append((f"{where}.content", "not_a_string", f"got {type(m['content']).__name__}"))
    return problems


def check_prompt(value: Any, field: str = "prompt") -> list[Problem]:
    """A prompt is a non-blank string or a valid message list with some non-blank content."""
    if value is None or isinstance(value, str):
        return check_text(value, field)
    problems = check_messages(value, field)
    if not problems and not any(m["content"].strip() for m in value):
        problems.append((field, "empty", "every message is blank"))
    return problems


def normalise_prompt(prompt: Prompt) -> Prompt:
    """Normal form: a single user message becomes its content string; messages become plain dicts."""
    if isinstance(prompt, str):
        return prompt
    msgs: list[Message] = [{"role": m["role"], "content": m["content"]} for m in prompt]
    if len(msgs) == 1 and msgs[0]["role"] == "user":
        return msgs[0]["content"]
    return msgs


def consecutive_same_role(prompt: Prompt) -> bool:
    """Whether a message-list prompt has two consecutive messages of the same role."""
    if isinstance(prompt, str):
        return False
    return any(a["role"] == b["role"] for a, b in zip(prompt, prompt[1:], strict=False))


def validate_example(prompt: Any, chosen: Any, rejected: Any, rationale: Any = None) -> list[Problem]:
    """All problems of one candidate example (empty list: it is a valid :class:`PreferenceExample`)."""
    problems = check_prompt(prompt)
    problems += check_text(chosen, "chosen")
    problems += check_text(rejected, "rejected")
    problems += check_text(rationale, "rationale", required=False)
    if not problems and chosen.strip() == rejected.strip():
        problems.append(("rejected", "identical", "chosen and rejected are the same text"))
    return problems
