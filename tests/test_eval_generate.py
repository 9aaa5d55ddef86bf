"""`rdpo-jax generate` and its parts: greedy responses equal `rdpo_jax.models.generate` called on its own;
samples depend on the seed and the prompt only (not the batch size, nor 1 vs 8 devices); an interrupted
responses file resumes without redoing finished prompts; the command end to end; AlpacaEval export."""
import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from rdpo_jax.cli import main
from rdpo_jax.data import encode_chat, load_tokenizer
from rdpo_jax.data.local_files import DataFileError
from rdpo_jax.eval.bulk_generation import (
    PromptTooLong,
    SamplingSettings,
    bucket_width,
    generate_records,
    plan_batches,
)
from rdpo_jax.eval.prompt_ids import canonical_messages, prompt_id
from rdpo_jax.eval.prompt_sources import PromptItem, draw_prompts, file_prompts
from rdpo_jax.eval.response_file import (
    RECORD_KEYS,
    ResponseFileError,
    ResponseWriter,
    alpaca_eval_outputs,
    read_responses,
)
from rdpo_jax.models import generate, load_hf

MODEL = Path(__file__).parent / "data" / "rationale_model"
PROMPTS = ["please name a blue animal", "please name a red fruit", "please name a green animal",
           [{"role": "system", "content": "please name a blue animal"},
            {"role": "user", "content": "please name a red animal"}],
           "please name a blue fruit", "please name a red animal"]
ITEMS = [PromptItem(prompt_id(p), p) for p in PROMPTS]
NEW = 8


@pytest.fixture(scope="module")
def tiny():
    return load_hf(MODEL), load_tokenizer(MODEL)


def _by_id(model, tok, settings, **kw):
    batches = list(generate_records(model, tok, ITEMS, settings, model_name="tiny", **kw))
    return {r["prompt_id"]: r for batch in batches for r in batch}


def test_prompt_ids_follow_the_spec():
    text = json.dumps([{"role": "user", "content": "hi"}], sort_keys=True, separators=(",", ":"))
    assert prompt_id("hi") == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert prompt_id("hi") == prompt_id([{"content": "hi", "role": "user"}]) != prompt_id("hi ")
    assert canonical_messages("hi") == [{"role": "user", "content": "hi"}]


def test_buckets_and_the_seeded_draw():
    assert [bucket_width(n) for n in (1, 16, 17, 33, 64, 65)] == [16, 16, 32, 64, 64, 128]
    assert plan_batches([20, 5, 40, 9, 17, 3], 2) == [[5, 1], [3], [4, 0], [2]]
    drawn = draw_prompts(ITEMS + ITEMS[:2], 4, seed=3)
    assert len(drawn) == 4 == len({d.id for d in drawn}) and drawn == draw_prompts(ITEMS, 4, seed=3)
    assert [d.id for d in draw_prompts(ITEMS, None, 3)] != [d.id for d in draw_prompts(ITEMS, None, 4)]


def test_greedy_responses_equal_models_generate(tiny):
    model, tok = tiny
    got = _by_id(model, tok, SamplingSettings(temperature=0.0, max_new_tokens=NEW), batch_size=4,
                 devices=jax.devices()[:1])
    stop = set(model.config.eos_token_ids)
    for item in ITEMS:
        ids = encode_chat(tok, canonical_messages(item.prompt), add_generation_prompt=True)
        row = np.asarray(generate(model, np.asarray([ids]), np.ones((1, len(ids))), NEW))[0].tolist()
        end = next((j for j, t in enumerate(row) if t in stop), None)
        record = got[item.id]
        assert record["finish_reason"] == ("length" if end is None else "eos")
        assert record["response"] == tok.decode(row[:end], skip_special_tokens=True).strip()
        assert record["prompt_tokens"] == len(ids) and record["response_tokens"] == len(row[:end])
        assert list(record) == list(RECORD_KEYS)
        assert record["settings"] == {"temperature": 0.0, "top_p": None, "max_new_tokens": NEW, "seed": None}


def test_samples_depend_on_seed_and_prompt_only_not_on_batch_or_devices(tiny):
    model, tok = tiny
    settings = SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=NEW, seed=5)
    one = _by_id(model, tok, settings, batch_size=1, devices=jax.devices()[:1])
    four = _by_id(model, tok, settings, batch_size=4, devices=jax.devices()[:1])
    assert {k: r["response"] for k, r in one.items()} == {k: r["response"] for k, r in four.items()}
    other = _by_id(model, tok, SamplingSettings(temperature=1.0, max_new_tokens=NEW, seed=6), batch_size=4,
                   devices=jax.devices()[:1])
    assert any(other[k]["response"] != four[k]["response"] for k in four)
    assert len(jax.devices()) == 8
    spread = _by_id(load_hf(MODEL), tok, settings, batch_size=8)  # rows split over 8 devices
    assert {k: r["response"] for k, r in spread.items()} == {k: r["response"] for k, r in four.items()}


def _write_prompts(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p, "other": 1}) + "\n" for p in prompts))
    return path


def test_command_resumes_an_interrupted_file_without_redoing_finished_prompts(tmp_path, capsys):
    prompts = _write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--model", str(MODEL), "--prompts", str(prompts), "--n", "0", "--max-new-tokens",
            str(NEW), "--dtype", "float32", "--out", str(out), "--no-progress", "--seed", "2"]
    assert main(argv) == 0
    full = out.read_bytes()
    lines = full.split(b"\n")[:-1]
    assert len(lines) == len(PROMPTS)
    # killed while writing the fourth record: three complete lines and half of a fourth
    out.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:25])
    with pytest.raises(DataFileError):  # the data layer's reader would refuse it; the resume drops it
        file_prompts(out)
    assert len(read_responses(out)) == 3
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{len(PROMPTS)} prompts: {len(PROMPTS) - 3} generated" in printed and "3 already in" in printed
    again = out.read_bytes()
    assert again.startswith(b"\n".join(lines[:3]) + b"\n")  # finished records untouched
    assert sorted(again.split(b"\n")) == sorted(full.split(b"\n"))  # redone prompts sample the same
    assert main(argv) == 0 and out.read_bytes() == again  # nothing left to do
    assert "0 generated" in capsys.readouterr().out


def test_command_on_a_data_split_and_a_run_directory_with_alpaca_export(tmp_path, capsys):
    rows = [{"prompt": p, "chosen": "the owl is blue", "rejected": "the fox is red"} for p in PROMPTS[:3]]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:1]))  # a prompt used twice
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    os.symlink(MODEL.resolve(), run / "final" / "hf")
    out, alpaca = tmp_path / "responses.jsonl", tmp_path / "alpaca.json"
    assert main(["generate", "--model", str(run), "--data", str(data), "--split", "test", "--n", "512",
                 "--max-new-tokens", "4", "--out", str(out), "--alpaca-eval", str(alpaca),
                 "--sample-file", str(tmp_path / "samples.json"), "--generator", "rdpo-tiny", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 prompts: 3 generated") and "AlpacaEval model outputs" in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and {r["prompt"] for r in records} == set(PROMPTS[:3])
    assert records[0]["settings"] == {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 4, "seed": 0}
    assert records[0]["model"] == str(run / "final" / "hf")
    exported = json.loads(alpaca.read_text())
    assert [set(e) for e in exported] == [{"instruction", "output", "generator"}] * 3
    assert [e["output"] for e in exported] == [r["response"] for r in records]
    assert {e["generator"] for e in exported} == {"rdpo-tiny"}
    samples = json.loads((tmp_path / "samples.json").read_text())  # the official compare.py's input
    assert samples["config"] == {"exp_name": "rdpo-tiny", "human_prefix": "\n<|user|>\n",
                                 "assistant_prefix": "\n<|assistant|>\n", "local_run_dir": str(run / "final" / "hf")}
    assert samples["samples"] == [{"prompt": f"\n<|user|>\n{r['prompt']}\n<|assistant|>\n",
                                   "policy": r["response"], "chosen": "the owl is blue"} for r in records]
    assert "sample file: " in printed and "with chosen" in printed
    # other settings into the same file: refused, without a traceback
    assert main(["generate", "--model", str(run), "--data", str(data), "--max-new-tokens", "5",
                 "--out", str(out), "--no-progress"]) == 1
    assert "rdpo-jax generate: ResponseFileError: " in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path), "--data", str(data), "--out", str(out)]) == 1
    assert "final/hf/config.json" in capsys.readouterr().err


def test_sample_file_history_renders_every_turn_and_ends_with_the_assistant_prefix():
    from rdpo_jax.eval.sample_file import render_history

    assert render_history(PROMPTS[3], "H:", "A:") == "H:please name a blue animalH:please name a red animalA:"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "name a fox"}]
    assert render_history(chat) == "\n<|user|>\nhi\n<|assistant|>\nhello\n<|user|>\nname a fox\n<|assistant|>\n"


def test_alpaca_instruction_is_the_last_user_message_and_bad_files_are_named(tmp_path):
    records = [{"prompt": PROMPTS[3], "response": "x"}, {"prompt": "hi", "response": "y"}]
    assert alpaca_eval_outputs(records, "m") == [
        {"instruction": "please name a red animal", "output": "x", "generator": "m"},
        {"instruction": "hi", "output": "y", "generator": "m"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(DataFileError, match="record 2 has no 'prompt'"):
        file_prompts(bad)
    out = tmp_path / "out.jsonl"
    out.write_text('{"prompt_id": 1}\n')
    with pytest.raises(ResponseFileError, match="line 1 is not a response record"):
        read_responses(out)
    out.write_text("nope\n{}")
    with pytest.raises(ResponseFileError, match="line 1 is not JSON"):
        read_responses(out)
    trunc = tmp_path / "t.jsonl"
    trunc.write_bytes(b'{"half')
    with ResponseWriter(trunc) as w:
        w.write({"a": 1})
    assert trunc.read_text() == '{"a": 1}\n'


def test_a_prompt_without_room_for_the_new_tokens_is_named(tiny):
    """prompt tokens + max_new_tokens past max_position_embeddings (192 here) is an error naming the prompt,
    raised before anything is generated."""
    model, tok = tiny
    longest = max(ITEMS, key=lambda it: len(encode_chat(tok, canonical_messages(it.prompt),
                                                        add_generation_prompt=True)))
    n = len(encode_chat(tok, canonical_messages(longest.prompt), add_generation_prompt=True))
    room = model.config.max_position_embeddings - n
    with pytest.raises(PromptTooLong, match=f"prompt {longest.id} has {n} tokens; with --max-new-tokens "
                                            f"{room + 1} that is {n + room + 1} positions, more than the model's "
                                            "max_position_embeddings=192"):
        next(generate_records(model, tok, ITEMS, SamplingSettings(max_new_tokens=room + 1), model_name="tiny"))


def test_two_processes_generate_the_same_samples_as_one(tmp_path):
    """Two processes (one simulated device each, gloo collectives): each generates its share of the batches,
    process 0 gathers and writes; the file equals a one-process run's, record for record (samples are keyed
    by prompt id, not by where a prompt was generated)."""
    import subprocess
    import sys

    job = Path(__file__).parent / "scripts" / "generate_job.py"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    args = ["--model", str(MODEL), "--prompts", str(prompts), "--max-new-tokens", str(NEW), "--batch-size", "2",
            "--seed", "3", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    one = subprocess.run([sys.executable, str(job), "1", "0", "1", "0", *args, "--out", str(tmp_path / "one.jsonl")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    port = 21000 + os.getpid() % 20000
    procs = [subprocess.Popen([sys.executable, str(job), "1", str(i), "2", str(port), *args,
                               "--out", str(tmp_path / "two.jsonl")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    single, double = read_responses(tmp_path / "one.jsonl"), read_responses(tmp_path / "two.jsonl")
    assert len(double) == len(ITEMS) and single.keys() == double.keys()
    assert all(single[k] == double[k] for k in single)
    assert "6 prompts: 6 generated" in outs[0][0] and "prompts:" not in outs[1][0]  # process 0 reports
