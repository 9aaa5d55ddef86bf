"""Medians and spread of benchmark JSON lines (from bench_step.py and torch_peer.py), and our ratio to the peer.

Reads JSON lines (files or stdin; other lines are ignored), groups runs by (bench, torch.compile or not, preset, loss,
layout, reference, pairs, seq) and prints each group's median tokens/s with its min-max over the runs; then, for
each configuration of ours with a peer group of the same preset, pairs and seq, the ratio of the medians and
the range of the per-run ratios (run i of ours over run i of the peer: the runs alternate).

    python benchmarks/summarize.py results.jsonl
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict

KEY = ("bench", "compile", "preset", "loss_type", "layout", "reference", "pairs", "seq")


def read(lines) -> list[dict]:
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "tokens_per_s" in record:  # step benchmarks only
                out.append(record)
    return out


def summarize(records: list[dict]) -> dict:
    """{"groups": [...], "ratios": [...]} (also printed by :func:`main`)."""
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in KEY)].append(r)
    summary = {"groups": [], "ratios": []}
    for key, runs in groups.items():
        tps = [r["tokens_per_s"] for r in runs]
        summary["groups"].append(dict(zip(KEY, key, strict=True)) | dict(
            runs=len(runs), tokens_per_s=statistics.median(tps), min=min(tps), max=max(tps),
            pairs_per_s=statistics.median(r["pairs_per_s"] for r in runs), device=runs[0].get("device")))
    peers = [g for g in summary["groups"] if g["bench"] == "torch_peer"]
    for g, peer in ((g, p) for g in summary["groups"] if g["bench"] != "torch_peer" for p in peers
                    if (p["preset"], p["pairs"], p["seq"]) == (g["preset"], g["pairs"], g["seq"])):
        ours = [r["tokens_per_s"] for r in groups[tuple(g[k] for k in KEY)]]
        theirs = [r["tokens_per_s"] for r in groups[tuple(peer[k] for k in KEY)]]
        per_run = [a / b for a, b in zip(ours, theirs, strict=False)]
        summary["ratios"].append(dict(ours=dict(zip(KEY, (g[k] for k in KEY), strict=True)),
                                      peer="torch.compile" if peer["compile"] else "eager",
                                      ratio=g["tokens_per_s"] / peer["tokens_per_s"],
                                      per_run_min=min(per_run), per_run_max=max(per_run), runs=len(per_run)))
    return summary


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*")
    args = ap.parse_args(argv)
    lines = [line for f in args.files for line in open(f)] if args.files else sys.stdin
    summary = summarize(read(lines))
    for g in summary["groups"]:
        layout, reference = g.get("layout") or "-", g.get("reference") or "frozen"
        bench = g["bench"] + (" (compiled)" if g["compile"] else "")
        print(f"{bench:>21} {g['preset']} {g['loss_type']} {layout} {reference} {g['pairs']}x{g['seq']}: "
              f"{g['tokens_per_s']:,.0f} tokens/s median of {g['runs']} "
              f"({g['min']:,.0f}-{g['max']:,.0f}), {g['pairs_per_s']:.2f} pairs/s on {g['device']}")
    for r in summary["ratios"]:
        o = r["ours"]
        print(f"ratio rdpo_jax / peer ({r['peer']}) {o['preset']} {o['loss_type']} {o['layout']} "
              f"{o['pairs']}x{o['seq']}: "
              f"{r['ratio']:.2f}x (per-run {r['per_run_min']:.2f}-{r['per_run_max']:.2f}, {r['runs']} runs)")
    return summary


if __name__ == "__main__":
    main()
