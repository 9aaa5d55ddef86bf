"""The packed layout gives the same loss and gradients as the three-row layout (fp32), through the data
layer's real tokenisation of synthetic examples; micro-batches of different shapes stack exactly."""
import jax
import numpy as np
import pytest

from rdpo_jax.batch import step_inputs
from rdpo_jax.data import (
    Buckets,
    SyntheticTask,
    TruncationConfig,
    packed_batch,
    pad_id_for,
    synthetic_tokenizer,
    three_row_batch,
    tokenize_examples,
)
from rdpo_jax.train.batches import stack_micro_batches
from rdpo_jax.train.objectives import PreferenceObjective
from rdpo_jax.train.step import make_loss_and_grads, split_model
from tests.train_helpers import tiny_model


@pytest.fixture(scope="module")
def data():
    tok = synthetic_tokenizer()
    examples = SyntheticTask(task="colour", u=0.2, eps=0.1).examples(8, seed=3)
    rows = tokenize_examples(examples, tok, truncation=TruncationConfig(max_length=128, max_prompt_length=64),
                             rationale_template="conversational").rows
    policy, reference = tiny_model(seed=0, vocab_size=len(tok)), tiny_model(seed=1, vocab_size=len(tok))
    return dict(tok=tok, rows=rows, graphdef=split_model(policy)[0], params=split_model(policy)[1],
                ref_params=split_model(reference)[1])


def _max_rel(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max() / (np.abs(np.asarray(y)).max() + 1e-30))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("loss,pairs_per_row", [("rdpo", 1), ("rdpo", 2), ("dpo", 1)])
def test_packed_equals_three_row(data, loss, pairs_per_row):
    with_rationale = loss == "rdpo"
    kw = dict(buckets=Buckets.powers_of_two(256, 32), global_batch_size=10, pad_id=pad_id_for(data["tok"]),
              with_rationale=with_rationale)
    three = stack_micro_batches([step_inputs(three_row_batch(data["rows"], **kw))])
    packed = stack_micro_batches([step_inputs(packed_batch(data["rows"], pairs_per_row=pairs_per_row, **kw))])
    assert packed["input_ids"].size < three["input_ids"].size
    obj = PreferenceObjective(loss, (("gamma", 0.5),) if with_rationale else ())
    lg = jax.jit(make_loss_and_grads(data["graphdef"], obj))
    l3, g3, m3 = lg(data["params"], three, data["ref_params"])
    lp, gp, mp = lg(data["params"], packed, data["ref_params"])
    np.testing.assert_allclose(float(lp), float(l3), rtol=1e-6)
    assert _max_rel(gp, g3) < 1e-5
    for k in ("logps/chosen", "logps/rejected", "rewards/margins"):
        np.testing.assert_allclose(float(mp[k]), float(m3[k]), rtol=1e-5, atol=1e-6)


def test_micro_batches_of_different_shapes_stack_to_the_same_loss(data):
    kw = dict(global_batch_size=4, pad_id=pad_id_for(data["tok"]), with_rationale=True)
    rows = data["rows"]
    a = step_inputs(packed_batch(rows[:4], buckets=Buckets((32, 64)), **kw))
    b = step_inputs(packed_batch(rows[4:], buckets=Buckets((64, 128)), **kw))
    whole = step_inputs(packed_batch(rows, buckets=Buckets((64, 128)), **{**kw, "global_batch_size": 8}))
    obj = PreferenceObjective("rdpo", (("gamma", 0.5),))
    lg = jax.jit(make_loss_and_grads(data["graphdef"], obj))
    stacked = stack_micro_batches([a, b], pad_id=kw["pad_id"])
    assert stacked["input_ids"].shape[0] == 2
    l2, g2, _ = lg(data["params"], stacked, data["ref_params"])
    l1, g1, _ = lg(data["params"], stack_micro_batches([whole]), data["ref_params"])
    np.testing.assert_allclose(float(l2), float(l1), rtol=1e-6)
    assert _max_rel(g2, g1) < 1e-5
    with pytest.raises(ValueError, match="same number of pairs"):
        stack_micro_batches([a, whole])
