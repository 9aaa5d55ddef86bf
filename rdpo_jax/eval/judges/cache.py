"""The judge's verdict cache: a `RequestCache` whose records are ``{"verdict", "raw"}``.

Key: :func:`cache_key`, the request key of ``[judge name, template id, prompt messages, first, second]``
(the judge name holds the model).
"""
from __future__ import annotations

from typing import Any

from rdpo_jax.eval.judges.base import JudgeRequest, Verdict
from rdpo_jax.eval.prompt_ids import canonical_messages
from rdpo_jax.eval.request_cache import RequestCache, request_key

__all__ = ["VerdictCache", "cache_key"]


def cache_key(judge_name: str, template_id: str, request: JudgeRequest) -> str:
    """The request's cache key (module docstring)."""
    return request_key(judge_name, template_id, canonical_messages(request.prompt), request.first, request.second)


class VerdictCache(RequestCache):
    """``get(key)`` -> (verdict, raw reply) or None; ``put(key, verdict, raw)`` appends one fsync'd line."""

    what = "verdict cache"

    def valid(self, record: dict[str, Any]) -> bool:
        Verdict(record["verdict"])
        return True

    def get(self, key: str) -> tuple[Verdict, str | None] | None:
        rec = super().get(key)
        return None if rec is None else (Verdict(rec["verdict"]), rec.get("raw"))

    def put(self, key: str, verdict: Verdict, raw: str | None = None) -> None:
        super().put(key, {"verdict": Verdict(verdict).value, "raw": raw})
