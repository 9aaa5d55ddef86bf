"""Responses for many prompts: length buckets, per-prompt PRNG keys, data parallelism over the local
devices and a slice of the work per process, records appended as each batch finishes.

* Buckets: prompts are sorted by token length and left-padded to the next power of two (at least 16), and
  batches of ``batch_size`` rows are cut within a bucket (the last one filled up with copies of its first
  row, dropped afterwards), so each bucket width compiles once.
* Keys: prompt ``p`` samples with ``k_p = fold_in(key(seed), int(prompt_id(p), 16) mod 2^31)`` and its
  step-i token with ``fold_in(k_p, i)`` (:func:`rdpo_jax.models.generate` ``keys=``), so a prompt's
  response does not depend on the batch, the device count or a resume (up to floating-point differences
  between batch shapes, which can flip a draw on a near tie).
* Devices: the rows of a batch are split over a 1-D mesh of this process's devices (``batch_size`` is
  rounded up to a multiple of their count), parameters replicated.
* Processes: batch ``j`` of the plan goes to process ``j mod P``; after each round of ``P`` batches
  process 0 gathers every process's records (``process_allgather``) and is the only one that writes.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from rdpo_jax.data import encode_chat, pad_id_for
from rdpo_jax.errors import RdpoError
from rdpo_jax.eval.prompt_ids import canonical_messages
from rdpo_jax.eval.prompt_sources import PromptItem

__all__ = ["MIN_WIDTH", "SamplingSettings", "Throughput", "bucket_width", "generate_records", "plan_batches",
           "prompt_keys"]

MIN_WIDTH = 16


class PromptTooLong(RdpoError, ValueError):
    """A prompt whose tokens plus ``max_new_tokens`` exceed the model's ``max_position_embeddings``; the first
    such prompt's id and token count are in ``prompt_id`` and ``tokens``, the number of such prompts in
    ``count``, the model's limit in ``max_positions``."""

    def __init__(self, message: str, prompt_id: str = "", tokens: int = 0, count: int = 0, max_positions: int = 0):
        super().__init__(message)
        self.prompt_id, self.tokens, self.count, self.max_positions = prompt_id, tokens, count, max_positions


def check_lengths(items: Sequence[PromptItem], encoded: Sequence[Sequence[int]], max_new_tokens: int,
                  max_positions: int | None) -> None:
    """Every prompt must leave room for ``max_new_tokens`` within the model's positions (positions past
    ``max_position_embeddings`` are outside what the model was trained on): else an error naming the first
    such prompt, never a silently degraded response."""
    if max_positions is None:
        return
    over = [(it.id, len(x)) for it, x in zip(items, encoded, strict=True)
            if len(x) + max_new_tokens > max_positions]
    if over:
        pid, n = over[0]
        raise PromptTooLong(f"prompt {pid} has {n} tokens; with --max-new-tokens {max_new_tokens} that is "
                            f"{n + max_new_tokens} positions, more than the model's max_position_embeddings="
                            f"{max_positions} ({len(over)} such prompts); lower --max-new-tokens or leave "
                            "those prompts out", pid, n, len(over), max_positions)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Decoding settings, recorded in every response record. ``temperature == 0`` is greedy; the defaults
    are the paper's (temperature 1, nucleus 0.95)."""

    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """What each record states; greedy decoding (temperature 0) samples nothing, so its ``top_p`` and
        ``seed`` are recorded as null rather than as settings that had no effect."""
        out = dataclasses.asdict(self)
        if self.temperature == 0:
            out.update(top_p=None, seed=None)
        return out


def bucket_width(length: int) -> int:
    """The padded width of a prompt of ``length`` tokens: the next power of two, at least :data:`MIN_WIDTH`."""
    return max(MIN_WIDTH, 1 << max(0, int(length) - 1).bit_length())


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches of at most ``batch_size``: sorted by length (stable),
    cut within each :func:`bucket_width`, shortest bucket first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and \
                bucket_width(lengths[batches[-1][0]]) == bucket_width(lengths[i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def prompt_keys(seed: int, ids: Sequence[str]) -> np.ndarray:
    """Raw PRNG key data uint32 [len(ids), 2]: ``fold_in(key(seed), int(id, 16) mod 2^31)`` per prompt id."""
    base = jax.random.key(seed)
    keys = [jax.random.fold_in(base, int(pid, 16) % 2**31) for pid in ids]
    return np.stack([np.asarray(jax.random.key_data(k)) for k in keys]).astype(np.uint32)


def _mesh_and_shardings(devices):
    from rdpo_jax.sharding import MeshConfig, batch_sharding, make_mesh, replicated

    mesh = make_mesh(MeshConfig(data=-1, fsdp=1, tensor=1), devices=devices)
    return mesh, batch_sharding(mesh, 2), replicated(mesh)


def _replicate(model, sharding) -> None:
    from flax import nnx

    nnx.update(model, jax.device_put(nnx.state(model), sharding))


def _cut(row: Sequence[int], stop: set[int]) -> tuple[list[int], str]:
    """The tokens before the first EOS id and the finish reason ("eos", or "length" when there is none)."""
    for j, t in enumerate(row):
        if t in stop:
            return list(row[:j]), "eos"
    return list(row), "length"


def _gather(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's records on every process, in process order (identity with one process)."""
    if jax.process_count() == 1:
        return records
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(records).encode("utf-8"), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [r for p, n in enumerate(sizes) for r in json.loads(every[p, :n].tobytes().decode("utf-8"))]


def generate_records(model, tokenizer, items: Sequence[PromptItem], settings: SamplingSettings, *,
                     model_name: str, batch_size: int = 32, devices: Sequence[Any] | None = None,
                     ) -> Iterator[list[dict[str, Any]]]:
    """Yields the response records (:data:`rdpo_jax.eval.response_file.RECORD_KEYS`) of each round of
    batches, one record per item, in bucket order (not item order); on several processes, every process's
    records of the round on every process.

    ``devices``: this process's devices to split the rows over (default ``jax.local_devices()``; the model's
    parameters are replicated onto them when there are several).
    """
    from rdpo_jax.models import generate

    devices = list(jax.local_devices() if devices is None else devices)
    rows = -(-batch_size // len(devices)) * len(devices)
    mesh, rows_sharding, replicated = _mesh_and_shardings(devices)
    if len(devices) > 1:
        _replicate(model, replicated)
    pad, stop = pad_id_for(tokenizer), set(model.config.eos_token_ids)
    encoded = [encode_chat(tokenizer, canonical_messages(it.prompt), add_generation_prompt=True) for it in items]
    check_lengths(items, encoded, settings.max_new_tokens,
                  getattr(model.config, "max_position_embeddings", None))
    plan = plan_batches([len(x) for x in encoded], rows)
    rank, n_proc = jax.process_index(), jax.process_count()
    for first in range(0, len(plan), n_proc):
        mine = plan[first + rank] if first + rank < len(plan) else []
        records = []
        if mine:
            width = bucket_width(max(len(encoded[i]) for i in mine))
            filled = mine + [mine[0]] * (rows - len(mine))
            ids = np.full((rows, width), pad, np.int32)
            mask = np.zeros((rows, width), np.int32)
            for r, i in enumerate(filled):
                ids[r, width - len(encoded[i]):] = encoded[i]
                mask[r, width - len(encoded[i]):] = 1
            keys = prompt_keys(settings.seed, [items[i].id for i in filled])
            put = lambda x: jax.device_put(x, rows_sharding)  # noqa: E731
            out = np.asarray(generate(model, put(ids), put(mask), settings.max_new_tokens,
                                      temperature=settings.temperature, top_p=settings.top_p,
                                      keys=put(keys)))
            for r, i in enumerate(mine):
                tokens, reason = _cut(out[r].tolist(), stop)
                records.append({"prompt_id": items[i].id, "prompt": items[i].prompt,
                                "response": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                                "model": model_name, "settings": settings.as_dict(),
                                "prompt_tokens": len(encoded[i]), "response_tokens": len(tokens),
                                "finish_reason": reason})
        yield _gather(records)


class Throughput:
    """Prompts and response tokens per second since construction (for the progress bar and the summary)."""

    def __init__(self):
        self.start, self.prompts, self.tokens = time.perf_counter(), 0, 0

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        self.prompts += len(records)
        self.tokens += sum(r["response_tokens"] for r in records)

    def rates(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.prompts / elapsed, self.tokens / elapsed
