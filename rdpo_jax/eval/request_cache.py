"""An on-disk request cache: one JSON line per answered request, appended and fsync'd as each answer
arrives, so a rerun, or a run resumed after a kill, sends no request whose answer was already cached. The
judge's verdicts and the annotator's completions are both kept in one of these.

Keys: :func:`request_key`, the sha256 of the canonical JSON of the parts that decide the answer (who
answers, with which template and settings, to which conversation). A line that does not parse as a
complete record (a write cut by a kill) is ignored and counted in ``torn``, never read as an answer; the
next append starts on a fresh line.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from rdpo_jax.files import writing

__all__ = ["RequestCache", "request_key"]


def request_key(*parts: Any) -> str:
    """sha256 hex of ``json.dumps(list(parts))`` with sorted keys, no whitespace and UTF-8 text."""
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RequestCache:
    """``get(key)`` -> the stored record (a dict) or None; ``put(key, record)`` appends one fsync'd line
    ``{"key": key, **record}``. Thread-safe (one lock around appends). ``valid(record)`` (override) decides
    whether a parsed line is a complete record of this cache's kind. ``write=False`` (the other processes of
    a multi-process run, where process 0 writes) keeps new records in memory only."""

    what = "request cache"

    def __init__(self, path: str | os.PathLike, *, write: bool = True):
        self.path, self.write = Path(path), write
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self.torn = 0
        self._needs_newline = False
        if self.path.exists():
            data = self.path.read_bytes()
            self._needs_newline = bool(data) and not data.endswith(b"\n")
            for line in data.split(b"\n"):
                if line.strip():
                    self._load_line(line)

    def valid(self, record: dict[str, Any]) -> bool:
        return True

    def _load_line(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and isinstance(rec.get("key"), str) and self.valid(rec)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.torn += 1
            return
        self._entries[rec.pop("key")] = rec

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        if not self.write:
            self._entries[key] = dict(record)
            return
        line = json.dumps({"key": key, **record}, ensure_ascii=False) + "\n"
        with self._lock, writing(self.path, f"append to the {self.what}"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                if self._needs_newline:
                    f.write("\n")
                    self._needs_newline = False
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._entries[key] = dict(record)

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": len(self), "torn_lines_ignored": self.torn}
