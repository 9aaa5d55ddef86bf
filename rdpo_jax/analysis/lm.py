r"""Log-probabilities from our models for the estimators E1-E3 (docs/spec.md section 5).

Everything here turns a model (a :class:`~rdpo_jax.models.DecoderLM`), a tokenizer and a list of
:class:`~rdpo_jax.data.PreferenceExample` into per-example arrays of **summed** float32 log-probs, shape (n,):

* :func:`rationale_logps` (E2): the rationale's summed log-prob under both slot orders,

  $$\ell^{\rightarrow}_i=\ell(r_i\mid x_i,\ \text{first}=y_{w,i},\ \text{second}=y_{l,i}),\qquad
    \ell^{\leftarrow}_i=\ell(r_i\mid x_i,\ \text{first}=y_{l,i},\ \text{second}=y_{w,i}),\qquad
    \Delta_i=\ell^{\rightarrow}_i-\ell^{\leftarrow}_i ,$$

  for the example's own rationale, a vacuous one $b$ and a shuffled one $r_{\pi(i)}$, each also with the slot
  and label words masked (:mod:`rdpo_jax.analysis.leakage`; the placeholders are inputs but not scored),
  plus the "blank" condition
  $\ell(r_i\mid x_i,\varnothing)$ (both responses empty) for the groundedness diagnostic
  $\mathrm{pmi}_i=\ell^{\rightarrow}_i-\ell(r_i\mid x_i,\varnothing)$.
  "First"/"second" are the template's slots: the official template's "Response above"/"Response below",
  or the conversational template's own turn $y$ and the follow-up's other response.
* :func:`response_logps` / :func:`policy_margins` (E3): $S_w, S_l$ under a policy and $R_w, R_l$ under a
  reference; $h_i=\beta[(S_{w,i}-R_{w,i})-(S_{l,i}-R_{l,i})]$.

Rules that keep the conditions comparable (sec. 4.5): each response is cut to the same token cap *before*
the two orders are built (so both orders show the same evidence); each rationale is tokenised once (its
completion ids read off the chosen-first rendering) and the same ids are appended to every context, so the
rationale tokens are identical across orders. All sequences of all conditions go through one jitted,
batched forward (shapes bucketed: rows of ``batch_size``, lengths powers of two).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdpo_jax.batch import empty_rows
from rdpo_jax.data import PreferenceExample, TruncationConfig, rationale_messages, tokenize_examples
from rdpo_jax.data.batching import Buckets, pad_id_for
from rdpo_jax.data.chat import encode_chat
from rdpo_jax.data.rows import split_completion
from rdpo_jax.data.synthetic import VACUOUS_RATIONALE, shuffle_rationales
from rdpo_jax.logprobs import DEFAULT_BLOCK_SIZE, row_token_logps

from .leakage import DEFAULT_MASK_TOKEN, mask_rationale, mask_words_for

__all__ = ["RationaleLogps", "rationale_logps", "response_logps", "policy_margins", "score_sequences",
           "CONDITIONS"]

_DEFAULT_TRUNCATION = TruncationConfig()

#: Rationale conditions scored in both orders: own, vacuous, shuffled; and the same with words masked.
CONDITIONS = ("rationale", "vacuous", "shuffled", "rationale_masked", "vacuous_masked", "shuffled_masked")


def _forward_fn(graphdef, block_size: int):
    @jax.jit
    def fn(params, rows):
        model = nnx.merge(graphdef, params)
        lp = row_token_logps(model, rows, block_size)
        m = rows["loss_mask"]
        return jnp.where(m, lp, 0.0).sum(-1), m.sum(-1)

    return fn


def score_sequences(model, seqs: Sequence[tuple[Sequence[int], ...]], *, pad_id: int = 0,
                    batch_size: int = 64, min_bucket: int = 32, block_size: int = DEFAULT_BLOCK_SIZE
                    ) -> tuple[np.ndarray, np.ndarray]:
    r"""Summed log-probs of completions given contexts: one jitted, batched forward over all sequences.

    For sequence $k$ with ids $z=c\,\Vert\,y$ and scored positions $S_k$ (default all of $y$):
    $\mathrm{sum}_k=\sum_{t\in S_k}\log\pi(y_t\mid c, y_{<t})$ (float32), $\mathrm{count}_k=|S_k|$. Unscored
    completion tokens are still inputs. Rows are padded to ``batch_size`` rows and a power-of-two length
    (>= ``min_bucket``), so a run compiles for a handful of shapes.

    Args:
      model: a DecoderLM. seqs: (context ids, completion ids) or (context ids, completion ids, scored) with
        ``scored`` booleans, one per completion token; contexts and completions non-empty.
    Returns:
      (sums (K,) float64, counts (K,) int64).
    """
    if not seqs:
        return np.zeros(0), np.zeros(0, np.int64)
    lengths = [len(q[0]) + len(q[1]) for q in seqs]
    for k, (c, y, *scored) in enumerate(seqs):
        if not c or not y:
            raise ValueError(f"sequence {k}: context ({len(c)} tokens) and completion ({len(y)}) must be non-empty")
        if scored and len(scored[0]) != len(y):
            raise ValueError(f"sequence {k}: {len(scored[0])} scored flags for {len(y)} completion tokens")
    buckets = Buckets.powers_of_two(max(max(lengths), min_bucket), min_bucket)
    graphdef, params = nnx.split(model)
    fn = _forward_fn(graphdef, block_size)
    order = np.argsort(lengths, kind="stable")  # similar lengths share a bucket
    sums, counts = np.zeros(len(seqs)), np.zeros(len(seqs), np.int64)
    for start in range(0, len(seqs), batch_size):
        idx = order[start:start + batch_size]
        t = buckets.fit(max(lengths[i] for i in idx))
        rows = empty_rows(batch_size, t, 1, pad_id)
        rows["positions"][:] = np.arange(t)
        for j, i in enumerate(idx):
            c, y, *scored = seqs[i]
            ids = list(c) + list(y)
            n = len(ids)
            rows["input_ids"][j, :n] = ids
            rows["attention_mask"][j, :n] = 1
            rows["targets"][j, :n - 1] = ids[1:]
            rows["loss_mask"][j, len(c) - 1:n - 1] = np.asarray(scored[0], bool) if scored else True
        s, m = jax.device_get(fn(params, rows))
        sums[idx] = np.asarray(s, np.float64)[:len(idx)]
        counts[idx] = np.asarray(m, np.int64)[:len(idx)]
    return sums, counts


def _check_mask_token(tokenizer: Any, token: str) -> None:
    ids = tokenizer.encode(token, add_special_tokens=False)
    special = {int(i) for i in tokenizer.all_special_ids if i is not None}
    if len(ids) != 1 or int(ids[0]) in special:
        raise ValueError(f"mask_token {token!r} encodes to {ids} (not one token, or unknown or special) with "
                         "this tokenizer; pass a plain single token of its vocabulary, e.g. '-'")


def _placeholder_test(tokenizer: Any, token: str):
    """``is_placeholder(id)``: whether a token's text contains the mask token; cached.

    Containment, not equality: BPE vocabularies merge the placeholder with a neighbour (Llama 3 encodes
    ``"-,"`` as the single token ``" -,"``), and such a token is still (partly) the placeholder. A genuine
    ``"-"`` inside a word of a masked rationale is left unscored too."""
    cache: dict[int, bool] = {}

    def is_placeholder(i: int) -> bool:
        i = int(i)
        if i not in cache:
            cache[i] = token in tokenizer.decode([i])
        return cache[i]

    return is_placeholder


def _cap_text(tokenizer: Any, text: str, cap: int | None) -> str:
    """``text`` cut to its first ``cap`` tokens (decoded back), or unchanged when shorter / no cap."""
    if cap is None:
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= cap else tokenizer.decode(ids[:cap])


@dataclasses.dataclass
class RationaleLogps:
    """Summed rationale log-probs per condition and slot order, all (n,) arrays.

    Attributes:
      forward: condition -> $\\ell$ with the chosen response in the first slot (n,).
      backward: condition -> $\\ell$ with it in the second slot (n,). Same rationale tokens as ``forward``.
      counts: condition -> number of scored rationale tokens (n,) (identical in both orders; masked
        conditions do not score the mask placeholders).
      blank: $\\ell(r_i\\mid x_i,\\varnothing)$, both responses empty (n,).
      template, mask_words, mask_token, vacuous: how they were computed.
    """

    forward: dict[str, np.ndarray]
    backward: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    blank: np.ndarray
    template: str
    mask_words: tuple[str, ...]
    mask_token: str
    vacuous: str

    def delta(self, condition: str = "rationale") -> np.ndarray:
        """$\\Delta_i=\\ell^{\\rightarrow}_i-\\ell^{\\leftarrow}_i$ (n,) for one of :data:`CONDITIONS`."""
        if condition not in self.forward:
            raise KeyError(f"unknown condition {condition!r}; accepted: {sorted(self.forward)}")
        return self.forward[condition] - self.backward[condition]

    @property
    def pmi(self) -> np.ndarray:
        """Groundedness $\\ell(r\\mid x,y_w,y_l)-\\ell(r\\mid x,\\varnothing)$ (n,), chosen-first order."""
        return self.forward["rationale"] - self.blank

    def to_dict(self) -> dict[str, list[float]]:
        out = {f"{c}/forward": self.forward[c].tolist() for c in self.forward}
        out |= {f"{c}/backward": self.backward[c].tolist() for c in self.backward}
        out["blank"] = self.blank.tolist()
        return out


def rationale_logps(model, tokenizer, examples: Sequence[PreferenceExample], *, template: str = "official",
                    wording: str = "general", vacuous: str = VACUOUS_RATIONALE, shuffle_seed: int = 0,
                    mask_words: Sequence[str] | None = None, mask_token: str = DEFAULT_MASK_TOKEN,
                    response_cap: int | None = 64, rationale_cap: int | None = 128,
                    conditions: Sequence[str] = CONDITIONS, batch_size: int = 64,
                    block_size: int = DEFAULT_BLOCK_SIZE) -> RationaleLogps:
    r"""E2 inputs: summed rationale log-probs in both slot orders for every condition (module docstring).

    Args:
      model: a DecoderLM (e.g. ``load_hf(dir)``); tokenizer: its tokenizer (chat template set).
      examples: n held-out pairs, each with a rationale.
      template: "official" or "conversational" (spec sec. 3); wording: the template wording.
      vacuous: the vacuous rationale $b$ (default the synthetic generator's "both responses look fine").
      shuffle_seed: seed of the permutation giving the shuffled rationales
        (:func:`rdpo_jax.data.synthetic.shuffle_rationales`).
      mask_words, mask_token: leakage control; default :func:`~rdpo_jax.analysis.leakage.mask_words_for`
        ``(template)`` replaced by ``mask_token`` (a plain, non-special token of the vocabulary).
      response_cap: tokens kept of each response before the orders are built (None: no cap).
      rationale_cap: tokens kept of each rationale completion (None: no cap).
      conditions: subset of :data:`CONDITIONS` to score.
    Returns:
      :class:`RationaleLogps` with (n,) arrays.
    """
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise ValueError(f"unknown conditions {bad}; accepted: {list(CONDITIONS)}")
    if not vacuous.strip():
        raise ValueError("vacuous rationale is empty; pass a text such as 'both responses look fine'")
    for i, ex in enumerate(examples):
        if ex.rationale is None:
            raise ValueError(f"example {i} has no rationale: E2 needs one per pair (drop such pairs first)")
    words = tuple(mask_words) if mask_words is not None else mask_words_for(template)
    _check_mask_token(tokenizer, mask_token)
    is_placeholder = _placeholder_test(tokenizer, mask_token)
    capped = [dataclasses.replace(ex, chosen=_cap_text(tokenizer, ex.chosen, response_cap),
                                  rejected=_cap_text(tokenizer, ex.rejected, response_cap)) for ex in examples]
    shuffled = [ex.rationale for ex in shuffle_rationales(capped, seed=shuffle_seed)]
    texts = {"rationale": [ex.rationale for ex in capped], "vacuous": [vacuous] * len(capped),
             "shuffled": shuffled}
    for c in ("rationale", "vacuous", "shuffled"):
        texts[f"{c}_masked"] = [mask_rationale(r, words, mask_token) for r in texts[c]]

    def context(ex, first, second):
        msgs = rationale_messages(dataclasses.replace(ex, chosen=first, rejected=second), template, wording)
        return msgs, encode_chat(tokenizer, msgs, add_generation_prompt=True)

    seqs, keys = [], []
    completion_cache: dict[tuple[int, str], list[int]] = {}
    for i, ex in enumerate(capped):
        fwd_msgs, fwd = context(ex, ex.chosen, ex.rejected)
        _, bwd = context(ex, ex.rejected, ex.chosen)
        _, blank = context(ex, "", "")

        def completion(text, i=i, fwd_msgs=fwd_msgs, fwd=fwd):
            key = (i, text)
            if key not in completion_cache:
                full = encode_chat(tokenizer, fwd_msgs + [{"role": "assistant", "content": text}])
                _, comp = split_completion(tokenizer, fwd, full)
                completion_cache[key] = comp[:rationale_cap] if rationale_cap is not None else comp
            return completion_cache[key]

        for c in conditions:
            comp = completion(texts[c][i])
            scored = ([not is_placeholder(t) for t in comp],) if c.endswith("_masked") else ()
            seqs += [(fwd, comp, *scored), (bwd, comp, *scored)]
            keys += [(c, "forward", i), (c, "backward", i)]
        seqs.append((blank, completion(texts["rationale"][i])))
        keys.append(("rationale", "blank", i))
    sums, counts = score_sequences(model, seqs, pad_id=pad_id_for(tokenizer), batch_size=batch_size,
                                   block_size=block_size)
    n = len(capped)
    out = {"forward": {c: np.zeros(n) for c in conditions}, "backward": {c: np.zeros(n) for c in conditions},
           "blank": {"rationale": np.zeros(n)}}
    cnt = {c: np.zeros(n, np.int64) for c in conditions}
    for (c, order, i), s, m in zip(keys, sums, counts, strict=True):
        out[order][c][i] = s
        if order == "forward":
            cnt[c][i] = m
    return RationaleLogps(out["forward"], out["backward"], cnt, out["blank"]["rationale"], template, words,
                          mask_token, vacuous)


def response_logps(model, tokenizer, examples: Sequence[PreferenceExample], *,
                   truncation: TruncationConfig = _DEFAULT_TRUNCATION, batch_size: int = 64,
                   block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    r"""$(S_w, S_l)$, each (n,): summed log-probs of chosen and rejected given the prompt (spec sec. 1:
    text tokens plus one end-of-turn token; the data layer's tokenisation and per-pair truncation)."""
    res = tokenize_examples(examples, tokenizer, truncation=truncation, on_bad_row="error")
    seqs = []
    for row in res.rows:
        seqs += [(row.chosen.context, row.chosen.completion), (row.rejected.context, row.rejected.completion)]
    sums, _ = score_sequences(model, seqs, pad_id=pad_id_for(tokenizer), batch_size=batch_size,
                              block_size=block_size)
    return sums[0::2], sums[1::2]


def policy_margins(policy, tokenizer, examples: Sequence[PreferenceExample], *, reference=None,
                   beta: float = 0.1, truncation: TruncationConfig = _DEFAULT_TRUNCATION, batch_size: int = 64,
                   block_size: int = DEFAULT_BLOCK_SIZE) -> dict[str, np.ndarray]:
    r"""E3 inputs: $h_i=\beta[(S_{w,i}-R_{w,i})-(S_{l,i}-R_{l,i})]$ (n,) on held-out pairs.

    Without a reference model the margin is reference-free, $h_i=\beta(S_{w,i}-S_{l,i})$ (stated in reports).
    Returns a dict of (n,) arrays: ``margins``, ``policy_chosen``, ``policy_rejected`` and, with a reference,
    ``ref_chosen``, ``ref_rejected``.
    """
    kw = dict(truncation=truncation, batch_size=batch_size, block_size=block_size)
    sw, sl = response_logps(policy, tokenizer, examples, **kw)
    out = {"policy_chosen": sw, "policy_rejected": sl}
    rw = rl = np.zeros_like(sw)
    if reference is not None:
        rw, rl = response_logps(reference, tokenizer, examples, **kw)
        out |= {"ref_chosen": rw, "ref_rejected": rl}
    out["margins"] = beta * ((sw - rw) - (sl - rl))
    return out
