"""PNG of a run's training curves from its ``metrics.jsonl`` (matplotlib, Agg backend, no display)."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from rdpo_jax import paths
from rdpo_jax.train.metrics_log import read_metrics

PANELS = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rationale", "nll_loss")


def plot_runs(runs: dict[str, str | Path], path: str | Path, panels: Sequence[str] = PANELS) -> Path:
    """One panel per metric present in any run; train as lines, eval as markers. ``runs``: label -> jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {label: read_metrics(p) for label, p in runs.items()}
    present = [m for m in panels if any(m in r for rs in records.values() for r in rs)]
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(4 * max(len(present), 1), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=False):
        for i, (label, rs) in enumerate(records.items()):
            for split, style in (("train", "-"), ("eval", "o--")):
                pts = [(r["step"], r[metric]) for r in rs if r.get("split") == split and isinstance(r.get(metric),
                                                                                                   int | float)]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, style, color=f"C{i}", label=f"{label} {split}", markersize=3)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = paths.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
