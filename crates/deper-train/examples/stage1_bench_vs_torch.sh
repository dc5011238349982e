#!/usr/bin/env bash
# Stage-1 training throughput of deper (burn) against the same module in PyTorch, same machine and thread count.
#
#   bash crates/deper-train/examples/stage1_bench_vs_torch.sh [THREADS] [STEPS] [WARMUP] [WGPU_STEPS] [PYTHON]
#
# Builds `examples/stage1_bench.rs` in release with the wgpu feature and runs, one after the other:
#   - Rust on the CPU: Autodiff<NdArray>, RAYON_NUM_THREADS=THREADS (and MATMUL_NUM_THREADS);
#   - Rust on wgpu: Autodiff<Wgpu>, LP_NUM_THREADS=THREADS for Mesa's lavapipe (a CPU Vulkan driver, so it is
#     the CPU again and its buffers count in the peak RSS); WGPU_STEPS timed steps (default 1, one warm-up),
#     since lavapipe is slow; WGPU_STEPS=0 skips it;
#   - `examples/stage1_bench_torch.py`: torch.set_num_threads(THREADS), OMP_NUM_THREADS=THREADS.
# Each prints a `RESULT` line (samples/s, peak resident memory, parameter counts); then the ratios deper / torch
# (samples/s > 1: deper is faster; peak memory < 1: deper uses less).
#
# FEATURES: cargo features of the build (default `wgpu`); `FEATURES=wgpu,ndarray-threads` turns on burn-ndarray's
# threaded matmul and rayon, which this workspace leaves off (its NdArray backend then uses one core whatever THREADS).
# STAGE1_BENCH=PATH runs that binary instead of building (e.g. while other builds are paused and hold the lock).
# PYTHON is an interpreter with torch (default ../venv/bin/python). Torch is installed by hand, never by the
# build: `python3 -m venv V && V/bin/pip install torch` (the PyPI wheel is ~3 GB with its CUDA libraries and runs
# on the CPU; the CPU-only wheel: `V/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu`).
# Not run in CI.
set -euo pipefail
threads=${1:-1}; steps=${2:-3}; warmup=${3:-1}; wgpu_steps=${4:-1}
python=${5:-../venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
bench=${STAGE1_BENCH:-}
if [ -z "$bench" ]; then
  cargo build --release -q -p deper-train --features "${FEATURES:-wgpu}" --example stage1_bench
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bench="$target/release/examples/stage1_bench"
fi

rust_cpu=$(RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads "$bench" cpu "$steps" "$warmup" | grep '^RESULT')
echo "$rust_cpu"
rust_wgpu=""
if [ "$wgpu_steps" -gt 0 ]; then
  rust_wgpu=$(LP_NUM_THREADS=$threads "$bench" wgpu "$wgpu_steps" 1 | grep '^RESULT')
  echo "$rust_wgpu"
fi
torch=$(OMP_NUM_THREADS=$threads "$python" "$here/stage1_bench_torch.py" "$steps" "$warmup" 32 384 "$threads" \
  | grep '^RESULT')
echo "$torch"

field() { echo "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
for rust in "$rust_cpu" "$rust_wgpu"; do
  [ -n "$rust" ] || continue
  awk -v dev="$(field "$rust" device)" -v t="$threads" \
    -v rs="$(field "$rust" samples_per_s)" -v ts="$(field "$torch" samples_per_s)" \
    -v rm="$(field "$rust" peak_mib)" -v tm="$(field "$torch" peak_mib)" \
    'BEGIN { printf "RATIO device=%s threads=%s samples_per_s=%.2fx (deper %.2f / torch %.2f) peak_mib=%.2fx (deper %.0f / torch %.0f)\n",
             dev, t, rs / ts, rs, ts, rm / tm, rm, tm }'
done
