r"""Pointwise building blocks shared by the estimators: symmetric-logit information, conditional stacking,
and assembling paired bootstrap intervals into `InformationEstimate` objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from scipy.special import expit, log_expit

from .bootstrap import bootstrap_mean
from .calibration import Folds, fit_rows, make_folds, out_of_fold
from .result import LN2, InformationEstimate

__all__ = ["Options", "Row", "assemble", "conditional_pointwise", "difference", "maybe_folds", "sym_pointwise"]


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


class Row(NamedTuple):
    """One estimate's per-example values and what its interval needs.

    values: (n,) pointwise values in nats (out-of-fold when fitted); temperature, fold_temperatures: as in
    `InformationEstimate`; refit: None (a plain mean), or ``counts (b, n) -> (b,)`` recomputing the estimate
    on bootstrap resamples with its parameters refitted; pinned: every fit put its coefficient at the
    boundary 0 (T = inf), so the values are 0 by construction.
    """

    values: np.ndarray
    temperature: float | None = None
    fold_temperatures: np.ndarray | None = None
    refit: Callable[[np.ndarray], np.ndarray] | None = None
    pinned: bool = False


def _chunks(counts: np.ndarray) -> list[slice]:
    """Slices of resamples whose (resamples x examples) arrays hold at most ~4M entries at once."""
    b, n = counts.shape
    step = max(1, 4_000_000 // max(n, 1))
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]


def _newton_1d(counts: np.ndarray, masks: np.ndarray, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G, H) (b, R): the resamples' weighted gradient and curvature of sum_i m_ri sp(-z_ri) with respect to
    the coefficient of ``x``, at the full-data logits ``z`` (R, n). Weights are counts x fold masks; their
    common normaliser cancels in G / H."""
    s = expit(-z)
    return counts @ (-(masks * s) * x).T, counts @ (masks * s * (1.0 - s) * x * x).T


def _step(coef: np.ndarray, g: np.ndarray, h: np.ndarray, nonneg: bool) -> np.ndarray:
    """One Newton step per (resample, fold row); a row without curvature keeps its coefficient."""
    new = coef[None, :] - np.divide(g, h, out=np.zeros_like(g), where=h > 0)
    return np.maximum(new, 0.0) if nonneg else new


def _last_call(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    """``fn`` remembering its last result: the rows and contrasts of one estimate call it with the same counts
    array of a bootstrap chunk (a contrast reuses its two sides' refits)."""
    memo: list = [None, None]

    def call(counts: np.ndarray) -> Any:
        if memo[0] is not counts:
            memo[0], memo[1] = counts, fn(counts)
        return memo[1]

    return call


def _mean(counts: np.ndarray, pointwise: np.ndarray) -> np.ndarray:
    return (counts * pointwise).sum(axis=1) / counts.sum(axis=1)


def sym_pointwise(scores: np.ndarray, temperature, folds: Folds | None) -> Row:
    r"""Per-example $\log 2+\log\sigma(s_i/T)=\log2-\mathrm{sp}(-s_i/T)$, nats (<= log 2).

    With temperature "fit", $1/T$ is cross-fitted (>= 0) and each example uses the fold fit that did not
    see it; the row's refit repeats the fold fits on each bootstrap resample.
    """
    if folds is None:
        return Row(LN2 + log_expit(scores / temperature), float(temperature))
    x = scores[:, None]
    coef = fit_rows(x, folds.weights, nonneg=True)
    z = out_of_fold(x, coef, folds.eval_row)
    temps = _temps(coef[:, 0])
    rows = slice(0, folds.n_fold_rows)
    a, masks = coef[rows, 0], folds.weights[rows]

    @_last_call
    def refit(counts: np.ndarray) -> np.ndarray:
        out = np.empty(counts.shape[0])
        for sl in _chunks(counts):
            c = counts[sl]
            a_b = _step(a, *_newton_1d(c, masks, scores, a[:, None] * scores[None, :]), nonneg=True)
            out[sl] = _mean(c, LN2 + log_expit(a_b[:, folds.eval_row] * scores[None, :]))
        return out

    return Row(LN2 + log_expit(z), float(np.median(temps[folds.n_fold_rows :])), temps[: folds.n_fold_rows],
               refit, pinned=bool(np.all(coef[:, 0] <= 0)))


def conditional_pointwise(delta: np.ndarray, baseline: np.ndarray, temperature, combine: str, folds
                          ) -> tuple[Row, Row, dict]:
    r"""Per-example conditional information of the scores `delta` beyond the baseline logit $s_0$ (nats).

    $\mathrm{PVI}_i=\log\sigma(z_{1,i})-\log\sigma(z_{0,i})$ with
      * naive Bayes, fixed T: $z_0=s_0$, $z_1=s_0+\Delta/T$;
      * naive Bayes, "fit": $z_0=a_0 s_0$ ($a_0\ge0$ fitted alone), $z_1=a_0 s_0+\Delta/T$ ($1/T\ge0$ fitted
        with $a_0 s_0$ as a fixed offset);
      * stacked ("fit" only): $z_0=a_0 s_0$, $z_1=a s_0+b\Delta$, both fitted jointly (no intercept: see
        `calibration`).
    Fitted parameters are cross-fitted, and refitted on bootstrap resamples. Returns (the conditional row,
    the baseline's own row $\log 2+\log\sigma(z_0)$, info).
    """
    if folds is None:
        z0 = baseline
        z1 = baseline + delta / temperature
        return (Row(log_expit(z1) - log_expit(z0), float(temperature)),
                Row(LN2 + log_expit(z0), None), {})
    s0 = baseline[:, None]
    nb = combine == "naive_bayes"
    a0 = fit_rows(s0, folds.weights, nonneg=nb)
    if nb:
        second = fit_rows(delta[:, None], folds.weights, offset=a0[:, :1] * baseline[None, :], nonneg=True)
    else:
        second = fit_rows(np.stack([baseline, delta], axis=1), folds.weights)

    def logits(a0_: np.ndarray, sec: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z0, z1) of every example from the coefficients in ``rows`` (a0_ (..., R), sec (..., R, p))."""
        z0 = a0_[..., rows] * baseline
        if nb:
            return z0, z0 + sec[..., rows, 0] * delta
        return z0, sec[..., rows, 0] * baseline + sec[..., rows, 1] * delta

    z0, z1 = logits(a0[:, 0], second, folds.eval_row)
    fold_rows, full = folds.n_fold_rows, slice(folds.n_fold_rows, None)
    if nb:
        temps = _temps(second[:, 0])
        info = {"baseline_temperature": float(np.median(_temps(a0[:, 0])[full]))}
        t_rep, fold_t = float(np.median(temps[full])), temps[:fold_rows]
        pinned = bool(np.all(second[:, 0] <= 0))
    else:
        info = {"baseline_coef": float(np.median(a0[full, 0])),
                "stacked_coefs": (float(np.median(second[full, 0])), float(np.median(second[full, 1])))}
        t_rep, fold_t, pinned = None, None, False
    masks, a0f, secf = folds.weights[:fold_rows], a0[:fold_rows, 0], second[:fold_rows]
    zf0, zf1 = logits(a0f, secf, np.arange(fold_rows)[:, None])  # (R, n): every fold row on every example

    def refit_second(c: np.ndarray, a0_b: np.ndarray) -> np.ndarray:
        """The resamples' stage-2 coefficients (b, R, p): one Newton step from the full-data fit."""
        s = expit(-zf1)
        curv = masks * s * (1.0 - s)
        if nb:  # the offset a0 s0 moved with a0: first-order correction of the gradient
            g = c @ (-(masks * s) * delta).T + (c @ (curv * delta * baseline).T) * (a0_b - a0f[None, :])
            return _step(secf[:, 0], g, c @ (curv * delta * delta).T, nonneg=True)[..., None]
        feats = (baseline, delta)
        g = np.stack([c @ (-(masks * s) * f).T for f in feats], axis=-1)  # (b, R, 2)
        h = [[c @ (curv * f * f2).T for f2 in feats] for f in feats]
        det = h[0][0] * h[1][1] - h[0][1] ** 2
        ok = det > 0
        inv = np.divide(1.0, det, out=np.zeros_like(det), where=ok)
        d0 = (h[1][1] * g[..., 0] - h[0][1] * g[..., 1]) * inv
        d1 = (h[0][0] * g[..., 1] - h[0][1] * g[..., 0]) * inv
        return secf[None] - np.stack([d0, d1], axis=-1)

    @_last_call
    def refit_both(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        main, base = np.empty(counts.shape[0]), np.empty(counts.shape[0])
        for sl in _chunks(counts):
            c = counts[sl]
            a0_b = _step(a0f, *_newton_1d(c, masks, baseline, zf0), nonneg=nb)
            r0, r1 = logits(a0_b, refit_second(c, a0_b), folds.eval_row)
            main[sl] = _mean(c, log_expit(r1) - log_expit(r0))
            base[sl] = _mean(c, LN2 + log_expit(r0))
        return main, base

    return (Row(log_expit(z1) - log_expit(z0), t_rep, fold_t, lambda c: refit_both(c)[0], pinned),
            Row(LN2 + log_expit(z0), info.get("baseline_temperature"), None, lambda c: refit_both(c)[1],
                bool(np.all(a0[:, 0] <= 0)) if nb else False), info)


def difference(a: Row, b: Row) -> Row:
    """The paired contrast a - b per example; refitted replicates when either side is refitted."""
    refit = None
    if a.refit is not None or b.refit is not None:
        def refit(counts: np.ndarray) -> np.ndarray:
            ra = a.refit(counts) if a.refit is not None else _mean(counts, a.values)
            rb = b.refit(counts) if b.refit is not None else _mean(counts, b.values)
            return ra - rb
    return Row(a.values - b.values, refit=refit, pinned=a.pinned and b.pinned)


PINNED = ("every fit put the temperature at its limit (T = inf): the scores carry no usable signal, so the "
          "estimate is 0 by construction")
ZERO_WIDTH = "zero-width interval: every bootstrap replicate gives the same value"


def assemble(
    name: str,
    main: Row,
    opts: Options,
    controls: dict[str, Row] | None = None,
    contrasts: dict[str, Row] | None = None,
    info: dict | None = None,
) -> InformationEstimate:
    """Bootstrap the main, control and contrast rows with shared (paired) resamples and build the result.

    Rows with a refit are bootstrapped with their parameters refitted on every resample. An estimate whose
    fits are all at the boundary, or whose interval has zero width, says so in ``boundary``.
    """
    controls = controls or {}
    contrasts = contrasts or {}
    rows = [main] + list(controls.values()) + list(contrasts.values())
    res = bootstrap_mean(
        np.stack([r.values for r in rows]),
        groups=opts.groups,
        ci_level=opts.ci_level,
        n_boot=opts.n_boot,
        method=opts.method,
        seed=opts.seed,
        refits=[r.refit for r in rows],
    )

    def make(label, i, row: Row, extra=None, ctrl=None, ctr=None):
        lo, hi = float(res.low[i]), float(res.high[i])
        boundary = PINNED if row.pinned else (ZERO_WIDTH if hi - lo <= 1e-12 else None)
        return InformationEstimate(
            name=label,
            nats=float(res.estimate[i]),
            per_example=row.values,
            ci=(lo, hi),
            ci_level=opts.ci_level,
            method=opts.method,
            n_boot=opts.n_boot,
            n_runs=opts.n_runs,
            temperature=row.temperature,
            fold_temperatures=row.fold_temperatures,
            controls=ctrl or {},
            contrasts=ctr or {},
            info=extra or {},
            replicates=res.replicates[i],
            boundary=boundary,
        )

    ctrl_objs, i = {}, 1
    for key, row in controls.items():
        ctrl_objs[key] = make(f"{name}[{key}]", i, row)
        i += 1
    ctr_objs = {}
    for key, row in contrasts.items():
        ctr_objs[key] = make(f"{name}[{key}]", i, row)
        i += 1
    return make(name, 0, main, info, ctrl_objs, ctr_objs)
