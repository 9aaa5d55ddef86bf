"""The real HH-RLHF harmless-base test file loads, with its bad rows reported by reason and index."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdpo_jax.data import DataValidationError, load_preferences

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HH_FILE = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

pytestmark = pytest.mark.skipif(not HH_FILE.exists(), reason=f"real HH file not present at {HH_FILE}")

# docs/spec.md section 4: 4 rows with an empty response, 5 whose chosen/rejected earlier turns differ.
EMPTY = [86, 516, 925, 1103]
MISMATCH = [1254, 1688, 1950, 1952, 2036]
# Two assistant turns in a row inside the shared prompt: the spec names 667, 763 and 1849; the file also has
# one in row 1319 (both transcripts, turns 4 and 5), found when this loader was written.
CONSECUTIVE_ASSISTANT = [667, 763, 1319, 1849]


@pytest.fixture(scope="module")
def hh(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("hf_cache"))
    return load_preferences("Anthropic/hh-rlhf", split="test", data_files=str(HH_FILE), on_bad_row="skip",
                            cache_dir=cache), cache


def test_hh_skip_reports_bad_rows(hh):
    (examples, report), _ = hh
    assert report.n_rows == 2312 and report.n_kept == 2312 - 9 == len(examples)
    assert report.rows_by_reason() == {"empty": EMPTY, "prompt_mismatch": MISMATCH}
    assert report.counts == {"empty": 4, "prompt_mismatch": 5}
    assert {b.field for b in report.bad_rows if b.reason == "empty"} == {"chosen"}
    assert report.flags["consecutive_same_role"] == CONSECUTIVE_ASSISTANT
    assert all(ex.chosen.strip() and ex.rejected.strip() and ex.chosen != ex.rejected for ex in examples)


def test_hh_consecutive_assistant_turns_are_kept(hh):
    (examples, report), _ = hh
    kept_rows = [i for i in range(report.n_rows) if i not in set(report.skipped_rows)]
    by_row = dict(zip(kept_rows, examples, strict=True))
    for row in CONSECUTIVE_ASSISTANT:
        roles = [m["role"] for m in by_row[row].prompt]
        assert ("assistant", "assistant") in set(zip(roles, roles[1:], strict=False)), row
        assert roles[0] == "user" and roles[-1] == "user"
    first = by_row[0]
    assert first.prompt[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert first.chosen.startswith("No, sorry!  All of these involve a pen")


def test_hh_error_names_bad_rows(hh):
    _, cache = hh
    with pytest.raises(DataValidationError) as err:
        load_preferences("Anthropic/hh-rlhf", split="test", data_files=str(HH_FILE), cache_dir=cache)
    msg = str(err.value)
    assert "dataset 'Anthropic/hh-rlhf' (split 'test', read from" in msg and "9 of 2312 rows are bad" in msg
    for row in EMPTY:
        assert f"row {row}, field 'chosen': empty" in msg
    for row in MISMATCH:
        assert f"row {row}, field 'prompt': prompt_mismatch" in msg
