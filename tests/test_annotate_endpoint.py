"""`rdpo-jax annotate` against a real chat-completions server on 127.0.0.1 (tests/annotate_server.py): the
annotated set round-trips through load_preferences with every rationale and its provenance; failed requests
are retried; each check is counted and its policy applied; a killed run resumes to the uninterrupted
result without asking anything twice; --both-orders keeps nothing from a position-biased generator."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rdpo_jax.cli import main
from rdpo_jax.data import load_preferences
from tests.annotate_server import AnnotateServer, rationale_for
from tests.chat_server import kill_when_busy

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ["EMPTY", "REFUSE", "WRONG", "TRUNC", "POSITION", "fine", "fine"]


def _pairs(tmp_path, markers, name="pairs.jsonl", multi_turn=False):
    rows = []
    for i, m in enumerate(markers):
        prompt = f"Tell me about topic{i}."
        if multi_turn and i % 2:
            prompt = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": prompt}]
        rows.append({"prompt": prompt, "chosen": f"GOOD: topic{i}a is {m}.", "rejected": f"topic{i}b is dull."})
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(server, data, out, *extra):
    return main(["annotate", "--data", data, "--endpoint", server.url, "--model", "m", "--out", str(out),
                 "--no-progress", "--timeout", "0.3", "--backoff-base", "0.01", *extra])


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_round_trip_with_provenance_retries_and_no_repeated_request(tmp_path, capsys):
    data = _pairs(tmp_path, ["fine"] * 4, multi_turn=True)
    out = tmp_path / "ann.jsonl"
    with AnnotateServer(slow_s=0.6) as server:
        server.script.extend(["429", "500", "slow", "malformed"])
        assert _run(server, data, out, "--concurrency", "1", "--target-tokenizer", "mistral-v1") == 0
        assert len(server.bodies) == 4 + 4 + 4  # 4 rationales, 4 support checks, 4 retried failures
        sent = len(server.bodies)
        assert _run(server, data, out) == 0 and len(server.bodies) == sent  # the rerun asks nothing
    printed = capsys.readouterr().out
    examples, _ = load_preferences(str(out), format="rationale")
    assert [e.rationale for e in examples] == [rationale_for(f"topic{i}a") for i in range(4)]
    assert isinstance(examples[1].prompt, list) and examples[0].prompt == "Tell me about topic0."
    rows = _jsonl(out)
    prov = rows[2]["annotation"]
    assert prov["generator"] == "endpoint:m" and prov["template"] == "general-v1" and prov["source_row"] == 2
    assert prov["settings"] == {"temperature": 0.0, "max_tokens": 256} and prov["support"] == "chosen"
    assert prov["checks"] == {"empty": "pass", "truncated": "pass", "refusal": "pass", "position_only": "pass",
                              "inconsistent": "pass", "position_bias": "not run"} and prov["flags"] == []
    report = json.loads((tmp_path / "ann.jsonl.report.json").read_text())
    assert report["template"]["id"] == "general-v1" and "Preferred response:" in report["template"]["text"]
    assert report["rationale_consistency"] == 1.0 and report["kept"] == 4
    assert report["requests"] == {"generator": {"requests": 4, "from_cache": 4, "sent": 0},
                                  "checker": {"requests": 4, "from_cache": 4, "sent": 0}}  # the rerun's
    words = len(rationale_for("topic0a").split())
    assert "rationale length (words)" in printed.splitlines()[-3]  # the rerun names no tokenizer
    assert report["lengths"] == {"unit": "words", "rationale_tokens": {"mean": words, "median": words, "p95": words,
                                                                      "max": words}}


def _fails(capsys, code, pattern):
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err


def test_each_check_is_counted_and_its_policy_applied(tmp_path, capsys):
    data = _pairs(tmp_path, MARKERS)
    cache = ["--cache", str(tmp_path / "cache.jsonl")]  # one cache for the runs below: same requests
    with AnnotateServer() as server:
        assert _run(server, data, tmp_path / "drop.jsonl", *cache) == 0
        report = json.loads((tmp_path / "drop.jsonl.report.json").read_text())
        # server: EMPTY -> "", REFUSE -> refusal (names no topic: unclear), WRONG -> names rejected's topic,
        # TRUNC -> finish length, POSITION -> "Response A is better." (unclear); support checked for all but EMPTY
        failed = {k: c["failed"] for k, c in report["checks"].items()}
        assert failed == {"empty": 1, "truncated": 1, "refusal": 1, "position_only": 1, "inconsistent": 3,
                          "position_bias": 0}
        assert report["support"] == {"chosen": 3, "rejected": 1, "unclear": 2, "not_checked": 1}
        assert report["rationale_consistency"] == pytest.approx(3 / 6)
        assert (report["kept"], report["dropped"]) == (2, 5)
        assert [r["annotation"]["source_row"] for r in _jsonl(tmp_path / "drop.jsonl")] == [5, 6]

        sent = len(server.bodies)
        assert _run(server, data, tmp_path / "flag.jsonl", "--policy", "flag", *cache) == 0
        assert len(server.bodies) == sent  # the policies change nothing that is asked
        rows = _jsonl(tmp_path / "flag.jsonl")
        assert [r["annotation"]["flags"] for r in rows] == [["refusal", "inconsistent"], ["inconsistent"],
                                                            ["truncated"], ["position_only", "inconsistent"], [], []]
        mixed = ["--policy", "keep", "--on", "inconsistent=drop", *cache]
        assert _run(server, data, tmp_path / "mixed.jsonl", *mixed) == 0
        rows = _jsonl(tmp_path / "mixed.jsonl")
        assert [r["annotation"]["source_row"] for r in rows] == [3, 5, 6]
        assert rows[0]["annotation"]["flags"] == [] and rows[0]["annotation"]["checks"]["truncated"] == "fail"
        assert _run(server, data, tmp_path / "none.jsonl", "--policy", "keep", "--check", "none", *cache) == 0
        assert _jsonl(tmp_path / "none.jsonl")[0]["annotation"]["checks"]["inconsistent"] == "not run"
        _fails(capsys, _run(server, data, tmp_path / "x.jsonl", "--on", "empty=keep"),
               "AnnotateError: --on empty=keep: an empty rationale is always dropped")
        _fails(capsys, _run(server, data, tmp_path / "x.jsonl", "--on", "refusal"), "write CHECK=POLICY")
        _fails(capsys, _run(server, data, tmp_path / "x.jsonl", "--on", "tone=drop"), "CHECK in .*'refusal'")


def test_cache_is_shared_by_outputs_only_when_named(tmp_path):
    """The default cache sits beside the output; --cache points two outputs at one cache."""
    data = _pairs(tmp_path, ["fine"] * 2)
    with AnnotateServer() as server:
        assert _run(server, data, tmp_path / "a.jsonl", "--cache", str(tmp_path / "c.jsonl")) == 0
        n = len(server.bodies)
        assert _run(server, data, tmp_path / "b.parquet", "--cache", str(tmp_path / "c.jsonl")) == 0
        assert len(server.bodies) == n
        assert _run(server, data, tmp_path / "c.jsonl.d") == 0 and len(server.bodies) == 2 * n
    for out in ("a.jsonl", "b.parquet", "c.jsonl.d"):
        got = load_preferences(str(tmp_path / out), format="rationale")[0]
        assert [e.rationale for e in got] == [rationale_for("topic0a"), rationale_for("topic1a")], out


def test_both_orders_keeps_consistent_picks_and_nothing_from_a_position_biased_generator(tmp_path, capsys):
    data = _pairs(tmp_path, ["fine"] * 4)
    with AnnotateServer() as server:
        assert _run(server, data, tmp_path / "fair.jsonl", "--both-orders", "--check", "none") == 0
        assert len(server.bodies) == 8
        assert all("Preferred" not in json.loads(b)["messages"][0]["content"] for b in server.bodies)
    rows = _jsonl(tmp_path / "fair.jsonl")
    assert [r["annotation"]["picks"] for r in rows] == [[1, 2]] * 4
    assert [r["rationale"] for r in rows] == [rationale_for(f"topic{i}a") for i in range(4)]
    assert rows[0]["annotation"]["template"] == "general-blind-v1"
    with AnnotateServer(biased=True) as server:
        _fails(capsys, _run(server, data, tmp_path / "biased.jsonl", "--both-orders"),
               r"all 4 pairs were dropped \(failed checks under the drop policy: \{'position_bias': 4")
    report = json.loads((tmp_path / "biased.jsonl.report.json").read_text())
    assert report["checks"]["position_bias"]["failed"] == 4 and report["position_consistency"] == 0.0
    assert report["picks"]["changed_with_order_or_unreadable"] == 4 and not (tmp_path / "biased.jsonl").exists()


def test_dry_run_shows_one_request_without_the_key_and_sends_nothing(tmp_path, capsys, monkeypatch):
    data = _pairs(tmp_path, ["fine"] * 3)
    monkeypatch.setenv("ANNOTATE_KEY", "sk-secret")
    with AnnotateServer() as server:
        assert _run(server, data, tmp_path / "d.jsonl", "--dry-run", "--api-key-env", "ANNOTATE_KEY") == 0
        assert server.bodies == []
    shown = capsys.readouterr().out
    assert "sk-secret" not in shown and "Authorization: Bearer <from the environment, not shown>" in shown
    assert "Preferred response:\\nGOOD: topic0a is fine." in shown and "3 rationale requests, 3 not cached" in shown


def test_sigkill_half_way_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Killed half-way and rerun, the output equals an uninterrupted run's, and the server saw each distinct
    request once plus at most `concurrency` (2) repeats: the requests in flight at the kill."""
    data = _pairs(tmp_path, ["fine", "WRONG", "fine", "POSITION"] * 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with AnnotateServer(delay=0.05) as server:
        def cmd(out):
            return [sys.executable, "-m", "rdpo_jax", "annotate", "--data", data, "--endpoint", server.url,
                    "--model", "m", "--out", str(tmp_path / out), "--concurrency", "2", "--no-progress",
                    "--policy", "flag"]
        kill_when_busy(cmd("killed.jsonl"), env, server, 8)
        assert 8 <= len(server.bodies) < 24
        subprocess.run(cmd("killed.jsonl"), env=env, check=True, capture_output=True)
        resumed = list(server.bodies)
        assert len(set(resumed)) == 24 and len(resumed) <= 24 + 2
        subprocess.run(cmd("clean.jsonl"), env=env, check=True, capture_output=True)
    assert (tmp_path / "killed.jsonl").read_text() == (tmp_path / "clean.jsonl").read_text()
