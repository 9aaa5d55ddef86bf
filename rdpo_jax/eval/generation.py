"""Responses from a model for chat prompts: render with the tokenizer's chat template (generation prompt
added), left-pad, decode with `rdpo_jax.models.generate` (KV cache), cut at the first EOS."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rdpo_jax.data import encode_chat, pad_id_for
from rdpo_jax.eval.prompt_ids import canonical_messages


def generate_responses(model, tokenizer, prompts: Sequence[Any], *, max_new_tokens: int = 32,
                       temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                       seed: int = 0, batch_size: int = 32) -> list[str]:
    """One decoded response per prompt (a string or chat messages), special tokens removed.

    Prompts are batched ``batch_size`` at a time and left-padded to the batch's longest (rounded up to a
    multiple of 16 to limit recompilation); sampling is reproducible from ``seed`` (batch i uses seed + i).
    """
    from rdpo_jax.models import generate

    pad = pad_id_for(tokenizer)
    stop = set(model.config.eos_token_ids)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids = [encode_chat(tokenizer, canonical_messages(p), add_generation_prompt=True)
               for p in prompts[i:i + batch_size]]
        width = -(-max(len(x) for x in ids) // 16) * 16
        arr = np.full((len(ids), width), pad, np.int32)
        mask = np.zeros((len(ids), width), np.int32)
        for r, x in enumerate(ids):
            arr[r, width - len(x):] = x
            mask[r, width - len(x):] = 1
        new = np.asarray(generate(model, arr, mask, max_new_tokens, temperature=temperature, top_k=top_k,
                                  top_p=top_p, seed=seed + i))
        for row in new:
            toks = []
            for t in row.tolist():
                if t in stop:
                    break
                toks.append(t)
            out.append(tokenizer.decode(toks, skip_special_tokens=True).strip())
    return out
