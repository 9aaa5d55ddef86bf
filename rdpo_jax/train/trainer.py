"""The trainer loop: `train(cfg)` fine-tunes a model with SFT or any preference loss, on one CPU, one GPU or
a TPU pod, with periodic evaluation, logging, orbax checkpoints and exact resume, and a final HF export.

Per step: this process's slice of the global batch -> local micro-batches -> global sharded arrays ->
jitted step (state donated) -> metrics (process 0 logs). A non-finite loss or gradient stops the run
naming the step (``train.nan_policy="error"``; the step's result is never checkpointed) or leaves the
state untouched and goes on (``"skip"``).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from rdpo_jax.config import RunConfig
from rdpo_jax.data import BatchIterator
from rdpo_jax.models import DecoderLM, ModelConfig, load_hf, save_hf
from rdpo_jax.sharding import make_mesh
from rdpo_jax.train.checkpoint import Checkpointer, abstract_state, key_from_json, key_to_json
from rdpo_jax.train.metrics_log import MetricsLogger
from rdpo_jax.train.objectives import PreferenceObjective, SFTObjective
from rdpo_jax.train.optim import make_optimizer, make_schedule
from rdpo_jax.train.pipeline import LocalBatcher, build_tokenizer, prepare_data, to_global
from rdpo_jax.train.reference_cache import (
    ReferenceCache,
    compute_reference_cache,
    model_fingerprint,
    rows_fingerprint,
    settings_fingerprint,
)
from rdpo_jax.train.step import (
    init_train_state,
    jit_train_step,
    make_eval_step,
    make_train_step,
    split_model,
    state_shardings,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteLoss(RuntimeError):
    """The loss or a gradient was NaN/Inf (train.nan_policy="error")."""


def build_objective(cfg: RunConfig):
    t = cfg.train
    if t.objective == "sft":
        return SFTObjective(block_size=t.block_size)
    return PreferenceObjective(t.loss, tuple(sorted(t.loss_kwargs.items())), block_size=t.block_size)


def build_model(cfg: RunConfig, tokenizer: Any, mesh) -> DecoderLM:
    """A random tiny Llama sized by model.tiny_* (vocabulary from the tokenizer), or a HF directory
    (``model.init_from`` first, else ``model.source``), loaded straight onto the mesh."""
    m = cfg.model
    kw = dict(remat=m.remat, attention_backend=m.attention)
    path = m.init_from or (None if m.source == "tiny" else m.source)
    if path is not None:
        return load_hf(path, dtype=DTYPES[m.param_dtype], mesh=mesh, compute_dtype=DTYPES[m.dtype], **kw)
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=m.tiny_hidden_size,
                         intermediate_size=m.tiny_intermediate_size, num_layers=m.tiny_num_layers,
                         num_heads=m.tiny_num_heads, num_kv_heads=m.tiny_num_kv_heads,
                         head_dim=m.tiny_hidden_size // m.tiny_num_heads, tie_word_embeddings=True,
                         max_position_embeddings=2 * cfg.data.max_length, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    return DecoderLM(config, rngs=nnx.Rngs(cfg.train.seed), dtype=DTYPES[m.dtype], param_dtype=DTYPES[m.param_dtype],
                     **kw)


def _host(metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _batches(iterator: BatchIterator, batcher: LocalBatcher, cache: ReferenceCache | None):
    """Local micro-batches (with cached reference sums when a cache is used) and the iterator's dataset
    indices of their pairs [M, P_local] (-1 for padding; the data layer puts a chunk's real pairs first)."""
    for b in iterator:
        local = batcher(b.examples, b.mask)
        local.pop("example_index", None)
        m, p = local["pair_mask"].shape
        per = len(b.indices) // m
        dataset_index = np.full((m, p), -1, np.int64)
        for i in range(m):
            real = b.indices[i * per:(i + 1) * per][b.mask[i * per:(i + 1) * per]]
            dataset_index[i, :len(real)] = real
        if cache is not None:
            local.update(cache.lookup(np.maximum(dataset_index, 0), local["pair_mask"]))
        yield b, local, dataset_index


@dataclasses.dataclass
class RunResult:
    output_dir: Path
    steps: int
    final_train: dict[str, float]
    final_eval: dict[str, float]
    hf_dir: Path | None


def train(cfg: RunConfig) -> RunResult:
    """Runs one training job end to end (see the module docstring). All processes call it."""
    out = Path(cfg.output_dir)
    is_main = jax.process_index() == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(cfg.mesh)
    tokenizer = build_tokenizer(cfg)
    objective = build_objective(cfg)
    sft = cfg.train.objective == "sft"
    with_rationale = cfg.train.sft_rationales if sft else objective.needs_rationale
    data = prepare_data(cfg, tokenizer, with_rationale=with_rationale)
    model = build_model(cfg, tokenizer, mesh)
    graphdef, params = split_model(model)

    iterator = BatchIterator(data.train_rows, cfg.train.global_batch_size, seed=cfg.train.seed,
                             num_epochs=cfg.train.epochs)
    total_steps = cfg.train.max_steps or cfg.train.epochs * iterator.batches_per_epoch
    optim_cfg = cfg.optim if cfg.optim.total_steps or cfg.optim.schedule != "cosine" else \
        dataclasses.replace(cfg.optim, total_steps=total_steps)
    tx, schedule = make_optimizer(optim_cfg), make_schedule(optim_cfg)
    shardings = state_shardings(params, tx, mesh)
    state = init_train_state(params, tx, shardings)

    needs_ref = (not sft) and objective.needs_reference
    ref_params = jax.device_put(params, shardings.params) if needs_ref else None
    batcher = LocalBatcher(cfg, tokenizer, sft=sft, with_rationale=with_rationale,
                           process_count=jax.process_count())
    caches = {"train": None, "eval": None}
    if needs_ref and cfg.train.reference == "cache":
        caches = _reference_caches(cfg, graphdef, ref_params, data, batcher, mesh, out)
        ref_params = None

    ckpt = Checkpointer(out / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep,
                        async_save=cfg.checkpoint.async_save)
    rng = jax.random.key(cfg.train.seed)
    if cfg.checkpoint.resume:
        restored = ckpt.restore(abstract_state(state, shardings))
        if restored is not None:
            _, state, extras = restored
            iterator.set_state(extras["iterator"])
            rng = key_from_json(extras["rng"])
    # XLA:CPU can deadlock when two programs with collectives run at once (each waits for threads the other
    # holds), so the set-up programs finish before the first step is dispatched.
    jax.block_until_ready((state, ref_params))
    start_step = iterator.step

    logger = MetricsLogger(out, total_steps=total_steps, jsonl=cfg.logging.jsonl,
                           tensorboard=cfg.logging.tensorboard, progress=cfg.logging.progress, is_main=is_main,
                           initial_step=start_step, description=cfg.name)
    step_fn = None
    eval_fn = jax.jit(make_eval_step(graphdef, objective))
    last: dict[str, float] = {}
    step = start_step
    final_eval: dict[str, float] = {}
    t_last, tokens = time.time(), 0
    try:
        batches = _batches(iterator, batcher, caches["train"])
        while iterator.step < total_steps:
            item = next(batches, None)
            if item is None:
                break
            b, local, _ = item
            step = b.step + 1
            batch = to_global(local, mesh, batcher.pad_id)
            if step_fn is None:
                step_fn = jit_train_step(make_train_step(graphdef, objective, tx, schedule=schedule,
                                                         nan_policy=cfg.train.nan_policy),
                                         shardings, mesh, batch, ref_shardings=shardings.params if ref_params
                                         is not None else None, model_config=model.config)
            state, metrics = step_fn(state, batch, ref_params)
            tokens += int(local["attention_mask"].sum()) * jax.process_count()
            last = _host(metrics)
            if last["finite"] < 1:
                if cfg.train.nan_policy == "error":
                    raise NonFiniteLoss(f"non-finite loss or gradient at step {step} (loss={last['loss']}, "
                                        f"grad_norm={last['grad_norm']}); no checkpoint holds it. Lower the "
                                        "learning rate, or set train.nan_policy=skip to skip such steps")
                logger.write(f"step {step}: non-finite loss or gradient, step skipped")
            if step % cfg.logging.every == 0 or step == total_steps:
                now = time.time()
                last["tokens_per_s"] = tokens / max(now - t_last, 1e-9)
                t_last, tokens = now, 0
                logger.log(step, last)
            logger.advance(step, last)
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and data.eval_rows:
                final_eval = evaluate(cfg, eval_fn, state.params, ref_params, data.eval_rows, batcher, mesh,
                                      caches["eval"])
                logger.log(step, final_eval, split="eval")
            ckpt.save(step, state, extras={"iterator": iterator.get_state(),
                                           "rng": key_to_json(rng)})
        step = iterator.step
        if data.eval_rows:
            final_eval = evaluate(cfg, eval_fn, state.params, ref_params, data.eval_rows, batcher, mesh,
                                  caches["eval"])
            logger.log(step, final_eval, split="eval")
        ckpt.save(step, state, extras={"iterator": iterator.get_state(),
                                       "rng": key_to_json(rng)}, force=True)
        ckpt.wait()
    finally:
        logger.close()
        ckpt.close()
    hf_dir = _export(cfg, graphdef, state.params, tokenizer, out) if cfg.checkpoint.export_hf else None
    if is_main:
        summary = {"steps": step, "train": last, "eval": final_eval}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if cfg.logging.plot and cfg.logging.jsonl:
            from rdpo_jax.train.plots import plot_runs

            plot_runs({cfg.name: out / "metrics.jsonl"}, out / "curves.png")
    return RunResult(out, step, last, final_eval, hf_dir)


def evaluate(cfg: RunConfig, eval_fn, params, ref_params, rows, batcher: LocalBatcher, mesh,
             cache: ReferenceCache | None) -> dict[str, float]:
    """Held-out loss and metrics over ``rows`` (in order, the last batch padded), pair-weighted."""
    it = BatchIterator(rows, cfg.train.global_batch_size, shuffle=False, drop_remainder=False, num_epochs=1)
    sums: dict[str, float] = {}
    count = 0.0
    for i, (_, local, _) in enumerate(_batches(it, batcher, cache)):
        if cfg.train.eval_batches is not None and i >= cfg.train.eval_batches:
            break
        m = _host(eval_fn(params, to_global(local, mesh, batcher.pad_id), ref_params))
        n = m.pop("count")
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    return {k: v / max(count, 1.0) for k, v in sums.items()} | {"count": count}


def _reference_caches(cfg, graphdef, ref_params, data, batcher, mesh, out: Path) -> dict[str, ReferenceCache]:
    """The frozen reference's sums for the train and eval rows: read from
    ``<output_dir>/reference_cache_<split>.npz`` when it exists (its fingerprint of model, tokenised data and
    settings must match, else `ReferenceCacheMismatch`), else one pass in canonical order, saved there."""
    caches = {}
    settings = {"data": dataclasses.asdict(cfg.data), "batch": cfg.train.global_batch_size}
    model_fp = model_fingerprint(cfg.model, ref_params)
    for split, rows in (("train", data.train_rows), ("eval", data.eval_rows)):
        if not rows:
            caches[split] = None
            continue
        path = out / f"reference_cache_{split}.npz"
        digest = rows_fingerprint(rows)
        if path.exists():
            caches[split] = ReferenceCache.load(str(path), {"model": model_fp, "data": digest,
                                                            "settings": settings_fingerprint(settings)})
            continue
        it = BatchIterator(rows, cfg.train.global_batch_size, shuffle=False, drop_remainder=False, num_epochs=1)

        def passes(it=it):
            for _, local, index in _batches(it, batcher, None):
                if jax.process_count() > 1:
                    index = np.concatenate(list(multihost_utils.process_allgather(index)), axis=1)
                yield index, to_global(local, mesh, batcher.pad_id)

        cache = compute_reference_cache(graphdef, ref_params, passes(), len(rows), config=cfg.model,
                                        settings=settings, block_size=cfg.train.block_size, data_digest=digest)
        if jax.process_index() == 0:
            cache.save(str(path))
        caches[split] = cache
    return caches


def _export(cfg: RunConfig, graphdef, params, tokenizer, out: Path) -> Path:
    """``<output_dir>/final/hf``: the trained policy as a transformers-loadable directory, with the tokenizer."""
    hf_dir = out / "final" / "hf"
    model = nnx.merge(graphdef, params)
    save_hf(model, hf_dir)
    if jax.process_index() == 0:
        tokenizer.save_pretrained(str(hf_dir))
    return hf_dir
