"""Reference log-prob cache: one pass of the frozen reference over a training set stores R_w, R_l per
example, and their sums over each completion's first min(n_w, n_l) tokens (LD-DPO's ``ld_alpha``), so
training never loads the reference model (TRL's `precompute_ref_log_probs`, with a check).

The cache carries a fingerprint of (a) the reference model: its config and, per parameter, shape, dtype,
sum and sum of squares; (b) the data and tokenisation: a SHA-256 over every row array the step sees
(token ids, positions, targets, masks, slots) in example order; (c) free-form settings (tokenizer name,
template, truncation); (d) the stored fields (``CONTENTS``: a cache written before the prefix sums existed
does not match). Loading with a different expected fingerprint is an error that names what differs.
Files are written to a temporary name and renamed, so a partial cache is never read as good.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdpo_jax import paths
from rdpo_jax.batch import ROW_KEYS, SCORE_INDEX, Role
from rdpo_jax.errors import RdpoError
from rdpo_jax.files import writing
from rdpo_jax.logprobs import pair_sums, row_token_logps, shared_prefix_mask
from rdpo_jax.sharding import under_mesh

ROW_ARRAYS = (*ROW_KEYS, SCORE_INDEX, "pair_mask")  # what the reference forward reads
CONTENTS = "sums+prefix"  # the fingerprint's "contents": what a cache holds
FIELDS = ("chosen", "rejected", "chosen_prefix", "rejected_prefix")


class ReferenceCacheMismatch(RdpoError, ValueError):
    """The cache was computed for another model, data set or tokenisation."""


def model_fingerprint(config: Any, params) -> str:
    """SHA-256 of the model config and per-parameter (path, shape, dtype, sum, sum of squares) in float64."""
    h = hashlib.sha256(repr(config).encode())
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    stats = jax.jit(lambda leaves: [(jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32))))
                                    for x in leaves])([leaf for _, leaf in flat])
    for (path, leaf), (s, s2) in zip(flat, stats, strict=True):
        h.update(f"{jax.tree_util.keystr(path)}|{leaf.shape}|{leaf.dtype}|{float(s):.6e}|{float(s2):.6e}".encode())
    return h.hexdigest()


class _DataHasher:
    def __init__(self):
        self._h = hashlib.sha256()

    def update(self, indices: np.ndarray, batch: Mapping[str, Any]) -> None:
        self._h.update(np.ascontiguousarray(indices, np.int64).tobytes())
        for key in (*ROW_KEYS, "pair_mask"):  # the data itself (score_index is derived from loss_mask)
            if key in batch:
                arr = np.asarray(batch[key])
                self._h.update(key.encode() + str(arr.shape).encode() + np.ascontiguousarray(arr).tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def data_fingerprint(batches: Iterable[tuple[np.ndarray, Mapping[str, Any]]]) -> str:
    """SHA-256 over ``(indices, batch)`` pairs in order: recompute it at training time by iterating the data
    in the same canonical (unshuffled) order as the cache pass, without any model."""
    hasher = _DataHasher()
    for indices, batch in batches:
        hasher.update(indices, batch)
    return hasher.hexdigest()


def settings_fingerprint(settings: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(settings or {}), sort_keys=True, default=str)


@dataclasses.dataclass
class ReferenceCache:
    """Per example index [n]: R_w (``chosen``), R_l (``rejected``) and their prefix sums over the first
    min(n_w, n_l) tokens (``chosen_prefix``, ``rejected_prefix``), with the fingerprint they belong to."""

    fingerprint: dict[str, str]
    chosen: np.ndarray
    rejected: np.ndarray
    chosen_prefix: np.ndarray
    rejected_prefix: np.ndarray

    def lookup(self, indices: np.ndarray, pair_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Batch entries ``ref_chosen``, ``ref_rejected``, ``ref_chosen_prefix``, ``ref_rejected_prefix``
        [M, P] for example indices [M, P] (padding: 0)."""
        idx = np.where(pair_mask, indices, 0)
        return {f"ref_{name}": np.where(pair_mask, getattr(self, name)[idx], 0.0).astype(np.float32)
                for name in FIELDS}

    def save(self, path: str) -> None:
        """Writes ``path`` (.npz with the fingerprint inside) atomically."""
        buf = io.BytesIO()
        np.savez(buf, **{name: getattr(self, name) for name in FIELDS},
                 fingerprint=np.frombuffer(json.dumps(self.fingerprint, sort_keys=True).encode(), np.uint8))
        if not paths.is_local(path):  # one object put: atomic by itself
            with writing(path):
                paths.as_path(path).write_bytes(buf.getvalue())
            return
        tmp = f"{path}.tmp-{os.getpid()}"
        with writing(path):
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
            os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, expected: Mapping[str, str] | None = None) -> ReferenceCache:
        """Reads a cache; with ``expected`` (model, data, settings), every fingerprint entry must match, and the
        cache must hold ``CONTENTS`` (the error names what differs and says to recompute the cache)."""
        try:
            with np.load(io.BytesIO(paths.as_path(path).read_bytes())) as z:
                fp = json.loads(bytes(z["fingerprint"]).decode())
                if fp.get("contents") != CONTENTS:
                    raise ValueError(f"it holds {fp.get('contents', 'the sums only')!r}, not {CONTENTS!r} (written "
                                     "by an older version)")
                cache = cls(fp, *(z[name] for name in FIELDS))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ReferenceCacheMismatch(f"reference cache {path!r} cannot be read ({e}); recompute it") from e
        if expected is not None:
            expected = {**expected, "contents": CONTENTS}
            differ = sorted(k for k in set(expected) | set(fp) if expected.get(k) != fp.get(k))
            if differ:
                raise ReferenceCacheMismatch(
                    f"reference cache {path!r} was computed for a different {', '.join(differ)} "
                    f"(cache: {[fp.get(k) for k in differ]}, now: {[expected.get(k) for k in differ]}); "
                    "recompute it with the current model, data and tokenisation")
        return cache


def make_reference_fn(graphdef: nnx.GraphDef, block_size: int, mesh=None):
    """Jitted ``f(ref_params, batch) -> (R_w, R_l, P_w, P_l)``, each [M, P], over micro-batches (P: the prefix
    sums over the first min(n_w, n_l) tokens; traced under ``mesh`` when given, as the training step:
    :func:`~rdpo_jax.sharding.under_mesh`)."""

    def per_micro(ref_params, rows):
        model = nnx.merge(graphdef, ref_params)
        num_pairs = rows["pair_mask"].shape[-1]
        lp = row_token_logps(model, rows, block_size)
        sums, counts = pair_sums(lp, rows, num_pairs)
        prefix, _ = pair_sums(jnp.where(shared_prefix_mask(rows, counts), lp, 0.0), rows, num_pairs)
        return sums[:, Role.CHOSEN], sums[:, Role.REJECTED], prefix[:, Role.CHOSEN], prefix[:, Role.REJECTED]

    jitted = jax.jit(lambda p, b: jax.lax.map(lambda rows: per_micro(p, rows), b))
    return jitted if mesh is None else under_mesh(jitted, mesh)


def rows_fingerprint(rows: Iterable[Any]) -> str:
    """SHA-256 of tokenised examples (`rdpo_jax.data.TokenizedExample`: the context and completion ids of
    chosen, rejected and rationale, in dataset order). Identical on every process, and needs no model."""
    h = hashlib.sha256()
    for r in rows:
        for seq in (r.chosen, r.rejected, r.rationale):
            ids = [] if seq is None else [*seq.context, -1, *seq.completion]
            h.update(np.asarray(ids, np.int64).tobytes() + b"|")
    return h.hexdigest()


def _gathered(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def compute_reference_cache(graphdef: nnx.GraphDef, ref_params, batches: Iterable[tuple[np.ndarray, dict]],
                            num_examples: int, *, config: Any = None, settings: Mapping[str, Any] | None = None,
                            block_size: int = 2048, data_digest: str | None = None, mesh=None) -> ReferenceCache:
    """One pass over ``(indices [M, P], batch)`` pairs (indices: global example ids of the pairs, -1 for
    padding; the batch in the row contract, host or global device arrays) computing the reference sums of
    every real pair. Every example must be covered. ``data_digest`` (e.g. :func:`rows_fingerprint`) replaces
    hashing the batches, which needs them on the host (one process). ``mesh``: the mesh the batches live on."""
    ref_fn = make_reference_fn(graphdef, block_size, mesh)
    values = {name: np.full(num_examples, np.nan, np.float32) for name in FIELDS}
    hasher = _DataHasher()
    for indices, batch in batches:
        if data_digest is None:
            hasher.update(indices, batch)
        outputs = ref_fn(ref_params, {k: v for k, v in batch.items() if k in ROW_ARRAYS})
        real = np.asarray(indices) >= 0
        for name, out in zip(FIELDS, outputs, strict=True):
            values[name][indices[real]] = _gathered(out)[real]
    missing = np.flatnonzero(np.isnan(values["chosen"]))
    if missing.size:
        raise ValueError(f"reference cache: {missing.size} of {num_examples} examples were not in any batch "
                         f"(first: {missing[:5].tolist()}); iterate over the whole set without dropping a remainder")
    fingerprint = {"model": model_fingerprint(config, ref_params), "data": data_digest or hasher.hexdigest(),
                   "settings": settings_fingerprint(settings), "contents": CONTENTS}
    return ReferenceCache(fingerprint, *(values[name] for name in FIELDS))
