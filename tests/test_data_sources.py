"""Each source format parses to hand-written expectations; each kind of bad row is reported or skipped."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rdpo_jax.data import (
    SOURCES,
    DataValidationError,
    PreferenceExample,
    load_preferences,
    parse_hh_transcript,
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> dict:
    """Keep the `datasets` Arrow cache of these tiny files out of the user's cache."""
    return {"cache_dir": str(tmp_path / "hf_cache")}


ORCARAT_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "rationale": "2+2 is 4."},
    {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Seven.", "rationale": "Seven is a number."},
]
ORCARAT_EXPECTED = [
    PreferenceExample("What is 2+2?", "4", "5", "2+2 is 4."),
    PreferenceExample("Name a colour.", "Red.", "Seven.", "Seven is a number."),
]


@pytest.mark.parametrize("name", ["redsgnaoh/orcaratgen", "redsgnaoh/orcaratspec"])
def test_orcarat_parquet_splits(tmp_path, cache, name):
    train = write_parquet(tmp_path / "train.parquet", ORCARAT_ROWS)
    test = write_parquet(tmp_path / "test.parquet", ORCARAT_ROWS[:1])
    files = {"train": str(train), "test": str(test)}
    examples, report = load_preferences(name, split="test", data_files=files, **cache)
    assert examples == ORCARAT_EXPECTED[:1]
    assert (report.dataset, report.split, report.n_rows, report.n_kept) == (name, "test", 1, 1)
    examples, _ = load_preferences(name, data_files=files, **cache)
    assert examples == ORCARAT_EXPECTED
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['train', 'test'\]"):
        load_preferences(name, split="validation", data_files=files, **cache)


def test_orcarat_jsonl_and_missing_rationale(tmp_path, cache):
    path = write_jsonl(tmp_path / "orca.jsonl", ORCARAT_ROWS + [{**ORCARAT_ROWS[0], "rationale": None}])
    with pytest.raises(DataValidationError, match=r"row 2, field 'rationale': missing_field"):
        load_preferences("redsgnaoh/orcaratgen", data_files=str(path), **cache)
    examples, report = load_preferences("redsgnaoh/orcaratgen", data_files=str(path), on_bad_row="skip",
                                        **cache)
    assert examples == ORCARAT_EXPECTED and report.rows_by_reason() == {"missing_field": [2]}


def test_orca_dpo_pairs_system_prompt(tmp_path, cache):
    rows = [
        {"system": "You are terse.", "question": "Capital of France?", "chosen": "Paris.",
         "rejected": "France's capital is Lyon."},
        {"system": "", "question": "Say hi.", "chosen": "Hi!", "rejected": "No."},
    ]
    path = write_jsonl(tmp_path / "orca.jsonl", rows)
    examples, report = load_preferences("Intel/orca_dpo_pairs", data_files=str(path), **cache)
    assert examples == [
        PreferenceExample(
            [{"role": "system", "content": "You are terse."},
             {"role": "user", "content": "Capital of France?"}],
            "Paris.", "France's capital is Lyon."),
        PreferenceExample("Say hi.", "Hi!", "No."),
    ]
    assert report.n_skipped == 0
    with pytest.raises(ValueError, match=r"no split 'test'.*\['train'\]"):
        load_preferences("Intel/orca_dpo_pairs", split="test")  # checked before any download


def test_ultrafeedback_message_lists(tmp_path, cache):
    def conv(prompt, answer):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

    rows = [
        {"prompt": "Why is the sky blue?", "chosen": conv("Why is the sky blue?", "Rayleigh scattering."),
         "rejected": conv("Why is the sky blue?", "Because it is."), "score_chosen": 9.0},
        {"prompt": "Q2", "chosen": conv("Q2", "good"), "rejected": conv("Q2 differs", "bad"),
         "score_chosen": 1.0},
        {"prompt": "Q3", "chosen": conv("Q3", "good") + [{"role": "user", "content": "more?"}],
         "rejected": conv("Q3", "bad"), "score_chosen": 1.0},
    ]
    path = write_parquet(tmp_path / "uf.parquet", rows)
    name = "HuggingFaceH4/ultrafeedback_binarized"
    files = {"train_prefs": str(path)}
    with pytest.raises(DataValidationError) as err:
        load_preferences(name, split="train_prefs", data_files=files, **cache)
    msg = str(err.value)
    assert f"dataset '{name}' (split 'train_prefs'" in msg
    assert "row 1, field 'prompt': prompt_mismatch" in msg
    assert "row 2, field 'chosen[-1]': malformed" in msg
    examples, report = load_preferences(name, split="train_prefs", data_files=files, on_bad_row="skip",
                                        **cache)
    assert examples == [PreferenceExample("Why is the sky blue?", "Rayleigh scattering.", "Because it is.")]
    assert report.counts == {"prompt_mismatch": 1, "malformed": 1}
    with pytest.raises(ValueError, match=r"no split 'train'.*\['train_prefs'\]"):
        load_preferences(name, split="train", data_files=files, **cache)
    with pytest.raises(ValueError, match=r"no split 'train_sft'.*'train_prefs', 'test_prefs'"):
        load_preferences(name, split="train_sft")


def test_hh_transcripts(tmp_path, cache):
    rows = [
        {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?",
         "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away."},
        {"chosen": "\n\nHuman: Tell me a joke\n\nAssistant: Why?\n\nAssistant: Fine, one.\n\nHuman: Go on"
                   "\n\nAssistant: A pun.",
         "rejected": "\n\nHuman: Tell me a joke\n\nAssistant: Why?\n\nAssistant: Fine, one.\n\nHuman: Go on"
                     "\n\nAssistant: No."},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl.gz", rows)
    examples, report = load_preferences("Anthropic/hh-rlhf", split="test", data_files=str(path), **cache)
    assert examples == [
        PreferenceExample("Hi there", "Hello! How can I help?", "Go away."),
        PreferenceExample(
            [{"role": "user", "content": "Tell me a joke"}, {"role": "assistant", "content": "Why?"},
             {"role": "assistant", "content": "Fine, one."}, {"role": "user", "content": "Go on"}],
            "A pun.", "No."),
    ]
    assert report.flags == {"consecutive_same_role": [1]}
    assert report.origin == str(path)


def test_parse_hh_transcript_errors():
    assert parse_hh_transcript("\n\nHuman: a\n\nAssistant:  b ") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    for bad in ["no markers", "\n\nHuman: only a question", "preamble\n\nHuman: a\n\nAssistant: b"]:
        with pytest.raises(ValueError):
            parse_hh_transcript(bad)


def test_save_to_disk_directory_with_field_mapping(tmp_path):
    import datasets

    rows = [{"question": "Pick one.", "good": "A", "bad": "B", "why": "A is right.", "id": 7}]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                               "test": datasets.Dataset.from_list(rows * 2)})
    dd.save_to_disk(str(tmp_path / "saved"))
    fields = {"prompt": "question", "chosen": "good", "rejected": "bad", "rationale": "why"}
    examples, report = load_preferences(str(tmp_path / "saved"), split="test", fields=fields)
    assert examples == [PreferenceExample("Pick one.", "A", "B", "A is right.")] * 2
    assert report.dataset == str(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"no split 'dev'.*\['train', 'test'\]"):
        load_preferences(str(tmp_path / "saved"), split="dev", fields=fields)
    with pytest.raises(ValueError, match=r"no column for required field\(s\) \['prompt'.*fields="):
        load_preferences(str(tmp_path / "saved"))
    columns = r"columns: \['bad', 'good', 'id', 'question', 'why'\]"
    with pytest.raises(ValueError, match=r"column 'nope'.*" + columns):
        load_preferences(str(tmp_path / "saved"), fields={**fields, "prompt": "nope"})
    with pytest.raises(ValueError, match=r"keys \['answer'\] are not fields.*accepted keys"):
        load_preferences(str(tmp_path / "saved"), fields={"answer": "good"})


BAD_ROWS = [
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, None),
    ({"prompt": "p", "chosen": None, "rejected": "b"}, ("chosen", "missing_field")),
    ({"prompt": "p", "chosen": 5, "rejected": "b"}, ("chosen", "not_a_string")),
    ({"prompt": "p", "chosen": "a", "rejected": "  \n"}, ("rejected", "empty")),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, ("rejected", "identical")),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, ("prompt", "empty")),
    ({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"},
     ("prompt[0]", "malformed")),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "rationale": 3}, ("rationale", "not_a_string")),
]


def test_each_bad_row_kind_local_jsonl(tmp_path, cache):
    path = write_jsonl(tmp_path / "mine.jsonl", [r for r, _ in BAD_ROWS])
    with pytest.raises(DataValidationError) as err:
        load_preferences(str(path), **cache)
    msg = str(err.value)
    assert f"dataset '{path}' (split 'train'): 7 of 8 rows are bad" in msg
    for i, (_, expected) in enumerate(BAD_ROWS):
        if expected is not None:
            assert f"{path} row {i}, field '{expected[0]}': {expected[1]}" in msg
    assert {(b.row, b.field, b.reason) for b in err.value.bad_rows} == {
        (i, *e) for i, (_, e) in enumerate(BAD_ROWS) if e is not None}
    examples, report = load_preferences(str(path), on_bad_row="skip", **cache)
    assert examples == [PreferenceExample("p", "a", "b")]
    assert report.skipped_rows == list(range(1, 8)) and report.n_kept == 1
    assert report.counts == {
        "missing_field": 1, "not_a_string": 2, "empty": 2, "identical": 1, "malformed": 1}


def test_in_memory_rows_and_field_names_in_errors():
    rows = [{"q": "x", "a": "y", "b": "y"}]
    with pytest.raises(DataValidationError, match=r"mine row 0, field 'b': identical"):
        load_preferences(rows, name="mine", fields={"prompt": "q", "chosen": "a", "rejected": "b"})
    with pytest.raises(ValueError, match="on_bad_row"):
        load_preferences(rows, on_bad_row="ignore")


def test_unknown_source_lists_names(tmp_path):
    with pytest.raises(ValueError) as err:
        load_preferences("someone/unknown-prefs")
    for name in SOURCES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_preferences("Anthropic/hh-rlhf", data_files=str(write_jsonl(tmp_path / "x.txt", [])))
