"""The one client of OpenAI-compatible chat-completions endpoints (``POST {url}/chat/completions``, or the URL
itself when it ends in ``/chat/completions``), over httpx; the endpoint judge and the endpoint annotator
both send their requests through it.

* Retries: a 429, a 5xx, 408/409, a timeout, a connection error or a body that is not chat-completions JSON
  is retried up to ``max_retries`` times, waiting ``Retry-After`` when the server sends it, else
  ``min(max_backoff, backoff_base * 2**k)`` times a jitter factor uniform in [0.5, 1.5) before retry k+1;
  a request that still fails raises `EndpointError` naming the URL. Another 4xx is not retried (it names
  the status and the start of the body: a wrong model name or key does not improve with time).
* Concurrency: :meth:`ChatClient.each` runs ``concurrency`` requests at a time (threads) and yields each
  result as it arrives, so the caller can cache it before the next is awaited; after a kill at most
  ``concurrency`` in-flight requests are lost.
* The API key is sent as ``Authorization: Bearer`` and is never printed, logged or written.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from rdpo_jax.errors import RdpoError

__all__ = ["ChatClient", "Completion", "EndpointError", "RETRY_STATUS"]

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")


class EndpointError(RdpoError, ValueError):
    """An endpoint request that failed for good: the message names the URL and what happened."""


@dataclasses.dataclass(frozen=True)
class Completion:
    """One reply: its text and the server's ``finish_reason`` (``"stop"``, ``"length"`` when it hit
    ``max_tokens``, or None when the server sends none)."""

    text: str
    finish_reason: str | None = None


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


class ChatClient:
    """Chat completions from ``url`` for ``model`` (module docstring). ``calls`` counts HTTP requests sent,
    ``retries`` the retried ones."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, max_retries: int = 6, backoff_base: float = 1.0,
                 max_backoff: float = 60.0, seed: int = 0):
        import httpx

        self.url = url if url.rstrip("/").endswith("/chat/completions") else url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency, self.max_retries = max(1, int(concurrency)), int(max_retries)
        self.backoff_base, self.max_backoff = backoff_base, max_backoff
        self._rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._httpx = httpx
        self.calls = self.retries = 0
        self._count_lock = threading.Lock()  # the counters are bumped from the worker threads

    @property
    def has_key(self) -> bool:
        return "authorization" in self._client.headers

    def body(self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int, temperature: float = 0.0,
             ) -> dict[str, Any]:
        """The JSON body of one request (no credentials in it)."""
        return {"model": self.model, "temperature": temperature, "max_tokens": int(max_tokens),
                "messages": [dict(m) for m in messages]}

    def complete(self, body: Mapping[str, Any]) -> Completion:
        """POSTs ``body``, retrying as the module docstring says; the first choice's text and finish reason."""
        for attempt in range(self.max_retries + 1):
            try:
                return self._once(body)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise EndpointError(f"{self.url}: {e} after {self.max_retries} retries; the answers so "
                                        "far are cached, rerun the same command to resume") from None
                with self._count_lock:
                    self.retries += 1
                wait = e.retry_after if e.retry_after is not None else \
                    min(self.max_backoff, self.backoff_base * 2 ** attempt) * self._rng.uniform(0.5, 1.5)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _once(self, body: Mapping[str, Any]) -> Completion:
        httpx = self._httpx
        with self._count_lock:
            self.calls += 1
        try:
            resp = self._client.post(self.url, json=dict(body))
        except httpx.TimeoutException:
            raise _Retryable("timed out") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__})") from None
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}", _retry_after(resp.headers.get("retry-after")))
        if resp.status_code >= 400:
            raise EndpointError(f"{self.url}: HTTP {resp.status_code} for model {self.model!r}: "
                                f"{resp.text[:200]!r} (check the endpoint URL, the model name and the API key)")
        try:
            choice = resp.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable("a reply that is not chat-completions JSON") from None
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        return Completion(content if isinstance(content, str) else "", reason if isinstance(reason, str) else None)

    def each(self, work: Mapping[K, V], fn: Callable[[V], R]) -> Iterator[tuple[K, R]]:
        """``(key, fn(value))`` for every item of ``work``, ``concurrency`` at a time, in the order they
        finish; the first error cancels what has not started and is raised."""
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(fn, v): k for k, v in work.items()}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    yield futures[fut], fut.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def describe(self, body: Mapping[str, Any]) -> str:
        """The request as it would be sent: URL, headers without the key, and the body."""
        auth = "Authorization: Bearer <from the environment, not shown>\n" if self.has_key else ""
        return (f"POST {self.url}\n{auth}Content-Type: application/json\n\n"
                f"{json.dumps(dict(body), indent=2, ensure_ascii=False)}")
