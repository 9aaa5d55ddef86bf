"""The trainer loop: `train(cfg)` fine-tunes a model with SFT or any preference loss, on one CPU, one GPU or
a TPU pod, with periodic evaluation, logging, orbax checkpoints and exact resume, and a final HF export.

Before any data is read or anything compiled, the model and data paths, the held-out source and the batch
layout over the mesh are checked (`rdpo_jax.train.preflight`, `rdpo_jax.train.held_out`), and the output
directory is locked for the run's life (`rdpo_jax.train.run_lock`). Then the data is loaded and checked
(rationales for a rationale term, held-out pairs that occur in training: `rdpo_jax.train.data_checks`), the
number of steps is planned from the data, and the run either resumes (the checkpoint's stored config must
match in every key that decides what is trained: `rdpo_jax.train.run_identity`) or starts afresh.

Per step: this process's slice of the global batch -> local micro-batches -> global sharded arrays ->
jitted step (state donated) -> metrics (process 0 logs). A non-finite loss, gradient or update stops the
run naming the step and the pairs at fault (``train.nan_policy="error"``; the step's result is never
checkpointed) or leaves the state untouched and goes on (``"skip"``); ``train.max_skipped_steps``
consecutive skips stop the run, and a run that applied no step at all fails and exports nothing.

Files in ``output_dir``: ``config.yaml`` (the resolved config and its fingerprint), ``data_report.json``,
``metrics.jsonl`` (each step once), ``tensorboard/``, ``checkpoints/``, ``summary.json``, ``curves.png``,
``final/hf`` and, while the run lives, ``run.lock`` / ``run.lock.json``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from rdpo_jax import paths
from rdpo_jax.config import DTYPES as DTYPE_NAMES
from rdpo_jax.config import RunConfig
from rdpo_jax.config_loader import config_to_dict, dump_config
from rdpo_jax.config_rules import uses_rationales
from rdpo_jax.data import BatchIterator
from rdpo_jax.errors import ConfigError, RdpoError
from rdpo_jax.files import write_json, write_text, writing
from rdpo_jax.models import DecoderLM, ModelConfig, load_hf, save_hf
from rdpo_jax.sharding import make_mesh, under_mesh
from rdpo_jax.train.checkpoint import Checkpointer, abstract_state, key_from_json, key_to_json
from rdpo_jax.train.data_checks import plan_steps
from rdpo_jax.train.held_out import check_held_out
from rdpo_jax.train.metrics_log import METRICS_FILE, MetricsLogger
from rdpo_jax.train.objectives import PreferenceObjective, SFTObjective
from rdpo_jax.train.optim import make_optimizer, make_schedule
from rdpo_jax.train.pipeline import LocalBatcher, PreparedData, build_tokenizer, prepare_data, to_global
from rdpo_jax.train.preflight import check_batch_layout, check_paths
from rdpo_jax.train.reference_cache import (
    ReferenceCache,
    compute_reference_cache,
    model_fingerprint,
    rows_fingerprint,
    settings_fingerprint,
)
from rdpo_jax.train.remat_choice import choose_remat, device_memory_limit
from rdpo_jax.train.run_identity import ResumeMismatch, check_resume, fingerprint
from rdpo_jax.train.run_lock import RunLock
from rdpo_jax.train.step import (
    init_train_state,
    jit_train_step,
    make_eval_step,
    make_train_step,
    split_model,
    state_shardings,
)

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
DATA_REPORT_FILE = "data_report.json"

DTYPES = {name: getattr(jnp, name) for name in DTYPE_NAMES}  # config names -> jnp dtypes


class NonFiniteLoss(RdpoError, RuntimeError):
    """A step's loss, gradient or update was NaN/Inf (``train.nan_policy="error"``), too many consecutive steps
    were skipped, or no step was trained at all (``"skip"``)."""


def build_objective(cfg: RunConfig):
    t = cfg.train
    if t.objective == "sft":
        return SFTObjective(block_size=t.block_size)
    return PreferenceObjective(t.loss, tuple(sorted(t.loss_kwargs.items())), block_size=t.block_size)


def build_model(cfg: RunConfig, tokenizer: Any, mesh) -> DecoderLM:
    """A random tiny Llama sized by model.tiny_* (vocabulary from the tokenizer), or a HF directory
    (``model.init_from`` first, else ``model.source``), loaded straight onto the mesh."""
    m = cfg.model
    kw = dict(remat="none" if m.remat == "auto" else m.remat, attention_backend=m.attention)
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


def _compile_step(cfg: RunConfig, model: DecoderLM, objective, tx, schedule, shardings, mesh, state, batch,
                  ref_params, logger: MetricsLogger):
    """The jitted train step; under ``model.remat=auto`` the policy is chosen here (logged) by compiling the
    step for this first batch (`rdpo_jax.train.remat_choice`)."""
    def make(policy: str | None = None):
        if policy is not None:
            model.remat = policy
        graphdef, _ = split_model(model)
        return jit_train_step(make_train_step(graphdef, objective, tx, schedule=schedule,
                                              nan_policy=cfg.train.nan_policy),
                              shardings, mesh, batch, ref_shardings=shardings.params if ref_params is not None
                              else None, model_config=model.config)

    if cfg.model.remat != "auto":
        return make()
    gib = cfg.model.remat_memory_gib
    limit = int(gib * 2**30) if gib is not None else device_memory_limit()
    _, step_fn, lines = choose_remat(make, state, batch, ref_params, limit_bytes=limit)
    for line in lines:
        logger.write(line)
    return step_fn


def _host(metrics: dict[str, jax.Array]) -> dict[str, float]:
    """Scalar metrics as floats (the per-pair ``pair_finite`` flags are read apart)."""
    return {k: float(v) for k, v in jax.device_get(metrics).items() if k != "pair_finite"}


def _batches(iterator: BatchIterator, batcher: LocalBatcher, cache: ReferenceCache | None):
    """Local micro-batches (with cached reference sums when a cache is used) and the dataset indices of
    their pairs [M, P_local] (the data layer's ``dataset_index``: -1 for padding)."""
    for b in iterator:
        local = batcher(b.examples, b.mask, b.indices)
        dataset_index = local.pop("dataset_index")
        local.pop("example_index")
        if cache is not None:
            local.update(cache.lookup(np.maximum(dataset_index, 0), local["pair_mask"]))
        yield b, local, dataset_index


@dataclasses.dataclass
class RunResult:
    output_dir: paths.Path
    steps: int
    final_train: dict[str, float]
    final_eval: dict[str, float]
    hf_dir: paths.Path | None
    skipped_steps: list[int] = dataclasses.field(default_factory=list)
    config_fingerprint: str = ""


def effective_config(cfg: RunConfig, total_steps: int) -> RunConfig:
    """``cfg`` with the schedule sized on the run's real number of steps (cosine with ``optim.total_steps``
    null decays over ``total_steps``); this is the config a checkpoint stores and a resume compares."""
    o = cfg.optim
    if o.schedule != "cosine" or o.total_steps is not None:
        return cfg
    if o.warmup_steps >= total_steps:
        raise ConfigError(f"optim.warmup_steps={o.warmup_steps} is not below the run's {total_steps} steps "
                          "(optim.total_steps is null: the cosine decay spans the run); lower the warm-up")
    return dataclasses.replace(cfg, optim=dataclasses.replace(o, total_steps=total_steps))


def _schedule_notes(cfg: RunConfig, total_steps: int) -> list[str]:
    o = cfg.optim
    if o.schedule == "paper" and o.warmup_steps >= total_steps:
        top = min(1.0, total_steps / (o.warmup_steps + 1))
        return [f"note: optim.warmup_steps={o.warmup_steps} >= the run's {total_steps} steps: the learning rate "
                f"never reaches optim.lr={o.lr:g} (it ends at {top:.3g} x of it)"]
    return []


def train(cfg: RunConfig) -> RunResult:
    """Runs one training job end to end (see the module docstring). All processes call it."""
    check_paths(cfg)
    check_held_out(cfg)
    mesh = make_mesh(cfg.mesh)
    row_multiple = check_batch_layout(cfg, dict(mesh.shape), jax.process_count())
    with RunLock(cfg.output_dir) as lock:
        return _train_locked(cfg, mesh, row_multiple, lock)


def _resume_or_start(cfg: RunConfig, ckpt: Checkpointer, target, data_digest: str, out: paths.Path):
    """(restored step, state, extras, note): the newest good checkpoint when ``checkpoint.resume`` and its
    stored config and data match (else `ResumeMismatch`), or None after clearing an earlier run's
    checkpoints when the run starts afresh."""
    if not cfg.checkpoint.resume:
        removed = ckpt.clear()
        note = (f"checkpoint.resume=false: starting afresh; removed the previous run's checkpoints (steps "
                f"{removed}) in {ckpt.directory}") if removed else None
        return None, note
    changed: list[str] = []

    def accept(step: int, extras: dict) -> None:
        where = f"{out} from its checkpoint of step {step}"
        changed[:] = check_resume(extras.get("config"), cfg, where=where)
        if "config" not in extras:
            changed.append("the checkpoint stores no config (written by an older rdpo_jax): not checked")
        if extras.get("data_fingerprint", data_digest) != data_digest:
            raise ResumeMismatch(f"cannot resume {where}: the training data changed since it was written (the "
                                 "tokenised rows hash differently). Start afresh with checkpoint.resume=false or "
                                 "a new output_dir")

    restored = ckpt.restore(target, accept=accept)
    if restored is None:
        return None, None
    step = restored[0]
    note = f"resumed from step {step} of {out}" + (f" (changed: {'; '.join(changed)})" if changed else "")
    return restored, note


def _nonfinite_pairs(pair_finite: np.ndarray | None, index: np.ndarray, data: PreparedData, source: str) -> str:
    """`` at pairs ...`` naming (up to five of) the training pairs whose loss was not finite."""
    if pair_finite is None:
        return ""
    if jax.process_count() > 1:
        index = np.concatenate(list(multihost_utils.process_allgather(index)), axis=1)
    bad = [int(index[m, p]) for m, p in np.argwhere(~np.asarray(pair_finite, bool)) if index[m, p] >= 0]
    if not bad:
        return ""
    named = ", ".join(f"training pair {i} (row {data.train_source_rows[i]} of {source})" for i in bad[:5])
    return f" at {len(bad)} pair(s): {named}{' ...' if len(bad) > 5 else ''}"


def _eval_line(step: int, metrics: dict[str, float]) -> str:
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "count")
    return f"eval at step {step} ({int(metrics.get('count', 0))} pairs): {shown}"


def _train_locked(cfg: RunConfig, mesh, row_multiple: int, lock: RunLock) -> RunResult:
    out = paths.as_path(cfg.output_dir)
    is_main = jax.process_index() == 0
    notes = [lock.stale] if lock.stale else []
    tokenizer = build_tokenizer(cfg)
    objective = build_objective(cfg)
    sft = cfg.train.objective == "sft"
    with_rationale = uses_rationales(cfg)
    data = prepare_data(cfg, tokenizer, with_rationale=with_rationale)
    iterator = BatchIterator(data.train_rows, cfg.train.global_batch_size, seed=cfg.train.seed,
                             num_epochs=cfg.train.epochs)
    total_steps = plan_steps(cfg, iterator.batches_per_epoch, len(data.train_rows))
    run_cfg = effective_config(cfg, total_steps)
    run_fp = fingerprint(run_cfg)
    data_digest = rows_fingerprint(data.train_rows)
    notes += _schedule_notes(run_cfg, total_steps)
    model = build_model(cfg, tokenizer, mesh)
    graphdef, params = split_model(model)
    tx, schedule = make_optimizer(run_cfg.optim), make_schedule(run_cfg.optim)
    shardings = state_shardings(params, tx, mesh)
    state = init_train_state(params, tx, shardings)

    needs_ref = (not sft) and objective.needs_reference
    ref_params = jax.device_put(params, shardings.params) if needs_ref else None
    batcher = LocalBatcher(cfg, tokenizer, sft=sft, with_rationale=with_rationale,
                           process_count=jax.process_count(), row_multiple=row_multiple)
    ckpt = Checkpointer(out / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep,
                        async_save=cfg.checkpoint.async_save)
    rng = jax.random.key(cfg.train.seed)
    trained_tokens = 0.0  # TRL's num_tokens: real input tokens of every step so far (kept across a resume)
    restored, resume_note = _resume_or_start(run_cfg, ckpt, abstract_state(state, shardings), data_digest, out)
    if restored is not None:
        _, state, extras = restored
        try:
            iterator.set_state(extras["iterator"])
        except ValueError as e:
            raise ResumeMismatch(f"cannot resume {out}: the data iterator of the checkpoint does not fit this "
                                 f"data ({e}); start afresh with checkpoint.resume=false or a new output_dir") from e
        rng = key_from_json(extras["rng"])
        trained_tokens = float(extras.get("num_tokens", 0.0))
    if resume_note:
        notes.append(resume_note)
    caches = {"train": None, "eval": None}
    if needs_ref and cfg.train.reference == "cache":
        caches = _reference_caches(cfg, graphdef, ref_params, data, batcher, mesh, out)
        ref_params = None
    # XLA:CPU can deadlock when two programs with collectives run at once (each waits for threads the other
    # holds), so the set-up programs finish before the first step is dispatched.
    jax.block_until_ready((state, ref_params))
    start_step = iterator.step
    if is_main:
        write_text(out / CONFIG_FILE, f"# rdpo_jax run config; fingerprint {run_fp} (the settings that decide "
                                      f"the trained function)\n" + dump_config(run_cfg))
        write_json(out / DATA_REPORT_FILE, data.report() | {"config_fingerprint": run_fp})

    logger = MetricsLogger(out, total_steps=total_steps, jsonl=cfg.logging.jsonl,
                           tensorboard=cfg.logging.tensorboard, progress=cfg.logging.progress, is_main=is_main,
                           initial_step=start_step, description=cfg.name)
    for line in data.summary_lines() + notes:
        logger.write(line)
    final_eval = next((r for r in reversed(logger.kept) if r.get("split") == "eval" and r["step"] == start_step),
                      None)
    final_eval = {k: v for k, v in final_eval.items() if k not in ("step", "split", "time")} if final_eval else {}
    eval_step = start_step if final_eval else None
    step_fn = None
    eval_fn = under_mesh(jax.jit(make_eval_step(graphdef, objective)), mesh)
    last: dict[str, float] = {}
    skipped: list[int] = []
    consecutive: list[int] = []
    t_last, tokens = time.time(), 0
    extras = {"config": config_to_dict(run_cfg), "config_fingerprint": run_fp, "data_fingerprint": data_digest}

    def run_eval(at: int) -> dict[str, float]:
        result = evaluate(cfg, eval_fn, state.params, ref_params, data.eval_rows, batcher, mesh, caches["eval"])
        logger.log(at, result, split="eval")
        logger.write(_eval_line(at, result))
        return result

    try:
        batches = _batches(iterator, batcher, caches["train"])
        while iterator.step < total_steps:
            b, local, index = next(batches)
            step = b.step + 1
            batch = to_global(local, mesh, batcher.pad_id)
            if step_fn is None:
                step_fn = _compile_step(cfg, model, objective, tx, schedule, shardings, mesh, state, batch,
                                        ref_params, logger)
            state, metrics = step_fn(state, batch, ref_params)
            tokens += int(local["attention_mask"].sum()) * jax.process_count()
            last = _host(metrics)
            trained_tokens += last["num_tokens"]
            last["num_tokens"] = trained_tokens
            if last["finite"] < 1:
                pairs = _nonfinite_pairs(jax.device_get(metrics.get("pair_finite")), index, data, cfg.data.source)
                if cfg.train.nan_policy == "error":
                    raise NonFiniteLoss(f"non-finite loss, gradient or update at step {step}{pairs} (loss="
                                        f"{last['loss']}, grad_norm={last['grad_norm']}); no checkpoint holds it. "
                                        "Lower the learning rate, or set train.nan_policy=skip to skip such steps")
                skipped.append(step)
                consecutive.append(step)
                logger.write(f"step {step}: non-finite loss, gradient or update{pairs}; step skipped")
                if len(consecutive) >= cfg.train.max_skipped_steps:
                    raise NonFiniteLoss(f"{len(consecutive)} consecutive steps were skipped ({consecutive}: "
                                        "non-finite loss, gradient or update; train.max_skipped_steps="
                                        f"{cfg.train.max_skipped_steps}); stopping. Lower the learning rate or "
                                        "check the data")
            else:
                consecutive = []
            if step % cfg.logging.every == 0 or step == total_steps:
                now = time.time()
                last["tokens_per_s"] = tokens / max(now - t_last, 1e-9)
                t_last, tokens = now, 0
                logger.log(step, last)
            logger.advance(step, last)
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and data.eval_rows:
                final_eval, eval_step = run_eval(step), step
            ckpt.save(step, state, extras={**extras, "iterator": iterator.get_state(), "rng": key_to_json(rng),
                                           "num_tokens": trained_tokens})
        step = iterator.step
        applied = int(jax.device_get(state.step))
        if applied == 0:
            raise NonFiniteLoss(f"no step was trained: all {len(skipped)} steps were skipped ({skipped}: non-finite "
                                "loss, gradient or update); nothing is exported")
        if data.eval_rows and eval_step != step:
            final_eval = run_eval(step)
        ckpt.save(step, state, extras={**extras, "iterator": iterator.get_state(), "rng": key_to_json(rng),
                                       "num_tokens": trained_tokens}, force=True)
        ckpt.wait()
    finally:
        logger.close()
        ckpt.close()
    hf_dir = _export(cfg, graphdef, state.params, tokenizer, out) if cfg.checkpoint.export_hf else None
    if is_main:
        write_json(out / SUMMARY_FILE, {"steps": step, "applied_steps": applied, "skipped_steps": skipped,
                                        "train": last, "eval": final_eval, "config_fingerprint": run_fp,
                                        "rationales": data.rationales, "eval_overlap": data.eval_overlap,
                                        "notes": notes + data.notes})
        if cfg.logging.plot and cfg.logging.jsonl:
            from rdpo_jax.train.plots import plot_runs

            with writing(out / "curves.png"):
                plot_runs({cfg.name: out / METRICS_FILE}, out / "curves.png")
    return RunResult(out, step, last, final_eval, hf_dir, skipped, run_fp)


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
        m.pop("num_tokens")  # a training count (the running total of trained tokens), not a held-out metric
        n = m.pop("count")
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    return {k: v / max(count, 1.0) for k, v in sums.items()} | {"count": count}


def _reference_caches(cfg, graphdef, ref_params, data, batcher, mesh, out: paths.Path) -> dict[str, ReferenceCache]:
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
                                        settings=settings, block_size=cfg.train.block_size, data_digest=digest,
                                        mesh=mesh)
        if jax.process_index() == 0:
            cache.save(str(path))
        caches[split] = cache
    return caches


def _export(cfg: RunConfig, graphdef, params, tokenizer, out: paths.Path) -> paths.Path:
    """``<output_dir>/final/hf``: the trained policy as a transformers-loadable directory, with the tokenizer."""
    hf_dir = out / "final" / "hf"
    model = nnx.merge(graphdef, params)
    with writing(hf_dir, "export the model to"), paths.local_copy(hf_dir) as local:
        save_hf(model, local)
        if jax.process_index() == 0:
            tokenizer.save_pretrained(local)
    return hf_dir
