"""rdpo_jax: preference optimisation with rationales (RDPO, RORPO, RSimPO and the DPO family) in JAX/Flax.

The losses (`rdpo_jax.losses`) are pure functions of per-sequence log-prob sums; `rdpo_jax.logprobs`
turns model outputs into those sums without materialising [B, T, V] float32 logits.
"""

__version__ = "0.1.0"
