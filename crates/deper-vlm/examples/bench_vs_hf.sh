#!/usr/bin/env bash
# CPU benchmark of deper-vlm against HF transformers on the same checkpoint, image and thread count.
#
#   bash crates/deper-vlm/examples/bench_vs_hf.sh MODEL_DIR IMAGE [NEW_TOKENS] [REPEATS] [THREADS] [PYTHON]
#
# Runs `examples/bench.rs` (release, NdArray backend, RAYON_NUM_THREADS=THREADS) and `examples/bench_hf.py`
# (float32, eager attention, torch.set_num_threads(THREADS)) one after the other and prints prefill and
# decode tokens/s of both and the ratios deper / HF (> 1: deper is faster). PYTHON is an interpreter
# with torch and transformers (default ../venv/bin/python; `python3 -m venv V && V/bin/pip install torch
# transformers pillow`). A model of benchmark size: `examples/make_bench_model.py`. Not run in CI.
# BENCH_BIN=path runs that prebuilt `bench` instead of building (no cargo call, so it can run while other
# builds holding the target directory's lock are paused).
set -euo pipefail
model=${1:?MODEL_DIR}; image=${2:?IMAGE}; tokens=${3:-32}; repeats=${4:-3}; threads=${5:-1}
python=${6:-../venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q -p deper-vlm --example bench
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bin=$target/release/examples/bench
fi
rust=$(RAYON_NUM_THREADS=$threads "$bin" "$model" "$image" "$tokens" "$repeats")
hf=$(OMP_NUM_THREADS=$threads "$python" "$here/bench_hf.py" "$model" "$image" "$tokens" "$repeats" "$threads" 2>/dev/null)
echo "== deper (burn NdArray, $threads thread(s))"; echo "$rust"
echo "== HF transformers ($threads thread(s))"; echo "$hf"
# shellcheck source=bench_ratios.sh
. "$here/bench_ratios.sh"
print_ratios "$rust" "$hf"
