"""Compile time of forward+backward for 2 and 32 layers of the same small width (scan over layers).

With the layers stacked and run under ``jax.lax.scan`` the compiled program does not grow with depth, so
32 layers should compile in about the time of 2 (target: ratio <= 1.5). ``--unrolled`` also times the
Python-loop version for contrast. Prints the numbers; not a test.

    python benchmarks/bench_compile_layers.py [--remat save_dots] [--unrolled] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from rdpo_jax.models import DecoderLM, ModelConfig


def compile_seconds(num_layers: int, *, remat: str, scan_layers: bool, batch: int, seq: int) -> float:
    """Wall time of ``jit(value_and_grad(loss)).lower(...).compile()`` on abstract inputs (no init)."""
    cfg = ModelConfig(vocab_size=1024, hidden_size=256, intermediate_size=688, num_layers=num_layers,
                      num_heads=4, num_kv_heads=2, head_dim=64)
    model = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0), remat=remat, scan_layers=scan_layers))
    graphdef, state = nnx.split(model)
    ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)

    def loss(state, ids):
        logits = nnx.merge(graphdef, state)(ids)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    fn = jax.jit(jax.value_and_grad(loss))
    t0 = time.perf_counter()
    fn.lower(state, ids).compile()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--remat", default="none")
    p.add_argument("--unrolled", action="store_true", help="also time the unrolled (no scan) version")
    p.add_argument("--repeats", type=int, default=3, help="best of N compiles (cache cleared between)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    args = p.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; width 256, mlp 688, 4 heads (GQA 2), "
          f"vocab 1024, batch {args.batch} x {args.seq}, remat {args.remat!r}")
    modes = [True, False] if args.unrolled else [True]
    for scan in modes:
        times = {}
        for n in (2, 32):
            best = float("inf")
            for _ in range(args.repeats):
                jax.clear_caches()
                best = min(best, compile_seconds(n, remat=args.remat, scan_layers=scan, batch=args.batch,
                                                 seq=args.seq))
            times[n] = best
        label = "scan" if scan else "unrolled"
        print(f"{label:9s} fwd+bwd compile: 2 layers {times[2]:.3f} s, 32 layers {times[32]:.3f} s, "
              f"ratio {times[32] / times[2]:.2f}")


if __name__ == "__main__":
    main()
