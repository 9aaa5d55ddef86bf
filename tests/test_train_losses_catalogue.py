"""Losses II in the jitted step, against float64 numpy from the model's full logits: every DPO loss type
(one jitted step holding all fifteen as members of a combination, each member's value checked), LD-DPO's
prefix sums (live and cached reference), WPO's weights, the head metrics, accumulation, and one end-to-end
training run with a combination, LD-DPO and WPO on the tiny task."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdpo_jax.config_loader import load_config
from rdpo_jax.losses import DPO_LOSS_TYPES
from rdpo_jax.train.metrics_log import read_metrics
from rdpo_jax.train.objectives import PreferenceObjective
from rdpo_jax.train.reference_cache import compute_reference_cache
from rdpo_jax.train.step import make_loss_and_grads, split_model
from rdpo_jax.train.trainer import train
from tests import reference_losses as ref
from tests.test_trainer import SMALL
from tests.train_helpers import random_pairs, three_row_batch, tiny_model

BETA, EPS = 0.3, 0.1


@pytest.fixture(scope="module")
def setup():
    policy, reference = tiny_model(seed=0), tiny_model(seed=1)
    graphdef, params = split_model(policy)
    _, ref_params = split_model(reference)
    batch = three_row_batch(random_pairs(np.random.default_rng(0), 8, 64))
    return dict(policy=policy, reference=reference, graphdef=graphdef, params=params, ref_params=ref_params,
                batch=batch, np_policy=_np_rows(policy, batch), np_ref=_np_rows(reference, batch))


def _np_rows(model, batch):
    """float64 per row (three rows per pair: chosen, rejected, rationale): summed log-probs, counts, prefix sums
    over the first min(n_w, n_l) scored tokens, WPO sums sum_t (lp_t - log sum_v p_v^2) and head statistics."""
    b = {k: v[0] for k, v in batch.items()}
    z = np.asarray(model(jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"]),
                         positions=jnp.asarray(b["positions"])), np.float64)
    zmax = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(-1)) + zmax[..., 0]
    p = np.exp(z - lse[..., None])
    lp = np.take_along_axis(z, b["targets"][..., None], -1)[..., 0] - lse
    m = b["loss_mask"]
    n = m.sum(-1).astype(np.float64)
    rank = np.cumsum(m, -1)
    n_pair = n.reshape(-1, 3)
    shared = np.repeat(np.minimum(n_pair[:, 0], n_pair[:, 1]), 3)
    per_pair = lambda v: np.where(m, v, 0).sum(-1).reshape(-1, 3)  # noqa: E731
    return dict(sums=per_pair(lp), counts=n_pair, prefix=np.where(m & (rank <= shared[:, None]), lp, 0).sum(-1)
                .reshape(-1, 3), weighting=per_pair(lp - np.log((p * p).sum(-1))),
                entropy=per_pair(-(p * np.log(p)).sum(-1)), mean_logit=per_pair(z.mean(-1)),
                top1=per_pair((z.argmax(-1) == b["targets"]).astype(float)))


def _pair_inputs(setup, ld_alpha=None):
    pol, rf = setup["np_policy"], setup["np_ref"]
    s, r = pol["sums"], rf["sums"]
    if ld_alpha is not None:
        s, r = ref.ld(s, pol["prefix"], ld_alpha), ref.ld(r, rf["prefix"], ld_alpha)
    n = pol["counts"]
    return s[:, 0], s[:, 1], n[:, 0], n[:, 1], r[:, 0], r[:, 1]


def _evaluate(setup, loss, hp, batch=None):
    obj = PreferenceObjective(loss, tuple(hp.items()))
    fn = jax.jit(make_loss_and_grads(setup["graphdef"], obj))
    loss_value, grads, metrics = fn(setup["params"], setup["batch"] if batch is None else batch,
                                    setup["ref_params"] if obj.needs_reference else None)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    return float(loss_value), {k: np.asarray(v) for k, v in metrics.items()}


def test_every_dpo_type_in_one_jitted_step(setup):
    types = list(DPO_LOSS_TYPES)
    weights = [0.5 + 0.1 * i for i in range(len(types))]
    loss, metrics = _evaluate(setup, "dpo", {"loss_type": types, "loss_weights": weights, "beta": BETA,
                                             "label_smoothing": EPS})
    x = _pair_inputs(setup)
    total = 0.0
    for t, w in zip(types, weights, strict=True):
        want = ref.dpo_type(t, *x, beta=BETA, eps=EPS).mean()
        np.testing.assert_allclose(metrics[f"loss/{t}"], want, rtol=2e-4, atol=1e-5, err_msg=t)
        total += w * want
    np.testing.assert_allclose(loss, total, rtol=2e-4)


def test_head_metrics_match_the_full_logits(setup):
    _, m = _evaluate(setup, "dpo", {})
    pol = setup["np_policy"]
    per_token = lambda key, role: (pol[key][:, role] / pol["counts"][:, role]).mean()  # noqa: E731
    np.testing.assert_allclose(m["logits/chosen"], per_token("mean_logit", 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["logits/rejected"], per_token("mean_logit", 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["entropy/chosen"], per_token("entropy", 0), rtol=1e-4)
    np.testing.assert_allclose(m["entropy"], (per_token("entropy", 0) + per_token("entropy", 1)) / 2, rtol=1e-4)
    np.testing.assert_allclose(m["mean_token_accuracy"], per_token("top1", 0), rtol=1e-5)


def test_ld_dpo_prefix_sums_live_and_cached(setup):
    hp = {"ld_alpha": 0.3, "beta": BETA}
    live, _ = _evaluate(setup, "dpo", hp)
    want = ref.dpo_type("sigmoid", *_pair_inputs(setup, ld_alpha=0.3), beta=BETA).mean()
    np.testing.assert_allclose(live, want, rtol=1e-4)
    batch = setup["batch"]
    cache = compute_reference_cache(setup["graphdef"], setup["ref_params"], [(np.arange(8)[None], batch)], 8)
    np.testing.assert_allclose(cache.chosen_prefix, setup["np_ref"]["prefix"][:, 0], rtol=1e-5, atol=1e-5)
    cached_batch = {**batch, **cache.lookup(np.arange(8)[None], batch["pair_mask"])}
    obj = PreferenceObjective("dpo", tuple(hp.items()))
    cached, _, _ = jax.jit(make_loss_and_grads(setup["graphdef"], obj))(setup["params"], cached_batch, None)
    np.testing.assert_allclose(float(cached), live, rtol=1e-6)
    no_prefix = {k: v for k, v in cached_batch.items() if not k.endswith("_prefix")}
    with pytest.raises(ValueError, match="recompute the reference cache"):
        make_loss_and_grads(setup["graphdef"], obj)(setup["params"], no_prefix, None)


def test_wpo_weights_from_the_head(setup):
    loss, m = _evaluate(setup, "dpo", {"use_weighting": True, "beta": BETA})
    pol = setup["np_policy"]
    w = ref.wpo_weight(pol["weighting"][:, 0], pol["weighting"][:, 1], pol["counts"][:, 0], pol["counts"][:, 1])
    np.testing.assert_allclose(m["wpo_weight"], w.mean(), rtol=1e-4)
    np.testing.assert_allclose(loss, (w * ref.dpo_type("sigmoid", *_pair_inputs(setup), beta=BETA)).mean(),
                               rtol=1e-4)


@pytest.mark.parametrize("loss,hp", [("cpo", {"loss_type": "hinge", "beta": 0.05}),
                                     ("simpo", {"loss_type": "hinge"}),
                                     ("dpo", {"f_divergence_type": "js_divergence", "loss_type": "ipo"}),
                                     ("orpo", {"rationale_weight": 0.5})])
def test_other_forms_in_the_step(setup, loss, hp):
    value, _ = _evaluate(setup, loss, hp)
    s_w, s_l, n_w, n_l, r_w, r_l = _pair_inputs(setup)
    pol = setup["np_policy"]
    if loss == "cpo":
        want = ref.cpo(s_w, s_l, n_w, n_l, beta=0.05, loss_type="hinge")
    elif loss == "simpo":
        want = ref.simpo_form(s_w, s_l, n_w, n_l, loss_type="hinge")
    elif loss == "dpo":
        want = ref.dpo_type("ipo", s_w, s_l, n_w, n_l, r_w, r_l, f="js_divergence")
    else:
        want = ref.rorpo(s_w, s_l, n_w, n_l, pol["sums"][:, 2], pol["counts"][:, 2], gamma=0.5)
    np.testing.assert_allclose(value, want.mean(), rtol=1e-4)


def test_accumulation_with_the_new_types_equals_one_batch(setup):
    """bco_pair is stateless (as TRL 1.16), so any per-pair combination accumulates exactly (aot does not:
    tests/test_losses_catalogue.py)."""
    pairs = random_pairs(np.random.default_rng(1), 8, 64)
    hp = {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0], "ld_alpha": 0.5,
          "use_weighting": True}
    one, m1 = _evaluate(setup, "dpo", hp, three_row_batch(pairs, pad_pairs=4))
    four, m4 = _evaluate(setup, "dpo", hp, three_row_batch(pairs, micro_batches=4, pad_pairs=4))
    np.testing.assert_allclose(four, one, rtol=1e-5)
    np.testing.assert_allclose(m4["loss/bco_pair"], m1["loss/bco_pair"], rtol=1e-5)


def test_end_to_end_run_with_a_combination_ld_dpo_and_wpo(tmp_path):
    kwargs = ("{loss_type: [sigmoid, bco_pair, sft], loss_weights: [0.8, 0.2, 1.0], ld_alpha: 0.5, "
              "use_weighting: true, beta: 0.5}")
    cfg = load_config(None, SMALL + [f"output_dir={tmp_path}", f"train.loss_kwargs={kwargs}", "train.max_steps=3",
                                     "train.eval_every=3", "train.eval_batches=1", "train.reference=cache",
                                     "checkpoint.every=3", "checkpoint.export_hf=false"])
    result = train(cfg)
    assert result.steps == 3
    train_rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    for key in ("loss", "loss/sigmoid", "loss/bco_pair", "loss/sft", "wpo_weight", "logits/chosen", "entropy",
                "mean_token_accuracy", "num_tokens"):
        assert all(np.isfinite(r[key]) for r in train_rows), key
    tokens = [r["num_tokens"] for r in train_rows]
    assert tokens[0] > 0 and all(b > a for a, b in zip(tokens, tokens[1:], strict=False))  # a running total
    assert "loss/bco_pair" in result.final_eval and "num_tokens" not in result.final_eval
