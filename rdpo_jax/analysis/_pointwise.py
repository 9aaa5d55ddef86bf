r"""Pointwise building blocks shared by the estimators: symmetric-logit information, conditional stacking,
and assembling paired bootstrap intervals into `InformationEstimate` objects."""

from __future__ import annotations

import numpy as np
from scipy.special import log_expit

from .bootstrap import bootstrap_mean
from .calibration import Folds, fit_rows, make_folds, out_of_fold
from .result import LN2, InformationEstimate

__all__ = ["Options", "sym_pointwise", "conditional_pointwise", "assemble", "maybe_folds"]


class Options:
    """Interval / cross-fitting options shared by one call (validated by the caller)."""

    def __init__(self, *, ci_level, n_boot, method, seed, groups, n_folds):
        self.ci_level = float(ci_level)
        self.n_boot = int(n_boot)
        self.method = method
        self.seed = int(seed)
        self.groups = groups
        self.n_folds = int(n_folds)

    @property
    def n_runs(self) -> int:
        return 1 if self.groups is None else int(self.groups.max()) + 1


def maybe_folds(n: int, fit: bool, opts: Options) -> Folds | None:
    return make_folds(n, opts.n_folds, opts.seed, opts.groups) if fit else None


def _temps(coef: np.ndarray) -> np.ndarray:
    """Temperatures 1/a from inverse-temperature coefficients (inf where a <= 0)."""
    with np.errstate(divide="ignore"):
        return np.where(coef > 0, 1.0 / np.maximum(coef, 1e-300), np.inf)


def sym_pointwise(scores: np.ndarray, temperature, folds: Folds | None):
    r"""Per-example $\log 2+\log\sigma(s_i/T)=\log2-\mathrm{sp}(-s_i/T)$, nats (<= log 2).

    With temperature "fit", $1/T$ is cross-fitted (>= 0) and each example uses the fold fit that did not
    see it.
    Returns (per_example, reported temperature, fold temperatures or None).
    """
    if folds is None:
        return LN2 + log_expit(scores / temperature), float(temperature), None
    x = scores[:, None]
    coef = fit_rows(x, folds.weights, nonneg=True)
    z = out_of_fold(x, coef, folds.eval_row)
    temps = _temps(coef[:, 0])
    return LN2 + log_expit(z), float(np.median(temps[folds.n_fold_rows :])), temps[: folds.n_fold_rows]


def conditional_pointwise(delta: np.ndarray, baseline: np.ndarray, temperature, combine: str, folds):
    r"""Per-example conditional information of the scores `delta` beyond the baseline logit $s_0$ (nats).

    $\mathrm{PVI}_i=\log\sigma(z_{1,i})-\log\sigma(z_{0,i})$ with
      * naive Bayes, fixed T: $z_0=s_0$, $z_1=s_0+\Delta/T$;
      * naive Bayes, "fit": $z_0=a_0 s_0$ ($a_0\ge0$ fitted alone), $z_1=a_0 s_0+\Delta/T$ ($1/T\ge0$ fitted
        with $a_0 s_0$ as a fixed offset);
      * stacked ("fit" only): $z_0=a_0 s_0$, $z_1=a s_0+b\Delta$, both fitted jointly (no intercept: see
        `calibration`).
    Fitted parameters are cross-fitted. Returns (per_example, baseline_pointwise, T, fold T, info).
    """
    if folds is None:
        z0 = baseline
        z1 = baseline + delta / temperature
        base = LN2 + log_expit(z0)
        return log_expit(z1) - log_expit(z0), base, float(temperature), None, {}
    s0 = baseline[:, None]
    if combine == "naive_bayes":
        a0 = fit_rows(s0, folds.weights, nonneg=True)
        offset = a0[:, :1] * baseline[None, :]
        b = fit_rows(delta[:, None], folds.weights, offset=offset, nonneg=True)
        z0 = out_of_fold(s0, a0, folds.eval_row)
        z1 = z0 + out_of_fold(delta[:, None], b, folds.eval_row)
        temps = _temps(b[:, 0])
        base_t = _temps(a0[:, 0])
        info = {"baseline_temperature": float(np.median(base_t[folds.n_fold_rows :]))}
        t_rep, fold_t = float(np.median(temps[folds.n_fold_rows :])), temps[: folds.n_fold_rows]
    else:
        a0 = fit_rows(s0, folds.weights)
        feats = np.stack([baseline, delta], axis=1)
        ab = fit_rows(feats, folds.weights)
        z0 = out_of_fold(s0, a0, folds.eval_row)
        z1 = out_of_fold(feats, ab, folds.eval_row)
        full = ab[folds.n_fold_rows :]
        info = {
            "baseline_coef": float(np.median(a0[folds.n_fold_rows :, 0])),
            "stacked_coefs": (float(np.median(full[:, 0])), float(np.median(full[:, 1]))),
        }
        t_rep, fold_t = None, None
    base = LN2 + log_expit(z0)
    return log_expit(z1) - log_expit(z0), base, t_rep, fold_t, info


def assemble(
    name: str,
    main: tuple,
    opts: Options,
    controls: dict[str, tuple] | None = None,
    contrasts: dict[str, np.ndarray] | None = None,
    info: dict | None = None,
) -> InformationEstimate:
    """Bootstrap the main, control and contrast rows with shared (paired) resamples and build the result.

    `main` and each control are (per_example, temperature, fold_temperatures); contrasts are per-example
    paired differences.
    """
    controls = controls or {}
    contrasts = contrasts or {}
    rows = [main[0]] + [c[0] for c in controls.values()] + list(contrasts.values())
    res = bootstrap_mean(
        np.stack(rows),
        groups=opts.groups,
        ci_level=opts.ci_level,
        n_boot=opts.n_boot,
        method=opts.method,
        seed=opts.seed,
    )

    def make(label, i, values, temp=None, fold_t=None, extra=None, ctrl=None, ctr=None):
        return InformationEstimate(
            name=label,
            nats=float(res.estimate[i]),
            per_example=values,
            ci=(float(res.low[i]), float(res.high[i])),
            ci_level=opts.ci_level,
            method=opts.method,
            n_boot=opts.n_boot,
            n_runs=opts.n_runs,
            temperature=temp,
            fold_temperatures=fold_t,
            controls=ctrl or {},
            contrasts=ctr or {},
            info=extra or {},
            replicates=res.replicates[i],
        )

    ctrl_objs, i = {}, 1
    for key, (vals, temp, fold_t) in controls.items():
        ctrl_objs[key] = make(f"{name}[{key}]", i, vals, temp, fold_t)
        i += 1
    ctr_objs = {}
    for key, vals in contrasts.items():
        ctr_objs[key] = make(f"{name}[{key}]", i, vals)
        i += 1
    return make(name, 0, main[0], main[1], main[2], info, ctrl_objs, ctr_objs)
