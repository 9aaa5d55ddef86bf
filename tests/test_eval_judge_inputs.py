"""`rdpo-jax judge` inputs: against a dataset's chosen responses (a real local preference file read by the
data layer), and the errors that stop a comparison of the wrong pairs (an id on one side only, the same id
with another prompt), each naming the file and the id."""
import json

from rdpo_jax.cli import main
from rdpo_jax.data import SyntheticTask
from rdpo_jax.data.synthetic import Oracle
from rdpo_jax.eval.prompt_ids import prompt_id


def _unique_examples(n=64):
    seen = {}
    for ex in SyntheticTask(task="colour").examples(n, seed=3):
        seen.setdefault(ex.prompt, ex)
    return list(seen.values())


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _expected(oracle, prompt, ours, theirs):
    """Both orders, from the oracle directly: win only if both say ours, loss only if both say theirs."""
    first, second = oracle.judge(prompt, ours, theirs), -oracle.judge(prompt, theirs, ours)
    return "win" if first == second == 1 else "loss" if first == second == -1 else "tie"


def test_against_the_chosen_responses_of_a_local_preference_file(tmp_path):
    examples = _unique_examples()
    data = _write(tmp_path / "pairs.jsonl", [{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected}
                                             for e in examples + examples[:2]])  # two repeated prompts
    ours = _write(tmp_path / "ours.jsonl", [{"prompt_id": prompt_id(e.prompt), "prompt": e.prompt,
                                             "response": e.rejected} for e in examples])
    assert main(["judge", str(ours), "--against", "chosen", "--data", str(data), "--oracle",
                 "--out", str(tmp_path / "out"), "--n-boot", "200"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    want = [_expected(Oracle(), e.prompt, e.rejected, e.chosen) for e in examples]
    assert (summary["wins"], summary["ties"], summary["losses"]) == \
        (want.count("win"), want.count("tie"), want.count("loss"))
    assert summary["n"] == len(examples) and summary["b_repeated_prompts_unused"] == 2
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert [v["outcome"] for v in verdicts] == want


def test_an_id_on_one_side_only_or_another_prompt_under_one_id_is_an_error(tmp_path, capsys):
    examples = _unique_examples()[:4]
    records = [{"prompt_id": prompt_id(e.prompt), "prompt": e.prompt, "response": e.chosen} for e in examples]
    a = _write(tmp_path / "a.jsonl", records)
    b = _write(tmp_path / "b.jsonl", records[:3])
    out = ["--oracle", "--out", str(tmp_path / "out"), "--n-boot", "200"]
    assert main(["judge", str(a), str(b), *out]) == 1
    err = capsys.readouterr().err
    assert f"prompt_id {records[3]['prompt_id']} of {a} is missing from {b} (1 such ids)" in err
    assert "--allow-missing" in err
    assert main(["judge", str(a), str(b), "--allow-missing", *out]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n"] == 3 and summary["skipped_missing"]["only_in_a"] == [records[3]["prompt_id"]]
    other = _write(tmp_path / "c.jsonl", [dict(records[0], prompt="another prompt")] + records[1:])
    assert main(["judge", str(a), str(other), *out]) == 1
    assert f"prompt_id {records[0]['prompt_id']}: the prompt in {a} differs from the one in {other}" in \
        capsys.readouterr().err


def test_template_files_are_checked_and_identified_by_their_text(tmp_path):
    import pytest

    from rdpo_jax.eval.judges.base import JudgeError
    from rdpo_jax.eval.judges.templates import load_template

    good = tmp_path / "good.txt"
    good.write_text("Which is better for {conversation}?\n1: {first}\n2: {second}\nAnswer 1 or 2 {{strictly}}.")
    t = load_template(good)
    assert t.id.startswith("file-") and len(t.id) == 17
    other = tmp_path / "other.txt"
    other.write_text(good.read_text() + " ")
    assert load_template(other).id != t.id  # another text, another cache key
    for text, match in (("{first} {second} {answer}", r"fields \['answer', 'first', 'second'\]; accepted"),
                        ("only {first}", "with {first} and {second} required"),
                        ("{first} {second} {", "not a Python format string")):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(JudgeError, match=match):
            load_template(bad)
    with pytest.raises(JudgeError, match="cannot read it"):
        load_template(tmp_path / "missing.txt")


def test_the_local_judge_through_the_command_line(tmp_path, capsys):
    """`--local-model` on the tiny model: the verdicts are the library judge's on the same requests, both
    orders; answers the tokenizer cannot tell apart (its digits are one unknown token) are an error."""
    from pathlib import Path

    from rdpo_jax.data import synthetic_tokenizer
    from rdpo_jax.eval import judge_pairs
    from rdpo_jax.eval.judges.local import LocalJudge
    from rdpo_jax.models import load_hf

    model_dir = Path(__file__).parent / "data" / "rationale_model"
    examples = _unique_examples()[:3]
    a = _write(tmp_path / "a.jsonl", [{"prompt_id": prompt_id(e.prompt), "prompt": e.prompt, "response": e.chosen}
                                      for e in examples])
    b = _write(tmp_path / "b.jsonl", [{"prompt_id": prompt_id(e.prompt), "prompt": e.prompt,
                                       "response": e.rejected} for e in examples])
    local = ["--local-model", str(model_dir), "--tokenizer", "synthetic", "--out", str(tmp_path / "out"),
             "--n-boot", "200"]
    assert main(["judge", str(a), str(b), *local]) == 1
    assert "cannot tell apart" in capsys.readouterr().err
    assert main(["judge", str(a), str(b), *local, "--answers", "above", "below"]) == 0
    judge = LocalJudge(load_hf(model_dir), synthetic_tokenizer(), answers=("above", "below"))
    want = judge_pairs(judge, [e.prompt for e in examples], [e.chosen for e in examples],
                       [e.rejected for e in examples])
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert [v["outcome"] for v in verdicts] == [p.outcome for p in want.pairs]
    assert [[o["verdict"] for o in v["orders"]] for v in verdicts] == \
        [[x.value for _, x in p.orders] for p in want.pairs]
