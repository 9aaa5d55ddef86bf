"""``rdpo-jax analyze``: E1-E3 from checkpoints on a held-out preference set -> JSON report + PNG plots.

    rdpo-jax analyze runs/tiny/rdpo/final/hf --compare runs/tiny/dpo/final/hf \\
        --reference runs/tiny/sft/final/hf --labels rdpo dpo --out runs/tiny/analysis

E2 (rationale information, with vacuous / shuffled / masked controls) comes from the first checkpoint;
E3 (usable preference information of each policy, the paired gain, a curve over training sizes with
``--curve LABEL N DIR``) from the policies and the reference. The data set is the synthetic task by default
(``--task/--u/--eps/--eta/--wording/--rationale-follows``; rationale kinds and the Shannon values are
reported), or any source the data layer loads (``--data NAME_OR_PATH --split test``). :func:`analyze` is the
same as a library call.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rdpo_jax.files import write_json

__all__ = ["analyze", "main", "synthetic_set"]


def synthetic_set(task: str = "colour", *, n: int = 256, seed: int = 1, **task_fields: Any):
    """(examples, kinds, shannon dict) of a held-out synthetic set: ``n`` pairs of
    ``SyntheticTask(task=task, **task_fields)`` (its fields and defaults: u, eps, eta, wording, parity_bits,
    rationale_follows) drawn with ``seed``."""
    import dataclasses

    from rdpo_jax.data import SyntheticTask

    t = SyntheticTask(task=task, **task_fields)
    pairs = t.sample(n, seed=seed)
    shannon = {"I(W;V)": t.information(), "I(W;V|C)": t.conditional_information(),
               "task": {**dataclasses.asdict(t), "n": n, "seed": seed}}
    return [p.example for p in pairs], [p.kind for p in pairs], shannon


def _tokenizer(spec: str | None, checkpoint: str):
    from rdpo_jax.data import load_tokenizer, synthetic_tokenizer

    if spec == "synthetic":
        return synthetic_tokenizer()
    return load_tokenizer(spec or checkpoint)


def analyze(checkpoint: str | Path, *, examples=None, kinds: Sequence[str] | None = None,
            shannon: dict | None = None, compare: str | Path | None = None, reference: str | Path | None = None,
            labels: tuple[str, str] = ("policy", "compare"),
            curve: Sequence[tuple[str, int, str | Path]] = (), tokenizer=None, template: str = "official",
            wording: str = "general", beta: float = 0.1, temperature="fit", n_boot: int = 2000, seed: int = 0,
            out_dir: str | Path | None = None, plots: bool = True, response_cap: int | None = 64,
            vacuous: str | None = None) -> dict[str, Any]:
    """The report of the module docstring as a dict (also ``<out_dir>/report.json`` and PNGs when given).

    ``examples`` default: the synthetic colour task (content wording, 256 pairs, seed 1). ``curve``: entries
    (label, N, hf_dir). ``temperature``: "fit" or a number, for E2 and E3 alike. ``vacuous``: the baseline
    rationale b of the E2 contrast and, without a reference, of ``E2_conditional`` (default the synthetic
    generator's "both responses look fine"); a verdict in the data's own style ("response above wins") turns
    Δ(b) into the model's own judgement of the pair.
    """
    from rdpo_jax.data.synthetic import VACUOUS_RATIONALE
    from rdpo_jax.models import load_hf

    from .lm import policy_margins, rationale_logps
    from .plots import plot_report
    from .report import policy_section, rationale_section

    if examples is None:
        examples, kinds, shannon = synthetic_set()
    checkpoint = str(checkpoint)
    tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else _tokenizer(tokenizer, checkpoint)
    policy = load_hf(checkpoint)
    ref = load_hf(str(reference)) if reference is not None else None
    report: dict[str, Any] = {"checkpoint": checkpoint, "compare": str(compare) if compare else None,
                              "reference": str(reference) if reference else None, "n": len(examples),
                              "template": template, "beta": beta, "temperature": temperature, "units": "nats",
                              "labels": list(labels)}
    if shannon is not None:
        report["shannon"] = shannon
    margins = {labels[0]: policy_margins(policy, tok, examples, reference=ref, beta=beta)["margins"]}
    if compare is not None:
        margins[labels[1]] = policy_margins(load_hf(str(compare)), tok, examples, reference=ref, beta=beta)["margins"]
    report["E3_reference_free"] = ref is None
    with_rationale = [i for i, ex in enumerate(examples) if ex.rationale is not None]
    if with_rationale:
        sub = [examples[i] for i in with_rationale]
        rlp = rationale_logps(policy, tok, sub, template=template, wording=wording, shuffle_seed=seed,
                              response_cap=response_cap, vacuous=VACUOUS_RATIONALE if vacuous is None else vacuous)
        base = margins[labels[0]][with_rationale] if ref is not None else None
        report |= rationale_section(rlp, temperature=temperature, baseline=base,
                                    baseline_name=f"margin of {labels[0]}",
                                    kinds=[kinds[i] for i in with_rationale] if kinds is not None else None,
                                    n_boot=n_boot, seed=seed)
        report["rationale_examples"] = with_rationale
    families: dict[str, list] = {}
    for label, n_train, path in curve:
        h = policy_margins(load_hf(str(path)), tok, examples, reference=ref, beta=beta)["margins"]
        families.setdefault(label, []).append((int(n_train), h))
    report |= policy_section(margins, temperature=temperature, pairs=[labels] if compare is not None else [],
                             curve=families, n_boot=n_boot, seed=seed)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            report["plots"] = [str(p) for p in plot_report(report, out)]
        write_json(out / "report.json", report, indent=1)
    return report


def _line(label: str, e: dict[str, Any]) -> str:
    """One estimate: bits, interval, and the boundary note when the estimate sits at one."""
    text = f"{label} {e['bits']:+.4f} bits  CI [{e['ci_bits'][0]:+.4f}, {e['ci_bits'][1]:+.4f}]"
    return text + (f"  (boundary: {e['boundary']})" if e.get("boundary") else "")


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for key in ("E2", "E2_masked", "E2_conditional", "E1_groundedness"):
        if key in report:
            e = report[key]
            lines.append(_line(f"{key:<16}", e))
            for c, v in e.get("contrasts", {}).items():
                lines.append(_line(f"  {c:<22}", v))
    for name, e in report.get("E3", {}).items():
        lines.append(_line(f"E3 {name:<13}", e))
    for name, e in report.get("E3_gain", {}).items():
        lines.append(_line(f"gain {name:<11}", e))
    return "\n".join(lines)


_SYNTHETIC_FIELDS = ("task", "u", "eps", "eta", "wording", "parity_bits", "rationale_follows")
_SYNTHETIC_HELP = {"rationale_follows": "synthetic rationales argue for the labelled (chosen) or the oracle's "
                                        "better response"}


def _synthetic_options(ap: argparse.ArgumentParser) -> None:
    """--task, --u, ... : the fields of `SyntheticTask`, with its defaults and accepted values."""
    import dataclasses

    from rdpo_jax.data import synthetic

    choices = {"task": synthetic.TASKS, "wording": synthetic.WORDINGS,
               "rationale_follows": synthetic.RATIONALE_FOLLOWS}
    for f in dataclasses.fields(synthetic.SyntheticTask):
        if f.name in _SYNTHETIC_FIELDS:
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                            choices=choices.get(f.name), help=_SYNTHETIC_HELP.get(f.name, "synthetic task"))


def main(argv: Sequence[str]) -> int:
    """Compute E1-E3 from checkpoints on a held-out set; write report.json and PNG plots."""
    ap = argparse.ArgumentParser(prog="rdpo-jax analyze", description=main.__doc__)
    ap.add_argument("checkpoint", help="HF directory of the policy (e.g. runs/tiny/rdpo/final/hf); E2 uses it")
    ap.add_argument("--compare", help="second policy's HF directory (paired E3 gain: checkpoint - compare)")
    ap.add_argument("--reference", help="reference model's HF directory for E3 margins (default: reference-free)")
    ap.add_argument("--labels", nargs=2, default=["policy", "compare"], metavar=("A", "B"))
    ap.add_argument("--curve", nargs=3, action="append", default=[], metavar=("LABEL", "N", "DIR"),
                    help="a checkpoint of family LABEL trained on N pairs (repeat; gives curve.png)")
    ap.add_argument("--data", default="synthetic", help="'synthetic' or a source / file the data layer loads")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=256, help="number of held-out pairs (synthetic; cap otherwise)")
    _synthetic_options(ap)
    ap.add_argument("--seed", type=int, default=1, help="seed of the synthetic held-out set")
    ap.add_argument("--tokenizer", help="'synthetic', a name or a directory (default: the checkpoint's)")
    ap.add_argument("--template", default="official", choices=["official", "conversational"])
    ap.add_argument("--vacuous", default=None,
                    help="baseline rationale b of the E2 contrast and, without --reference, of E2_conditional "
                         "(default 'both responses look fine'); 'response above wins' gives the model's judgement")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--temperature", default="fit", help="'fit' or a number")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", default="analysis", help="output directory (report.json, *.png)")
    args = ap.parse_args(argv)
    temperature = args.temperature if args.temperature == "fit" else float(args.temperature)
    if args.data == "synthetic":
        fields = {f: getattr(args, f) for f in _SYNTHETIC_FIELDS}
        examples, kinds, shannon = synthetic_set(n=args.n, seed=args.seed, **fields)
    else:
        from rdpo_jax.data import load_preferences

        examples, data_report = load_preferences(args.data, split=args.split, on_bad_row="skip")
        print(data_report)  # rows read, kept, and every dropped row with its reason
        examples, kinds, shannon = examples[:args.n], None, None
    report = analyze(args.checkpoint, examples=examples, kinds=kinds, shannon=shannon, compare=args.compare,
                     reference=args.reference, labels=tuple(args.labels),
                     curve=[(a, int(b), c) for a, b, c in args.curve], tokenizer=args.tokenizer,
                     template=args.template, beta=args.beta, temperature=temperature, n_boot=args.n_boot,
                     out_dir=args.out, vacuous=args.vacuous)
    print(_summary(report))
    print(f"report: {Path(args.out) / 'report.json'}; plots: {', '.join(report.get('plots', []))}")
    return 0
