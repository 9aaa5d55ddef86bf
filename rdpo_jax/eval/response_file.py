"""The responses file: JSON Lines, one record per prompt, appended and fsync'd one record at a time so
that an interrupted run resumes where it stopped, and its exports (AlpacaEval's model-outputs JSON).

A record (docs/evaluation.md#generating)::

    {"prompt_id": str, "prompt": str | [messages], "response": str, "model": str,
     "settings": {"temperature", "top_p", "max_new_tokens", "seed"},
     "prompt_tokens": int, "response_tokens": int, "finish_reason": "eos" | "length"}

Reading for a resume (:func:`read_responses`): every line that ends with a newline must be a JSON record; a
last line without its newline is what a write killed midway leaves, so it is dropped (and cut off the file
by :class:`ResponseWriter` before it appends), never read as a record.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rdpo_jax.errors import RdpoError
from rdpo_jax.files import write_json, writing

__all__ = ["RECORD_KEYS", "ResponseFileError", "ResponseWriter", "alpaca_eval_outputs", "read_responses",
           "write_alpaca_eval"]

RECORD_KEYS = ("prompt_id", "prompt", "response", "model", "settings", "prompt_tokens", "response_tokens",
               "finish_reason")


class ResponseFileError(RdpoError, ValueError):
    """A responses file that cannot be resumed: the message names the file, the line and what is expected."""


def _complete_bytes(path: Path) -> bytes:
    """The file's bytes up to and including its last newline (b"" for a missing file)."""
    if not path.exists():
        return b""
    raw = path.read_bytes()
    return raw[:raw.rfind(b"\n") + 1]


def read_responses(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The complete records of ``path`` by prompt id (file order); a missing file has none. A truncated last
    line is ignored; any other line that is not a record raises :class:`ResponseFileError` naming it."""
    path = Path(path)
    records: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(_complete_bytes(path).decode("utf-8", errors="replace").split("\n")[:-1]):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResponseFileError(f"{path} line {i + 1} is not JSON ({e.msg}); a responses file holds one "
                                    "JSON record per line: move it away or pass another --out") from None
        if not isinstance(record, dict) or not set(RECORD_KEYS) <= set(record):
            missing = sorted(set(RECORD_KEYS) - set(record)) if isinstance(record, dict) else list(RECORD_KEYS)
            raise ResponseFileError(f"{path} line {i + 1} is not a response record (missing {missing}); "
                                    f"records have the keys {list(RECORD_KEYS)}")
        records[record["prompt_id"]] = record
    return records


def check_resumable(path: str | os.PathLike, records: Mapping[str, Mapping[str, Any]], model: str,
                    settings: Mapping[str, Any]) -> None:
    """Raises :class:`ResponseFileError` if records already in ``path`` came from another model or other
    settings: one file holds one model's responses under one set of settings."""
    for record in records.values():
        if record["model"] != model or record["settings"] != dict(settings):
            raise ResponseFileError(
                f"{path} already holds responses of model {record['model']!r} with settings "
                f"{record['settings']} (prompt {record['prompt_id']}); this run is {model!r} with "
                f"{dict(settings)}: pass another --out, or the same model and settings to resume")


class ResponseWriter:
    """Appends records to ``path``, one ``write`` + ``fsync`` per record; on opening, a truncated last line
    (no newline) is cut off first, so appended records start on a line of their own."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with writing(self.path, "append to"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            keep = len(_complete_bytes(self.path))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.ftruncate(self._fd, keep)
            os.lseek(self._fd, keep, os.SEEK_SET)

    def write(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(dict(record), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        with writing(self.path, "append to"):
            os.write(self._fd, line)
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ResponseWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def last_user_text(prompt: Any) -> str:
    """The text of the prompt's last user message (the prompt itself when it is a string)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def alpaca_eval_outputs(records: Sequence[Mapping[str, Any]], generator: str) -> list[dict[str, str]]:
    """AlpacaEval's model-outputs list: ``{"instruction": last user message, "output": response,
    "generator": generator}`` per record, in order."""
    return [{"instruction": last_user_text(r["prompt"]), "output": r["response"], "generator": generator}
            for r in records]


def write_alpaca_eval(path: str | os.PathLike, records: Sequence[Mapping[str, Any]], generator: str):
    """Writes :func:`alpaca_eval_outputs` to ``path`` as a JSON list (atomically); returns the path."""
    return write_json(path, alpaca_eval_outputs(records, generator))
