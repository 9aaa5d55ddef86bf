"""Rationales for preference pairs: ask a generator why the chosen response wins, check what comes back, and
keep, flag or drop each pair by the checks' policies (:mod:`rdpo_jax.annotate.checks`).

Per pair ``(x, y_w, y_l)``:

1. **Ask.** Default mode: one ``told`` request (the template shows ``y_w`` as the preferred response and
   ``y_l`` as the other). ``both_orders``: two ``blind`` requests, ``(first, second) = (y_w, y_l)`` and
   ``(y_l, y_w)``; the generator picks one (``Better: 1|2``) and explains. The pick is consistent when it is
   the same response in both orders; the rationale kept is the one written with ``y_w`` shown first (the
   order the training templates use).
2. **Check the text** (empty, truncated, refusal, position-only).
3. **Support check** (when a checker and a support template are given): the checker sees the two responses
   in a seeded order (``swap = bit 0 of request_key("order", seed, x, y_w, y_l)``) with the rationale and
   says which one it argues for; anything but ``y_w`` fails ``inconsistent``.
4. **Policy**: a pair is dropped if a failed check's policy is ``drop``; else written, with ``flags``
   listing its failed ``flag`` checks.

Every answer is cached under ``request_key(generator name, generator settings, template id, messages)``
(:class:`rdpo_jax.eval.request_cache.RequestCache`) as it arrives: a rerun, or a run resumed after a kill,
asks nothing twice.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rdpo_jax.annotate.checks import CHECKS, resolve_policies, text_checks
from rdpo_jax.annotate.generators import Generator
from rdpo_jax.annotate.templates import SUPPORT, AnnotationTemplate, AnnotationTemplateError, parse_pick
from rdpo_jax.data.schema import PreferenceExample
from rdpo_jax.eval.bulk_generation import PromptTooLong
from rdpo_jax.eval.chat_client import Completion
from rdpo_jax.eval.judges.base import Verdict, parse_answer
from rdpo_jax.eval.prompt_ids import canonical_messages
from rdpo_jax.eval.request_cache import request_key

__all__ = ["AnnotateOptions", "Annotation", "annotate"]

PASS, FAIL, NOT_RUN = "pass", "fail", "not run"


@dataclasses.dataclass(frozen=True)
class AnnotateOptions:
    """How to annotate: the rationale ``template`` (``told``, or ``blind`` with ``both_orders``), the
    ``support`` template of the consistency check (None: no check), the policy of every check,
    ``max_tokens`` of a rationale, ``check_max_tokens`` of a support answer, and the ``seed`` of the support
    check's order."""

    template: AnnotationTemplate
    both_orders: bool = False
    support: AnnotationTemplate | None = SUPPORT
    policies: Mapping[str, str] = dataclasses.field(default_factory=lambda: resolve_policies("drop"))
    max_tokens: int = 256
    check_max_tokens: int = 16
    seed: int = 0

    def __post_init__(self):
        want = "blind" if self.both_orders else "told"
        if self.template.kind != want:
            raise AnnotationTemplateError(f"template {self.template.id} is a {self.template.kind} template; "
                                          f"{'--both-orders' if self.both_orders else 'one-order annotation'} "
                                          f"needs a {want} one")
        if self.support is not None and self.support.kind != "support":
            raise AnnotationTemplateError(f"support template {self.support.id} is a {self.support.kind} template")
        if set(self.policies) != set(CHECKS):
            raise ValueError(f"policies for {sorted(self.policies)}; every check needs one: {list(CHECKS)}")


@dataclasses.dataclass
class Annotation:
    """``rows``: the written rows (``prompt``, ``chosen``, ``rejected``, ``rationale``, ``annotation``)
    in source order; ``decisions``: one per input pair (``kept``, ``failed`` checks, ``rationale``);
    ``report``: the counts (:func:`annotate`)."""

    rows: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    report: dict[str, Any]


class _MemoryCache(dict):
    def put(self, key: str, record: dict[str, Any]) -> None:
        self[key] = dict(record)


class _Asker:
    """Answers for a list of requests from the cache, asking ``generator`` only what it lacks."""

    def __init__(self, generator: Generator, cache, progress: Callable[[int], None] | None):
        self.generator, self.cache, self.progress = generator, cache, progress
        self.asked = self.cached = self.sent = 0

    def __call__(self, template_id: str, requests: Sequence[list[dict[str, str]]], max_tokens: int,
                 rows: Sequence[int] | None = None) -> list[Completion]:
        """``rows``: the source row of each request, named when a local model cannot take a request."""
        settings = self.generator.settings(max_tokens)
        keys = [request_key(self.generator.name, settings, template_id, m) for m in requests]
        todo = {}
        for k, m in zip(keys, requests, strict=True):
            if self.cache.get(k) is None:
                todo.setdefault(k, m)
        self.asked += len(set(keys))
        self.cached += len(set(keys)) - len(todo)

        def done(key: str, c: Completion) -> None:
            self.cache.put(key, {"text": c.text, "finish_reason": c.finish_reason})
            self.sent += 1
            if self.progress is not None:
                self.progress(1)

        try:
            self.generator.run(todo, max_tokens, done)
        except PromptTooLong as e:
            row = rows[keys.index(e.prompt_id)] if rows is not None and e.prompt_id in keys else "?"
            raise PromptTooLong(f"{template_id} request for source row {row} has {e.tokens} tokens; with "
                                f"--max-tokens {max_tokens} that exceeds the model's max_position_embeddings="
                                f"{e.max_positions} ({e.count} such requests); lower --max-tokens, or leave the "
                                "longest pairs out", e.prompt_id, e.tokens, e.count, e.max_positions) from None
        out = []
        for k in keys:
            rec = self.cache.get(k)
            out.append(Completion(rec["text"], rec.get("finish_reason")))
        return out

    def stats(self) -> dict[str, int]:
        return {"requests": self.asked, "from_cache": self.cached, "sent": self.sent}


def _swap(seed: int, ex: PreferenceExample) -> bool:
    return int(request_key("order", seed, canonical_messages(ex.prompt), ex.chosen, ex.rejected)[:8], 16) & 1 == 1


def _support(verdict: Verdict, swapped: bool) -> str:
    if verdict in (Verdict.FIRST, Verdict.SECOND):
        return "chosen" if (verdict == Verdict.FIRST) != swapped else "rejected"
    return "unclear"


def _rationales(examples, rows: Sequence[int], options: AnnotateOptions, ask: _Asker) -> list[dict[str, Any]]:
    """Per pair: ``text``, ``finish_reason``, and with both orders the ``picks`` and the pick checks."""
    t = options.template
    if not options.both_orders:
        reqs = [t.render(ex.prompt, chosen=ex.chosen, rejected=ex.rejected) for ex in examples]
        return [{"text": c.text.strip(), "finish_reason": c.finish_reason, "checks": {}}
                for c in ask(t.id, reqs, options.max_tokens, rows)]
    reqs = [t.render(ex.prompt, first=a, second=b) for ex in examples
            for a, b in ((ex.chosen, ex.rejected), (ex.rejected, ex.chosen))]
    answers = ask(t.id, reqs, options.max_tokens, [r for r in rows for _ in range(2)])
    out = []
    for i in range(len(examples)):
        (pick_a, text), (pick_b, _) = parse_pick(answers[2 * i].text), parse_pick(answers[2 * i + 1].text)
        readable = pick_a is not None and pick_b is not None
        agree = readable and (pick_a == 1) == (pick_b == 2)
        out.append({"text": text, "finish_reason": answers[2 * i].finish_reason,
                    "picks": [pick_a, pick_b], "prefers": ("chosen" if pick_a == 1 else "rejected") if agree else None,
                    "checks": {"position_bias": not agree, "inconsistent": agree and pick_a != 1}})
    return out


def annotate(examples: Sequence[PreferenceExample], generator: Generator, options: AnnotateOptions, *,
             checker: Generator | None = None, cache=None, source_rows: Sequence[int] | None = None,
             progress: Callable[[int], None] | None = None) -> Annotation:
    """Annotates ``examples`` (module docstring). ``checker`` answers the support check (None: no support
    check, even with ``options.support``); ``cache`` a `RequestCache` (None: in memory); ``source_rows`` the
    source row of each example (recorded in provenance; default 0..n-1); ``progress(n)`` is called as
    answers arrive."""
    cache = _MemoryCache() if cache is None else cache
    rows_of = list(range(len(examples))) if source_rows is None else list(source_rows)
    ask = _Asker(generator, cache, progress)
    drafts = _rationales(examples, rows_of, options, ask)
    for d in drafts:
        d["checks"] = {**text_checks(d["text"], d["finish_reason"]), **d["checks"]}
    support_ask = None
    if checker is not None and options.support is not None:
        support_ask = _Asker(checker, cache, progress)
        todo = [i for i, d in enumerate(drafts) if not d["checks"]["empty"]]
        swaps = {i: _swap(options.seed, examples[i]) for i in todo}
        reqs = []
        for i in todo:
            ex = examples[i]
            first, second = (ex.rejected, ex.chosen) if swaps[i] else (ex.chosen, ex.rejected)
            reqs.append(options.support.render(ex.prompt, first=first, second=second, rationale=drafts[i]["text"]))
        answers = support_ask(options.support.id, reqs, options.check_max_tokens, [rows_of[i] for i in todo])
        for i, c in zip(todo, answers, strict=True):
            drafts[i]["support"] = _support(parse_answer(c.text), swaps[i])
            drafts[i]["checks"]["inconsistent"] = drafts[i]["checks"].get("inconsistent", False) or \
                drafts[i]["support"] != "chosen"
    rows, decisions = [], []
    for ex, row, d in zip(examples, rows_of, drafts, strict=True):
        checks = {name: NOT_RUN if name not in d["checks"] else FAIL if d["checks"][name] else PASS
                  for name in CHECKS}
        failed = [n for n, v in checks.items() if v == FAIL]
        kept = not any(options.policies[n] == "drop" for n in failed)
        flags = [n for n in failed if options.policies[n] == "flag"]
        decisions.append({"source_row": row, "kept": kept, "checks": checks, "failed": failed, "flags": flags,
                          "rationale": d["text"],
                          "support": d.get("support"), "prefers": d.get("prefers")})
        if kept:
            provenance = {"generator": generator.name, "settings": generator.settings(options.max_tokens),
                          "template": options.template.id, "both_orders": options.both_orders,
                          "checker": None if support_ask is None else checker.name,
                          "support_template": None if support_ask is None else options.support.id,
                          "source_row": row, "finish_reason": d["finish_reason"], "checks": checks,
                          "support": d.get("support"), "picks": d.get("picks"), "flags": flags}
            rows.append({"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected,
                         "rationale": d["text"], "annotation": provenance})
    report = _report(decisions, options, generator, checker if support_ask is not None else None,
                     ask.stats(), None if support_ask is None else support_ask.stats())
    return Annotation(rows, decisions, report)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _report(decisions, options: AnnotateOptions, generator, checker, gen_stats, check_stats) -> dict[str, Any]:
    n = len(decisions)
    failed = Counter(name for d in decisions for name in d["failed"])
    run = Counter(name for d in decisions for name, v in d["checks"].items() if v != NOT_RUN)
    dropped_by = Counter(name for d in decisions if not d["kept"] for name in d["failed"]
                         if options.policies[name] == "drop")
    support = Counter(d["support"] for d in decisions if d["support"] is not None)
    checked = sum(support.values())
    report = {
        "pairs": n, "kept": sum(d["kept"] for d in decisions), "dropped": sum(not d["kept"] for d in decisions),
        "flagged": sum(d["kept"] and bool(d["flags"]) for d in decisions),
        "checks": {name: {"run": run[name], "failed": failed[name], "policy": options.policies[name],
                          "dropped": dropped_by[name], "meaning": CHECKS[name]} for name in CHECKS},
        "rationale_consistency": _rate(support["chosen"], checked),
        "support": {"chosen": support["chosen"], "rejected": support["rejected"], "unclear": support["unclear"],
                    "not_checked": n - checked},
        "generator": generator.name, "settings": generator.settings(options.max_tokens),
        "template": options.template.as_dict(), "both_orders": options.both_orders,
        "requests": {"generator": gen_stats},
    }
    if options.both_orders:
        prefers = Counter(d["prefers"] for d in decisions)
        report["position_consistency"] = _rate(n - failed["position_bias"], n)
        report["picks"] = {"chosen_both_orders": prefers["chosen"], "rejected_both_orders": prefers["rejected"],
                           "changed_with_order_or_unreadable": prefers[None]}
    if checker is not None:
        report["checker"] = checker.name
        report["support_template"] = options.support.as_dict()
        report["requests"]["checker"] = check_stats
    return report
