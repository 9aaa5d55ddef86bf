"""Memory of the log-prob head, forward + backward: plain [B,T,V] logits against the vocabulary-blocked
online-logsumexp path with a custom VJP (rdpo_jax.logprobs.token_logps_from_hidden).

Compiles (does not run) `value_and_grad` of sum(masked token log-probs) w.r.t. hidden and the head and
prints `memory_analysis()` temporaries. Default shape: B=16, T=1024, V=128,256, d=2048 (Llama-3.2-1B head).

usage: python benchmarks/bench_logprob_head.py [--batch 16 --seq 1024 --vocab 128256 --width 2048]
                                                [--block-sizes 2048,4096,8192]
"""
from __future__ import annotations

import argparse
import json
import platform

import jax
import jax.numpy as jnp

from rdpo_jax.logprobs import sequence_logps, token_logps, token_logps_from_hidden

GIB = 2.0**30


def _objective(head_fn):
    def f(hidden, head, targets, mask):
        return sequence_logps(head_fn(hidden, head, targets), mask)[0].sum()
    return jax.value_and_grad(f, argnums=(0, 1))


def compiled_temp_gib(head_fn, shapes, dtype) -> float:
    (b, t, d, v), layout = shapes
    head_shape = (d, v) if layout == "dv" else (v, d)
    args = (jax.ShapeDtypeStruct((b, t, d), dtype), jax.ShapeDtypeStruct(head_shape, dtype),
            jax.ShapeDtypeStruct((b, t), jnp.int32), jax.ShapeDtypeStruct((b, t), jnp.bool_))
    compiled = jax.jit(_objective(head_fn)).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes / GIB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--block-sizes", default="2048,4096,8192")
    a = ap.parse_args()
    dims = (a.batch, a.seq, a.width, a.vocab)
    print(f"# device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), "
          f"jax {jax.__version__}; B={a.batch} T={a.seq} d={a.width} V={a.vocab}")
    rows = []
    for dtype in (jnp.float32, jnp.bfloat16):
        name = jnp.dtype(dtype).name
        plain = compiled_temp_gib(lambda h, w, t: token_logps(h @ w, t), (dims, "dv"), dtype)
        rows.append(dict(dtype=name, head="plain [B,T,V] logits", layout="dv", temp_gib=round(plain, 3)))
        for layout in ("dv", "vd"):
            for bs in (int(x) for x in a.block_sizes.split(",")):
                fn = lambda h, w, t, bs=bs, lay=layout: token_logps_from_hidden(h, w, t, block_size=bs, layout=lay)
                gib = compiled_temp_gib(fn, (dims, layout), dtype)
                rows.append(dict(dtype=name, head=f"blocked {bs}", layout=layout, temp_gib=round(gib, 3)))
    for r in rows:
        print(f"{r['dtype']:>9}  {r['head']:<22} layout={r['layout']}  temporaries {r['temp_gib']:7.3f} GiB")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
