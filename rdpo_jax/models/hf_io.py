"""Import and export of Hugging Face Llama/Mistral checkpoint directories (config.json + safetensors).

Import streams tensor by tensor: each checkpoint tensor is read into host memory, converted to our layout
and dtype, placed on device(s) (as its shards when a mesh is given) and dropped before the next one is
read. Stacked layer parameters are allocated on device and filled one layer at a time, so neither a
full model nor one parameter's full stack of layers is ever held on the host.
Export writes safetensors shards (with an index when more than one) tensor by tensor and copies the
tokenizer / generation files of the source directory.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rdpo_jax.models import safetensors_io
from rdpo_jax.models.config import ModelConfig
from rdpo_jax.models.decoder import DecoderLM, layer_param_shapes
from rdpo_jax.models.partitioning import spec_for

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json", "chat_template.jinja", "chat_template.json", "added_tokens.json")

# our layer parameter -> HF tensor name (under model.layers.{i}.)
_HF_LAYER = {
    "input_norm": "input_layernorm.weight",
    "q_proj": "self_attn.q_proj.weight",
    "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight",
    "o_proj": "self_attn.o_proj.weight",
    "post_attn_norm": "post_attention_layernorm.weight",
    "gate_proj": "mlp.gate_proj.weight",
    "up_proj": "mlp.up_proj.weight",
    "down_proj": "mlp.down_proj.weight",
}
_HF_TOP = {"embed_tokens": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}


def to_ours(name: str, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """HF ``nn.Linear`` weight [out, in] -> our kernel: ``W.T`` reshaped to ``shape`` (norms, embedding as is).

    q/k/v: [H*D, d] -> [d, H, D]; o: [d, H*D] -> [H, D, d]; gate/up: [F, d] -> [d, F]; down: [d, F] -> [F, d];
    lm_head: [V, d] -> [d, V].
    """
    if name.endswith("norm") or name == "embed_tokens":
        return w.reshape(shape)
    return w.T.reshape(shape)


def hf_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the HF tensor for our parameter ``name`` of (per-layer) shape ``shape``."""
    if name.endswith("norm") or name == "embed_tokens":
        return tuple(shape)
    if name == "o_proj":
        return (shape[-1], int(np.prod(shape[:-1])))
    return (int(np.prod(shape[1:])), shape[0])


def to_hf(name: str, w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_ours`: our kernel [in..., out...] -> HF [out, in]."""
    if name.endswith("norm") or name == "embed_tokens":
        return w
    if name == "o_proj":
        return w.reshape(-1, w.shape[-1]).T
    return w.reshape(w.shape[0], -1).T


class _Checkpoint:
    """Tensor name -> file of a single-file or sharded (``model.safetensors.index.json``) checkpoint."""

    def __init__(self, path: str):
        index = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        elif os.path.exists(single):
            weight_map = dict.fromkeys(safetensors_io.SafetensorsFile(single).keys(), "model.safetensors")
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json "
                                    "(only safetensors checkpoints are supported)")
        self.path = path
        self.weight_map = weight_map
        self._files: dict[str, safetensors_io.SafetensorsFile] = {}

    def _file(self, name: str) -> safetensors_io.SafetensorsFile:
        fname = self.weight_map[name]
        if fname not in self._files:
            self._files[fname] = safetensors_io.SafetensorsFile(os.path.join(self.path, fname))
        return self._files[fname]

    def resolve(self, name: str) -> str:
        if name in self.weight_map:
            return name
        if name.startswith("model.") and name[6:] in self.weight_map:  # saved from the bare LlamaModel
            return name[6:]
        raise KeyError(f"{self.path}: checkpoint has no tensor {name!r}")

    def read(self, name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
        name = self.resolve(name)
        f = self._file(name)
        if int(np.prod(f.shape(name))) != int(np.prod(expected_shape)):
            raise ValueError(f"{self.path}: tensor {name!r} has shape {f.shape(name)}, expected "
                             f"{int(np.prod(expected_shape))} elements for our {expected_shape}")
        return safetensors_io.read_tensor(f, name)


class _Placer:
    """Puts host arrays on device: replicated/default device without a mesh, else as NamedSharding shards."""

    def __init__(self, mesh: Mesh | None, rules: Mapping[str, Sequence[str]] | None):
        self.mesh, self.rules = mesh, rules

    def sharding(self, names, shape):
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, spec_for(names, shape, self.mesh, self.rules))

    def put(self, host: np.ndarray, sharding) -> jax.Array:
        """Copy ``host`` to device(s); never aliases it (on CPU a zero-copy array would keep it alive)."""
        if sharding is None:
            return jnp.array(host, copy=True)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: np.array(host[idx]))

    def stacked(self, shape, dtype, names, fill: Callable[[int], np.ndarray]) -> jax.Array:
        """A [L, ...] array built on device, ``out[i] = fill(i)``, one layer on the host at a time."""
        sharding = self.sharding(names, shape)
        layer_sharding = None
        if sharding is not None:
            layer_sharding = NamedSharding(self.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
        out = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()
        update = _layer_updater(sharding)
        for i in range(shape[0]):
            host = fill(i)
            out = update(out, self.put(host, layer_sharding), i)
            del host
        return out


@functools.lru_cache(maxsize=64)
def _layer_updater(sharding):
    def update(stacked, layer, i):
        return jax.lax.dynamic_update_index_in_dim(stacked, layer.astype(stacked.dtype), i, 0)

    return jax.jit(update, donate_argnums=0, out_shardings=sharding)


def load_hf(
    path: str | os.PathLike,
    dtype=jnp.float32,
    mesh: Mesh | None = None,
    *,
    rules: Mapping[str, Sequence[str]] | None = None,
    compute_dtype=None,
    remat: str = "none",
    scan_layers: bool = True,
    attention_backend: str = "xla",
) -> DecoderLM:
    """Load a HF Llama/Mistral directory (config.json + safetensors, single or sharded) as a :class:`DecoderLM`.

    Parameters are stored in ``dtype`` (compute dtype ``compute_dtype``, default ``dtype``). With ``mesh``,
    each parameter is created directly as a global array with ``NamedSharding(mesh, spec_for(names, shape,
    mesh, rules))`` (see :data:`rdpo_jax.models.partitioning.DEFAULT_RULES`). Unsupported config values
    raise :class:`rdpo_jax.models.config.ConfigError` naming the field.
    """
    path = os.fspath(path)
    cfg = ModelConfig.from_pretrained_dir(path)
    ckpt = _Checkpoint(path)
    dtype = jnp.dtype(dtype)
    model = nnx.eval_shape(lambda: DecoderLM(
        cfg, rngs=nnx.Rngs(0), dtype=compute_dtype or dtype, param_dtype=dtype, remat=remat,
        scan_layers=scan_layers, attention_backend=attention_backend))
    placer = _Placer(mesh, rules)

    def host_tensor(our: str, hf_name: str, shape) -> np.ndarray:
        w = ckpt.read(hf_name, shape)
        return np.ascontiguousarray(to_ours(our, w, shape)).astype(dtype, copy=False)

    top = {"embed_tokens": ((cfg.vocab_size, cfg.hidden_size), ("vocab", "embed")),
           "norm": ((cfg.hidden_size,), ("embed",))}
    if not cfg.tie_word_embeddings:
        top["lm_head"] = ((cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))
    for our, (shape, names) in top.items():
        host = host_tensor(our, _HF_TOP[our], shape)
        getattr(model, our).set_value(placer.put(host, placer.sharding(names, shape)))
        del host
    for our, (shape, names) in layer_param_shapes(cfg).items():
        full = (cfg.num_layers, *shape)
        def fill(i, our=our, shape=shape):
            return host_tensor(our, f"model.layers.{i}.{_HF_LAYER[our]}", shape)

        value = placer.stacked(full, dtype, ("layers", *names), fill)
        getattr(model.layers, our).set_value(value)

    used = {ckpt.resolve(_HF_TOP[k]) for k in top}
    used |= {ckpt.resolve(f"model.layers.{i}.{v}") for i in range(cfg.num_layers) for v in _HF_LAYER.values()}
    extra = [k for k in ckpt.weight_map if k not in used and not k.endswith("rotary_emb.inv_freq")
             and not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if extra:
        warnings.warn(f"{path}: checkpoint tensors not used: {extra[:8]}{' ...' if len(extra) > 8 else ''}",
                      stacklevel=2)
    model.source_dir = path
    return model


def _host(x: jax.Array) -> np.ndarray:
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def save_hf(
    model: DecoderLM,
    path: str | os.PathLike,
    *,
    dtype=None,
    max_shard_size: int = 5 * 2**30,
    source_dir: str | os.PathLike | None = None,
) -> None:
    """Write a directory that ``transformers.AutoModelForCausalLM.from_pretrained`` loads.

    config.json (``model.config.to_hf_config()``), ``model.safetensors`` or ``model-0000i-of-0000n.safetensors``
    shards of at most ``max_shard_size`` bytes plus ``model.safetensors.index.json``, and the tokenizer /
    generation files found in ``source_dir`` (default: the directory the model was loaded from). Tensors
    are written in ``dtype`` (default: the parameters' dtype), one at a time.
    """
    path = os.fspath(path)
    cfg = model.config
    out_dtype = np.dtype(jnp.dtype(dtype if dtype is not None else model.embed_tokens[...].dtype))
    tensors: list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]] = []

    def add(hf_name, our, get):
        shape = hf_shape(our, get_shape(our))
        tensors.append((hf_name, shape, lambda: to_hf(our, _host(get())).astype(out_dtype)))

    def get_shape(our):
        if our in _HF_LAYER:
            return getattr(model.layers, our)[...].shape[1:]
        return getattr(model, our)[...].shape

    add(_HF_TOP["embed_tokens"], "embed_tokens", lambda: model.embed_tokens[...])
    for i in range(cfg.num_layers):
        for our, hf in _HF_LAYER.items():
            add(f"model.layers.{i}.{hf}", our, lambda our=our, i=i: getattr(model.layers, our)[...][i])
    add(_HF_TOP["norm"], "norm", lambda: model.norm[...])
    if model.lm_head is not None:
        add(_HF_TOP["lm_head"], "lm_head", lambda: model.lm_head[...])

    shards: list[list] = [[]]
    size = 0
    for t in tensors:
        nbytes = int(np.prod(t[1])) * out_dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nbytes

    if jax.process_index() == 0:
        os.makedirs(path, exist_ok=True)
    n = len(shards)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        getters = {name: get for name, _, get in shard}
        entries = [(name, shape, out_dtype) for name, shape, _ in shard]
        if jax.process_index() == 0:
            total += safetensors_io.write_safetensors(os.path.join(path, fname), entries,
                                                      lambda nm, getters=getters: getters[nm]())
        else:  # other hosts take part in the gathers only
            for _, _, get in shard:
                get()
        weight_map.update(dict.fromkeys(getters, fname))
    if jax.process_index() != 0:
        return
    index = os.path.join(path, "model.safetensors.index.json")
    if n > 1:
        with open(index, "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    elif os.path.exists(index):
        os.remove(index)
    hf_cfg = cfg.to_hf_config()
    hf_cfg["dtype"] = str(jnp.dtype(out_dtype).name)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    src = source_dir if source_dir is not None else getattr(model, "source_dir", None)
    if src is not None and os.path.abspath(src) != os.path.abspath(path):
        for fname in TOKENIZER_FILES:
            if os.path.exists(os.path.join(src, fname)):
                shutil.copyfile(os.path.join(src, fname), os.path.join(path, fname))
