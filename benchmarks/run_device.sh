#!/usr/bin/env bash
# One GPU call: rdpo_jax's DPO step beside the PyTorch peer (compiled, and eager at 1B) on the same card, at the
# Llama-3.2-1B shape (8 pairs x 1024) and the Llama-3.1-8B shape (2 pairs x 1024), bf16; then cuDNN against XLA
# attention with packed tree masks. Runs from a plain checkout (PYTHONPATH=., nothing installed; only jax,
# flax, optax, numpy, torch and transformers are imported), in about 5 minutes on an H200. JSON lines go to
# $OUT/device.jsonl, the summary to stdout.
#   bash benchmarks/run_device.sh             # on the GPU machine
#   SMOKE=1 bash benchmarks/run_device.sh     # tiny shapes on CPU, peer eager only (checks the script itself)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
OUT=${OUT:-/tmp}
LOG="$OUT/device.jsonl"
PEAK=${PEAK:-787e12}  # bf16 matmul ceiling measured on the H200 (for MFU)
: > "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
if [[ "${SMOKE:-0}" == 1 ]]; then
  RUNS=("tiny 2 32"); OURS=(--dtype float32 --steps 1); PEER=(--steps 1 --warmup 1); COMPILED=(); ATT=(--cpu-smoke)
else
  RUNS=("llama-1b 8 1024" "llama-8b 2 1024"); OURS=(--dtype bfloat16 --steps 5 --remat save_dots); PEER=(--steps 5)
  COMPILED=(--compile); ATT=()
fi
for run in "${RUNS[@]}"; do
  read -r preset pairs seq <<< "$run"
  shape=(--preset "$preset" --pairs "$pairs" --seq "$seq" --peak "$PEAK")
  timeout 150 python benchmarks/bench_step.py "${shape[@]}" "${OURS[@]}" --loss dpo | tee -a "$LOG"
  timeout 120 python benchmarks/torch_peer.py "${shape[@]}" "${PEER[@]}" "${COMPILED[@]}" | tee -a "$LOG"
  if [[ "$preset" == llama-1b ]]; then  # the eager peer too, at 1B only (8B eager needs more memory)
    timeout 60 python benchmarks/torch_peer.py "${shape[@]}" "${PEER[@]}" | tee -a "$LOG"
  fi
done
timeout 60 python benchmarks/bench_attention_gpu.py "${ATT[@]}" | tee -a "$LOG"
python benchmarks/summarize.py "$LOG"
