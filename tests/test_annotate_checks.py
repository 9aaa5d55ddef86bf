"""The annotator's parts without a server: the text checks, the pick parser, the policies, the templates,
the support check's order and the output formats (with message-list prompts), through a scripted
generator that answers from a function of the request."""
from __future__ import annotations

import re

import pytest

from rdpo_jax.annotate import AnnotateOptions, annotate, load_annotation_template, read_annotated, write_annotated
from rdpo_jax.annotate.checks import is_refusal, names_only_position, resolve_policies
from rdpo_jax.annotate.templates import BUILT_IN, AnnotationTemplateError, blind_variant, parse_pick
from rdpo_jax.data import PreferenceExample
from rdpo_jax.eval.chat_client import Completion


@pytest.mark.parametrize("text, refusal", [
    ("I'm sorry, but I can't help with that.", True), ("I’m sorry, no.", True), ("I cannot do that", True),
    ("As an AI, I have no opinion.", True), ("  I will not answer.", True), ("Sorry, no.", True),
    ("The other response refuses; the preferred one says sorry and explains.", False),
    ("It is sorry-proof.", False)])
def test_refusals_are_the_opening_words_only(text, refusal):
    assert is_refusal(text) is refusal


@pytest.mark.parametrize("text, only", [
    ("Response A is better.", True), ("The first one.", True), ("Response 2 is clearly the better one!", True),
    ("The preferred response is better.", True), ("Assistant 1 is superior to assistant 2.", True),
    ("The preferred response explains the risk of drowning.", False),
    ("Response A gives the recipe; Response B refuses.", False)])
def test_position_only_rationales(text, only):
    assert names_only_position(text) is only


@pytest.mark.parametrize("reply, pick, rest", [
    ("Better: 1\nBecause it is kind.", 1, "Because it is kind."), ("**Better: 2**\nIt is.", 2, "It is."),
    ("Better: Response 2. It answers.", 2, "It answers."), ("\n\n2\nshort", 2, "short"),
    ("The first is better.", None, "The first is better."), ("", None, "")])
def test_parse_pick(reply, pick, rest):
    assert parse_pick(reply) == (pick, rest)


def test_policies_default_overrides_and_the_empty_rule():
    p = resolve_policies("flag", {"refusal": "drop"})
    assert p["refusal"] == "drop" and p["empty"] == "drop" and p["truncated"] == "flag"
    for bad in [("nope", {}), ("keep", {"tone": "drop"}), ("keep", {"refusal": "maybe"})]:
        with pytest.raises(ValueError, match="accepted"):
            resolve_policies(*bad)
    with pytest.raises(ValueError, match="always dropped"):
        resolve_policies("keep", {"empty": "keep"})


def test_templates_built_in_file_and_blind_variants(tmp_path):
    assert load_annotation_template("general").id == "general-v1"
    assert load_annotation_template("detailed-v1").kind == "told"
    assert blind_variant(BUILT_IN["detailed-v1"]).id == "detailed-blind-v1"
    told = tmp_path / "told.txt"
    told.write_text("Why is {chosen} better than {rejected}? {{braces}}")
    t = load_annotation_template(told)
    assert t.kind == "told" and re.fullmatch(r"file-[0-9a-f]{12}", t.id)
    assert t.render("Hi", chosen="A", rejected="B") == [{"role": "user", "content": "Why is A better than B? {braces}"}]
    with pytest.raises(AnnotationTemplateError, match="is a told template"):
        blind_variant(t)
    (tmp_path / "bad.txt").write_text("{first} and {chosen}")
    with pytest.raises(AnnotationTemplateError, match="fields \\['chosen', 'first'\\]"):
        load_annotation_template(tmp_path / "bad.txt")
    with pytest.raises(AnnotationTemplateError, match="neither a built-in"):
        load_annotation_template("generl")
    with pytest.raises(AnnotationTemplateError, match="needs a blind one"):
        AnnotateOptions(BUILT_IN["general-v1"], both_orders=True)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = BUILT_IN["general-v1"].render(prompt, chosen="Hello!", rejected="Go away.")[0]["content"]
    assert "System: Be brief.\n\nUser: Hi" in text and "Preferred response:\nHello!\nEND OF PREFERRED RESPONSE" in text


class Scripted:
    """A generator answering ``reply(text)`` for each request; ``seen`` holds the request texts."""

    def __init__(self, reply, name="scripted"):
        self.reply, self.name, self.seen = reply, name, []

    def settings(self, max_tokens):
        return {"max_tokens": max_tokens}

    def run(self, work, max_tokens, on_done):
        for key, messages in work.items():
            self.seen.append(messages[0]["content"])
            on_done(key, Completion(self.reply(messages[0]["content"])))


def _examples(n):
    return [PreferenceExample([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                               {"role": "user", "content": f"Tell me about item {i}."}] if i % 2 else
                              f"Tell me about item {i}.", f"chosen{i} words here", f"rejected{i} words here")
            for i in range(n)]


def _shown(text):
    one = re.search(r"Response 1:\n(\S+)", text).group(1)
    two = re.search(r"Response 2:\n(\S+)", text).group(1)
    return one, two


def test_support_check_order_is_seeded_and_mapped_back_to_chosen():
    """The checker names the response that holds "chosen": whatever order it was shown in, every pair is
    consistent; a checker that always says "1" is right exactly on the pairs shown unswapped."""
    examples = _examples(16)
    writer = Scripted(lambda text: "The preferred response covers the item in depth.")
    fair = Scripted(lambda text: "1" if _shown(text)[0].startswith("chosen") else "2", "fair")
    result = annotate(examples, writer, AnnotateOptions(BUILT_IN["general-v1"]), checker=fair)
    assert result.report["rationale_consistency"] == 1.0 and result.report["kept"] == 16
    firsts = [_shown(t)[0].startswith("chosen") for t in fair.seen]
    assert 0 < sum(firsts) < 16  # both orders occur
    always_one = Scripted(lambda text: "1", "always-one")
    again = annotate(examples, writer, AnnotateOptions(BUILT_IN["general-v1"]), checker=always_one)
    assert [d["support"] == "chosen" for d in again.decisions] == firsts  # same seed: same orders
    other_seed = annotate(examples, writer, AnnotateOptions(BUILT_IN["general-v1"], seed=1), checker=always_one)
    assert [d["support"] for d in other_seed.decisions] != [d["support"] for d in again.decisions]


def test_both_orders_rejected_in_both_is_inconsistent_and_a_changed_pick_is_position_bias():
    def reply(text):
        one, two = _shown(text)
        item = int(re.search(r"\d+", one).group(0))
        if item % 3 == 0:  # prefers the rejected response in both orders
            return f"Better: {1 if one.startswith('rejected') else 2}\nThe better response names a colour and a size."
        if item % 3 == 1:  # prefers the chosen response in both orders
            return f"Better: {1 if one.startswith('chosen') else 2}\nThe better response is about the item."
        return "Better: 1\nThe better response gives a date and a place."  # position-biased
    result = annotate(_examples(6), Scripted(reply), AnnotateOptions(BUILT_IN["general-blind-v1"], both_orders=True))
    assert [d["failed"] for d in result.decisions] == [["inconsistent"], [], ["position_bias"]] * 2
    assert [d["prefers"] for d in result.decisions] == ["rejected", "chosen", None] * 2
    assert result.report["position_consistency"] == pytest.approx(4 / 6) and result.report["kept"] == 2
    assert [r["annotation"]["picks"] for r in result.rows] == [[1, 2], [1, 2]]


@pytest.mark.parametrize("name", ["set.jsonl", "set.parquet", "set_dir"])
def test_every_output_format_reads_back_with_message_list_prompts(tmp_path, name):
    examples = _examples(4)
    writer = Scripted(lambda text: "The preferred response covers the item in depth.")
    result = annotate(examples, writer, AnnotateOptions(BUILT_IN["general-v1"], support=None))
    write_annotated(tmp_path / name, result.rows, split="test")
    back = read_annotated(tmp_path / name, split="test", expected=result.rows)
    assert [e.prompt for e in back] == [e.prompt for e in examples]
    assert [e.rationale for e in back] == ["The preferred response covers the item in depth."] * 4
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    write_annotated(tmp_path / name, result.rows[:2], split="test")  # replaced whole
    assert len(read_annotated(tmp_path / name, split="test")) == 2
