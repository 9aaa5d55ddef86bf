"""`rdpo-jax annotate` with a local model (the tiny rationale model of tests/data, through the batched
generation path) on the synthetic task, end to end: the written set trains with `train.loss=rdpo` and its
rationale term is active. A tiny model's rationales fail the checks, so this uses the keep policy."""
from __future__ import annotations

import json
from pathlib import Path

from rdpo_jax.cli import main
from rdpo_jax.data import SyntheticTask, load_preferences
from rdpo_jax.train.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "rationale_model"
QUIET = ["logging.progress=false", "logging.plot=false", "logging.tensorboard=false", "checkpoint.async_save=false",
         "train.eval_every=0", "checkpoint.export_hf=false"]


def test_local_annotation_end_to_end_trains_rdpo_with_an_active_rationale_term(tmp_path, capsys):
    examples = SyntheticTask(task="colour").examples(8, seed=3)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected}) + "\n"
                            for e in examples))
    out = tmp_path / "annotated.jsonl"
    args = ["annotate", "--data", str(data), "--local-model", str(MODEL), "--tokenizer", "synthetic", "--out",
            str(out), "--policy", "keep", "--max-tokens", "16", "--dtype", "float32", "--batch-size", "4",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "annotated 8 pairs with local:rationale_model (general-v1): 8 kept" in printed
    assert "requests: generator 8 (0 from the cache, 8 sent); checker 8 (0 from the cache, 8 sent)" in printed
    annotated, _ = load_preferences(str(out), format="rationale")
    assert [(e.prompt, e.chosen, e.rejected) for e in annotated] == [(e.prompt, e.chosen, e.rejected) for e in examples]
    assert all(e.rationale for e in annotated)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["annotation"]["settings"] == {"temperature": 0.0, "top_p": None, "max_new_tokens": 16, "seed": None}
    assert rows[0]["annotation"]["generator"] == "local:rationale_model"
    assert main(args) == 0 and "generator 8 (8 from the cache, 0 sent)" in capsys.readouterr().out  # no re-ask

    run = tmp_path / "run"
    assert main(["train", *QUIET, f"output_dir={run}", f"data.source={out}", "data.format=rationale",
                 "data.eval_split=null", "data.tokenizer=synthetic", f"model.init_from={MODEL}", "train.loss=rdpo",
                 "train.global_batch_size=8", "train.max_steps=1", "data.max_length=96",
                 "data.max_prompt_length=48"]) == 0
    (record,) = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]
    assert record["loss/rationale"] > 0 and record["logps/rationale"] < 0


def test_a_pair_too_long_for_the_local_model_is_an_error_naming_its_source_row(tmp_path, capsys):
    rows = [{"prompt": "please name a red animal", "chosen": "the fox is red", "rejected": "the owl is blue"},
            {"prompt": " ".join(["animal"] * 300), "chosen": "the fox is red", "rejected": "the owl is blue"}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "annotated.jsonl"
    assert main(["annotate", "--data", str(data), "--local-model", str(MODEL), "--tokenizer", "synthetic",
                 "--out", str(out), "--max-tokens", "8", "--dtype", "float32", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "PromptTooLong: general-v1 request for source row 1 has" in err
    assert "max_position_embeddings=192 (1 such requests)" in err and not out.exists()
