"""Held-out pairs that are held out: where a run's evaluation set comes from, and proof that it is not the
training set.

A run's held-out pairs are, in order of precedence:

1. ``data.eval_fraction``: a seeded share of the training pairs (``data.eval_seed``), split by pair so that
   copies of one (prompt, chosen, rejected) never land on both sides;
2. ``data.eval_source``: another file, directory or named source, read with the same format and fields;
3. ``data.eval_split`` of ``data.source`` (default ``test``); null: no held-out pairs.

`check_held_out` stops a run, before any data is read, whose held-out source is the training data itself (a
single local file is every split at once). `overlap` counts the held-out pairs that also occur in training
(by the hash of prompt, chosen and rejected); the trainer warns above zero. The synthetic task draws its
held-out pairs from another seed and drops those that occur in training (`synthetic_held_out`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from rdpo_jax.config import RunConfig
from rdpo_jax.data import PreferenceExample, SyntheticTask
from rdpo_jax.data.sources import source_identity
from rdpo_jax.errors import ConfigError

__all__ = ["check_held_out", "eval_source", "overlap", "pair_key", "split_fraction", "synthetic_held_out"]


def pair_key(example: PreferenceExample) -> str:
    """SHA-256 of the pair's prompt, chosen and rejected (canonical JSON; the rationale is not part of it)."""
    text = json.dumps([example.prompt, example.chosen, example.rejected], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def overlap(train: Sequence[PreferenceExample], held_out: Sequence[PreferenceExample]) -> int:
    """How many held-out pairs also occur in ``train`` (same prompt, chosen and rejected)."""
    seen = {pair_key(e) for e in train}
    return sum(pair_key(e) in seen for e in held_out)


def split_fraction(examples: Sequence[PreferenceExample], fraction: float, seed: int
                   ) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices), both in input order: the distinct pairs are permuted with
    ``PCG64(SeedSequence([seed, n_distinct]))`` and the first ``round(fraction * n_distinct)`` (at least one,
    and at least one left for training) are held out with all their copies."""
    keys = [pair_key(e) for e in examples]
    distinct = sorted(set(keys))
    if len(distinct) < 2:
        raise ConfigError(f"data.eval_fraction={fraction}: {len(distinct)} distinct pair(s) cannot be split into "
                          "training and held-out pairs")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), len(distinct)])))
    n_held = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    held = {distinct[i] for i in rng.permutation(len(distinct))[:n_held]}
    train_idx = [i for i, k in enumerate(keys) if k not in held]
    held_idx = [i for i, k in enumerate(keys) if k in held]
    return train_idx, held_idx


def synthetic_held_out(task: SyntheticTask, n: int, seed: int, train: Sequence[PreferenceExample]
                       ) -> list[PreferenceExample]:
    """``n`` pairs of ``task`` drawn with ``seed`` that do not occur in ``train`` (draws more as needed; the
    sample of a seed is prefix-stable, so the result is deterministic)."""
    if n == 0:
        return []
    seen = {pair_key(e) for e in train}
    draw = 2 * n
    while True:
        fresh = [e for e in task.examples(draw, seed=seed) if pair_key(e) not in seen]
        if len(fresh) >= n or draw > 64 * n:
            return fresh[:n]
        draw *= 2


def eval_source(cfg: RunConfig) -> tuple[str, str, object] | None:
    """(source, split, data_files) of the held-out pairs when they come from a source (not a fraction)."""
    d = cfg.data
    if d.eval_fraction is not None or d.source == "synthetic":
        return None
    if d.eval_source is not None:
        return d.eval_source, d.eval_split or d.split, None
    if d.eval_split is None:
        return None
    return d.source, d.eval_split, d.data_files


def _describe(identity: tuple) -> str:
    kind = identity[0]
    if kind == "files":
        return (f"the file(s) {', '.join(identity[1])}, which are every split at once (a file has no "
                f"splits of its own)")
    if kind == "saved":
        return f"the save_to_disk directory {identity[1]}, which holds one split only"
    return f"split {identity[2]!r} of {identity[1]}"


def check_held_out(cfg: RunConfig) -> None:
    """Raises `ConfigError` when the held-out source resolves to the training data itself."""
    d = cfg.data
    source = eval_source(cfg)
    if source is None:
        return
    train_id = source_identity(d.source, d.split, d.data_files)
    held_id = source_identity(*source)
    if train_id is not None and train_id == held_id:
        key = "data.eval_source" if d.eval_source is not None else f"data.eval_split={d.eval_split!r}"
        raise ConfigError(
            f"{key}: the held-out pairs would be the training pairs ({_describe(train_id)}). Hold data out with "
            "data.eval_fraction=0.05 (a seeded share of the training pairs), name held-out files with "
            "data.eval_source=<file> (or data.data_files={train: <file>, test: <file>}), or set "
            "data.eval_split=null for no evaluation")
