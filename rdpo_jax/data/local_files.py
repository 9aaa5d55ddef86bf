"""Rows of local preference files, read with errors that name the file, the line and what is accepted.

Accepted files (optionally gzip-compressed, ``.gz``):

- JSON Lines (``.jsonl``, ``.ndjson``, or ``.json`` holding one object per line): one JSON object per line,
  blank lines ignored;
- a JSON document (``.json``): an array of objects;
- Parquet (``.parquet``).

Every way a file can be broken gives a `DataFileError` naming the file and, where there is one, the line:
non-UTF-8 bytes, a line that is not JSON (a truncated last line is named as such), a record that is not an
object, a key repeated inside one record (JSON parsers keep the last silently), an empty file, a truncated
JSON array, a truncated or corrupt ``.gz``, and a Parquet file that cannot be read (truncated, or not
Parquet). Nothing is skipped here: rows that parse but are not valid examples are the schema's business
(:func:`rdpo_jax.data.sources.convert_rows`).
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any

from rdpo_jax.errors import RdpoError

__all__ = ["ACCEPTED", "DataFileError", "read_rows"]

ACCEPTED = ("JSON Lines (one object per line), a JSON array of objects, or a Parquet file; UTF-8 text, "
            "optionally .gz-compressed")
JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)


class DataFileError(RdpoError, ValueError):
    """A data file that cannot be read as rows: ``path``, ``line`` (1-based, or None) and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path} line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}. Accepted: {ACCEPTED}")


class _Duplicate(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_unique_object)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except IsADirectoryError:
        raise DataFileError(path, "is a directory, not a file (a Dataset.save_to_disk directory is read by "
                                  "datasets.load_from_disk)") from None
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise DataFileError(path, "truncated gzip file: it ends before the end-of-stream marker (an "
                                      "interrupted download or copy?)") from None
        except (OSError, zlib.error) as e:
            raise DataFileError(path, f"not a readable gzip file ({e})") from None
    return raw


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFileError(path, f"not UTF-8 text: byte 0x{raw[e.start]:02x} at byte offset {e.start} "
                                  f"cannot be decoded ({e.reason})", line) from None


def _json_problem(e: json.JSONDecodeError) -> str:
    return f"not valid JSON: {e.msg} (column {e.colno})"


def _record(path: Path, value: Any, line: int | None, index: int | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        what = f"record {index}" if index is not None else "the record"
        raise DataFileError(path, f"{what} is a JSON {type(value).__name__}, not an object of column: value",
                            line)
    return value


def _json_lines(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    lines = text.split("\n")
    last = max((i for i, s in enumerate(lines) if s.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = _loads(line)
        except _Duplicate as e:
            raise DataFileError(path, f"key {e.args[0]!r} appears twice in one record; each key may appear once",
                                i + 1) from None
        except json.JSONDecodeError as e:
            if i == last and not text.endswith("\n"):
                raise DataFileError(path, f"the last line is truncated, it ends inside a JSON record (an "
                                          f"interrupted write or copy?): {_json_problem(e)}", i + 1) from None
            raise DataFileError(path, _json_problem(e), i + 1) from None
        rows.append(_record(path, value, i + 1))
    return rows


def _json_document(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        value = _loads(text)
    except _Duplicate as e:
        raise DataFileError(path, f"key {e.args[0]!r} appears twice in one object; each key may appear once") \
            from None
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string"):
            raise DataFileError(path, "truncated JSON: the file ends before the document is closed (an "
                                      "interrupted write or copy?)", e.lineno) from None
        raise DataFileError(path, _json_problem(e), e.lineno) from None
    if isinstance(value, list):
        return [_record(path, v, None, i) for i, v in enumerate(value)]
    raise DataFileError(path, f"the document is a JSON {type(value).__name__} spread over several lines, not an "
                              "array of objects (or one object per line)")


def _parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataFileError(path, "no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(path, f"not a readable Parquet file, truncated or not Parquet ({e})") from None
    return table.to_pylist()


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of one local file (see the module docstring), as a list of dicts in file order."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        rows = _parquet(path)
    elif name.endswith(JSON_SUFFIXES):
        text = _decode(path, _read_bytes(path))
        stripped = text.lstrip()
        if not stripped:
            raise DataFileError(path, "empty file: it holds no rows")
        if stripped.startswith("[") or (not name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"))
                                        and _multi_line_document(text)):
            rows = _json_document(path, text)
        else:
            rows = _json_lines(path, text)
    else:
        raise DataFileError(path, f"cannot tell the format from the name; accepted names end with "
                                  f"{', '.join(JSON_SUFFIXES + PARQUET_SUFFIXES)}")
    if not rows:
        raise DataFileError(path, "the file holds no rows")
    return rows


def _multi_line_document(text: str) -> bool:
    """Whether a ``.json`` text is one JSON document spread over several lines (not JSON Lines): its first
    non-blank line alone is not a complete JSON value."""
    first = next(line for line in text.split("\n") if line.strip())
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return True
    return False
