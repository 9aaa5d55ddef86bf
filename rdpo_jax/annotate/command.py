"""``rdpo-jax annotate``: rationales for any preference set the data layer reads, written back in the orcaratgen
schema with each row's provenance, checked and reported. docs/annotation.md documents the options, the
checks and the outputs."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from rdpo_jax.annotate.checks import CHECKS, POLICIES
from rdpo_jax.errors import RdpoError
from rdpo_jax.eval.endpoint_options import add_endpoint_options, client_settings

__all__ = ["AnnotateError", "build_parser", "main"]


class AnnotateError(RdpoError, ValueError):
    """An annotate command that cannot run: the message names the option and what is accepted."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rdpo-jax annotate",
        description="Ask a generator (a local model or an OpenAI-compatible endpoint) why each pair's chosen "
                    "response is better; check the rationales; write the kept pairs with a 'rationale' field.",
        epilog="docs/annotation.md describes the templates, the checks, the outputs and a worked example.")
    ap.add_argument("--data", required=True, help="preference source: a name in rdpo_jax.data.SOURCES or a local "
                                                  "file/dir")
    ap.add_argument("--split", default="train", help="split of --data (default train)")
    ap.add_argument("--data-files", nargs="+", help="local json/jsonl/parquet files for a named --data source")
    ap.add_argument("--format", help="row format of --data (default: the source's own, else detected)")
    ap.add_argument("--on-bad-row", choices=["error", "skip"], default="error", help="malformed source rows")
    ap.add_argument("--n", type=int, default=0, help="annotate the first N pairs (default 0 = all)")
    ap.add_argument("--out", required=True, help="output: *.jsonl, *.parquet or a directory (datasets "
                                                 "save_to_disk, one split named --split)")
    ap.add_argument("--template", default="general", help="general (default), detailed, or a template file; "
                    "with --both-orders the blind variant of a built-in is used")
    ap.add_argument("--both-orders", action="store_true", help="show each pair in both orders without saying "
                    "which was chosen; keep a rationale only when the pick does not change with the order")
    ap.add_argument("--max-tokens", type=int, default=256, help="rationale length limit (default 256)")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--seed", type=int, default=0, help="seed of sampling and of the support check's order")
    g = ap.add_argument_group("checks")
    g.add_argument("--policy", choices=POLICIES, default="drop",
                   help="what a failed check does: keep, flag or drop the pair (default drop)")
    g.add_argument("--on", action="append", default=[], metavar="CHECK=POLICY",
                   help=f"policy of one check, repeatable; checks: {', '.join(CHECKS)}")
    g.add_argument("--check", choices=["generator", "none"], default="generator",
                   help="who says which response a rationale argues for: the generator (default) or no one "
                        "(--check-endpoint for another model)")
    g.add_argument("--check-endpoint", help="an OpenAI-compatible URL for the support check instead")
    g.add_argument("--check-model", help="model name at --check-endpoint")
    g.add_argument("--target-tokenizer", help="tokenizer of the model to train, for the length report (default: "
                                              "the local generator's; without one, lengths are in words)")
    g = ap.add_argument_group("local generator")
    g.add_argument("--local-model", help="HF model directory, or a run's output dir (uses final/hf)")
    g.add_argument("--tokenizer", help="tokenizer of --local-model (default: its directory)")
    g.add_argument("--batch-size", type=int, default=32, help="rows per decode call (default 32)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus mass when sampling (default 1.0)")
    g.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="parameter dtype")
    g = ap.add_argument_group("endpoint generator")
    add_endpoint_options(g, model_flag="--model", timeout=120.0)
    g.add_argument("--dry-run", action="store_true", help="print one request and the number of calls; send none")
    ap.add_argument("--cache", help="answer cache JSONL (default <out>.cache.jsonl)")
    ap.add_argument("--report", help="report JSON (default <out>.report.json)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _policies(args) -> dict[str, str]:
    from rdpo_jax.annotate.checks import resolve_policies

    overrides = {}
    for item in args.on:
        name, sep, policy = item.partition("=")
        if not sep:
            raise AnnotateError(f"--on {item}: write CHECK=POLICY, CHECK in {list(CHECKS)}, POLICY in {list(POLICIES)}")
        overrides[name.strip()] = policy.strip()
    try:
        return resolve_policies(args.policy, overrides)
    except ValueError as e:
        raise AnnotateError(str(e)) from None


def _client(args, url: str, model: str | None, what: str):
    from rdpo_jax.eval.chat_client import ChatClient

    if not model:
        raise AnnotateError(f"{what} needs its model name ({'--model' if what == '--endpoint' else '--check-model'})")
    return ChatClient(url, model, **client_settings(args, AnnotateError))


def _generator(args):
    """(generator, its tokenizer or None)."""
    from rdpo_jax.annotate.generators import EndpointGenerator, LocalGenerator

    if bool(args.local_model) == bool(args.endpoint):
        raise AnnotateError("choose one generator: --local-model DIR or --endpoint URL --model NAME")
    if args.endpoint:
        return EndpointGenerator(_client(args, args.endpoint, args.model, "--endpoint"),
                                 temperature=args.temperature), None
    import jax.numpy as jnp

    from rdpo_jax.data import load_tokenizer
    from rdpo_jax.eval.generate_command import model_name, resolve_model_dir
    from rdpo_jax.models import load_hf

    model_dir = resolve_model_dir(args.local_model)
    tokenizer = load_tokenizer(args.tokenizer or model_dir)
    return LocalGenerator(load_hf(model_dir, dtype=jnp.dtype(args.dtype)), tokenizer, name=model_name(model_dir),
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                          batch_size=args.batch_size), tokenizer


def _checker(args, generator):
    from rdpo_jax.annotate.generators import EndpointGenerator

    if args.check_endpoint:
        return EndpointGenerator(_client(args, args.check_endpoint, args.check_model, "--check-endpoint"))
    if args.check_model:
        raise AnnotateError("--check-model goes with --check-endpoint URL")
    return generator if args.check == "generator" else None


def _check_args(args) -> None:
    if args.n < 0:
        raise AnnotateError(f"--n {args.n}: accepted: a positive number of pairs, or 0 for all")
    if args.max_tokens < 1 or args.batch_size < 1:
        raise AnnotateError("--max-tokens and --batch-size must be >= 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise AnnotateError(f"--temperature {args.temperature} (>= 0) or --top-p {args.top_p} (in (0, 1]) out of range")
    if args.dry_run and not args.endpoint:
        raise AnnotateError("--dry-run is for the endpoint generator (--endpoint)")


def _summary(report: dict, out: str, report_path: str, cache_path: str) -> str:
    checks = ", ".join(f"{name} {c['failed']} ({c['policy']})" for name, c in report["checks"].items() if c["run"])
    lines = [f"annotated {report['pairs']} pairs with {report['generator']} ({report['template']['id']}"
             f"{', both orders' if report['both_orders'] else ''}): {report['kept']} kept, {report['dropped']} "
             f"dropped, {report['flagged']} flagged", f"failed checks (policy): {checks}"]
    s = report["support"]
    if report.get("checker"):
        rate = report["rationale_consistency"]
        lines.append(f"rationale consistency: {'n/a' if rate is None else f'{100 * rate:.1f}%'} ({s['chosen']} of "
                     f"{s['chosen'] + s['rejected'] + s['unclear']} checked argue for the chosen response, "
                     f"{s['rejected']} for the rejected, {s['unclear']} unclear; checker {report['checker']})")
    if report["both_orders"]:
        p = report["picks"]
        lines.append(f"both orders: chosen picked in both {p['chosen_both_orders']}, rejected in both "
                     f"{p['rejected_both_orders']}, pick changed or unreadable {p['changed_with_order_or_unreadable']}")
    n = report["lengths"]
    r = n["rationale_tokens"]
    if r["mean"] is not None:
        line = (f"rationale length ({n['unit']}): mean {r['mean']:.1f}, median {r['median']:.0f}, p95 "
                f"{r['p95']:.0f}, max {r['max']:.0f}")
        extra = n.get("extra_tokens_per_pair")
        if extra and extra["packed"] is not None:
            line += (f"; extra tokens per pair: packed +{extra['packed']:.1f} ({100 * extra['packed_share']:.0f}% "
                     f"of the packed pair), three-row +{extra['three_row']:.1f}")
        lines.append(line)
    req = [f"{who} {q['requests']} ({q['from_cache']} from the cache, {q['sent']} sent)"
           for who, q in report["requests"].items()]
    lines.append("requests: " + "; ".join(req))
    lines.append(f"wrote {out} ({report['kept']} pairs, read back with their rationales); report {report_path}; "
                 f"cache {cache_path}")
    return "\n".join(lines)


def _dry_run(args, generator, examples, template, both_orders: bool, cache) -> int:
    from rdpo_jax.eval.request_cache import request_key

    ex = examples[0]
    if both_orders:
        reqs = [template.render(e.prompt, first=a, second=b) for e in examples
                for a, b in ((e.chosen, e.rejected), (e.rejected, e.chosen))]
    else:
        reqs = [template.render(e.prompt, chosen=e.chosen, rejected=e.rejected) for e in examples]
    settings = generator.settings(args.max_tokens)
    keys = {request_key(generator.name, settings, template.id, m) for m in reqs}
    todo = sum(cache.get(k) is None for k in keys)
    print(generator.client.describe(generator.body(reqs[0], args.max_tokens)))
    print(f"\n{len(examples)} pairs: {len(keys)} rationale requests, {todo} not cached (plus one support check "
          f"per rationale unless --check none); first pair: source row 0 of {args.data}"
          if ex is not None else "no pairs")
    return 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    policies = _policies(args)
    from rdpo_jax.annotate.annotator import AnnotateOptions, annotate
    from rdpo_jax.annotate.lengths import length_report
    from rdpo_jax.annotate.output import read_annotated, write_annotated
    from rdpo_jax.annotate.templates import blind_variant, load_annotation_template
    from rdpo_jax.data import load_preferences, load_tokenizer
    from rdpo_jax.eval.request_cache import RequestCache
    from rdpo_jax.files import write_json

    template = load_annotation_template(args.template)
    if args.both_orders:
        template = blind_variant(template)
    examples, data_report = load_preferences(args.data, split=args.split, data_files=args.data_files,
                                             format=args.format, on_bad_row=args.on_bad_row)
    rows = list(data_report.kept_rows)
    if args.n:
        examples, rows = examples[:args.n], rows[:args.n]
    out = str(args.out)
    cache_path, report_path = args.cache or out + ".cache.jsonl", args.report or out + ".report.json"
    generator, local_tokenizer = _generator(args)
    import jax

    main_process = jax.process_index() == 0
    cache = RequestCache(cache_path, write=main_process)
    if args.dry_run:
        return _dry_run(args, generator, examples, template, args.both_orders, cache)
    options = AnnotateOptions(template=template, both_orders=args.both_orders, policies=policies,
                              max_tokens=args.max_tokens, seed=args.seed)
    bar = None
    if main_process and not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="answer", desc="annotate", dynamic_ncols=True)
    try:
        result = annotate(examples, generator, options, checker=_checker(args, generator), cache=cache,
                          source_rows=rows, progress=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    if not main_process:
        return 0
    tokenizer, tok_name = local_tokenizer, args.tokenizer or "the generator's"
    if args.target_tokenizer:
        tokenizer, tok_name = load_tokenizer(args.target_tokenizer), args.target_tokenizer
    report = {**result.report, "source": {"data": args.data, "split": args.split, "data_files": args.data_files,
                                          "pairs_read": data_report.n_rows, "pairs_annotated": len(examples),
                                          "had_a_rationale": sum(e.rationale is not None for e in examples)},
              "lengths": length_report(result.rows, tokenizer, tok_name if tokenizer is not None else ""),
              "output": out, "cache": cache.stats()}
    if not result.rows:
        write_json(report_path, report)
        failed = {k: c["failed"] for k, c in report["checks"].items() if c["dropped"]}
        raise AnnotateError(f"all {len(examples)} pairs were dropped (failed checks under the drop policy: "
                            f"{failed}); nothing written to {out}; the report is in {report_path}. Look at the "
                            "cached answers, or keep or flag those checks (--on CHECK=keep)")
    write_annotated(out, result.rows, split=args.split)
    read_annotated(out, split=args.split, expected=result.rows)
    write_json(report_path, report)
    print(_summary(report, out, report_path, cache_path))
    if report["source"]["had_a_rationale"]:
        print(f"note: {report['source']['had_a_rationale']} pairs of {args.data} already had a rationale; the "
              "written set holds the new ones")
    return 0
