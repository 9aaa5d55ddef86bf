"""Every bad file is named: broken JSON / JSONL / gzip / Parquet files give a DataFileError naming the file and
line and what is accepted; a skip policy that skips every row says so; TRL's conversational and implicit-prompt
formats load (declared or detected) with the same row validation."""
import gzip
import json

import pytest

from rdpo_jax.data import DataValidationError, PreferenceExample, load_preferences
from rdpo_jax.data.local_files import DataFileError

GOOD = [{"prompt": f"Q{i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(4)]


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def _error(path, **kw) -> DataFileError:
    with pytest.raises(DataFileError) as e:
        load_preferences(str(path), **kw)
    assert str(path) in str(e.value) and "Accepted:" in str(e.value)
    return e.value


def test_good_files_of_every_kind_load_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = [PreferenceExample(r["prompt"], r["chosen"], r["rejected"]) for r in GOOD]
    (tmp_path / "a.jsonl").write_text(_jsonl(GOOD))
    (tmp_path / "b.json").write_text(json.dumps(GOOD, indent=2))
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(_jsonl(GOOD).encode()))
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "e.parquet")
    (tmp_path / "f.json").write_text(_jsonl(GOOD))  # JSON Lines under a .json name
    for name in ("a.jsonl", "b.json", "d.jsonl.gz", "e.parquet", "f.json"):
        examples, report = load_preferences(str(tmp_path / name))
        assert examples == want, name
        assert report.format == "preference" and report.kept_rows == [0, 1, 2, 3]


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(_jsonl(GOOD[:2]).encode() + '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode(
        "latin-1"))
    e = _error(path)
    assert e.line == 3 and "not UTF-8" in str(e) and "0xe9" in str(e)


def test_truncated_last_jsonl_line(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text(_jsonl(GOOD)[:-20])
    e = _error(path)
    assert e.line == 4 and "last line is truncated" in str(e)
    path.write_text(_jsonl(GOOD[:1]) + "{not json}\n" + _jsonl(GOOD[1:]))
    e = _error(path)
    assert e.line == 2 and "not valid JSON" in str(e)


def test_truncated_json_array(tmp_path):
    path = tmp_path / "cut.json"
    text = json.dumps(GOOD, indent=1)
    for cut in (text[:-3], text[: len(text) // 2]):
        path.write_text(cut)
        assert "truncated JSON" in str(_error(path))


def test_duplicate_keys_in_a_record(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text(_jsonl(GOOD[:1]) + '{"prompt": "p", "chosen": "a", "chosen": "b", "rejected": "c"}\n')
    e = _error(path)
    assert e.line == 2 and "'chosen' appears twice" in str(e)
    path = tmp_path / "dup.json"
    path.write_text('[{"prompt": "p", "chosen": "a", "rejected": "c", "rejected": "d"}]')
    assert "'rejected' appears twice" in str(_error(path))


def test_empty_files_and_records_that_are_not_objects(tmp_path):
    for name, text in (("empty.jsonl", ""), ("blank.json", "  \n\n"), ("none.json", "[]")):
        (tmp_path / name).write_text(text)
        assert "no rows" in str(_error(tmp_path / name))
    (tmp_path / "num.jsonl").write_text(_jsonl(GOOD[:1]) + "42\n")
    e = _error(tmp_path / "num.jsonl")
    assert e.line == 2 and "not an object" in str(e)
    (tmp_path / "one.json").write_text(json.dumps(GOOD[0], indent=2))
    assert "not an array of objects" in str(_error(tmp_path / "one.json"))


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    blob = gzip.compress(_jsonl(GOOD * 50).encode())
    path.write_bytes(blob[: len(blob) // 2])
    assert "truncated gzip" in str(_error(path))
    path.write_bytes(b"not gzip at all")
    assert "not a readable gzip file" in str(_error(path))


def test_truncated_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "cut.parquet"
    pq.write_table(pa.Table.from_pylist(GOOD * 20), path)
    path.write_bytes(path.read_bytes()[:-40])
    assert "not a readable Parquet file" in str(_error(path))


def test_missing_file_and_unknown_suffix(tmp_path):
    assert "no such file" in str(_error(tmp_path / "nope.jsonl", data_files=str(tmp_path / "nope.jsonl")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataFileError, match="cannot tell the format"):
        load_preferences("Anthropic/hh-rlhf", data_files=str(tmp_path / "x.csv"))


def test_skip_policy_that_skips_every_row_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_jsonl([{"prompt": "p", "chosen": "same", "rejected": "same"}] * 3))
    with pytest.raises(DataValidationError, match=r"all 3 rows skipped.*\n.*row 0, field 'rejected': identical"):
        load_preferences(str(path), on_bad_row="skip")
    # some rows kept: no error, the report counts the rest
    path.write_text(_jsonl([{"prompt": "p", "chosen": "same", "rejected": "same"}] + GOOD[:2]))
    examples, report = load_preferences(str(path), on_bad_row="skip")
    assert len(examples) == 2 and report.n_skipped == 1 and report.kept_rows == [1, 2]


# ---------------------------------------------------------------------------------------------- TRL formats


def test_trl_conversational_format_explicit_and_implicit(tmp_path):
    explicit = {"prompt": [{"role": "user", "content": "Sky colour?"}],
                "chosen": [{"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "assistant", "content": "Green."}]}
    implicit = {"chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"},
                           {"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"},
                             {"role": "assistant", "content": "Green."}]}
    string_prompt = {"prompt": "Sky colour?", "chosen": [{"role": "assistant", "content": "Blue."}],
                     "rejected": [{"role": "assistant", "content": "Green."}], "rationale": "Blue is right."}
    path = tmp_path / "conv.jsonl"
    path.write_text(_jsonl([explicit, implicit, string_prompt]))
    for fmt in (None, "conversational"):
        examples, report = load_preferences(str(path), format=fmt)
        assert report.format == "conversational"
        assert examples == [
            PreferenceExample("Sky colour?", "Blue.", "Green."),
            PreferenceExample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"}],
                              "Blue.", "Green."),
            PreferenceExample("Sky colour?", "Blue.", "Green.", "Blue is right."),
        ]


def test_trl_conversational_rows_are_validated(tmp_path):
    mismatch = {"chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "x"}],
                "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "y"}]}
    not_assistant = {"prompt": "A?", "chosen": [{"role": "user", "content": "x"}],
                     "rejected": [{"role": "assistant", "content": "y"}]}
    no_prompt = {"chosen": [{"role": "assistant", "content": "x"}], "rejected": [{"role": "assistant", "content": "y"}]}
    path = tmp_path / "bad.jsonl"
    path.write_text(_jsonl([mismatch, not_assistant, no_prompt]))
    with pytest.raises(DataValidationError) as e:
        load_preferences(str(path), format="conversational")
    reasons = {(b.row, b.reason) for b in e.value.bad_rows}
    assert reasons == {(0, "prompt_mismatch"), (1, "malformed"), (2, "missing_field")}


def test_trl_implicit_prompt_format(tmp_path):
    rows = [{"chosen": "Question: sky colour? Answer: blue.", "rejected": "Question: sky colour? Answer: green."},
            {"chosen": "The sun is hot", "rejected": "The sun is cold"},
            {"chosen": "same prefix and same end", "rejected": "same prefix and same end"},
            {"chosen": "abc", "rejected": "xyz"}]
    path = tmp_path / "implicit.jsonl"
    path.write_text(_jsonl(rows))
    examples, report = load_preferences(str(path), on_bad_row="skip")
    assert report.format == "implicit_prompt"
    # TRL's extract_prompt: the space before the first difference goes with the responses
    assert examples == [PreferenceExample("Question: sky colour? Answer:", " blue.", " green."),
                        PreferenceExample("The sun is", " hot", " cold")]
    assert report.rows_by_reason() == {"empty": [2, 3]}


def test_format_detection_keeps_the_named_formats(tmp_path):
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    uf = {"prompt": "hi", "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
          "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}
    orca = {"system": "", "question": "hi", "chosen": "hello", "rejected": "go away"}
    for name, row in (("hh", hh), ("ultrafeedback", uf), ("orca_dpo_pairs", orca)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(_jsonl([row]))
        examples, report = load_preferences(str(path))
        assert report.format == name
        assert examples == [PreferenceExample("hi", "hello", "go away")], name
