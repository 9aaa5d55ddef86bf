"""A judge served by an OpenAI-compatible chat-completions endpoint, through the project's one endpoint client
(:class:`rdpo_jax.eval.chat_client.ChatClient`: retries, backoff, Retry-After, timeouts, concurrency).

Each request sends the rendered template as one user message, ``temperature`` 0 and a small ``max_tokens``.
A request that still fails after its retries raises `JudgeError` (the verdicts already cached are kept). A
reply that names no response (`parse_answer`) is asked once more with the strict template; if that is
unreadable too the verdict is UNPARSED. Every final verdict is cached (`VerdictCache`) before the next is
awaited, so after a kill at most ``concurrency`` in-flight requests are sent again. The API key is read
from an environment variable and is never printed, logged or written.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rdpo_jax.eval.chat_client import ChatClient, EndpointError
from rdpo_jax.eval.judges.base import JudgeError, JudgeRequest, Verdict, parse_answer
from rdpo_jax.eval.judges.cache import VerdictCache, cache_key
from rdpo_jax.eval.judges.templates import PAPER, STRICT, Template

__all__ = ["EndpointJudge"]


class EndpointJudge:
    """`Judge` over a chat-completions endpoint (module docstring). ``name`` is ``endpoint:<model>:<template
    id>``; ``calls`` counts HTTP requests sent, ``cache_hits`` the requests answered from the cache."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, template: Template = PAPER,
                 strict_template: Template = STRICT, cache: VerdictCache | None = None, concurrency: int = 4,
                 timeout: float = 60.0, max_retries: int = 6, backoff_base: float = 1.0,
                 max_backoff: float = 60.0, max_tokens: int = 64, seed: int = 0):
        self.client = ChatClient(url, model, api_key=api_key, concurrency=concurrency, timeout=timeout,
                                 max_retries=max_retries, backoff_base=backoff_base, max_backoff=max_backoff,
                                 seed=seed)
        self.url, self.model = self.client.url, model
        self.template, self.strict_template, self.cache = template, strict_template, cache
        self.name = f"endpoint:{model}:{template.id}"
        self.max_tokens = max_tokens
        self.cache_hits = 0

    @property
    def calls(self) -> int:
        return self.client.calls

    @property
    def retries(self) -> int:
        return self.client.retries

    def body(self, request: JudgeRequest, template: Template | None = None) -> dict[str, Any]:
        """The JSON body sent for ``request`` (no credentials in it)."""
        messages = [{"role": "user", "content": (template or self.template).render(request)}]
        return self.client.body(messages, max_tokens=self.max_tokens, temperature=0)

    def _post(self, body: dict[str, Any]) -> str:
        try:
            return self.client.complete(body).text
        except EndpointError as e:
            raise JudgeError(str(e)) from None

    def _judge_one(self, request: JudgeRequest) -> tuple[Verdict, str]:
        raw = self._post(self.body(request))
        verdict = parse_answer(raw)
        if verdict == Verdict.UNPARSED:  # one retry with the strict instruction
            raw = self._post(self.body(request, self.strict_template))
            verdict = parse_answer(raw)
        return verdict, raw

    def keys(self, requests: Sequence[JudgeRequest]) -> list[str]:
        return [cache_key(self.name, self.template.id, r) for r in requests]

    def pending(self, requests: Sequence[JudgeRequest]) -> int:
        """How many distinct requests are not in the cache (the calls a run would make, strict retries aside)."""
        keys = set(self.keys(requests))
        return len(keys) if self.cache is None else sum(k not in self.cache for k in keys)

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        keys = self.keys(requests)
        out: dict[str, Verdict] = {}
        todo: dict[str, JudgeRequest] = {}
        for k, r in zip(keys, requests, strict=True):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                out[k] = hit[0]
                self.cache_hits += 1
            elif k not in todo:
                todo[k] = r
        for k, (verdict, raw) in self.client.each(todo, self._judge_one):
            out[k] = verdict
            if self.cache is not None:
                self.cache.put(k, verdict, raw)
        return [out[k] for k in keys]

    def dry_run(self, requests: Sequence[JudgeRequest]) -> str:
        """One rendered request (URL, headers without the key, body) and the number of calls a run makes."""
        shown = self.client.describe(self.body(requests[0])) if requests else f"POST {self.url}\n\n(no request)"
        return (f"{shown}\n\n{len(requests)} requests, {self.pending(requests)} not cached: {self.pending(requests)} "
                "calls (plus one strict retry per unreadable reply and retries of failed calls)")
