"""The official code's sample-file layout (HALOs' ``compare.py`` reads it), so our generations can be judged
by the script the paper's numbers came from:

    {"config": {"exp_name", "human_prefix", "assistant_prefix", "local_run_dir"},
     "samples": [{"prompt": history, "policy": our response, "chosen": the dataset's chosen response}, ...]}

``history`` is the conversation rendered with the two prefixes and ending with the assistant prefix
(``compare.py`` cuts it there): ``prefix(role_1) content_1 ... prefix(role_k) content_k assistant_prefix``,
a system turn taking the human prefix. The default prefixes are ``compare.py``'s own (Tulu:
``"\\n<|user|>\\n"``, ``"\\n<|assistant|>\\n"``). ``chosen`` is there only when the prompts came from a
preference set (``compare.py`` compares ``policy`` with ``chosen`` by default).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rdpo_jax.eval.prompt_ids import canonical_messages
from rdpo_jax.files import write_json

__all__ = ["ASSISTANT_PREFIX", "HUMAN_PREFIX", "render_history", "sample_file", "write_sample_file"]

HUMAN_PREFIX, ASSISTANT_PREFIX = "\n<|user|>\n", "\n<|assistant|>\n"


def render_history(prompt: Any, human_prefix: str = HUMAN_PREFIX, assistant_prefix: str = ASSISTANT_PREFIX) -> str:
    """The conversation as one string with the role prefixes, ending with the assistant prefix."""
    turns = [(assistant_prefix if m["role"] == "assistant" else human_prefix) + m["content"]
             for m in canonical_messages(prompt)]
    return "".join(turns) + assistant_prefix


def sample_file(records: Sequence[Mapping[str, Any]], references: Mapping[str, str] | None = None, *,
                exp_name: str, local_run_dir: str, human_prefix: str = HUMAN_PREFIX,
                assistant_prefix: str = ASSISTANT_PREFIX) -> dict[str, Any]:
    """The sample-file dict of response ``records`` (``prompt_id``, ``prompt``, ``response``), with
    ``references[prompt_id]`` as ``chosen`` when given (every record must have one)."""
    samples = []
    for r in records:
        sample = {"prompt": render_history(r["prompt"], human_prefix, assistant_prefix), "policy": r["response"]}
        if references is not None:
            if r["prompt_id"] not in references:
                raise KeyError(f"prompt {r['prompt_id']} has no reference (chosen) response")
            sample["chosen"] = references[r["prompt_id"]]
        samples.append(sample)
    config = {"exp_name": exp_name, "human_prefix": human_prefix, "assistant_prefix": assistant_prefix,
              "local_run_dir": local_run_dir}
    return {"config": config, "samples": samples}


def write_sample_file(path: str | os.PathLike, records: Sequence[Mapping[str, Any]],
                      references: Mapping[str, str] | None = None, **config: Any):
    """Writes :func:`sample_file` as JSON (atomically); returns the path."""
    return write_json(path, sample_file(records, references, **config))
