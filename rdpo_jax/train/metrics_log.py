"""Run logging: JSONL always, TensorBoard through tensorboardX, a console progress bar; process 0 only.

Each JSONL line is ``{"step": s, "split": "train"|"eval", "time": seconds since start, <metric>: value}``
with TRL's metric names; a non-finite value is written as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (this
file's one exception to strict JSON). TensorBoard tags are ``<split>/<metric>``.

Each step appears once: a run that starts at step ``s`` (0 for a fresh start, the restored step on resume)
first rewrites ``metrics.jsonl`` without the records past ``s`` (atomically: a temporary file, then a
rename), and TensorBoard purges the events past ``s``.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdpo_jax.files import write_text, writing

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Writes metrics of one run under ``directory`` (``metrics.jsonl``, ``tensorboard/``)."""

    def __init__(self, directory: str | Path, *, total_steps: int, jsonl: bool = True, tensorboard: bool = True,
                 progress: bool = True, is_main: bool = True, initial_step: int = 0, description: str = "train"):
        self.directory = Path(directory)
        self.path = self.directory / METRICS_FILE
        self.is_main = is_main
        self.start = time.time()
        self.kept: list[dict[str, Any]] = []  # records of steps <= initial_step kept from an earlier run
        self._jsonl = self._tb = self._bar = None
        if not is_main:
            return
        if jsonl:
            self.kept = truncate_metrics(self.path, initial_step)
            with writing(self.path, "open"):
                self._jsonl = open(self.path, "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.directory / "tensorboard"), purge_step=initial_step + 1)
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
            with writing(self.path):
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
        self._jsonl = self._tb = self._bar = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Rewrites ``path`` (atomically) with only the records of steps ``<= last_step``; returns them. A file
    that does not exist stays absent; a torn last line (a crash mid-write) is dropped."""
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
