"""Batched KV-cache decoding: greedy, temperature, top-k and top-p sampling, several EOS ids.

``generate`` prefills the left-padded prompts in one forward that fills the cache
(:mod:`rdpo_jax.models.kv_cache`), then runs a ``jax.lax.while_loop`` over new tokens that stops early once
every row has emitted an EOS id. The whole loop is one jitted function of the model state.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdpo_jax.models.attention import concrete_or_none
from rdpo_jax.models.kv_cache import decode_step, prefill


def filter_logits(logits: jax.Array, *, top_k: int | None = None, top_p: float | jax.Array | None = None
                  ) -> jax.Array:
    """Set logits outside the top-k / nucleus to -inf (as transformers' TopK / TopP warpers).

    top-k keeps ``logits >= `` the k-th largest value; top-p keeps the smallest set of most likely tokens
    whose probability mass reaches ``top_p``: sorting probabilities descending, token r is kept iff the
    mass before it ``sum_{r' < r} p_{r'} < top_p`` (so the most likely token is always kept). logits
    float [B, V]; returns [B, V].
    """
    neg = jnp.asarray(-jnp.inf, logits.dtype)
    if top_k is not None:
        k = min(int(top_k), logits.shape[-1])
        kth = jax.lax.top_k(logits, k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, neg)
    if top_p is not None:
        desc = -jnp.sort(-logits, axis=-1)
        p = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(p, axis=-1) - p
        keep = before < top_p
        n_keep = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1)
        threshold = jnp.take_along_axis(desc, n_keep - 1, axis=-1)
        logits = jnp.where(logits >= threshold, logits, neg)
    return logits


def sample_logits(logits: jax.Array, key: jax.Array, *, temperature: float | jax.Array = 1.0,
                  top_k: int | None = None, top_p: float | jax.Array | None = None,
                  greedy: bool = False) -> jax.Array:
    """Next tokens int32 [B] from logits [B, V]: ``argmax`` if ``greedy``, else a draw from
    ``softmax(filter(logits / temperature))`` (:func:`filter_logits`) with ``key``."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits.astype(jnp.float32) / temperature
    scaled = filter_logits(scaled, top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy", "top_k", "use_top_p"))
def _generate(graphdef, state, input_ids, attention_mask, eos_ids, pad_id, temperature, top_p, key, row_keys, *,
              max_new_tokens: int, greedy: bool, top_k: int | None, use_top_p: bool):
    model = nnx.merge(graphdef, state)
    b, t = input_ids.shape
    logits, cache = prefill(model, input_ids, attention_mask, t + max_new_tokens - 1)
    draw = functools.partial(sample_logits, temperature=temperature, top_k=top_k,
                             top_p=top_p if use_top_p else None, greedy=greedy)

    def sample(logits, step):
        if row_keys is None:  # one key per step for the whole batch
            return draw(logits, jax.random.fold_in(key, step))
        # row r's step-i token uses fold_in(row_keys[r], i) alone: independent of the batch around it
        one_row = lambda lg, k: draw(lg[None], jax.random.fold_in(k, step))[0]  # noqa: E731
        return jax.vmap(one_row)(logits, row_keys)

    def is_eos(tok):
        return jnp.any(tok[:, None] == eos_ids[None, :], axis=-1)

    tok = sample(logits, 0)
    out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok)
    first_pos = jnp.sum(attention_mask.astype(jnp.int32), axis=-1)  # position id of the first new token

    def cond(carry):
        i, _, done, *_ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, tok, done, out, cache = carry
        logits, cache = decode_step(model, tok, first_pos + i - 1, t + i - 1, cache)
        new = sample(logits, i)
        new = jnp.where(done, pad_id, new)
        out = jax.lax.dynamic_update_slice(out, new[:, None], (jnp.zeros((), jnp.int32), i))
        return i + 1, new, done | is_eos(new), out, cache

    carry = (jnp.ones((), jnp.int32), tok, is_eos(tok), out, cache)
    return jax.lax.while_loop(cond, body, carry)[3]


def _row_keys(keys, rows: int) -> jax.Array:
    """Typed PRNG keys [rows] from typed keys [rows] or raw uint32 key data [rows, 2]."""
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.wrap_key_data(jnp.asarray(keys, jnp.uint32))
    if keys.shape != (rows,):
        raise ValueError(f"keys has shape {keys.shape}; expected one key per row: ({rows},)")
    return keys


def generate(
    model,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    eos_token_ids: Sequence[int] | None = None,
    pad_token_id: int | None = None,
    keys: jax.Array | None = None,
) -> jax.Array:
    """Decode ``max_new_tokens`` tokens for a batch of left-padded prompts with a KV cache (jitted).

    Greedy (``argmax``) when ``temperature == 0`` (top_k/top_p are then ignored); otherwise each token is
    drawn from ``softmax(filter(logits / temperature))`` with top-k and/or nucleus (top-p) filtering
    (:func:`filter_logits`), from ``jax.random.key(seed)`` folded with the step index (reproducible per
    seed). With ``keys`` (one PRNG key per row, typed [B] or raw uint32 [B, 2]) row r's token at step i is
    drawn with ``fold_in(keys[r], i)`` instead, so a row's sample does not depend on the batch it is decoded
    in (its size, order or the other rows); ``seed`` is then unused. A row stops at its
    first token in ``eos_token_ids`` (default ``model.config.eos_token_ids``, config.json's and
    generation_config.json's); the EOS itself is emitted and the rest of the row is
    ``pad_token_id`` (default ``model.config.generation_pad_id``). The loop exits once every row is done.

    Args:
      model: a :class:`~rdpo_jax.models.decoder.DecoderLM` (its attention backend runs the prompt).
      input_ids: int [B, T] prompts, left padded. attention_mask: 0/1 [B, T] (1 = real token); the last
        column must be all ones.
    Returns:
      int32 [B, max_new_tokens].
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    input_ids = jnp.asarray(input_ids, jnp.int32)
    attention_mask = jnp.asarray(attention_mask, jnp.int32)
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must share "
                         "one [B, T] shape")
    host_mask = concrete_or_none(attention_mask)
    if host_mask is not None and not bool(np.all(host_mask[:, -1])):
        raise ValueError("generate expects left-padded prompts: attention_mask[:, -1] must be 1 for every row")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 or None")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] or None")
    row_keys = None if keys is None else _row_keys(keys, input_ids.shape[0])
    cfg = model.config
    eos = cfg.eos_token_ids if eos_token_ids is None else tuple(int(i) for i in eos_token_ids)
    pad = cfg.generation_pad_id if pad_token_id is None else int(pad_token_id)
    graphdef, state = nnx.split(model)
    return _generate(graphdef, state, input_ids, attention_mask, jnp.asarray(eos, jnp.int32).reshape(-1),
                     jnp.int32(pad), jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p or 1.0),
                     jax.random.key(seed), row_keys, max_new_tokens=int(max_new_tokens), greedy=temperature == 0,
                     top_k=None if top_k is None else int(top_k), use_top_p=top_p is not None)
