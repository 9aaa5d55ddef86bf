"""Training-step FLOPs of the DPO/RDPO workload, the one formula both sides of the comparison use.

For T tokens of sequences of length S, N parameters touched by matmuls (the LM head once, the embedding
lookup not), L layers of width d:

    FLOPs = T_pref (6 N + 12 L d S)  +  T_pref (2 N + 4 L d S) [frozen reference]  +  T_rat (6 N + 12 L d S)

(forward 2 N + 4 L d S per token, attention counted unmasked; forward + backward three times that; the
frozen reference scores the chosen and rejected tokens with a forward only; a cached reference costs
nothing; rationale tokens are policy-only). With a frozen reference and no rationale this is
``T (8 N + 16 L d S)``. No jax or torch here, so the PyTorch peer imports it too, and the model shapes
both sides run (:data:`SHAPES`) are declared here once.
"""
from __future__ import annotations

#: name -> (vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, tied embeddings, rope theta)
SHAPES: dict[str, dict] = {
    "tiny": dict(vocab=256, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, tied=True,
                 rope_theta=10000.0),
    "small": dict(vocab=32000, hidden=256, intermediate=688, layers=4, heads=8, kv_heads=4, head_dim=32, tied=False,
                  rope_theta=10000.0),  # the CPU comparison's small Llama
    "llama-1b": dict(vocab=128256, hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, head_dim=64,
                     tied=True, rope_theta=500000.0),  # Llama-3.2-1B
    "llama-8b": dict(vocab=128256, hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                     tied=False, rope_theta=500000.0),  # Llama-3.1-8B
}


def matmul_params(vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                  head_dim: int, tied: bool) -> int:
    """N: parameters touched by matmuls (attention and MLP projections of every layer, the LM head once)."""
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o and k, v
    mlp = 3 * hidden * intermediate
    return layers * (attn + mlp) + vocab * hidden  # tied or not, the head matmul is counted once


def step_flops(n_params: int, layers: int, hidden: int, seq: int, preference_tokens: int,
               rationale_tokens: int = 0, frozen_reference: bool = True) -> float:
    """FLOPs of one step by the module formula."""
    per_token_fwd = 2 * n_params + 4 * layers * hidden * seq
    flops = preference_tokens * 3 * per_token_fwd + rationale_tokens * 3 * per_token_fwd
    if frozen_reference:
        flops += preference_tokens * per_token_fwd
    return float(flops)
