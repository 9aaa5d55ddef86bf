"""Run logging: JSONL always, TensorBoard through tensorboardX, a console progress bar; process 0 only.

Each JSONL line is ``{"step": s, "split": "train"|"eval", "time": seconds since start, <metric>: value}``
with TRL's metric names. TensorBoard tags are ``<split>/<metric>``.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Writes metrics of one run under ``directory`` (``metrics.jsonl``, ``tensorboard/``)."""

    def __init__(self, directory: str | Path, *, total_steps: int, jsonl: bool = True, tensorboard: bool = True,
                 progress: bool = True, is_main: bool = True, initial_step: int = 0, description: str = "train"):
        self.directory = Path(directory)
        self.is_main = is_main
        self.start = time.time()
        self._jsonl = self._tb = self._bar = None
        if not is_main:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._jsonl = open(self.directory / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.directory / "tensorboard"))
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
                handle.close()
        self._jsonl = self._tb = self._bar = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
