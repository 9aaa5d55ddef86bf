r"""Usable-information estimators on per-example arrays (docs/spec.md section 5: E1-E3).

All estimates are means of pointwise values over **held-out** examples, in nats (`.bits` divides by
ln 2), with a paired percentile or BCa bootstrap interval over examples, two-stage over runs when `seeds`
labels each example with its run. Scores are oriented so that the target is always "the true preference / true order".

* E1 `pvi`: $\mathrm{PVI}_i=\log q_{\text{full}}(z_i\mid\cdot)-\log q_{\text{base}}(z_i\mid\cdot)$;
  $\hat I_{\mathcal V}=\overline{\mathrm{PVI}}$ (Ethayarajh et al. 2022; conditional V-information of Hewitt
  et al. 2021 when the base model sees the conditioning variable).
* E2 `swap_information`: $\Delta_i=\ell(r_i\mid\text{chosen first})-\ell(r_i\mid\text{chosen second})$ (summed
  rationale log-probs); $\hat I^{\text{swap}}=\log2-\overline{\mathrm{sp}(-\Delta/T)}\le\log 2$ (InfoNCE with
  K = 2, Barber-Agakov with H(O) = log 2); conditional on a baseline logit $s_0$:
  $\overline{\log\sigma(s_1)-\log\sigma(s_0)}$ with $s_1=s_0+\Delta/T$ (naive Bayes) or stacked.
* E3 `policy_information`: $h_i$ = implicit-reward margin
  $\beta[(\ell_\theta-\ell_{\text{ref}})(y_w)-(\ell_\theta-\ell_{\text{ref}})(y_l)]$;
  $\hat I^{A}_{\mathcal V}=\log2-\overline{\mathrm{sp}(-h/T_A)}$; `information_gain` gives the paired
  difference $\hat I^{a}-\hat I^{b}$ (e.g. RDPO - DPO).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

import numpy as np

from ._checks import as_groups, as_vector, check_ci_options, check_same_shape, check_temperature
from ._pointwise import Options, Row, assemble, conditional_pointwise, difference, maybe_folds, sym_pointwise
from .result import InformationEstimate

__all__ = ["INTERVAL_DEFAULTS", "IntervalOptions", "pvi", "swap_information", "policy_information",
           "information_gain"]


class IntervalOptions(TypedDict, total=False):
    """The keyword options every estimator takes, defined once (defaults: `INTERVAL_DEFAULTS`).

    ``n_folds``: folds of the cross-fitted temperature (``temperature="fit"``; not an option of `pvi`, which
    fits nothing); ``ci_level``; ``n_boot``: bootstrap resamples (B >= 2000 by default); ``method``: "bca"
    or "percentile"; ``seed``: of the folds and resamples; ``seeds``: optional (n,) run labels, with which
    the interval resamples runs, then examples within run.
    """

    n_folds: int
    ci_level: float
    n_boot: int
    method: str
    seed: int
    seeds: Any


INTERVAL_DEFAULTS: IntervalOptions = {"n_folds": 5, "ci_level": 0.95, "n_boot": 2000, "method": "bca", "seed": 0,
                                      "seeds": None}


def _options(n: int, given: Mapping[str, Any], caller: str, *, fits: bool = True) -> Options:
    """`Options` from a call's interval keywords (unknown ones, or ``n_folds`` where nothing is fitted, are a
    TypeError naming what is accepted)."""
    accepted = [k for k in INTERVAL_DEFAULTS if fits or k != "n_folds"]
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(unknown)}; its interval "
                        f"options are {', '.join(accepted)}")
    o = {**INTERVAL_DEFAULTS, **given}
    check_ci_options(o["ci_level"], o["n_boot"], o["method"])
    return Options(ci_level=o["ci_level"], n_boot=o["n_boot"], method=o["method"], seed=o["seed"],
                   groups=as_groups("seeds", o["seeds"], n), n_folds=o["n_folds"] if fits else 2)


def pvi(
    logp_full,
    logp_base,
    *,
    null=None,
    **interval: Unpack[IntervalOptions],
) -> InformationEstimate:
    r"""E1: pointwise and (conditional) V-information from held-out label log-probs.

    $$\mathrm{PVI}_i=\log q_{\text{full}}(z_i\mid x_i, r_i)-\log q_{\text{base}}(z_i\mid x_i),\qquad
      \hat I_{\mathcal V}(R\to Z\mid X)=\tfrac1n\textstyle\sum_i\mathrm{PVI}_i\ \text{(nats)}.$$

    With a base that sees nothing (the constant $\log p(z)$, or $\log\frac12$ for orientation-symmetric pairs)
    this is $I_{\mathcal V}(\cdot\to Z)$; with a base model that sees the conditioning variable it is the
    conditional V-information. Negative pointwise values are legitimate (the full model is worse there).

    Args:
      logp_full: (n,) log-probabilities (<= 0) of each true label under the model given the extra variable.
      logp_base: (n,) log-probabilities of the same labels without it, or a scalar (e.g. log 0.5) for all.
      null: optional (n,) log-probs of the full model on shuffled inputs (each example paired with another
        example's extra variable). Reported as control "null" ($\overline{\text{null}-\text{base}}$, should be
        <= 0) and contrast "full - null" (the VI-growth correction of Ghosh & Motani 2025).
      **interval: ``ci_level``, ``n_boot``, ``method``, ``seed``, ``seeds`` (`IntervalOptions`).

    Returns:
      `InformationEstimate`; `.per_example` is PVI_i in nats.
    """
    full = as_vector("logp_full", logp_full, max_value=0.0)
    if np.ndim(logp_base) == 0 and logp_base is not None:
        base = np.full(full.shape, float(logp_base))
        as_vector("logp_base", base, max_value=0.0)
    else:
        base = as_vector("logp_base", logp_base, max_value=0.0)
    nul = as_vector("null", null, allow_none=True, max_value=0.0)
    check_same_shape("logp_full", full, logp_base=base, null=nul)
    opts = _options(full.size, interval, "pvi", fits=False)
    controls, contrasts = {}, {}
    if nul is not None:
        controls["null"] = Row(nul - base)
        contrasts["full - null"] = Row(full - nul)
    return assemble("pvi", Row(full - base), opts, controls, contrasts)


def swap_information(
    delta,
    temperature=1.0,
    *,
    vacuous=None,
    shuffled=None,
    baseline=None,
    combine: str = "naive_bayes",
    **interval: Unpack[IntervalOptions],
) -> InformationEstimate:
    r"""E2: swap-order rationale information from $\Delta_i$ (chosen-first minus chosen-second log-prob).

    Unconditional (``baseline=None``):
    $$\hat I^{\text{swap}}=\log 2-\tfrac1n\textstyle\sum_i\mathrm{sp}(-\Delta_i/T)\ \le\ \log 2,$$
    the information of the rationale-implied posterior $\sigma(\Delta/T)$ about the true slot order.

    Conditional (``baseline`` = a logit $s_0$ of the true order without the rationale: a DPO margin
    $h/T_0$, the vacuous-rationale $\Delta(b)$, or a judge's log-odds; docs/spec.md section 5):
    $$\widehat{\mathrm{CVI}}=\tfrac1n\textstyle\sum_i\big[\log\sigma(s_{1,i})-\log\sigma(s_{0,i})\big],$$
    naive Bayes $s_1=s_0+\Delta/T$ (with "fit": $s_0\to a_0 s_0$, both scales cross-fitted), or stacked
    $s_1=a s_0+b\Delta$ (``combine="stacked"``, fitted, requires ``temperature="fit"``). Stacking has no
    intercept: the target is always the true order, so an intercept (a position prior) is not identifiable.

    Args:
      delta: (n,) summed rationale log-prob with the chosen response first minus with it second (nats).
      temperature: a positive number, or "fit" (cross-fitted on `n_folds` folds, evaluated out-of-fold).
      vacuous: optional (n,) $\Delta$ of a vacuous rationale (REV-style baseline); adds control "vacuous" and
        the paired contrast "rationale - vacuous" (the reported REV-style value).
      shuffled: optional (n,) $\Delta$ of another example's rationale (null: position prior only); adds
        control "shuffled" and contrast "rationale - shuffled".
      baseline: optional (n,) baseline logit $s_0$ for the conditional version; the controls are then also
        conditional, and control "baseline" is the baseline's own information
      $\log2-\overline{\mathrm{sp}(-s_0)}$.
      combine: "naive_bayes" or "stacked" (conditional version only).
      **interval: ``n_folds``, ``ci_level``, ``n_boot``, ``method``, ``seed``, ``seeds`` (`IntervalOptions`).
    """
    d = as_vector("delta", delta)
    vac = as_vector("vacuous", vacuous, allow_none=True)
    shu = as_vector("shuffled", shuffled, allow_none=True)
    s0 = as_vector("baseline", baseline, allow_none=True)
    check_same_shape("delta", d, vacuous=vac, shuffled=shu, baseline=s0)
    temperature = check_temperature(temperature)
    if combine not in ("naive_bayes", "stacked"):
        raise ValueError(f"`combine` must be 'naive_bayes' or 'stacked'; got {combine!r}")
    if combine == "stacked" and (s0 is None or temperature != "fit"):
        raise ValueError("combine='stacked' fits its coefficients: pass `baseline` and temperature='fit'")
    opts = _options(d.size, interval, "swap_information")
    folds = maybe_folds(d.size, temperature == "fit", opts)

    info: dict = {}
    controls, contrasts = {}, {}
    if s0 is None:
        def score(x):
            return sym_pointwise(x, temperature, folds)
        name = "swap_information"
    else:
        def score(x):
            nonlocal info
            row, base, extra = conditional_pointwise(x, s0, temperature, combine, folds)
            if "baseline" not in controls:
                controls["baseline"], info = base, extra
            return row
        name = f"conditional_swap_information[{combine}]"

    main = score(d)
    for key, arr in (("vacuous", vac), ("shuffled", shu)):
        if arr is not None:
            controls[key] = score(arr)
            contrasts[f"rationale - {key}"] = difference(main, controls[key])
    return assemble(name, main, opts, controls, contrasts, info)


def policy_information(
    margins,
    temperature=1.0,
    *,
    null: bool = True,
    **interval: Unpack[IntervalOptions],
) -> InformationEstimate:
    r"""E3: usable preference information of a policy from its implicit-reward margins on held-out pairs.


      $$h_i=\beta\big[(\ell_\theta-\ell_{\text{ref}})(y_{w,i})-(\ell_\theta-\ell_{\text{ref}})(y_{l,i})\big],\qquad
      \hat I^{A}_{\mathcal V}=\log 2-\tfrac1n\textstyle\sum_i\mathrm{sp}(-h_i/T_A)\ \le\ \log 2 .$$

    The orientation of a pair is arbitrary, so the null predictor is 1/2. With $T_A$ fitted ("fit",
    cross-fitted) this is the held-out DPO loss re-expressed as usable information.

    Args:
      margins: (n,) implicit-reward margins h_i (chosen minus rejected), held-out pairs.
      temperature: a positive number, or "fit".
      null: also report control "permuted": the same estimator (same temperature procedure) on margins with
        random signs, i.e. permuted preference labels. With "fit" it is ~0; with a fixed T it is <= 0 and
        measures over-confidence.
      **interval: as `swap_information`.
    """
    h = as_vector("margins", margins)
    temperature = check_temperature(temperature)
    opts = _options(h.size, interval, "policy_information")
    folds = maybe_folds(h.size, temperature == "fit", opts)
    main = sym_pointwise(h, temperature, folds)
    controls = {}
    if null:
        signs = np.random.default_rng([opts.seed, 1]).choice([-1.0, 1.0], size=h.size)
        controls["permuted"] = sym_pointwise(signs * h, temperature, folds)
    return assemble("policy_information", main, opts, controls)


def information_gain(
    margins_a,
    margins_b,
    temperature=1.0,
    *,
    temperature_b=None,
    labels: tuple[str, str] = ("a", "b"),
    **interval: Unpack[IntervalOptions],
) -> InformationEstimate:
    r"""E3 paired difference: $\Delta\hat I=\hat I^{a}_{\mathcal V}-\hat I^{b}_{\mathcal V}$ (e.g. RDPO -
    DPO).

    Per example $d_i=\mathrm{sp}(-h_{b,i}/T_b)-\mathrm{sp}(-h_{a,i}/T_a)$ on the same held-out pairs; the
    bootstrap resamples examples (and runs) once for both policies, so the interval is paired.

    Args:
      margins_a, margins_b: (n,) implicit-reward margins of the two policies on the same pairs.
      temperature: for policy a (number or "fit"); `temperature_b` for b (defaults to `temperature`). With
        "fit" each policy gets its own cross-fitted temperature (same folds).
      labels: names of the two policies in the report, e.g. ("RDPO", "DPO").
      seeds: (n,) run labels shared by both (run s of policy a is paired with run s of policy b).
    Returns:
      `InformationEstimate` of the gain, with controls `labels[0]` and `labels[1]` (each policy's estimate).
    """
    ha = as_vector("margins_a", margins_a)
    hb = as_vector("margins_b", margins_b)
    check_same_shape("margins_a", ha, margins_b=hb)
    ta = check_temperature(temperature)
    tb = ta if temperature_b is None else check_temperature(temperature_b)
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"`labels` must be two distinct names; got {labels!r}")
    opts = _options(ha.size, interval, "information_gain")
    folds = maybe_folds(ha.size, "fit" in (ta, tb), opts)
    pa = sym_pointwise(ha, ta, folds if ta == "fit" else None)
    pb = sym_pointwise(hb, tb, folds if tb == "fit" else None)
    name = f"information_gain[{labels[0]} - {labels[1]}]"
    return assemble(name, difference(pa, pb), opts, {labels[0]: pa, labels[1]: pb})
