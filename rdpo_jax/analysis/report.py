r"""The analysis report: E1-E3 from our models on one held-out preference set, as a JSON-able dict.

:func:`rdpo_jax.analysis.command.analyze` is what ``rdpo-jax analyze`` runs; every number in its report is
one library call on arrays from :mod:`rdpo_jax.analysis.lm`, so a user can recompute it:

* ``E2`` = ``swap_information(Δ(r), T, vacuous=Δ(b), shuffled=Δ(r_π))`` with $\Delta$ from
  :func:`~rdpo_jax.analysis.lm.rationale_logps` (reported value: contrast "rationale - vacuous");
* ``E2_masked`` = the same on the slot/label-word-masked rationales (leakage control);
* ``E2_conditional`` = ``swap_information(Δ(r), T, baseline=s0)``: information beyond the responses, with
  $s_0$ the policy's margin $h$ (when the policy was scored) else the vacuous rationale's $\Delta(b)$;
* ``E1_groundedness`` = ``pvi(ℓ(r | x, y_w, y_l), ℓ(r | x, ∅))``: rationale-pair pointwise MI, a diagnostic;
* ``E3`` = ``policy_information(h, T)`` per policy; ``E3_gain`` = ``information_gain(h_a, h_b, T)``;
  ``E3_curve`` = ``information_curve(N, [h_N ...])`` when checkpoints at several training sizes are given;
* ``by_kind``: mean pointwise E2 (nats) and its bootstrap interval per rationale kind (synthetic sets).

All values are nats unless a key says bits; intervals are bootstrap intervals over examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .bootstrap import bootstrap_mean
from .curves import information_curve
from .estimators import information_gain, policy_information, pvi, swap_information
from .lm import RationaleLogps
from .result import InformationEstimate

__all__ = ["estimate_entry", "rationale_section", "policy_section", "by_kind"]


def estimate_entry(est: InformationEstimate, per_example: bool = True) -> dict[str, Any]:
    """``est.to_dict()`` plus the pointwise values (nats) of the estimate and of each control."""
    out = est.to_dict()
    if per_example:
        out["per_example_nats"] = np.asarray(est.per_example, float).tolist()
        for key, ctl in est.controls.items():
            out["controls"][key]["per_example_nats"] = np.asarray(ctl.per_example, float).tolist()
    return out


def _temperature_arg(temperature):
    return temperature if temperature == "fit" else float(temperature)


def by_kind(values: np.ndarray, kinds: Sequence[str], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    r"""Mean of pointwise values per kind, with a percentile bootstrap interval: {kind: {n, nats, ci_nats}}."""
    values = np.asarray(values, float)
    kinds = np.asarray(list(kinds))
    out = {}
    for k in sorted(set(kinds.tolist())):
        v = values[kinds == k]
        if v.size >= 2:
            mi = bootstrap_mean(v, n_boot=n_boot, method="percentile", seed=seed)
            lo, hi = float(np.ravel(mi.low)[0]), float(np.ravel(mi.high)[0])
        else:
            lo = hi = float(v.mean()) if v.size else float("nan")
        out[k] = {"n": int(v.size), "nats": float(v.mean()), "ci_nats": [lo, hi]}
    return out


def rationale_section(rlp: RationaleLogps, *, temperature="fit", baseline: np.ndarray | None = None,
                      baseline_name: str = "vacuous", kinds: Sequence[str] | None = None, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    r"""E1 / E2 entries of the report from one :class:`RationaleLogps` (n examples).

    ``baseline``: (n,) logit $s_0$ of the true order without the rationale for ``E2_conditional`` (default
    $\Delta(b)$, the vacuous rationale). ``kinds``: (n,) rationale kinds for ``by_kind``.
    """
    t = _temperature_arg(temperature)
    kw = dict(n_boot=n_boot, seed=seed)
    conds = rlp.forward
    out: dict[str, Any] = {}
    e2 = swap_information(rlp.delta("rationale"), t, vacuous=rlp.delta("vacuous") if "vacuous" in conds else None,
                          shuffled=rlp.delta("shuffled") if "shuffled" in conds else None, **kw)
    out["E2"] = estimate_entry(e2)
    if "rationale_masked" in conds:
        em = swap_information(
            rlp.delta("rationale_masked"), t,
            vacuous=rlp.delta("vacuous_masked") if "vacuous_masked" in conds else None,
            shuffled=rlp.delta("shuffled_masked") if "shuffled_masked" in conds else None, **kw)
        out["E2_masked"] = estimate_entry(em)
        out["E2_masked"]["mask_words"] = list(rlp.mask_words)
        out["E2_masked"]["mask_token"] = rlp.mask_token
    s0 = baseline if baseline is not None else (rlp.delta("vacuous") if "vacuous" in conds else None)
    if s0 is not None:
        ec = swap_information(rlp.delta("rationale"), t, baseline=s0, **kw)
        out["E2_conditional"] = estimate_entry(ec) | {"baseline": baseline_name if baseline is not None
                                                       else "vacuous"}
    out["E1_groundedness"] = estimate_entry(pvi(np.minimum(rlp.forward["rationale"], 0.0),
                                                np.minimum(rlp.blank, 0.0), **kw))
    out["deltas"] = {c: rlp.delta(c).tolist() for c in conds}
    out["rationale_tokens"] = rlp.counts["rationale"].tolist() if "rationale" in rlp.counts else None
    if kinds is not None:
        out["by_kind"] = {"E2": by_kind(e2.per_example, kinds, **kw)}
        if "rationale_masked" in conds:
            out["by_kind"]["E2_masked"] = by_kind(em.per_example, kinds, **kw)
        out["kinds"] = list(kinds)
    out["template"] = rlp.template
    out["vacuous_rationale"] = rlp.vacuous
    return out


def policy_section(margins: Mapping[str, np.ndarray], *, temperature="fit", pairs: Sequence[tuple[str, str]] = (),
                   curve: Mapping[str, Sequence[tuple[int, np.ndarray]]] | None = None, n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    r"""E3 entries: ``E3[name]`` per policy, ``E3_gain["a - b"]`` for each pair, ``E3_curve[label]``.

    ``margins``: name -> (n,) margins $h$ on the same held-out pairs. ``curve``: label -> [(N, h_N), ...]
    (margins of that family's checkpoints trained on N pairs, N increasing).
    """
    t = _temperature_arg(temperature)
    kw = dict(n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"E3": {}, "E3_gain": {}, "E3_curve": {}}
    for name, h in margins.items():
        out["E3"][name] = estimate_entry(policy_information(h, t, **kw)) | {"margins": np.asarray(h).tolist()}
    for a, b in pairs:
        g = information_gain(margins[a], margins[b], t, labels=(a, b), **kw)
        out["E3_gain"][f"{a} - {b}"] = estimate_entry(g)
    for label, points in (curve or {}).items():
        points = sorted(points, key=lambda p: p[0])
        c = information_curve([p[0] for p in points], [p[1] for p in points], t, **kw)
        out["E3_curve"][label] = {"n_train": [int(p[0]) for p in points], "nats": c.nats.tolist(),
                                  "bits": c.bits.tolist(),
                                  "ci_nats": [list(e.ci) for e in c.estimates]}
    return out
