#!/usr/bin/env bash
# The CPU pair: rdpo_jax's DPO step and the PyTorch eager peer on the same workload (small Llama, 4 pairs x
# 256 tokens, float32), alternating RUNS times (default 4), then the medians, their spread and the ratio;
# then the packed vs three-row RDPO step on the shipped HH sample. Every JSON line goes to $OUT (default
# benchmarks/results-cpu.jsonl).
#   bash benchmarks/run_cpu.sh            # the measurement (about 10 minutes on 2 cores)
#   SMOKE=1 bash benchmarks/run_cpu.sh    # tiny shapes, one run (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results-cpu.jsonl}
RUNS=${RUNS:-4}
if [[ "${SMOKE:-0}" == 1 ]]; then
  SHAPE=(--preset tiny --pairs 2 --seq 32 --steps 1); RUNS=1; HH=(--limit 4 --pairs 2 --max-length 256 --preset tiny --steps 1)
else
  SHAPE=(--preset small --pairs 4 --seq 256 --steps 5); HH=(--pairs 8 --max-length 1024 --preset small --steps 2)
fi
: > "$OUT"
for i in $(seq "$RUNS"); do
  python benchmarks/bench_step.py "${SHAPE[@]}" --loss dpo | tee -a "$OUT"
  python benchmarks/torch_peer.py "${SHAPE[@]}" | tee -a "$OUT"
done
python benchmarks/bench_step.py --hh --loss rdpo --layout three_row,packed "${HH[@]}" | tee -a "$OUT"
python benchmarks/summarize.py "$OUT"
