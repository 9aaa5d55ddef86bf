"""Training-step FLOPs of the DPO/RDPO workload, the one formula both sides of the comparison use.

For T tokens of sequences of length S, N parameters touched by matmuls (the LM head once, the embedding
lookup not), L layers of width d:

    FLOPs = T_pref (6 N + 12 L d S)  +  T_pref (2 N + 4 L d S) [frozen reference]  +  T_rat (6 N + 12 L d S)

(forward 2 N + 4 L d S per token, attention counted unmasked; forward + backward three times that; the
frozen reference scores the chosen and rejected tokens with a forward only; a cached reference costs
nothing; rationale tokens are policy-only). With a frozen reference and no rationale this is
``T (8 N + 16 L d S)``. No jax or torch here, so the PyTorch peer imports it too.
"""
from __future__ import annotations


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
