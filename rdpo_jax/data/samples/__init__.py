"""Small preference files shipped with the package, for examples and tests (no download).

* :data:`HH_SAMPLE`: 64 pairs of Anthropic's HH-RLHF, harmless-base test split: the first 64 rows, in file
  order, whose chosen and rejected transcripts have under 1,000 characters together and are well formed
  (rows 0-135 of the split were scanned). The ``hh`` format (``chosen``/``rejected`` transcripts). MIT
  licence, Copyright (c) 2022 Anthropic: ``LICENSE.hh-rlhf`` beside it.
"""
from pathlib import Path

__all__ = ["HH_SAMPLE"]

HH_SAMPLE = str(Path(__file__).resolve().parent / "hh_rlhf_harmless_test_64.jsonl")
