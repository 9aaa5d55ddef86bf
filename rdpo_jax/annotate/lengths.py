"""What the rationales add to training, in tokens of the target model's tokenizer.

Each written row is tokenised as the trainer does with the ``conversational`` rationale template (no
truncation), and the report gives, over the rows:

* ``rationale_tokens``: tokens of r (mean, median, 95th percentile, max);
* ``extra_tokens_per_pair``: tokens a pair gains from its rationale, ``packed`` = ``|F| + |r|`` (the
  follow-up turn F and r, on top of the packed pair ``|x| + |y_w| + 1 + |y_l|``) and ``three_row`` = ``|c r|``
  (the whole rationale row); ``packed_share`` is the packed gain over the packed pair's tokens (mean over
  mean). Pairs whose rationale row does not share the chosen row's prefix (``not_packable``) count in
  ``three_row`` only.

Without a tokenizer the lengths are whitespace-separated words (``unit`` says which).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["length_report"]

_NO_CUT = 1 << 30


def _stats(values: Sequence[int]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "p95": None, "max": None}
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "max": float(v.max())}


def length_report(rows: Sequence[dict[str, Any]], tokenizer: Any | None = None, tokenizer_name: str = "") -> dict:
    """The module docstring's report for the written ``rows`` (dicts with prompt/chosen/rejected/rationale)."""
    if tokenizer is None:
        return {"unit": "words", "rationale_tokens": _stats([len(r["rationale"].split()) for r in rows])}
    from rdpo_jax.data import PreferenceExample, TruncationConfig, packed_length, tokenize_example

    cut = TruncationConfig(max_length=_NO_CUT, max_prompt_length=_NO_CUT - 1)
    lengths, packed, three_row, base = [], [], [], []
    for i, r in enumerate(rows):
        ex = PreferenceExample(r["prompt"], r["chosen"], r["rejected"], r["rationale"])
        t, _ = tokenize_example(ex, tokenizer, i, truncation=cut, rationale_template="conversational")
        lengths.append(len(t.rationale.completion))
        three_row.append(len(t.rationale))
        if t.rdpo_packable:
            packed.append(packed_length(t, True) - packed_length(t, False))
            base.append(packed_length(t, False))
    share = float(np.mean(packed) / np.mean(base)) if packed else None
    return {"unit": f"tokens of {tokenizer_name}" if tokenizer_name else "tokens",
            "rationale_tokens": _stats(lengths),
            "extra_tokens_per_pair": {"packed": _stats(packed)["mean"], "three_row": _stats(three_row)["mean"],
                                      "packed_share": share, "not_packable": len(rows) - len(packed)}}
