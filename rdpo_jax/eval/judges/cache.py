"""An on-disk verdict cache: one JSON line per judged request, appended and fsync'd as each verdict arrives,
so a rerun, or a run resumed after a kill, makes no repeated call.

Key: sha256 of the canonical JSON of ``[judge name, template id, prompt messages, first, second]`` (the
judge name holds the model). A line that does not parse as a complete record (a write cut by a kill) is
ignored and counted in ``torn``, never read as a verdict; the next append starts on a fresh line.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from rdpo_jax.eval.judges.base import JudgeRequest, Verdict
from rdpo_jax.eval.prompt_ids import canonical_messages
from rdpo_jax.files import writing

__all__ = ["VerdictCache", "cache_key"]


def cache_key(judge_name: str, template_id: str, request: JudgeRequest) -> str:
    """The request's cache key (module docstring)."""
    text = json.dumps([judge_name, template_id, canonical_messages(request.prompt), request.first,
                       request.second], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class VerdictCache:
    """``get(key)`` -> (verdict, raw reply) or None; ``put(key, verdict, raw)`` appends one fsync'd line.
    Thread-safe (one lock around appends)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Verdict, str | None]] = {}
        self.torn = 0
        self._needs_newline = False
        if self.path.exists():
            data = self.path.read_bytes()
            self._needs_newline = bool(data) and not data.endswith(b"\n")
            for line in data.split(b"\n"):
                if line.strip():
                    self._load_line(line)

    def _load_line(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
            key, verdict = rec["key"], Verdict(rec["verdict"])
        except (ValueError, KeyError, TypeError):
            self.torn += 1
            return
        self._entries[key] = (verdict, rec.get("raw"))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> tuple[Verdict, str | None] | None:
        return self._entries.get(key)

    def put(self, key: str, verdict: Verdict, raw: str | None = None) -> None:
        line = json.dumps({"key": key, "verdict": verdict.value, "raw": raw}, ensure_ascii=False) + "\n"
        with self._lock, writing(self.path, "append to the verdict cache"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                if self._needs_newline:
                    f.write("\n")
                    self._needs_newline = False
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._entries[key] = (verdict, raw)

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": len(self), "torn_lines_ignored": self.torn}
