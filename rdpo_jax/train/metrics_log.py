"""Run logging: JSONL always, TensorBoard through tensorboardX, a console progress bar; process 0 only.

Each JSONL line is ``{"step": s, "split": "train"|"eval", "time": seconds since start, <metric>: value}``
with TRL's metric names; a non-finite value is written as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (this
file's one exception to strict JSON). TensorBoard tags are ``<split>/<metric>``.

Each step appears once: a run that starts at step ``s`` (0 for a fresh start, the restored step on resume)
first rewrites ``metrics.jsonl`` without the records past ``s`` (atomically: a temporary file, then a
rename), and TensorBoard purges the events past ``s``.

On an object store (`rdpo_jax.paths`) nothing can be appended to: ``metrics.jsonl`` is rewritten whole at
most every `OBJECT_FLUSH_SECONDS` and at the end, and TensorBoard writes into a local directory uploaded at
the end.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdpo_jax import paths
from rdpo_jax.files import write_text, writing

METRICS_FILE = "metrics.jsonl"
OBJECT_FLUSH_SECONDS = 30.0


class _Lines:
    """The lines of ``metrics.jsonl``: appended to a local file, or rewritten whole on an object store."""

    def __init__(self, path, kept: list[dict[str, Any]]):
        self.path = path
        self.local = paths.is_local(path)
        self._lines = [json.dumps(r) + "\n" for r in kept]
        self._flushed = time.time()
        if self.local:
            with writing(path, "open"):
                self._file = open(path, "a", buffering=1)

    def write(self, line: str) -> None:
        if self.local:
            with writing(self.path):
                self._file.write(line)
            return
        self._lines.append(line)
        if time.time() - self._flushed > OBJECT_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.local:
            write_text(self.path, "".join(self._lines))
            self._flushed = time.time()

    def close(self) -> None:
        if self.local:
            self._file.close()
        else:
            self.flush()


class MetricsLogger:
    """Writes metrics of one run under ``directory`` (``metrics.jsonl``, ``tensorboard/``)."""

    def __init__(self, directory: str | Path, *, total_steps: int, jsonl: bool = True, tensorboard: bool = True,
                 progress: bool = True, is_main: bool = True, initial_step: int = 0, description: str = "train"):
        self.directory = paths.as_path(directory)
        self.path = self.directory / METRICS_FILE
        self.is_main = is_main
        self.start = time.time()
        self.kept: list[dict[str, Any]] = []  # records of steps <= initial_step kept from an earlier run
        self._jsonl = self._tb = self._bar = None
        self._tb_upload = None  # (local events directory, its destination) on an object store
        if not is_main:
            return
        if jsonl:
            self.kept = truncate_metrics(self.path, initial_step)
            self._jsonl = _Lines(self.path, self.kept)
        if tensorboard:
            from tensorboardX import SummaryWriter

            events = self.directory / "tensorboard"
            if not paths.is_local(events):
                self._tb_upload = (tempfile.mkdtemp(prefix="rdpo-tb-"), events)
                events = self._tb_upload[0]
            self._tb = SummaryWriter(str(events), purge_step=initial_step + 1)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, desc=description, dynamic_ncols=True)

    def log(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> None:
        if not self.is_main:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._jsonl is not None:
            record = {"step": int(step), "split": split, "time": round(time.time() - self.start, 3)}
            record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
            self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def advance(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Moves the progress bar to ``step`` and shows loss and throughput."""
        if self._bar is None:
            return
        self._bar.update(max(0, step - self._bar.n))
        shown = {k: f"{float(metrics[k]):.4g}" for k in ("loss", "tokens_per_s", "rewards/accuracies")
                 if k in metrics}
        self._bar.set_postfix(shown, refresh=False)

    def write(self, text: str) -> None:
        """Prints a line without breaking the progress bar (process 0 only)."""
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        for handle in (self._bar, self._tb, self._jsonl):
            if handle is not None:
                with contextlib.suppress(OSError):  # a full disk already raised where the write failed
                    handle.close()
        if self._tb_upload is not None:
            local, remote = self._tb_upload
            paths.upload_tree(local, remote)
            shutil.rmtree(local, ignore_errors=True)
            self._tb_upload = None
        self._jsonl = self._tb = self._bar = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (local or on an object store)."""
    return [json.loads(line) for line in paths.as_path(path).read_text().splitlines() if line.strip()]


def truncate_metrics(path, last_step: int) -> list[dict[str, Any]]:
    """Rewrites ``path`` (atomically) with only the records of steps ``<= last_step``; returns them. A file
    that does not exist stays absent; a torn last line (a crash mid-write) is dropped."""
    path = paths.as_path(path)
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(record)
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
