"""Flax NNX ports of Llama and Mistral (one decoder family), attention backends, HF config/safetensors import
and export, KV-cache generation."""
from rdpo_jax.models.attention import attend
from rdpo_jax.models.config import ConfigError, ModelConfig
from rdpo_jax.models.decoder import DecoderLM
from rdpo_jax.models.decoding import generate
from rdpo_jax.models.hf_io import load_hf, save_hf
from rdpo_jax.models.masks import AttentionMask, make_attention_mask
from rdpo_jax.models.partitioning import DEFAULT_RULES, logical_axes, named_shardings, spec_for

__all__ = [
    "AttentionMask",
    "DEFAULT_RULES",
    "ConfigError",
    "DecoderLM",
    "ModelConfig",
    "attend",
    "generate",
    "load_hf",
    "logical_axes",
    "make_attention_mask",
    "named_shardings",
    "save_hf",
    "spec_for",
]
