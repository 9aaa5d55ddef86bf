"""What ``rdpo-jax judge`` writes: ``verdicts.jsonl`` (one line per prompt: id, outcome for A, the orders
judged, unparsed, lengths), ``summary.json`` (strict JSON: counts, win rate, Wilson and bootstrap
intervals, position consistency, mean lengths of each side) and ``winrate.png`` (win/tie/loss bars)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rdpo_jax.eval.judges.aggregate import JudgeOutcome
from rdpo_jax.files import write_json, write_text

__all__ = ["length_stats", "write_outputs"]


def length_stats(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean response length in characters and, when every record has ``response_tokens``, in tokens."""
    chars = [len(r["response"]) for r in records]
    toks = [r.get("response_tokens") for r in records]
    return {"mean_chars": float(np.mean(chars)) if chars else None,
            "mean_tokens": float(np.mean(toks)) if toks and all(isinstance(t, int) for t in toks) else None}


def write_outputs(out: str | Path, outcome: JudgeOutcome, pairs: list[tuple[dict, dict]],
                  extra: dict[str, Any], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for (ra, rb), p in zip(pairs, outcome.pairs, strict=True):
        lines.append(json.dumps({"prompt_id": ra["prompt_id"], "outcome": p.outcome, "unparsed": p.unparsed,
                                 "consistent": p.consistent,
                                 "orders": [{"shown_first": "A" if a_first else "B", "verdict": v.value}
                                            for a_first, v in p.orders],
                                 "a_chars": len(ra["response"]), "b_chars": len(rb["response"])},
                                ensure_ascii=False))
    write_text(out / "verdicts.jsonl", "".join(line + "\n" for line in lines))
    summary = {**outcome.summary(n_boot=n_boot, seed=seed),
               "length_a": length_stats([a for a, _ in pairs]), "length_b": length_stats([b for _, b in pairs]),
               **extra}
    write_json(out / "summary.json", summary)
    _plot(out / "winrate.png", outcome)
    return summary


def _plot(path: Path, outcome: JudgeOutcome) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    counts = [outcome.wins, outcome.ties, outcome.losses]
    ax.bar(["win", "tie", "loss"], counts, color=["tab:green", "tab:gray", "tab:red"])
    ax.set_ylabel("prompts")
    ax.set_title(f"A vs B: {100 * outcome.rate:.1f}% wins (n={outcome.n}, {outcome.unparsed} unparsed)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
