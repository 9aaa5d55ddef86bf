"""Architecture config of the Llama/Mistral decoder family, read from and written to a HF ``config.json``.

One frozen dataclass, :class:`ModelConfig`, covers Llama 2, Llama 3 / 3.1 / 3.2 and Mistral v0.1-v0.3.
Every field of a HF config is either mapped, known to be harmless (token ids, ``use_cache``, ...), or
rejected with a message that names the field and says what is accepted. Unknown fields give a warning.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Any

import numpy as np

from rdpo_jax.errors import ConfigError

SUPPORTED_MODEL_TYPES = ("llama", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_ROPE_KEYS = {
    "default": {"rope_type", "type", "rope_theta"},
    "linear": {"rope_type", "type", "rope_theta", "factor"},
    "llama3": {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"},
}
# Fields that do not change the forward pass of an inference/training model (or are handled elsewhere).
_HARMLESS = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings",
    "_name_or_path", "pretraining_tp", "tie_word_embeddings", "output_attentions", "output_hidden_states",
    "return_dict", "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder",
    "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "finetuning_task", "tf_legacy_loss", "use_bfloat16", "add_cross_attention", "cross_attention_hidden_size",
    "is_decoder", "pruned_heads", "torchscript", "max_length", "num_labels", "layer_types",
}
_MAPPED = {
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "sliding_window", "hidden_act", "attention_bias", "mlp_bias", "attention_dropout",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one Llama/Mistral decoder (hashable, so it can be a static jit argument).

    ``rope_type`` is one of ``default``, ``linear`` (inverse frequencies divided by ``rope_factor``) and
    ``llama3`` (the Llama 3.1 band-wise scheme); ``sliding_window`` W lets a query at position p see keys
    at positions p-W+1 .. p (W keys including itself), ``None`` means full causal attention.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    model_type: str = "llama"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2
    pad_token_id: int | None = None
    generation_eos_token_id: int | tuple[int, ...] | None = None  # from generation_config.json, if any

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """All end-of-sequence ids (config.json's ``eos_token_id`` then generation_config.json's, deduplicated;
        Llama 3 Instruct stops on several)."""
        out: list[int] = []
        for value in (self.eos_token_id, self.generation_eos_token_id):
            for i in (value if isinstance(value, tuple | list) else () if value is None else (value,)):
                if int(i) not in out:
                    out.append(int(i))
        return tuple(out)

    @property
    def generation_pad_id(self) -> int:
        """Pad id written after a row's EOS by generation: ``pad_token_id``, else the first EOS id, else 0."""
        if self.pad_token_id is not None:
            return int(self.pad_token_id)
        eos = self.eos_token_ids
        return eos[0] if eos else 0

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model_type={self.model_type!r} is not supported; accepted: {SUPPORTED_MODEL_TYPES}")
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ConfigError(f"rope type {self.rope_type!r} is not supported; accepted: {SUPPORTED_ROPE_TYPES}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_heads} must be a multiple of num_key_value_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(f"sliding_window={self.sliding_window} must be a positive integer or null")

    # ----------------------------------------------------------------------------------------------- HF in
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> ModelConfig:
        """Parse a HF ``config.json`` dict (transformers 4 ``rope_scaling`` or 5 ``rope_parameters`` form).

        Raises :class:`ConfigError` naming the field for any value that would change the forward pass and
        is not implemented (``hidden_act`` other than silu, biases, dropout, other rope types, ...).
        """
        mt = hf.get("model_type")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"config field model_type={mt!r} is not supported; accepted: {SUPPORTED_MODEL_TYPES}")
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                      "num_attention_heads"):
            if field not in hf:
                raise ConfigError(f"config field {field!r} is missing")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"config field hidden_act={act!r} is not supported; accepted: 'silu'")
        for field in ("attention_bias", "mlp_bias"):
            if hf.get(field, False):
                raise ConfigError(f"config field {field}={hf[field]!r} is not supported; accepted: false")
        if float(hf.get("attention_dropout", 0.0) or 0.0) != 0.0:
            raise ConfigError(f"config field attention_dropout={hf['attention_dropout']!r} is not supported; "
                              "accepted: 0.0")
        if hf.get("quantization_config") is not None:
            raise ConfigError("config field quantization_config is not supported; accepted: absent")
        if mt == "llama" and hf.get("sliding_window") is not None:
            raise ConfigError(f"config field sliding_window={hf['sliding_window']!r} is not supported for "
                              "model_type 'llama'; accepted: null (use model_type 'mistral')")
        unknown = sorted(set(hf) - _HARMLESS - _MAPPED - {"quantization_config"})
        if unknown:
            warnings.warn(f"config fields {unknown} are not used by rdpo_jax's Llama/Mistral port", stacklevel=2)

        rope = _parse_rope(hf)
        heads = int(hf["num_attention_heads"])
        kv = hf.get("num_key_value_heads")
        head_dim = hf.get("head_dim") or int(hf["hidden_size"]) // heads
        eos = hf.get("eos_token_id", 2)
        return cls(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(kv) if kv is not None else heads,
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            sliding_window=(int(hf["sliding_window"]) if hf.get("sliding_window") is not None else None),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            model_type=mt,
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=hf.get("pad_token_id"),
            **rope,
        )

    @classmethod
    def from_pretrained_dir(cls, path: str | os.PathLike) -> ModelConfig:
        """Read ``<path>/config.json`` and parse it with :meth:`from_hf_config`; EOS ids of
        ``<path>/generation_config.json`` (when present) go to ``generation_eos_token_id``."""
        with open(os.path.join(path, "config.json")) as f:
            cfg = cls.from_hf_config(json.load(f))
        gen_path = os.path.join(path, "generation_config.json")
        if os.path.exists(gen_path):
            with open(gen_path) as f:
                eos = json.load(f).get("eos_token_id")
            if eos is not None:
                eos = tuple(int(i) for i in eos) if isinstance(eos, list) else int(eos)
                cfg = dataclasses.replace(cfg, generation_eos_token_id=eos)
        return cfg

    # ---------------------------------------------------------------------------------------------- HF out
    def to_hf_config(self) -> dict[str, Any]:
        """The transformers-5 ``config.json`` dict (``rope_parameters`` form) of this architecture."""
        rope: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_type in ("linear", "llama3"):
            rope["factor"] = self.rope_factor
        if self.rope_type == "llama3":
            rope.update(low_freq_factor=self.rope_low_freq_factor, high_freq_factor=self.rope_high_freq_factor,
                        original_max_position_embeddings=self.rope_original_max_position)
        arch = "LlamaForCausalLM" if self.model_type == "llama" else "MistralForCausalLM"
        out: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "attention_dropout": 0.0,
            "use_cache": True,
        }
        if self.model_type == "llama":
            out.update(attention_bias=False, mlp_bias=False)
        else:
            out["sliding_window"] = self.sliding_window
        return out

    # ------------------------------------------------------------------------------------------------ RoPE
    def rope_inv_freq(self) -> np.ndarray:
        """Inverse frequencies ``inv_freq[i]``, i < head_dim/2, float32, as transformers computes them.

        default: ``theta^(-2i/D)``; linear: that divided by ``factor``; llama3 with wavelength
        ``w = 2 pi / f``: ``f`` if ``w < L/high``, ``f/factor`` if ``w > L/low``, otherwise
        ``(1-s) f/factor + s f`` with ``s = (L/w - low)/(high - low)``, L the original context length.
        """
        d = self.head_dim
        inv = 1.0 / (self.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        if self.rope_type == "linear":
            inv = inv / self.rope_factor
        elif self.rope_type == "llama3":
            factor, low, high = self.rope_factor, self.rope_low_freq_factor, self.rope_high_freq_factor
            old = self.rope_original_max_position
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > old / low, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old / high) & ~(wavelen > old / low)
            inv = np.where(medium, smoothed, scaled)
        return inv.astype(np.float32)


def _parse_rope(hf: dict[str, Any]) -> dict[str, Any]:
    """Map ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling`` onto ModelConfig fields."""
    params = hf.get("rope_parameters")
    field = "rope_parameters"
    if params is None:
        params = dict(hf.get("rope_scaling") or {})
        field = "rope_scaling"
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    elif not isinstance(params, dict) or "rope_theta" not in params and "rope_type" not in params:
        raise ConfigError(f"config field rope_parameters={params!r} is not supported (per-layer-type rope "
                          "parameters); accepted: one dict with rope_type and rope_theta")
    params = dict(params)
    if "rope_theta" not in params:
        params["rope_theta"] = hf.get("rope_theta", 10000.0)
    rtype = params.get("rope_type", params.get("type", "default"))
    if rtype not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"config field {field} has rope type {rtype!r}, which is not supported; "
                          f"accepted: {SUPPORTED_ROPE_TYPES}")
    extra = sorted(k for k in set(params) - _ROPE_KEYS[rtype] if params[k] is not None)
    if "partial_rotary_factor" in extra and float(params["partial_rotary_factor"]) == 1.0:
        extra.remove("partial_rotary_factor")
    if extra:
        raise ConfigError(f"config field {field} has keys {extra} that are not supported for rope type "
                          f"{rtype!r}; accepted keys: {sorted(_ROPE_KEYS[rtype])}")
    out: dict[str, Any] = {"rope_type": rtype, "rope_theta": float(params["rope_theta"])}
    if rtype in ("linear", "llama3"):
        if "factor" not in params:
            raise ConfigError(f"config field {field} with rope type {rtype!r} needs 'factor'")
        out["rope_factor"] = float(params["factor"])
    if rtype == "llama3":
        for key, name in (("low_freq_factor", "rope_low_freq_factor"), ("high_freq_factor", "rope_high_freq_factor"),
                          ("original_max_position_embeddings", "rope_original_max_position")):
            if key not in params:
                raise ConfigError(f"config field {field} with rope type 'llama3' needs {key!r}")
            out[name] = params[key]
        out["rope_original_max_position"] = int(out["rope_original_max_position"])
        out["rope_low_freq_factor"] = float(out["rope_low_freq_factor"])
        out["rope_high_freq_factor"] = float(out["rope_high_freq_factor"])
    return out
