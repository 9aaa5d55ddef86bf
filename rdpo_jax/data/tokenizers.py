"""Real tokenizers without network: Llama 3 and Mistral (v1, v3) from the files inside PyPI packages.

- ``"llama3"``: ``llama_models/llama3/tokenizer.model`` (tiktoken BPE, 128,000 ranks) converted with
  transformers' ``TikTokenConverter``; the 256 special tokens of ``llama_models``' ``Tokenizer`` follow at ids
  128,000-128,255 (``<|begin_of_text|>`` 128000, ``<|end_of_text|>`` 128001, ``<|start_header_id|>`` 128006,
  ``<|end_header_id|>`` 128007, ``<|eom_id|>`` 128008, ``<|eot_id|>`` 128009, ``<|reserved_special_token_k|>``).
  ``bos_token`` ``<|begin_of_text|>``, ``eos_token`` ``<|eot_id|>`` (what closes an Instruct assistant
  turn), ``pad_token`` ``<|finetune_right_pad_id|>``; ``encode`` prepends BOS as HF's Llama 3 does.
- ``"mistral-v1"`` / ``"mistral-v3"``: ``mistral_common/data/tokenizer.model.v1`` (32,000 ids; ``<unk>``
  ``<s>`` ``</s>`` are the only control tokens, ``[INST]`` is plain text) and
  ``mistral_instruct_tokenizer_240323.model.v3`` (32,768 ids; the 768 control tokens such as ``[INST]`` 3,
  ``[/INST]`` 4 are special single ids). The sentencepiece BPE is rebuilt as a ``tokenizers`` BPE that
  encodes exactly as sentencepiece does: merges ordered by the merged piece's score (whitespace-only
  pieces score -1e9 and merge last), words = a run of "▁" plus the following non-space text
  (``allow_whitespace_only_pieces``), byte fallback, and the dummy "▁" prefix added to every piece of text
  between special tokens (as ``mistral_common`` encodes each piece separately).

Each carries our Jinja chat template (:mod:`rdpo_jax.data.chat`). Conversions are cached.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from .chat import (
    ALTERNATION_ATTR,
    LLAMA3_CHAT_TEMPLATE,
    MISTRAL_V1_CHAT_TEMPLATE,
    MISTRAL_V3_CHAT_TEMPLATE,
    PIECE_BREAKS_ATTR,
)

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAMA3_NUM_RESERVED = 256
_LLAMA3_NAMED = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>", "<|image|>",
)
#: Llama 3's special tokens in id order (ids 128000 + index), as in ``llama_models.llama3.tokenizer``.
LLAMA3_SPECIAL_TOKENS: tuple[str, ...] = _LLAMA3_NAMED + tuple(
    f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_RESERVED - len(_LLAMA3_NAMED))
)

MISTRAL_FILES = {"mistral-v1": "tokenizer.model.v1", "mistral-v3": "mistral_instruct_tokenizer_240323.model.v3"}
NAMES = ("llama3", *MISTRAL_FILES)
SYNTHETIC = "synthetic"  # the word-level tokenizer of the synthetic tasks (`synthetic_tokenizer`)


def _package_file(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"the '{package}' package is needed for this tokenizer: pip install {package}")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed '{package}' package")
    return path


def llama3_model_path() -> Path:
    """Path of ``llama_models/llama3/tokenizer.model``."""
    return _package_file("llama_models", "llama3", "tokenizer.model")


def mistral_model_path(name: str) -> Path:
    """Path of the sentencepiece file of ``"mistral-v1"`` or ``"mistral-v3"`` inside ``mistral_common``."""
    return _package_file("mistral_common", "data", MISTRAL_FILES[name])


@functools.cache
def llama3_tokenizer() -> Any:
    """The Llama 3 (Instruct) tokenizer as a ``PreTrainedTokenizerFast`` with our chat template (cached)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(llama3_model_path()), pattern=LLAMA3_PATTERN,
                                extra_special_tokens=list(LLAMA3_SPECIAL_TOKENS)).converted()
    bos = "<|begin_of_text|>"
    base = backend.get_vocab_size() - len(LLAMA3_SPECIAL_TOKENS)
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, base)]),
    ])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>",
        additional_special_tokens=[t for t in LLAMA3_SPECIAL_TOKENS
                                   if t not in (bos, "<|eot_id|>", "<|finetune_right_pad_id|>")],
        clean_up_tokenization_spaces=False, model_max_length=131072,
    )
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    setattr(tok, PIECE_BREAKS_ATTR, ("<|end_header_id|>\n\n",))  # ChatFormat encodes the header apart
    ids = tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|eot_id|>"])
    if ids != [128000, 128009]:
        raise RuntimeError(f"Llama 3 conversion gave special ids {ids}, expected [128000, 128009]")
    return tok


@functools.cache
def mistral_tokenizer(name: str = "mistral-v3") -> Any:
    """A Mistral tokenizer (``"mistral-v1"`` or ``"mistral-v3"``) as a ``PreTrainedTokenizerFast`` (cached)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    if name not in MISTRAL_FILES:
        raise ValueError(f"unknown Mistral tokenizer {name!r}; accepted: {sorted(MISTRAL_FILES)}")
    extractor = SentencePieceExtractor(str(mistral_model_path(name)))
    proto = extractor.proto
    extracted = extractor.extract(models.BPE)
    rank = {p.piece: (-p.score, i) for i, p in enumerate(proto.pieces)}
    merges = sorted(extracted["merges"], key=lambda m: rank[m[0] + m[1]])
    backend = Tokenizer(models.BPE(vocab=extracted["vocab"], merges=merges, unk_token="<unk>",
                                   fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("▁*[^▁]+|▁+"), behavior="isolated")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1)])
    control = [p.piece for p in proto.pieces if p.type in (2, 3)]  # CONTROL and UNKNOWN
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=[t for t in control if t not in ("<s>", "</s>", "<unk>")],
        clean_up_tokenization_spaces=False, model_max_length=32768,
    )
    tok.chat_template = MISTRAL_V1_CHAT_TEMPLATE if name == "mistral-v1" else MISTRAL_V3_CHAT_TEMPLATE
    setattr(tok, ALTERNATION_ATTR, True)
    return tok


def load_tokenizer(spec: Any, **kwargs: Any) -> Any:
    """A tokenizer with a chat template.

    ``spec``: ``"llama3"``, ``"mistral-v1"``, ``"mistral-v3"`` (built from the installed packages, cached and
    shared: do not mutate), ``"synthetic"`` (the synthetic tasks' tokenizer), a local directory/file that
    ``transformers.AutoTokenizer`` can read (its own ``chat_template`` is used), or a transformers tokenizer
    object (returned as is).
    """
    if not isinstance(spec, str | os.PathLike):
        if not hasattr(spec, "apply_chat_template"):
            raise TypeError(f"expected a tokenizer name, a path or a transformers tokenizer, got {type(spec)}")
        return spec
    if spec == SYNTHETIC:
        from .synthetic_vocab import synthetic_tokenizer

        return synthetic_tokenizer()
    if spec == "llama3":
        return llama3_tokenizer()
    if spec in MISTRAL_FILES:
        return mistral_tokenizer(spec)
    if Path(spec).exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(spec), **kwargs)
    raise ValueError(f"unknown tokenizer {spec!r}: use one of {[*NAMES, SYNTHETIC]}, a local tokenizer directory, or "
                     "a transformers tokenizer object (nothing is downloaded)")
