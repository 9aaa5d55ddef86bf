"""The project's own DPO / RDPO training step, timed: one JSON line per run.

The step is the trainer's (``rdpo_jax.train.step``: jitted, sharded over every local device with fsdp,
blocked log-prob head, AdamW), on batches laid out by the data layer's own three-row or packed layout.

Workloads:

- synthetic (default), the PyTorch peer's (``benchmarks/torch_peer.py``): random tokens, every sequence
  ``--seq`` tokens with a prompt of ``seq / 2``; model shapes ``tiny``, ``small``, ``llama-1b``,
  ``llama-8b`` (``benchmarks/flops.py``'s ``SHAPES``). RDPO adds a rationale of ``--rationale-tokens`` after a
  4-token follow-up.
- ``--hh``: the shipped HH-RLHF sample (64 pairs, ``rdpo_jax.data.samples.HH_SAMPLE``) under the mistral-v1
  tokenizer and its chat template, ``max_length`` 1024, every pair given the same rationale (:data:`RATIONALE`,
  about 145 tokens), batches of ``--pairs``; one timed pass over all batches after a warm-up pass (which
  compiles every bucket shape). This is the packed vs three-row comparison.

Printed per run: ``tokens_per_s`` (the tokens of the scored sequences, chosen + rejected [+ rationale], as
the peer counts them: 2 x pairs x seq for DPO), ``pairs_per_s``, ``mfu`` (FLOPs by ``benchmarks/flops.py``
over ``--peak`` FLOP/s, when given), ``step_s`` (median), ``compile_s``, ``peak_gib`` (the device's
measured peak where it reports one, else the compiled program's estimate: arguments + temporaries +
outputs - aliased), ``device``, versions and the settings.

    python benchmarks/bench_step.py --preset small --pairs 4 --seq 256 --loss dpo          # CPU anchor
    python benchmarks/bench_step.py --preset llama-1b --pairs 8 --seq 1024 --dtype bfloat16 --peak 989e12
    python benchmarks/bench_step.py --hh --layout three_row,packed --preset small           # packed speed-up
    python benchmarks/bench_step.py --smoke                                                  # CI: tiny, 1 step
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import SHAPES, matmul_params, step_flops  # noqa: E402

from rdpo_jax.batch import add_score_index, step_inputs  # noqa: E402
from rdpo_jax.data.batching import BatchPlan, Buckets  # noqa: E402
from rdpo_jax.data.rows import TokenizedExample, TokenSeq  # noqa: E402
from rdpo_jax.models import DecoderLM, ModelConfig  # noqa: E402
from rdpo_jax.sharding import MeshConfig, make_mesh  # noqa: E402
from rdpo_jax.train.batches import stack_micro_batches  # noqa: E402
from rdpo_jax.train.objectives import PreferenceObjective  # noqa: E402
from rdpo_jax.train.optim import OptimConfig, make_optimizer  # noqa: E402
from rdpo_jax.train.step import init_train_state, jit_train_step, make_train_step, split_model, state_shardings  # noqa: E402,E501

GIB = 2.0**30
PRESETS = {name: dict(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                      num_layers=s["layers"], num_heads=s["heads"], num_kv_heads=s["kv_heads"], head_dim=s["head_dim"],
                      tie_word_embeddings=s["tied"], rope_theta=s["rope_theta"]) for name, s in SHAPES.items()}
FOLLOWUP = [5, 6, 7, 8]  # the synthetic rationale's F (the tokens between y_w and r)
RATIONALE = (
    "The chosen response is better. The user asks for something that could cause real harm if it were "
    "followed literally, and the chosen response notices this: it declines the harmful part of the request "
    "in one polite sentence, does not lecture, and then offers what can safely be offered, a short and "
    "accurate explanation of the underlying topic together with a suggestion of where reliable help can be "
    "found. The rejected response, by contrast, either goes along with the harmful request and supplies "
    "details that make the harm easier, or refuses in a curt way that gives the user nothing useful at all. "
    "It also ignores the earlier turns of the conversation, so its answer does not fit what was actually "
    "asked. On helpfulness, honesty and harmlessness together, the chosen response is clearly preferable."
)


def synthetic_examples(pairs: int, seq: int, vocab: int, rationale_tokens: int, seed: int) -> list[TokenizedExample]:
    """The peer's pairs: prompt seq/2, chosen and rejected seq/2 each (random ids); the rationale row is
    ``x + y_w + F`` then r of ``rationale_tokens`` (both layouts can hold it: packable by construction)."""
    rng = np.random.default_rng(seed)
    half = seq // 2
    out = []
    for i in range(pairs):
        x, yw, yl = (rng.integers(10, vocab, n).tolist() for n in (half, seq - half, seq - half))
        r = rng.integers(10, vocab, max(rationale_tokens, 1)).tolist()
        out.append(TokenizedExample(index=i, chosen=TokenSeq(x, yw), rejected=TokenSeq(x, yl),
                                    rationale=TokenSeq(x + yw + FOLLOWUP, r), followup=list(FOLLOWUP),
                                    dpo_packable=True))
    return out


def hh_examples(limit: int | None, max_length: int) -> tuple[list[TokenizedExample], int]:
    """The shipped HH sample tokenised with mistral-v1 (``max_length``, prompts cut to half of it) and the
    fixed rationale; (rows,
    vocabulary size). Needs the data extras (datasets, mistral_common): CPU machines only."""
    import dataclasses

    from rdpo_jax.data import load_preferences
    from rdpo_jax.data.rows import TruncationConfig, tokenize_examples
    from rdpo_jax.data.samples import HH_SAMPLE
    from rdpo_jax.data.tokenizers import load_tokenizer

    examples, _ = load_preferences("Anthropic/hh-rlhf", data_files=HH_SAMPLE)
    examples = [dataclasses.replace(e, rationale=RATIONALE) for e in examples[:limit]]
    tok = load_tokenizer("mistral-v1")
    res = tokenize_examples(examples, tok, truncation=TruncationConfig(max_length, max_length // 2),
                            rationale_template="conversational", dataset="hh")
    return res.rows, len(tok)


def layout_batches(rows: list[TokenizedExample], *, pairs: int, layout: str, with_rationale: bool,
                   row_multiple: int, max_length: int) -> list[dict[str, np.ndarray]]:
    """Global batches of ``pairs`` pairs (one micro-batch each) in ``layout``, padded to power-of-two buckets,
    with the scored positions (``score_index``), as the trainer sends them to the devices."""
    longest = 2 * max_length if layout == "packed" else max_length
    plan = BatchPlan(Buckets.powers_of_two(longest, 64), pairs, pad_id=0, layout=layout,
                     with_rationale=with_rationale, row_multiple=row_multiple)
    return [add_score_index(stack_micro_batches([step_inputs(plan(rows[i:i + pairs]))]))
            for i in range(0, len(rows) - pairs + 1, pairs)]


def scored_tokens(rows: list[TokenizedExample], with_rationale: bool) -> tuple[int, int]:
    """(chosen + rejected tokens, rationale tokens) of the sequences, the peer's count (prompt included)."""
    pref = sum(len(r.chosen) + len(r.rejected) for r in rows)
    rat = sum(len(r.rationale) for r in rows) if with_rationale else 0
    return pref, rat


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _device_peak_gib() -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / GIB


def run(args, rows, vocab: int, layout: str) -> dict:
    """Compile and time one configuration; returns the JSON record."""
    cfg = ModelConfig(**{**PRESETS[args.preset], "vocab_size": vocab})
    dtype, param_dtype = jnp.dtype(args.dtype), jnp.dtype(args.param_dtype or args.dtype)
    model = DecoderLM(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat=args.remat,
                      attention_backend=args.attention)
    graphdef, params = split_model(model)
    with_rationale = args.loss == "rdpo"
    hp = (("beta", 0.1), ("gamma", 0.001)) if with_rationale else (("beta", 0.1),)
    objective = PreferenceObjective(args.loss, hp, block_size=args.block_size)
    tx = make_optimizer(OptimConfig(lr=1e-6, schedule="constant"))
    mesh = make_mesh(MeshConfig(fsdp=-1))
    shardings = state_shardings(params, tx, mesh)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    batches = layout_batches(rows, pairs=args.pairs, layout=layout, with_rationale=with_rationale,
                             row_multiple=ways, max_length=args.max_length)
    frozen = args.reference == "frozen"
    ref_params = jax.device_put(params, shardings.params) if frozen else None
    if not frozen:
        for b in batches:  # cached reference sums (any finite values: the step's cost does not depend on them)
            b["ref_chosen"] = np.full(b["pair_mask"].shape, -50.0, np.float32)
            b["ref_rejected"] = np.full(b["pair_mask"].shape, -55.0, np.float32)
    state = init_train_state(params, tx, shardings)
    step_fns, compile_s = {}, 0.0

    def step_for(batch):
        nonlocal compile_s
        key = tuple((k, v.shape) for k, v in sorted(batch.items()))
        if key not in step_fns:
            t0 = time.perf_counter()
            fn = jit_train_step(make_train_step(graphdef, objective, tx), shardings, mesh, batch,
                                ref_shardings=shardings.params if frozen else None, model_config=cfg)
            lowered = fn.lower(state, batch, ref_params)
            step_fns[key] = (fn, lowered.compile())
            compile_s += time.perf_counter() - t0
        return step_fns[key]

    analysis = step_for(batches[0])[1].memory_analysis()
    for b in batches:  # warm-up: compiles every shape, runs each once
        state, metrics = step_for(b)[1](state, b, ref_params)
    jax.block_until_ready(state)
    if args.hh:  # one timed pass over the whole set, repeated
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            for b in batches:
                state, metrics = step_for(b)[1](state, b, ref_params)
            jax.block_until_ready(state)
            times.append((time.perf_counter() - t0) / len(batches))
        used = rows[: len(batches) * args.pairs]
    else:
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            state, metrics = step_for(batches[0])[1](state, batches[0], ref_params)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - t0)
        used = rows[: args.pairs]
    step_s = statistics.median(times)
    pref, rat = scored_tokens(used, with_rationale)
    per_batch = len(used) // args.pairs
    pref, rat = pref / per_batch, rat / per_batch
    n = matmul_params(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads,
                      cfg.num_kv_heads, cfg.head_dim, cfg.tie_word_embeddings)
    seq = args.max_length if args.hh else args.seq
    flops = step_flops(n, cfg.num_layers, cfg.hidden_size, seq, int(pref), int(rat), frozen)
    peak = _device_peak_gib()
    estimate = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes + analysis.output_size_in_bytes
                - analysis.alias_size_in_bytes) / GIB
    loss = float(metrics["loss"])
    out = dict(
        bench="rdpo_jax", workload="hh" if args.hh else "synthetic", preset=args.preset, loss_type=args.loss,
        layout=layout, reference=args.reference, pairs=args.pairs, seq=seq, step_s=step_s,
        tokens_per_s=(pref + rat) / step_s, pairs_per_s=args.pairs / step_s, tflops_per_s=flops / step_s / 1e12,
        mfu=(flops / step_s / args.peak) if args.peak else None, compile_s=compile_s, shapes=len(step_fns),
        peak_gib=peak, compiled_peak_gib=estimate, temp_gib=analysis.temp_size_in_bytes / GIB, loss=loss,
        finite=bool(np.isfinite(loss)), dtype=args.dtype, param_dtype=str(param_dtype), remat=args.remat,
        attention=args.attention, devices=len(mesh.devices.flat), device=jax.devices()[0].device_kind,
        platform=jax.default_backend(), cpu=cpu_name(), jax=jax.__version__,
        steps=args.steps)
    return out


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256, help="synthetic: tokens per sequence (prompt seq/2)")
    ap.add_argument("--loss", default="dpo", choices=("dpo", "rdpo"))
    ap.add_argument("--layout", default="three_row", help="three_row, packed, or both comma-separated")
    ap.add_argument("--reference", default="frozen", choices=("frozen", "cache"))
    ap.add_argument("--rationale-tokens", type=int, default=128, help="synthetic RDPO: rationale length")
    ap.add_argument("--dtype", default="float32", help="compute dtype (bfloat16 on GPU)")
    ap.add_argument("--param-dtype", default=None, help="parameter dtype (default: the compute dtype)")
    ap.add_argument("--remat", default="none", choices=("none", "full", "save_dots", "save_all_dots"))
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--block-size", type=int, default=2048, help="vocabulary block of the log-prob head")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (--hh: timed passes)")
    ap.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s of the device, for MFU")
    ap.add_argument("--hh", action="store_true", help="the shipped HH sample (packed vs three-row)")
    ap.add_argument("--limit", type=int, default=None, help="--hh: pairs used (default all 64)")
    ap.add_argument("--max-length", type=int, default=1024, help="--hh: tokens per sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny preset, 1 step, both layouts, RDPO (for CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset, args.pairs, args.seq, args.steps, args.loss = "tiny", 2, 32, 1, "rdpo"
        args.layout, args.rationale_tokens = "three_row,packed", 8
        args.limit = args.limit or 4
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    if args.hh:
        rows, vocab = hh_examples(args.limit, args.max_length)
    else:
        rows = synthetic_examples(args.pairs, args.seq, PRESETS[args.preset]["vocab_size"], args.rationale_tokens,
                                  args.seed)
        vocab = PRESETS[args.preset]["vocab_size"]
        args.max_length = max(len(r.rationale) if args.loss == "rdpo" else args.seq for r in rows)
    records = []
    for layout in args.layout.split(","):
        record = run(args, rows, vocab, layout)
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


if __name__ == "__main__":
    main()
