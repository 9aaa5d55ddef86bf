"""The annotated set on disk, in the orcaratgen schema (``prompt``, ``chosen``, ``rejected``, ``rationale``)
plus each row's ``annotation`` provenance, and read back through the data layer with the ``rationale``
format, which refuses a row without a rationale: so a dropped pair can never train as a plain DPO pair.

Formats by the path: ``*.jsonl`` (JSON Lines), ``*.parquet``, anything else a ``datasets``
``save_to_disk`` directory holding one split (``split``, default ``train``). Every write is atomic: a
temporary file or directory beside the target, renamed over it. Parquet and ``datasets`` store a column
with one type, so when any prompt is a message list every prompt is written as one (a one-user-turn list
reads back as the same string prompt).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rdpo_jax.data.schema import PreferenceExample
from rdpo_jax.errors import RdpoError
from rdpo_jax.eval.prompt_ids import canonical_messages
from rdpo_jax.files import write_text, writing

__all__ = ["AnnotatedSetError", "output_kind", "read_annotated", "write_annotated"]


class AnnotatedSetError(RdpoError, ValueError):
    """An annotated set that did not read back as written: the message names the path and the difference."""


def output_kind(path: str | os.PathLike) -> str:
    """``"jsonl"``, ``"parquet"`` or ``"datasets"`` (a directory) for an output path."""
    name = str(path).lower()
    return "jsonl" if name.endswith(".jsonl") else "parquet" if name.endswith(".parquet") else "datasets"


def _columnar(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if all(isinstance(r["prompt"], str) for r in rows):
        return list(rows)
    return [{**r, "prompt": canonical_messages(r["prompt"])} for r in rows]


def _swap_in(tmp: Path, path: Path) -> None:
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def write_annotated(path: str | os.PathLike, rows: Sequence[dict[str, Any]], split: str = "train") -> Path:
    """Writes ``rows`` to ``path`` in the format its name says (module docstring); returns the path."""
    path = Path(path)
    kind = output_kind(path)
    if kind == "jsonl":
        return write_text(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows))
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if kind == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(_columnar(rows)), tmp)
            else:
                import datasets

                datasets.DatasetDict({split: datasets.Dataset.from_list(_columnar(rows))}).save_to_disk(str(tmp))
            _swap_in(tmp, path)
        finally:
            if tmp.exists():
                with contextlib.suppress(OSError):
                    shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return path


def read_annotated(path: str | os.PathLike, split: str = "train",
                   expected: Sequence[dict[str, Any]] | None = None) -> list[PreferenceExample]:
    """The set at ``path`` through :func:`rdpo_jax.data.load_preferences` with the ``rationale`` format; with
    ``expected`` (the rows written), an error unless every row reads back with its rationale."""
    from rdpo_jax.data import load_preferences

    examples, _ = load_preferences(str(path), split=split, format="rationale")
    if expected is not None:
        got = [(e.chosen, e.rejected, e.rationale) for e in examples]
        want = [(r["chosen"], r["rejected"], r["rationale"]) for r in expected]
        if got != want:
            pairs = zip(got, want, strict=False)
            first = next((i for i, (g, w) in enumerate(pairs) if g != w), min(len(got), len(want)))
            raise AnnotatedSetError(f"{path} reads back {len(got)} pairs, {len(want)} were written; the first "
                                    f"difference is at row {first}")
    return examples
