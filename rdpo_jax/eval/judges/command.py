"""``rdpo-jax judge A.jsonl B.jsonl``: A's win rate against B (or ``--against chosen --data SOURCE``) with
one of three judges: an OpenAI-compatible endpoint (``--endpoint``), a local model (``--local-model``) or
the synthetic oracle (``--oracle``). Outputs in ``--out``: verdicts.jsonl, summary.json, winrate.png
(`rdpo_jax.eval.judges.report`); the endpoint's verdict cache defaults to ``<out>/cache.jsonl``."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rdpo_jax.eval.endpoint_options import add_endpoint_options, client_settings
from rdpo_jax.eval.judges.aggregate import PROTOCOLS, judge_pairs
from rdpo_jax.eval.judges.base import JudgeError, JudgeRequest
from rdpo_jax.eval.judges.templates import PAPER, load_template

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rdpo-jax judge", description=__doc__.split("\n\n")[0],
                                 epilog="Details: docs/evaluation.md, section Judging.")
    ap.add_argument("a", help="JSONL of A (ours): prompt_id, prompt, response per line")
    ap.add_argument("b", nargs="?", help="JSONL of B (theirs); omit with --against chosen")
    ap.add_argument("--against", choices=["chosen"], help="B = the dataset's chosen responses (needs --data)")
    ap.add_argument("--data", help="dataset source for --against chosen (a load_preferences source)")
    ap.add_argument("--split", default="test", help="dataset split for --against chosen (default test)")
    ap.add_argument("--allow-missing", action="store_true", help="judge only ids present on both sides")
    ap.add_argument("--out", default="judge", help="output directory (default ./judge)")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="both",
                    help="both: each pair in both orders (default); paper: one seeded random order")
    ap.add_argument("--seed", type=int, default=0, help="order (paper) and bootstrap seed")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--template-file", help="a format string with {conversation}, {first}, {second}")
    g = ap.add_argument_group("endpoint judge")
    add_endpoint_options(g, model_flag="--judge-model", timeout=60.0)
    g.add_argument("--max-tokens", type=int, default=64, help="reply length limit (default 64)")
    g.add_argument("--cache", help="verdict cache JSONL (default <out>/cache.jsonl)")
    g.add_argument("--dry-run", action="store_true", help="print one request and the number of calls; send none")
    g = ap.add_argument_group("local judge")
    g.add_argument("--local-model", help="HF model directory, or a run's output dir (uses final/hf)")
    g.add_argument("--tokenizer", help="tokenizer spec for --local-model (default: the model directory)")
    g.add_argument("--margin", type=float, default=0.0, help="tie when |log p(1) - log p(2)| <= margin")
    g.add_argument("--answers", nargs=2, default=["1", "2"], metavar=("FIRST", "SECOND"),
                   help="the answer words compared for the first and the second response (default 1 2)")
    ap.add_argument("--oracle", action="store_true", help="the synthetic task's oracle as the judge")
    return ap


def _records(args):
    from rdpo_jax.eval.judges.inputs import chosen_records, join, read_records

    a = read_records(args.a)
    extra = {}
    if args.against == "chosen":
        if not args.data or args.b:
            raise JudgeError("--against chosen takes A.jsonl and --data SOURCE (and no B file)")
        b, repeats = chosen_records(args.data, args.split)
        b_name, extra["b_repeated_prompts_unused"] = f"{args.data} ({args.split} chosen)", repeats
    elif args.b:
        b, b_name = read_records(args.b), args.b
    else:
        raise JudgeError("give B.jsonl, or --against chosen --data SOURCE")
    pairs, skipped = join(a, b, a_name=args.a, b_name=b_name, allow_missing=args.allow_missing,
                          b_may_have_more=args.against == "chosen")
    extra.update(a=args.a, b=b_name, skipped_missing=skipped)
    return pairs, extra


def _judge(args, template):
    chosen = [x for x in ("endpoint", "local_model", "oracle") if getattr(args, x)]
    if len(chosen) != 1:
        raise JudgeError("choose one judge: --endpoint URL --judge-model NAME, --local-model DIR or --oracle")
    if args.oracle:
        from rdpo_jax.eval.judges.oracle import OracleJudge

        return OracleJudge()
    if args.local_model:
        from rdpo_jax.data import load_tokenizer
        from rdpo_jax.eval.generate_command import model_name, resolve_model_dir
        from rdpo_jax.eval.judges.local import LocalJudge
        from rdpo_jax.models import load_hf

        model_dir = resolve_model_dir(args.local_model)
        return LocalJudge(load_hf(model_dir), load_tokenizer(args.tokenizer or model_dir),
                          template=template, margin=args.margin, answers=tuple(args.answers),
                          name=model_name(model_dir))
    if not args.judge_model:
        raise JudgeError("--endpoint needs --judge-model NAME")
    from rdpo_jax.eval.judges.cache import VerdictCache
    from rdpo_jax.eval.judges.endpoint import EndpointJudge

    cache = VerdictCache(args.cache or Path(args.out) / "cache.jsonl")
    return EndpointJudge(args.endpoint, args.judge_model, template=template, cache=cache, max_tokens=args.max_tokens,
                         **client_settings(args, JudgeError))


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    template = load_template(args.template_file) if args.template_file else PAPER
    pairs, extra = _records(args)
    judge = _judge(args, template)
    if args.dry_run:
        if not args.endpoint:
            raise JudgeError("--dry-run is for the endpoint judge")
        reqs = [r for a, b in pairs for r in (JudgeRequest(a["prompt"], a["response"], b["response"]),
                                              JudgeRequest(a["prompt"], b["response"], a["response"]))]
        if args.protocol == "paper":
            reqs = reqs[::2]  # one order per pair: the count is right, the order shown is one of the two
        print(judge.dry_run(reqs))
        return 0
    from rdpo_jax.eval.judges.report import write_outputs

    outcome = judge_pairs(judge, [a["prompt"] for a, _ in pairs], [a["response"] for a, _ in pairs],
                          [b["response"] for _, b in pairs], protocol=args.protocol, seed=args.seed)
    if getattr(judge, "cache", None) is not None:
        extra["cache"] = {**judge.cache.stats(), "calls_this_run": judge.calls, "cache_hits": judge.cache_hits}
    extra["template"] = template.id
    s = write_outputs(args.out, outcome, pairs, extra, n_boot=args.n_boot, seed=args.seed)
    lo, hi = s["wilson_ci95"]
    blo, bhi = s["bootstrap_ci95"]
    cons = "n/a" if s["position_consistency"] is None else f"{100 * s['position_consistency']:.1f}%"
    print(f"A vs B ({judge.name}, {args.protocol}): win rate {100 * s['win_rate']:.1f}% "
          f"(Wilson [{100 * lo:.1f}, {100 * hi:.1f}], bootstrap [{100 * blo:.1f}, {100 * bhi:.1f}]) "
          f"{s['wins']}W/{s['ties']}T/{s['losses']}L of {s['n']}, {s['unparsed']} unparsed (as ties); "
          f"position consistency {cons}; mean chars A {s['length_a']['mean_chars']:.0f} "
          f"B {s['length_b']['mean_chars']:.0f}; outputs in {args.out}")
    return 0
