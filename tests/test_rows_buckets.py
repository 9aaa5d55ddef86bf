"""Shape buckets over the real HH file: at most the configured number of distinct shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdpo_jax.data.batching import BatchPlan, Buckets, make_batch, pad_id_for
from rdpo_jax.data.rows import TruncationConfig, tokenize_examples

HH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


@pytest.fixture(scope="module")
def hh_rows():
    if not HH.exists():
        pytest.skip(f"HH file absent: {HH}")
    pytest.importorskip("llama_models")
    from rdpo_jax.data import load_preferences
    from rdpo_jax.data.tokenizers import load_tokenizer

    examples, _ = load_preferences("Anthropic/hh-rlhf", data_files=str(HH), on_bad_row="skip")
    tok = load_tokenizer("llama3")
    res = tokenize_examples(examples, tok, truncation=TruncationConfig(max_length=512, max_prompt_length=256),
                            dataset="hh")
    return res, tok


def test_buckets_bound_distinct_shapes_over_hh(hh_rows):
    res, tok = hh_rows
    assert len(res.rows) == 2303 and res.report.n_skipped == 0
    assert res.stats.prompt_truncated > 0  # some HH prompts exceed 512 tokens with their responses
    buckets = Buckets.powers_of_two(512, min_length=64)
    assert buckets.lengths == (64, 128, 256, 512)
    for layout, pairs_per_row in (("three_row", 1), ("packed", 2)):
        plan = BatchPlan(buckets, global_batch_size=16, pad_id=pad_id_for(tok), layout=layout,
                         pairs_per_row=pairs_per_row)
        shapes = set()
        for start in range(0, len(res.rows), 16):
            batch = make_batch(res.rows[start: start + 16], plan)
            shapes.add(batch["input_ids"].shape)
            assert batch["pair_mask"].shape == (16,)
        n_lengths = len({s[1] for s in shapes})
        assert n_lengths <= len(buckets.lengths)
        if layout == "three_row":
            assert len(shapes) <= len(buckets.lengths)
        else:  # row counts are bucketed too (powers of two up to 2 * 16)
            assert len(shapes) <= len(buckets.lengths) * 6
