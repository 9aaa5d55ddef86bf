"""A judge served by an OpenAI-compatible chat-completions endpoint (``POST {url}/chat/completions`` or the
URL itself when it ends in ``/chat/completions``), through httpx.

Each request sends the rendered template as one user message, ``temperature`` 0 and a small ``max_tokens``.
Requests run ``concurrency`` at a time (threads). A 429, a 5xx, a timeout, a connection error or a body that
is not chat-completions JSON is retried up to ``max_retries`` times, waiting ``Retry-After`` when the server
sends it, else ``min(max_backoff, backoff_base * 2**k)`` times a jitter factor uniform in [0.5, 1.5) before
retry k+1; a request that still fails raises `JudgeError` (the verdicts already cached are kept). A reply
that names no response (`parse_answer`) is asked once more with the strict template; if that is unreadable
too the verdict is UNPARSED. Every final verdict is cached (`VerdictCache`) before the next is awaited, so
after a kill at most ``concurrency`` in-flight requests are sent again. The API key is read from an
environment variable and is never printed, logged or written.
"""
from __future__ import annotations

import concurrent.futures
import email.utils
import json
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from rdpo_jax.eval.judges.base import JudgeError, JudgeRequest, Verdict, parse_answer
from rdpo_jax.eval.judges.cache import VerdictCache, cache_key
from rdpo_jax.eval.judges.templates import PAPER, STRICT, Template

__all__ = ["EndpointJudge"]

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds, fractional accepted, or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class EndpointJudge:
    """`Judge` over a chat-completions endpoint (module docstring). ``name`` is ``endpoint:<model>:<template
    id>``; ``calls`` counts HTTP requests sent, ``cache_hits`` the requests answered from the cache."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, template: Template = PAPER,
                 strict_template: Template = STRICT, cache: VerdictCache | None = None, concurrency: int = 4,
                 timeout: float = 60.0, max_retries: int = 6, backoff_base: float = 1.0,
                 max_backoff: float = 60.0, max_tokens: int = 64, seed: int = 0):
        import httpx

        self.url = url if url.rstrip("/").endswith("/chat/completions") else url.rstrip("/") + "/chat/completions"
        self.model, self.template, self.strict_template, self.cache = model, template, strict_template, cache
        self.name = f"endpoint:{model}:{template.id}"
        self.concurrency, self.max_retries = max(1, int(concurrency)), int(max_retries)
        self.backoff_base, self.max_backoff, self.max_tokens = backoff_base, max_backoff, max_tokens
        self._rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._httpx = httpx
        self.calls = self.cache_hits = self.retries = 0
        self._count_lock = threading.Lock()  # the counters are bumped from the worker threads

    def body(self, request: JudgeRequest, template: Template | None = None) -> dict[str, Any]:
        """The JSON body sent for ``request`` (no credentials in it)."""
        return {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": (template or self.template).render(request)}]}

    def _post(self, body: dict[str, Any]) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                return self._once(body)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise JudgeError(f"{self.url}: {e} after {self.max_retries} retries; the verdicts so far "
                                     "are cached, rerun the same command to resume") from None
                with self._count_lock:
                    self.retries += 1
                wait = e.retry_after if e.retry_after is not None else \
                    min(self.max_backoff, self.backoff_base * 2 ** attempt) * self._rng.uniform(0.5, 1.5)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _once(self, body: dict[str, Any]) -> str:
        httpx = self._httpx
        with self._count_lock:
            self.calls += 1
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise _Retryable("timed out") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__})") from None
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}", _retry_after(resp.headers.get("retry-after")))
        if resp.status_code >= 400:
            raise JudgeError(f"{self.url}: HTTP {resp.status_code} for model {self.model!r}: "
                             f"{resp.text[:200]!r} (check --endpoint, --judge-model and the API key)")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable("a reply that is not chat-completions JSON") from None
        return content if isinstance(content, str) else ""

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
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._judge_one, r): k for k, r in todo.items()}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    verdict, raw = fut.result()
                    k = futures[fut]
                    out[k] = verdict
                    if self.cache is not None:
                        self.cache.put(k, verdict, raw)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return [out[k] for k in keys]

    def dry_run(self, requests: Sequence[JudgeRequest]) -> str:
        """One rendered request (URL, headers without the key, body) and the number of calls a run makes."""
        shown = json.dumps(self.body(requests[0]), indent=2, ensure_ascii=False) if requests else "(no request)"
        auth = "Authorization: Bearer <from the environment, not shown>\n" if \
            "authorization" in self._client.headers else ""
        return (f"POST {self.url}\n{auth}Content-Type: application/json\n\n{shown}\n\n"
                f"{len(requests)} requests, {self.pending(requests)} not cached: {self.pending(requests)} calls "
                "(plus one strict retry per unreadable reply and retries of failed calls)")
