"""Token saving of the packed layout (docs/spec.md section 3) on the HH harmless-base test file.

HH has no rationales: every pair gets the same placeholder rationale (:data:`PLACEHOLDER`, a fixed
English sentence) under the conversational template. Reported per tokenizer and length budget:

- RDPO: tokens of the three-row layout (chosen, rejected, rationale rows) / tokens of the packed layout;
- DPO: tokens of the two-row layout / packed ``x | y_w | x_last', y_l``;

counting real tokens only (no padding), over all kept pairs (a packed row may hold up to 2 x max_length);
pairs that cannot be packed (truncated, or refused by the prefix check) count with their unpacked tokens on
both sides.

Run: ``python benchmarks/packing_report.py [--limit N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from rdpo_jax.data import load_preferences
from rdpo_jax.data.packing import can_pack, packed_length, unpacked_length
from rdpo_jax.data.rows import TruncationConfig, tokenize_examples
from rdpo_jax.data.tokenizers import load_tokenizer

HH_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
PLACEHOLDER = ("The response above is better: it declines the harmful part of the request, stays polite, and "
               "answers the question that can safely be answered, while the response below does not.")
BUDGETS = ((1024, 512), (2048, 1024))


def saving(rows, with_rationale: bool, max_length: int) -> tuple[float, int, int, int]:
    unpacked = packed = n_packed = 0
    for r in rows:
        u = unpacked_length(r, with_rationale)
        unpacked += u
        if can_pack(r, with_rationale, max_length * 2):
            packed += packed_length(r, with_rationale)
            n_packed += 1
        else:
            packed += u
    return unpacked / packed, unpacked, packed, n_packed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HH_DEFAULT,
                    help="an HH-format .jsonl(.gz) file, e.g. harmless-base/test.jsonl.gz of Anthropic/hh-rlhf "
                         "(default: a copy beside this checkout)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tokenizers", default="llama3,mistral-v1,mistral-v3")
    args = ap.parse_args()
    examples, report = load_preferences("Anthropic/hh-rlhf", data_files=str(args.data), on_bad_row="skip")
    examples = [dataclasses.replace(e, rationale=PLACEHOLDER) for e in examples[: args.limit]]
    print(f"{args.data.name}: {len(examples)} pairs kept ({report.n_skipped} skipped); placeholder rationale\n")
    print("| tokenizer | max_length / max_prompt | pairs packed (RDPO) | RDPO three-row / packed tokens | "
          "RDPO saving | DPO saving |")
    print("|---|---|---|---|---|---|")
    for name in args.tokenizers.split(","):
        tok = load_tokenizer(name)
        for max_length, max_prompt in BUDGETS:
            t0 = time.perf_counter()
            res = tokenize_examples(examples, tok, truncation=TruncationConfig(max_length, max_prompt),
                                    rationale_template="conversational", dataset="hh")
            rs, ru, rp, rn = saving(res.rows, True, max_length)
            ds, _, _, _ = saving(res.rows, False, max_length)
            print(f"| {name} | {max_length} / {max_prompt} | {rn}/{len(res.rows)} | {ru:,} / {rp:,} | "
                  f"{rs:.3f}x | {ds:.3f}x |  <!-- {time.perf_counter() - t0:.1f}s, not packable: "
                  f"{res.stats.not_packable} -->")


if __name__ == "__main__":
    main()
