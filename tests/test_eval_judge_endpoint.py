"""The endpoint judge against a real HTTP server in this process (tests/judge_server.py): retries on 429
(honouring Retry-After), 500, timeouts and malformed bodies; one strict retry of an unreadable reply, then
UNPARSED; a verdict cache that makes a rerun send nothing; the key never printed; the command line end to
end, including a SIGKILL half-way and a resumed run."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rdpo_jax.cli import main
from rdpo_jax.eval.judges import JudgeError, JudgeRequest, Verdict, VerdictCache
from rdpo_jax.eval.judges.endpoint import EndpointJudge
from rdpo_jax.eval.prompt_ids import prompt_id
from tests.chat_server import kill_when_busy
from tests.judge_server import JudgeServer

ROOT = Path(__file__).resolve().parents[1]


def _judge(server, tmp_path, **kw):
    kw = {"timeout": 0.2, "backoff_base": 0.005, "max_retries": 3, "concurrency": 1, **kw}
    return EndpointJudge(server.url, "m", cache=VerdictCache(tmp_path / "cache.jsonl"), **kw)


def test_retries_backoff_retry_after_timeout_malformed_and_cache(tmp_path):
    reqs = [JudgeRequest("q1", "GOOD a", "b"), JudgeRequest("q2", "a", "GOOD b"), JudgeRequest("q3", "a", "b")]
    with JudgeServer(retry_after="0.15") as server:
        server.script.extend(["429", "500", "slow", "malformed"])
        judge = _judge(server, tmp_path, max_retries=5)
        t0 = time.monotonic()
        assert judge.judge(reqs) == [Verdict.FIRST, Verdict.SECOND, Verdict.TIE]
        assert time.monotonic() - t0 >= 0.15 + 0.2  # Retry-After waited, the slow reply timed out
        assert server.times[1] - server.times[0] >= 0.15
        assert len(server.bodies) == 3 + 4 and judge.retries == 4
        sent = [json.loads(b) for b in server.bodies]
        assert all(b["temperature"] == 0 and b["max_tokens"] == 64 and b["model"] == "m" for b in sent)
        again = _judge(server, tmp_path)  # a rerun reads the cache: no request
        assert again.judge(reqs) == [Verdict.FIRST, Verdict.SECOND, Verdict.TIE]
        assert len(server.bodies) == 7 and again.cache_hits == 3


def test_unreadable_reply_gets_one_strict_retry_then_unparsed_and_is_cached(tmp_path):
    with JudgeServer() as server:
        judge = _judge(server, tmp_path)
        assert judge.judge([JudgeRequest("q", "UNSURE", "b")]) == [Verdict.UNPARSED]
        assert len(server.bodies) == 2 and "exactly one of" in json.loads(server.bodies[1])["messages"][0]["content"]
        assert _judge(server, tmp_path).judge([JudgeRequest("q", "UNSURE", "b")]) == [Verdict.UNPARSED]
        assert len(server.bodies) == 2


def test_persistent_failure_names_the_url_and_keeps_the_cache(tmp_path):
    with JudgeServer() as server:
        server.script.extend(["500"] * 10)
        with pytest.raises(JudgeError, match="HTTP 500 after 2 retries"):
            _judge(server, tmp_path, max_retries=2).judge([JudgeRequest("q", "a", "b")])


def test_torn_last_cache_line_is_ignored(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = VerdictCache(path)
    cache.put("k1", Verdict.FIRST, "1")
    with open(path, "a") as f:
        f.write('{"key": "k2", "verdict": "sec')  # a write cut by a kill
    again = VerdictCache(path)
    assert again.get("k1") == (Verdict.FIRST, "1") and again.get("k2") is None and again.torn == 1
    again.put("k3", Verdict.TIE)
    assert VerdictCache(path).get("k3") == (Verdict.TIE, None)


def _files(tmp_path, n):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    rows_a = [{"prompt_id": prompt_id(f"q{i}"), "prompt": f"q{i}", "response": "GOOD" if i % 3 else "x"}
              for i in range(n)]
    rows_b = [{"prompt_id": prompt_id(f"q{i}"), "prompt": f"q{i}", "response": "GOOD" if i % 3 == 1 else "yy"}
              for i in range(n)]
    a.write_text("".join(json.dumps(r) + "\n" for r in rows_a))
    b.write_text("".join(json.dumps(r) + "\n" for r in rows_b))
    return str(a), str(b)


def test_command_line_against_the_server_and_dry_run(tmp_path, capsys, monkeypatch):
    a, b = _files(tmp_path, 6)
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    with JudgeServer() as server:
        args = ["judge", a, b, "--endpoint", server.url, "--judge-model", "m", "--api-key-env", "JUDGE_KEY",
                "--out", str(tmp_path / "out"), "--timeout", "1", "--backoff-base", "0.01", "--n-boot", "200"]
        assert main([*args, "--dry-run"]) == 0
        printed = capsys.readouterr().out
        assert "sk-secret" not in printed and "12 requests, 10 not cached: 10 calls" in printed
        assert "END OF RESPONSE 2" in printed
        assert server.bodies == []
        assert main(args) == 0
        assert "sk-secret" not in capsys.readouterr().out
        s = json.loads((tmp_path / "out" / "summary.json").read_text())
        # i%3==0: A "x" vs B "yy": tie, consistent; i%3==1: both GOOD, the server says "1" in both orders: tie,
        # inconsistent; i%3==2: A GOOD: win
        assert (s["wins"], s["ties"], s["losses"], s["unparsed"], s["n"]) == (2, 4, 0, 0, 6)
        assert s["position_consistency"] == pytest.approx(4 / 6) and s["length_a"]["mean_chars"] == 3.0
        assert len(server.bodies) == 10  # identical responses: both orders are one request
        assert all("sk-secret" not in p.read_text() for p in (tmp_path / "out").iterdir() if p.suffix != ".png")
        assert len((tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()) == 6
        assert (tmp_path / "out" / "winrate.png").stat().st_size > 0
        assert main(args) == 0 and len(server.bodies) == 10  # the rerun is all cache hits


def test_sigkill_half_way_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Killed half-way and rerun, the summary equals an uninterrupted run's, and the server saw each
    distinct request once plus at most `concurrency` (2) repeats: the requests in flight at the kill."""
    a, b = _files(tmp_path, 15)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with JudgeServer(delay=0.05) as server:
        def cmd(out):
            return [sys.executable, "-m", "rdpo_jax", "judge", a, b, "--endpoint", server.url, "--judge-model", "m",
                    "--out", str(tmp_path / out), "--concurrency", "2", "--timeout", "2", "--n-boot", "200"]
        kill_when_busy(cmd("killed"), env, server, 12)
        assert 12 <= len(server.bodies) < 25
        subprocess.run(cmd("killed"), env=env, check=True, capture_output=True)
        resumed = list(server.bodies)
        assert len(set(resumed)) == 25 and len(resumed) <= 25 + 2  # both-GOOD pairs send one request per order
        subprocess.run(cmd("clean"), env=env, check=True, capture_output=True)
    drop = ("cache",)
    killed, clean = (
        {k: v for k, v in json.loads((tmp_path / d / "summary.json").read_text()).items() if k not in drop}
        for d in ("killed", "clean"))
    assert killed == clean
    assert (tmp_path / "killed" / "verdicts.jsonl").read_text() == (tmp_path / "clean" / "verdicts.jsonl").read_text()
