"""The PyTorch peer: one DPO training step the way a PyTorch + transformers user runs it, on the same
workload as ``bench_step.py`` (random tokens, every sequence ``--seq`` long with a prompt of ``seq / 2``;
chosen and rejected concatenated in one forward, a frozen reference forward under ``no_grad``, the sigmoid
DPO loss with beta 0.1, AdamW), on transformers' ``LlamaForCausalLM`` with random weights and SDPA attention.
One JSON line: tokens/s (2 x pairs x seq per step), FLOPs by ``benchmarks/flops.py``, peak memory.

    python benchmarks/torch_peer.py --preset small --pairs 4 --seq 256          # CPU, float32, eager
    python benchmarks/torch_peer.py --preset llama-1b --pairs 8 --seq 1024 --compile --peak 989e12   # GPU, bf16
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import SHAPES, matmul_params, step_flops  # noqa: E402

PRESETS = {name: dict(hidden_size=s["hidden"], intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                      num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
                      vocab_size=s["vocab"], tie_word_embeddings=s["tied"], rope_theta=s["rope_theta"])
           for name, s in SHAPES.items()}  # bench_step's shapes, in transformers' names


def sequence_logps(model, ids, mask, prompt_len):
    """Summed log-probs of the completion tokens (after the prompt) of each row: float32 [rows]."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    lp = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    scored = mask[:, 1:].clone()
    scored[:, : prompt_len - 1] = 0
    return (lp * scored).sum(-1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s of the device, for MFU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the policy and the reference")
    ap.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0: torch's default)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    cfg = LlamaConfig(**PRESETS[a.preset], max_position_embeddings=max(4096, a.seq), attn_implementation="sdpa")
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        policy = LlamaForCausalLM(cfg)
    reference = copy.deepcopy(policy).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    if a.compile:
        policy, reference = torch.compile(policy), torch.compile(reference)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=(dev == "cuda"))
    b, s = a.pairs, a.seq
    prompt_len = s // 2
    ids = torch.randint(0, cfg.vocab_size, (2 * b, s), device=dev)
    mask = torch.ones_like(ids)

    def step():
        with torch.no_grad():
            ref = sequence_logps(reference, ids, mask, prompt_len)
        pol = sequence_logps(policy, ids, mask, prompt_len)
        margin = 0.1 * ((pol[:b] - ref[:b]) - (pol[b:] - ref[b:]))
        loss = -F.logsigmoid(margin).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        if dev == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    n = matmul_params(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                      cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                      cfg.tie_word_embeddings)
    tokens = 2 * b * s
    flops = step_flops(n, cfg.num_hidden_layers, cfg.hidden_size, s, tokens)
    out = dict(bench="torch_peer", preset=a.preset, loss_type="dpo", pairs=b, seq=s, step_s=step_s,
               tokens_per_s=tokens / step_s, pairs_per_s=b / step_s, tflops_per_s=flops / step_s / 1e12,
               mfu=(flops / step_s / a.peak) if a.peak else None, loss=float(loss.detach()),
               peak_gib=(torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None),
               compile=a.compile, threads=torch.get_num_threads(), torch=torch.__version__,
               device=(torch.cuda.get_device_name() if dev == "cuda" else "cpu"), steps=a.steps)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
