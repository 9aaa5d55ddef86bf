"""PNG plots of an analysis report (matplotlib, Agg backend; no display needed).

* :func:`plot_per_example`: histograms of pointwise E2 (rationale, vacuous, shuffled, masked) and of
  pointwise E3 per policy, in bits.
* :func:`plot_by_kind`: mean pointwise E2 per rationale kind (informative / vacuous / misleading) with the
  bootstrap interval, unmasked and masked.
* :func:`plot_curve`: E3 usable information against the number of training pairs, one line per family.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .result import LN2

__all__ = ["plot_per_example", "plot_by_kind", "plot_curve", "plot_report"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pointwise(entry: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(entry.get("per_example_nats", []), float) / LN2


def plot_per_example(report: Mapping[str, Any], path: str | Path) -> Path:
    """Histograms of per-example values (bits): E2 and its controls, and E3 per policy."""
    plt = _plt()
    e2 = report.get("E2")
    series = []
    if e2 is not None:
        series.append(("E2 rationale", _pointwise(e2)))
        for k in ("vacuous", "shuffled"):
            if "per_example_nats" in e2.get("controls", {}).get(k, {}):
                series.append((f"E2 {k}", _pointwise(e2["controls"][k])))
        if "E2_masked" in report:
            series.append(("E2 masked", _pointwise(report["E2_masked"])))
    for name, entry in report.get("E3", {}).items():
        series.append((f"E3 {name}", _pointwise(entry)))
    n = max(len(series), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.0), squeeze=False)
    for ax, (label, v) in zip(axes[0], series, strict=False):
        ax.hist(v, bins=30, color="tab:blue", alpha=0.8)
        ax.axvline(float(np.mean(v)) if v.size else 0.0, color="k", lw=1, label=f"mean {np.mean(v):.3f}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("pointwise information (bits)")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_by_kind(report: Mapping[str, Any], path: str | Path) -> Path | None:
    """Bars of mean pointwise E2 (bits) per rationale kind, unmasked and masked; None without kinds."""
    groups = report.get("by_kind")
    if not groups:
        return None
    plt = _plt()
    kinds = sorted({k for g in groups.values() for k in g})
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(kinds), 3.0))
    width = 0.8 / len(groups)
    for j, (label, g) in enumerate(groups.items()):
        x = np.arange(len(kinds)) + j * width
        mean = np.array([g.get(k, {}).get("nats", np.nan) for k in kinds]) / LN2
        ci = np.array([g.get(k, {}).get("ci_nats", [np.nan, np.nan]) for k in kinds]) / LN2
        err = np.abs(np.stack([mean - ci[:, 0], ci[:, 1] - mean]))
        ax.bar(x, mean, width, yerr=err, capsize=3, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds)
    ax.set_ylabel("mean pointwise E2 (bits)")
    ax.set_title("rationale information by kind", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_curve(report: Mapping[str, Any], path: str | Path) -> Path | None:
    """E3 (bits) against training pairs N per family, with intervals; None without curves."""
    curves = report.get("E3_curve")
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for label, c in curves.items():
        n = np.asarray(c["n_train"])
        y = np.asarray(c["bits"])
        ci = np.asarray(c["ci_nats"]) / LN2
        ax.plot(n, y, "o-", label=label)
        ax.fill_between(n, ci[:, 0], ci[:, 1], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs N")
    ax.set_ylabel("usable preference information (bits)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_report(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """All plots of a report into ``out_dir`` (per_example.png, by_kind.png, curve.png as applicable)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_per_example(report, out_dir / "per_example.png"),
             plot_by_kind(report, out_dir / "by_kind.png"), plot_curve(report, out_dir / "curve.png")]
    return [p for p in paths if p is not None]


def _save(fig, path: str | Path) -> Path:
    """Lays out, writes (PNG, 90 dpi) and closes a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
