"""``rdpo-jax generate``: responses of a model to ``--n`` prompts drawn from a dataset split or a prompts
file, appended to a resumable JSONL file (:mod:`rdpo_jax.eval.response_file`), optionally exported for
AlpacaEval. docs/evaluation.md#generating documents the options and the record."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from rdpo_jax.errors import RdpoError

__all__ = ["GenerateError", "build_parser", "main", "model_name", "resolve_model_dir"]


class GenerateError(RdpoError, ValueError):
    """A generate command that cannot run: the message names the option or path and what is accepted."""


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A HF model directory (with config.json), or a run's output directory (its ``final/hf``)."""
    path = Path(path)
    for candidate in (path, path / "final" / "hf"):
        if (candidate / "config.json").is_file():
            return candidate
    raise GenerateError(f"--model {path}: neither {path}/config.json nor {path}/final/hf/config.json exists; "
                        "pass a Hugging Face model directory or a training run's output directory")


def model_name(model_dir: str | os.PathLike) -> str:
    """A short name for a model directory: the run's name for a run's ``final/hf``, else the directory's."""
    model_dir = Path(model_dir)
    if model_dir.name == "hf" and model_dir.parent.name == "final":
        return model_dir.parent.parent.name
    return model_dir.name


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rdpo-jax generate",
        description="Sample responses of a model to prompts of a dataset split or a prompts file; one JSONL "
                    "record per prompt, appended as it is made, so a rerun resumes.",
        epilog="docs/evaluation.md#generating describes the records and the exports.")
    ap.add_argument("--model", required=True, help="HF model directory, or a run's output dir (uses final/hf)")
    ap.add_argument("--tokenizer", help="tokenizer: a directory or llama3/mistral-v1/mistral-v3 (default: the "
                                        "model directory)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="preference source: a name in rdpo_jax.data.SOURCES or a local file/dir")
    src.add_argument("--prompts", help="JSON Lines file of records with 'prompt' (a string or chat messages)")
    ap.add_argument("--split", default="test", help="split of --data (default test)")
    ap.add_argument("--data-files", nargs="+", help="local json/jsonl/parquet files for a named --data source")
    ap.add_argument("--n", type=int, default=512, help="prompts drawn with a seeded shuffle (default 512; "
                                                       "0 = all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt draw and of sampling (default 0)")
    ap.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    ap.add_argument("--top-p", type=float, default=0.95, help="nucleus mass (default 0.95)")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="default 256")
    ap.add_argument("--batch-size", type=int, default=32, help="rows per decode call per process (default 32, "
                                                               "rounded up to a multiple of the devices)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="parameter dtype")
    ap.add_argument("--out", required=True, help="responses JSONL (appended; a rerun skips finished prompts)")
    ap.add_argument("--alpaca-eval", help="also write AlpacaEval's model-outputs JSON to this file")
    ap.add_argument("--sample-file", help="also write the official code's sample file (compare.py's input: "
                    "'policy' and, with --data, the dataset's 'chosen') to this JSON file")
    ap.add_argument("--generator", help="the 'generator' name in --alpaca-eval (default: the model dir name)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _check(args) -> None:
    if args.n < 0:
        raise GenerateError(f"--n {args.n}: accepted: a positive number of prompts, or 0 for all")
    if args.temperature < 0:
        raise GenerateError(f"--temperature {args.temperature}: accepted: >= 0 (0 = greedy)")
    if not 0 < args.top_p <= 1:
        raise GenerateError(f"--top-p {args.top_p}: accepted: a value in (0, 1]")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise GenerateError(f"--max-new-tokens {args.max_new_tokens} and --batch-size {args.batch_size} must "
                            "be >= 1")


def _prompts(args):
    from rdpo_jax.eval.prompt_sources import dataset_prompts, draw_prompts, file_prompts

    if args.prompts is not None:
        if not Path(args.prompts).is_file():
            raise GenerateError(f"--prompts {args.prompts}: no such file; pass a JSON Lines file of records "
                                "with 'prompt'")
        items = file_prompts(args.prompts)
    else:
        items = dataset_prompts(args.data, args.split, data_files=args.data_files)
    return draw_prompts(items, args.n or None, args.seed)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    import jax
    import jax.numpy as jnp

    from rdpo_jax.data import load_tokenizer
    from rdpo_jax.eval.bulk_generation import SamplingSettings, Throughput, generate_records
    from rdpo_jax.eval.response_file import ResponseWriter, check_resumable, read_responses, write_alpaca_eval
    from rdpo_jax.models import load_hf

    model_dir = resolve_model_dir(args.model)
    settings = SamplingSettings(temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, seed=args.seed)
    items = _prompts(args)
    done = read_responses(args.out)
    check_resumable(args.out, done, str(model_dir), settings.as_dict())
    todo = [it for it in items if it.id not in done]
    main_process = jax.process_index() == 0
    rate = Throughput()
    if todo:
        tokenizer = load_tokenizer(args.tokenizer or model_dir)
        model = load_hf(model_dir, dtype=jnp.dtype(args.dtype))
        bar = None
        if main_process and not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="prompt", desc="generate", dynamic_ncols=True)
        writer = ResponseWriter(args.out) if main_process else None
        try:
            for batch in generate_records(model, tokenizer, todo, settings, model_name=str(model_dir),
                                          batch_size=args.batch_size):
                rate.add(batch)
                if writer is not None:
                    for record in batch:
                        writer.write(record)
                        done[record["prompt_id"]] = record
                if bar is not None:
                    bar.update(len(batch))
                    bar.set_postfix_str(f"{rate.rates()[1]:.1f} tokens/s")
        finally:
            if writer is not None:
                writer.close()
            if bar is not None:
                bar.close()
    if not main_process:
        return 0
    chosen = [done[it.id] for it in items]
    eos = sum(r["finish_reason"] == "eos" for r in chosen)
    prompts_s, tokens_s = rate.rates()
    print(f"{len(items)} prompts: {rate.prompts} generated ({prompts_s:.2f} prompts/s, {tokens_s:.1f} tokens/s), "
          f"{len(items) - len(todo)} already in {args.out}; finish: {eos} eos, {len(chosen) - eos} length")
    print(f"responses: {args.out}")
    if args.alpaca_eval:
        write_alpaca_eval(args.alpaca_eval, chosen, args.generator or model_dir.name)
        print(f"AlpacaEval model outputs: {args.alpaca_eval} ({len(chosen)} records)")
    if args.sample_file:
        from rdpo_jax.eval.sample_file import write_sample_file

        references = None if args.prompts is not None else {it.id: it.chosen for it in items}
        write_sample_file(args.sample_file, chosen, references, exp_name=args.generator or model_dir.name,
                          local_run_dir=str(model_dir))
        print(f"sample file: {args.sample_file} ({len(chosen)} samples{'' if references is None else ', with chosen'})")
    return 0

