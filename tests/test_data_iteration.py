"""Per-process iteration: disjoint shards, global batches, exact resume, seeded order, reshuffled epochs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from rdpo_jax.data import BatchIterator, epoch_permutation

N = 103


def take(it, n):
    return list(itertools.islice(it, n))


def make(process_index=0, process_count=1, **kw):
    kw.setdefault("seed", 3)
    return BatchIterator(list(range(N)), kw.pop("global_batch_size", 8), process_index=process_index,
                         process_count=process_count, **kw)


def test_two_processes_disjoint_shards_union_is_dataset():
    its = [make(p, 2, drop_remainder=False, num_epochs=1) for p in range(2)]
    batches = [list(it) for it in its]
    assert len(batches[0]) == len(batches[1]) == -(-N // 8)
    seen = [set(int(i) for b in bs for i, m in zip(b.indices, b.mask, strict=True) if m) for bs in batches]
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(N))
    # each step's local batches concatenate to the global batch
    single = list(make(0, 1, drop_remainder=False, num_epochs=1))
    for b0, b1, g in zip(*batches, single, strict=True):
        assert len(b0.examples) == len(b1.examples) == 4
        np.testing.assert_array_equal(np.concatenate([b0.indices, b1.indices]), g.indices)
        np.testing.assert_array_equal(np.concatenate([b0.mask, b1.mask]), g.mask)
        assert b0.examples == [int(i) for i in b0.indices]


def test_drop_remainder_and_padding():
    dropped = list(make(num_epochs=1))
    assert len(dropped) == N // 8 and all(b.mask.all() for b in dropped)
    assert len({int(i) for b in dropped for i in b.indices}) == (N // 8) * 8
    padded = list(make(drop_remainder=False, num_epochs=1))
    last = padded[-1]
    assert last.mask.tolist() == [True] * (N % 8) + [False] * (8 - N % 8)
    assert len(last.examples) == 8  # padding slots hold real examples, masked out
    with pytest.raises(ValueError, match="exceeds"):
        BatchIterator(list(range(5)), 8, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="divisible by process_count=3"):
        BatchIterator(list(range(50)), 8, process_index=0, process_count=3)


@pytest.mark.parametrize("n_before", [0, 5, 12, 13, 30])
def test_resume_continues_with_next_batch(n_before):
    ref = take(make(1, 2), 40)
    it = make(1, 2)
    take(it, n_before)
    state = json.loads(json.dumps(it.get_state()))  # JSON round trip, as a checkpoint would
    resumed = make(1, 2)
    resumed.set_state(state)
    for a, b in zip(take(resumed, 40 - n_before), ref[n_before:], strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
        assert (a.step, a.epoch) == (b.step, b.epoch)


def test_resume_on_a_different_process_count():
    it = make(0, 2)
    take(it, 7)
    state = it.get_state()
    single = make(0, 1)
    single.set_state(state)
    ref = [make(p, 2) for p in range(2)]
    for r in ref:
        take(r, 7)
    nxt = next(single)
    np.testing.assert_array_equal(nxt.indices, np.concatenate([next(r).indices for r in ref]))


def test_state_mismatch_is_named():
    state = make().get_state()
    other = make(seed=4)
    with pytest.raises(ValueError, match="seed=3"):
        other.set_state(state)
    with pytest.raises(ValueError, match="global_batch_size"):
        make(global_batch_size=4).set_state(state)


def test_same_seed_same_order_epochs_reshuffle():
    a, b, c = take(make(seed=11), 30), take(make(seed=11), 30), take(make(seed=12), 30)
    assert all((x.indices == y.indices).all() for x, y in zip(a, b, strict=True))
    assert any((x.indices != z.indices).any() for x, z in zip(a, c, strict=True))
    per_epoch = N // 8
    assert [x.epoch for x in a[per_epoch - 1 : per_epoch + 1]] == [0, 1]
    e0 = np.concatenate([x.indices for x in a[:per_epoch]])
    e1 = np.concatenate([x.indices for x in a[per_epoch : 2 * per_epoch]])
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(e0, epoch_permutation(N, 11, 0)[: per_epoch * 8])
    np.testing.assert_array_equal(e1, epoch_permutation(N, 11, 1)[: per_epoch * 8])
    ordered = list(make(shuffle=False, num_epochs=1))
    assert np.concatenate([x.indices for x in ordered]).tolist() == list(range(per_epoch * 8))


def test_defaults_to_jax_process():
    it = BatchIterator(list(range(16)), 8)
    assert (it.process_index, it.process_count, it.local_batch_size) == (0, 1, 8)
