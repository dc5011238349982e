#!/usr/bin/env bash
# Stage-1 training throughput of deper (burn, CUDA backend) against the same module in PyTorch on the same
# GPU. For a lent GPU machine; not run in CI.
#
#   STAGE1_BENCH=PATH bash crates/deper-train/examples/stage1_bench_cuda.sh [STEPS] [WARMUP] [BATCH] [PYTHON]
#
# STAGE1_BENCH: `examples/stage1_bench.rs` built with the `cuda` feature
#   (`cargo build --release -p deper-train --features cuda --example stage1_bench`; burn 0.21 loads the CUDA
#   driver at run time, so it builds without a GPU). Without it the script builds it.
# PYTHON: an interpreter with torch built for CUDA (default python3).
# Both sides run the paper preset on the bench's fixed synthetic batch (see stage1_bench.rs), float32. The
# memory column is nvidia-smi's used GPU memory sampled every 50 ms, above what was in use before the run
# (CUDA context included), since the RESULT lines' peak_mib is host memory for burn and torch's allocator
# peak for PyTorch.
set -euo pipefail
steps=${1:-20}; warmup=${2:-3}; batch=${3:-32}; python=${4:-python3}
here=$(cd "$(dirname "$0")" && pwd)
bench=${STAGE1_BENCH:-}
if [ -z "$bench" ]; then
  cargo build --release -q -p deper-train --features cuda --example stage1_bench
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bench="$target/release/examples/stage1_bench"
fi
# shellcheck source=../../deper-vlm/examples/gpu_peak.sh
. "$here/../../deper-vlm/examples/gpu_peak.sh"
# Prints the RESULT line of "$@" with gpu_mib=<peak used GPU memory above the start> appended.
with_peak() {
  local out; out=$(with_gpu_peak "$@")
  echo "$(echo "$out" | grep '^RESULT') gpu_mib=$(gpu_peak_mib "$out")"
}
rust=$(with_peak "$bench" cuda "$steps" "$warmup" "$batch")
echo "$rust"
torch=$(with_peak "$python" "$here/stage1_bench_torch.py" "$steps" "$warmup" "$batch" 384 1 cuda)
echo "$torch"
field() { echo "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
awk -v rs="$(field "$rust" samples_per_s)" -v ts="$(field "$torch" samples_per_s)" \
  -v rm="$(field "$rust" gpu_mib)" -v tm="$(field "$torch" gpu_mib)" \
  'BEGIN { printf "RATIO device=cuda samples_per_s=%.2fx (deper %.2f / torch %.2f) gpu_mib=%.2fx (deper %.0f / torch %.0f)\n",
           rs / ts, rs, ts, rm / tm, rm, tm }'
