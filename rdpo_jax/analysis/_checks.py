"""Input validation shared by the estimators: errors name the argument, its shape and what is accepted."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_vector", "check_same_shape", "check_temperature", "check_ci_options", "as_groups"]


def as_vector(name: str, x, *, allow_none: bool = False, max_value: float | None = None) -> np.ndarray | None:
    """Return `x` as a finite float64 array of shape (n,), n >= 1, or raise a ValueError naming `name`."""
    if x is None:
        if allow_none:
            return None
        raise ValueError(f"`{name}` is required: pass an array of shape (n,)")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a numeric array of shape (n,); got {type(x).__name__}") from err
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must have shape (n,) (one value per example); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty (shape {arr.shape}); need at least one example")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"`{name}` (shape {arr.shape}) has {idx.size} non-finite value(s) (NaN or inf), first at index "
            f"{idx[0]} = {arr[idx[0]]}; all values must be finite"
        )
    if max_value is not None and (arr > max_value + 1e-6).any():
        i = int(np.argmax(arr))
        raise ValueError(
            f"`{name}` (shape {arr.shape}) must be log-probabilities (<= 0); index {i} is {arr[i]:.6g}. "
            "Pass log q(label | input), not logits"
        )
    return arr


def check_same_shape(ref_name: str, ref: np.ndarray, **others) -> None:
    """Raise if any non-None array in `others` differs in shape from `ref` (paired examples)."""
    for name, arr in others.items():
        if arr is not None and arr.shape != ref.shape:
            raise ValueError(
                f"`{name}` has shape {arr.shape} but `{ref_name}` has shape {ref.shape}; "
                "they must be paired per example (same shape (n,))"
            )


def as_groups(name: str, seeds, n: int) -> np.ndarray | None:
    """Validate per-example run labels (shape (n,)) and return them as integer codes 0..G-1 (or None)."""
    if seeds is None:
        return None
    arr = np.asarray(seeds)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"`{name}` must give one run label per example, shape ({n},); got shape {arr.shape}"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"`{name}` (shape {arr.shape}) has non-finite labels")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1)


def check_temperature(temperature) -> float | str:
    """A positive finite number, or the string "fit"."""
    if isinstance(temperature, str):
        if temperature != "fit":
            raise ValueError(f"`temperature` must be a positive number or 'fit'; got {temperature!r}")
        return "fit"
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise ValueError(f"`temperature` must be a positive number or 'fit'; got {temperature!r}")
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"`temperature` must be a positive finite number or 'fit'; got {temperature!r}")
    return t


def check_ci_options(ci_level: float, n_boot: int, method: str) -> None:
    if not (0.0 < float(ci_level) < 1.0):
        raise ValueError(f"`ci_level` must be in (0, 1), e.g. 0.95; got {ci_level!r}")
    if int(n_boot) != n_boot or n_boot < 100:
        raise ValueError(f"`n_boot` must be an integer >= 100 (default 2000); got {n_boot!r}")
    if method not in ("bca", "percentile"):
        raise ValueError(f"`method` must be 'bca' or 'percentile'; got {method!r}")
