"""cuDNN, blocked XLA and dense XLA attention through ``rdpo_jax.models.attend``: agreement (bf16) and timings.

Two masks on [B, T] rows with H query heads of D and KV key/value heads (default 16 x 2048, 32 heads of 64,
GQA 8 kv heads: the attention shape of Mistral-7B):

- ``causal``: plain causal rows (cuDNN uses its own causal mask, "xla-dense" a dense boolean mask, "xla" the
  same rule per block);
- ``tree``: rows packed with the docs/spec.md section 3 tree layout ``x | y_w | x_last', y_l`` repeated, plus tail
  padding, passed as an explicit boolean mask (cuDNN takes it as a bias).

For each it prints the max |cudnn - xla-dense| of the bf16 outputs and of the q/k/v gradients, each backend's
error against a float32 "xla-dense" reference, and the median forward and forward+backward times in ms.

  python benchmarks/bench_attention_gpu.py             # on a GPU
  python benchmarks/bench_attention_gpu.py --cpu-smoke # tiny sizes, the XLA backends only (cudnn needs a GPU)
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from rdpo_jax.models.attention import attend
from rdpo_jax.models.masks import AttentionMask


def tree_row(t: int, x: int, yw: int, yl: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One packed row of length t: (mask bool [t, t], positions [t], real 0/1 [t]) with as many
    ``x | y_w | x_last', y_l`` pairs as fit (each pair its own tree; the tail is padding)."""
    mask = np.zeros((t, t), bool)
    pos = np.zeros(t, np.int32)
    real = np.zeros(t, np.int32)
    per = x + yw + 1 + yl
    o = 0
    while o + per <= t:
        xs, ws, ls = slice(o, o + x), slice(o + x, o + x + yw), o + x + yw
        lsl = slice(ls + 1, ls + 1 + yl)
        causal = lambda n: np.tril(np.ones((n, n), bool))  # noqa: E731
        mask[xs, xs] = causal(x)
        mask[ws, xs] = True
        mask[ws, ws] = causal(yw)
        mask[ls, o:o + x - 1] = True
        mask[ls, ls] = True
        mask[lsl, o:o + x - 1] = True
        mask[lsl, ls] = True
        mask[lsl, lsl] = causal(yl)
        pos[xs] = np.arange(x)
        pos[ws] = np.arange(x, x + yw)
        pos[ls] = x - 1
        pos[lsl] = np.arange(x, x + yl)
        real[o:o + per] = 1
        o += per
    mask[o:, o:] = np.eye(t - o, dtype=bool)  # padding tokens see themselves only
    return mask, pos, real


def _time(fn, *args, iters: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def run(b: int, t: int, h: int, kv: int, d: int, iters: int, dtype) -> list[dict]:
    on_gpu = jax.default_backend() == "gpu"
    rng = np.random.RandomState(0)
    q32, k32, v32 = (jnp.asarray(rng.randn(b, t, n, d), jnp.float32) for n in (h, kv, kv))
    ct = jnp.asarray(rng.randn(b, t, h, d), jnp.float32)
    q, k, v = (x.astype(dtype) for x in (q32, k32, v32))
    ar = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    tm, tp, treal = tree_row(t, x=t // 8, yw=t // 12, yl=t // 12)
    masks = {
        "causal": AttentionMask(q_positions=ar, k_positions=ar, plain_causal=True),
        "tree": AttentionMask(q_positions=jnp.broadcast_to(jnp.asarray(tp), (b, t)),
                              k_positions=jnp.broadcast_to(jnp.asarray(tp), (b, t)),
                              padding_mask=None, explicit_mask=jnp.broadcast_to(jnp.asarray(tm), (b, t, t))),
    }
    real = {"causal": np.ones((b, t), bool), "tree": np.broadcast_to(treal.astype(bool), (b, t))}
    rows = []
    for name, mask in masks.items():
        def fwd(q, k, v, backend, mask=mask):
            return attend(q, k, v, mask, backend=backend)

        def fwd_bwd(q, k, v, backend, mask=mask):
            def loss(q, k, v):
                return jnp.sum(fwd(q, k, v, backend).astype(jnp.float32) * ct)
            return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

        backends = ("xla-dense", "xla", "cudnn") if on_gpu else ("xla-dense", "xla")
        f = {be: jax.jit(lambda q, k, v, be=be: fwd(q, k, v, be)) for be in backends}
        g = {be: jax.jit(lambda q, k, v, be=be: fwd_bwd(q, k, v, be)) for be in backends}
        r = real[name]
        ref_out = np.asarray(f["xla-dense"](q32, k32, v32))[r]
        ref_grads = [np.asarray(x) for x in g["xla-dense"](q32, k32, v32)]
        out = {"mask": name, "shape": f"{b}x{t}, {h} heads of {d}, {kv} kv heads", "dtype": jnp.dtype(dtype).name}
        res = {}
        for be in backends:
            o = np.asarray(f[be](q, k, v).astype(jnp.float32))[r]
            gr = [np.asarray(x.astype(jnp.float32)) for x in g[be](q, k, v)]
            res[be] = (o, gr)
            out[f"{be}_vs_fp32_out"] = float(np.abs(o - ref_out).max())
            out[f"{be}_vs_fp32_grad"] = float(max(np.abs(a - b_).max() / np.abs(b_).max()
                                                  for a, b_ in zip(gr, ref_grads, strict=True)))
            out[f"{be}_fwd_ms"] = _time(f[be], q, k, v, iters=iters)
            out[f"{be}_fwd_bwd_ms"] = _time(g[be], q, k, v, iters=iters)
        if on_gpu:
            (ox, gx), (oc, gc) = res["xla-dense"], res["cudnn"]
            out["max_abs_diff_out"] = float(np.abs(oc - ox).max())
            out["max_rel_diff_grad"] = float(max(np.abs(a - b_).max() / np.abs(b_).max()
                                                 for a, b_ in zip(gc, gx, strict=True)))
        else:
            out["cudnn"] = f"skipped: platform is {jax.default_backend()!r}, cuDNN needs a GPU"
        rows.append(out)
        print(json.dumps(out), flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes; XLA only off GPU")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args(argv)
    if a.cpu_smoke:
        a.batch, a.seq, a.heads, a.kv_heads, a.head_dim, a.iters = 2, 128, 4, 2, 16, 2
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}", flush=True)
    run(a.batch, a.seq, a.heads, a.kv_heads, a.head_dim, a.iters, jnp.bfloat16)


if __name__ == "__main__":
    main()
