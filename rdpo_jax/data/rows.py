"""Tokenisation of preference examples into context/completion token lists, with truncation and reports.

Every sequence the model scores is a *context* (the rendered conversation up to and including the assistant
header / generation prompt) plus a *completion* (the assistant turn's text tokens plus exactly one
end-of-turn token, docs/spec.md section 1). Per example: chosen ``[x][y_w]``, rejected ``[x][y_l]``, and, with a
rationale template, the rationale sequence ``[c][r]``.

Completions are read off the full rendering: ``full = encode_chat(messages + [assistant])``, ``context =
encode_chat(messages, add_generation_prompt=True)``; the completion is ``full[len(context):]`` cut right
after its first special token (the template's turn closer: ``<|eot_id|>`` for Llama 3, ``</s>`` for
Mistral), so nothing the template writes after the closer (a newline, a second EOS) is scored; a template
that closes turns without a special token gets ``eos_token_id`` appended, once.

Truncation (:class:`TruncationConfig`; the official RDPO/HALOs rule, applied per pair so chosen and
rejected share one prompt): if ``|x| + max(|y_w|, |y_l|) > max_length`` the prompt keeps its *end* within
``max_prompt_length`` (its first token is kept if it is BOS); then each completion keeps its *start* within
``max_length - |x|``. The rationale sequence follows the same rule with c as its context (and ``r`` first
capped at ``max_rationale_length``). A truncated completion loses its end-of-turn token (the turn did not
end there). A completion left with zero scored tokens is a bad row (:class:`~rdpo_jax.data.schema.BadRow`,
reason ``"no_scored_tokens"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .chat import ChatStats, encode_chat
from .rationale_templates import RationaleWording, rationale_messages
from .schema import ON_BAD_ROW, BadRow, DataReport, DataValidationError, PreferenceExample

NO_SCORED_TOKENS = "no_scored_tokens"


@dataclasses.dataclass(frozen=True)
class TruncationConfig:
    """Length budget of every sequence: ``max_length`` tokens in all, the context at most
    ``max_prompt_length`` when it has to be cut; ``max_rationale_length`` caps r (None: no cap)."""

    max_length: int = 2048
    max_prompt_length: int = 1024
    max_rationale_length: int | None = None

    def __post_init__(self):
        if not 0 < self.max_prompt_length < self.max_length:
            raise ValueError(f"TruncationConfig needs 0 < max_prompt_length ({self.max_prompt_length}) < "
                             f"max_length ({self.max_length})")


@dataclasses.dataclass
class TokenSeq:
    """One scored sequence: ``ids = context + completion``; all completion tokens are scored."""

    context: list[int]
    completion: list[int]

    @property
    def ids(self) -> list[int]:
        return self.context + self.completion

    def __len__(self) -> int:
        return len(self.context) + len(self.completion)


@dataclasses.dataclass
class TokenizedExample:
    """One example as token lists (after truncation).

    ``followup`` is F (the tokens between y_w's turn closer and r in the rationale sequence) when the
    example passed the packing prefix check; ``pack_reason`` says why not otherwise ("" when packable).
    ``dpo_packable``: chosen and rejected share their context untruncated (plain DPO packing possible).
    """

    index: int
    chosen: TokenSeq
    rejected: TokenSeq
    rationale: TokenSeq | None = None
    followup: list[int] | None = None
    dpo_packable: bool = False
    pack_reason: str = ""

    @property
    def rdpo_packable(self) -> bool:
        return self.followup is not None


@dataclasses.dataclass
class RowStats:
    """Counts of what tokenisation did (rows = examples)."""

    n_examples: int = 0
    prompt_truncated: int = 0
    chosen_truncated: int = 0
    rejected_truncated: int = 0
    rationale_truncated: int = 0
    tokens_dropped: int = 0
    context_retokenised: int = 0
    eos_appended: int = 0
    not_packable: dict[str, int] = dataclasses.field(default_factory=dict)
    chat: ChatStats = dataclasses.field(default_factory=ChatStats)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TokenizeResult:
    rows: list[TokenizedExample]
    report: DataReport
    stats: RowStats


def _special_ids(tokenizer: Any) -> set[int]:
    return {int(i) for i in tokenizer.all_special_ids if i is not None}


def split_completion(tokenizer: Any, context: list[int], full: list[int], stats: RowStats | None = None
                     ) -> tuple[list[int], list[int]]:
    """``(context, completion)`` of a full rendering: the completion ends at its first special token (the
    turn closer); if the rendered context is not a prefix of ``full`` the longest common prefix is used."""
    n = len(context)
    if full[:n] != context:
        n = next((i for i, (a, b) in enumerate(zip(context, full, strict=False)) if a != b), min(n, len(full)))
        if stats is not None:
            stats.context_retokenised += 1
    completion = full[n:]
    special = _special_ids(tokenizer)
    end = next((i for i, t in enumerate(completion) if t in special), None)
    if end is not None:
        completion = completion[: end + 1]
    elif tokenizer.eos_token_id is not None:
        completion = completion + [int(tokenizer.eos_token_id)]
        if stats is not None:
            stats.eos_appended += 1
    return full[:n], completion


def _truncate_context(ids: list[int], limit: int, bos: int | None) -> list[int]:
    """Keep the end of ``ids`` within ``limit`` tokens (a leading BOS is kept in front)."""
    if len(ids) <= limit:
        return ids
    if bos is not None and ids and ids[0] == bos:
        return [bos] + ids[len(ids) - (limit - 1):]
    return ids[len(ids) - limit:]


def _encode_seq(tokenizer: Any, messages: list, completion_text: str, stats: RowStats) -> TokenSeq:
    ctx = encode_chat(tokenizer, messages, add_generation_prompt=True, stats=stats.chat)
    full = encode_chat(tokenizer, messages + [{"role": "assistant", "content": completion_text}])
    c, comp = split_completion(tokenizer, ctx, full, stats)
    return TokenSeq(c, comp)


def truncate_pair(seqs: Sequence[TokenSeq], cfg: TruncationConfig, bos: int | None,
                  completion_cap: int | None = None) -> tuple[list[TokenSeq], bool, list[bool], int]:
    """Truncate sequences that share one context (chosen/rejected) by the rule of the module docstring.

    Returns (new sequences, context truncated?, completion truncated? per sequence, tokens dropped).
    """
    dropped = 0
    comps = [s.completion for s in seqs]
    if completion_cap is not None:
        comps = [c[:completion_cap] for c in comps]
    ctx = seqs[0].context
    longest = max(len(c) for c in comps)
    new_ctx = ctx
    if len(ctx) + longest > cfg.max_length:
        new_ctx = _truncate_context(ctx, cfg.max_prompt_length, bos)
    budget = cfg.max_length - len(new_ctx)
    out, cut = [], []
    for s, c in zip(seqs, comps, strict=True):
        kept = c[: max(budget, 0)]
        cut.append(len(kept) < len(s.completion))
        dropped += len(s.completion) - len(kept)
        out.append(TokenSeq(list(new_ctx), kept))
    dropped += (len(ctx) - len(new_ctx)) * len(seqs)
    return out, len(new_ctx) < len(ctx), cut, dropped


def _check_packable(ex: TokenizedExample) -> None:
    x, yw = ex.chosen.context, ex.chosen.completion
    if ex.rejected.context != x:
        ex.pack_reason = "contexts_differ"
        return
    ex.dpo_packable = len(x) >= 1
    if ex.rationale is None:
        return
    c = ex.rationale.context
    if c[: len(x) + len(yw)] != x + yw:
        ex.pack_reason = "prefix_mismatch"  # e.g. Mistral v3 moves the system prompt to the last user turn
        return
    f = c[len(x) + len(yw):]
    if not f:
        ex.pack_reason = "empty_followup"
        return
    ex.followup = f


def tokenize_example(example: PreferenceExample, tokenizer: Any, index: int = 0, *,
                     truncation: TruncationConfig = TruncationConfig(), rationale_template: str | None = None,
                     wording: str | RationaleWording = "general", stats: RowStats | None = None
                     ) -> tuple[TokenizedExample, list[tuple[str, str]]]:
    """Tokenise and truncate one example. Returns the example and its problems ``[(field, detail)]``
    (completions with zero scored tokens). ``rationale_template`` None: no rationale sequence."""
    stats = stats if stats is not None else RowStats()
    stats.n_examples += 1
    msgs = example.prompt_messages()
    chosen = _encode_seq(tokenizer, msgs, example.chosen, stats)
    rejected = _encode_seq(tokenizer, msgs, example.rejected, stats)
    bos = tokenizer.bos_token_id
    (chosen, rejected), p_cut, c_cut, dropped = truncate_pair([chosen, rejected], truncation, bos)
    stats.prompt_truncated += int(p_cut)
    stats.chosen_truncated += int(c_cut[0])
    stats.rejected_truncated += int(c_cut[1])
    stats.tokens_dropped += dropped
    any_cut = p_cut or any(c_cut)
    rationale = None
    if rationale_template is not None and example.rationale is not None:
        rmsgs = rationale_messages(example, rationale_template, wording)
        r = _encode_seq(tokenizer, rmsgs, example.rationale, stats)
        (r,), rc_cut, rr_cut, rdropped = truncate_pair([r], truncation, bos, truncation.max_rationale_length)
        stats.rationale_truncated += int(rc_cut or rr_cut[0])
        stats.tokens_dropped += rdropped
        any_cut = any_cut or rc_cut or rr_cut[0]
        rationale = r
    ex = TokenizedExample(index, chosen, rejected, rationale)
    if any_cut:
        ex.pack_reason = "truncated"
    elif rationale_template == "official":
        ex.pack_reason = "official_template"
        ex.dpo_packable = chosen.context == rejected.context
    else:
        _check_packable(ex)
    if ex.pack_reason:
        stats.not_packable[ex.pack_reason] = stats.not_packable.get(ex.pack_reason, 0) + 1
    problems = [(name, "completion truncated to zero scored tokens")
                for name, s in (("chosen", chosen), ("rejected", rejected), ("rationale", rationale))
                if s is not None and not s.completion]
    return ex, problems


def tokenize_examples(examples: Sequence[PreferenceExample], tokenizer: Any, *,
                      truncation: TruncationConfig = TruncationConfig(), rationale_template: str | None = None,
                      wording: str | RationaleWording = "general", dataset: str = "examples",
                      on_bad_row: str = "error") -> TokenizeResult:
    """Tokenise examples into :class:`TokenizedExample` rows.

    Rows with a completion of zero scored tokens are bad rows (reason ``"no_scored_tokens"``): with
    ``on_bad_row="error"`` a :class:`DataValidationError` lists them all; ``"skip"`` drops and counts them.
    The report's ``flags`` list kept rows that were truncated (``prompt_truncated``, ``chosen_truncated``,
    ...) or had same-role turns merged (``merged_turns``).
    """
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
    stats = RowStats()
    report = DataReport(dataset=dataset, split="rows", n_rows=len(examples))
    rows: list[TokenizedExample] = []
    for i, example in enumerate(examples):
        before = dataclasses.replace(stats, not_packable=dict(stats.not_packable),
                                     chat=dataclasses.replace(stats.chat))
        ex, problems = tokenize_example(example, tokenizer, i, truncation=truncation,
                                        rationale_template=rationale_template, wording=wording, stats=stats)
        for field in ("prompt_truncated", "chosen_truncated", "rejected_truncated", "rationale_truncated"):
            if getattr(stats, field) > getattr(before, field):
                report.flags.setdefault(field, []).append(i)
        if stats.chat.merged_examples > before.chat.merged_examples:
            report.flags.setdefault("merged_turns", []).append(i)
        if problems:
            report.bad_rows += [BadRow(dataset, i, f, NO_SCORED_TOKENS, d) for f, d in problems]
        else:
            rows.append(ex)
    report.n_kept = len(rows)
    if report.bad_rows and (on_bad_row == "error" or not rows):
        raise DataValidationError(dataset, "rows", len(examples), report.bad_rows, all_skipped=on_bad_row == "skip")
    return TokenizeResult(rows, report, stats)
