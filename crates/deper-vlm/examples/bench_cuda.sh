#!/usr/bin/env bash
# GPU benchmark of deper-vlm on CUDA: against HF transformers on the same GPU and checkpoint (float32,
# eager attention), and against the memory-bandwidth roofline of decoding. For a lent GPU machine; not
# run in CI.
#
#   BENCH_BIN=PATH bash crates/deper-vlm/examples/bench_cuda.sh MODEL_DIR IMAGE [NEW_TOKENS] [REPEATS] [HIDDEN] [LAYERS] [PYTHON]
#
# BENCH_BIN: `examples/bench.rs` built with the `cuda` feature
#   (`cargo build --release -p deper-vlm --features cuda --example bench`; burn 0.21 loads the CUDA driver at
#   run time, so it builds on a machine without a GPU). Without BENCH_BIN the script builds it.
# MODEL_DIR: made with `examples/make_bench_model.py --hidden HIDDEN --layers LAYERS` when it has no config.json.
# PYTHON: an interpreter with torch (CUDA) and transformers (default python3).
# burn's CUDA backend opens libcuda, libnvrtc and libcudart at run time; where the toolkit's libraries are
# not on the loader's path (e.g. they came as pip wheels beside PyTorch), add their folders to
# LD_LIBRARY_PATH first.
#
# Steps: the device-to-device copy bandwidth through PyTorch (bytes read + written per second: what a
# decode step can stream at best), then the Rust bench with DEPER_BENCH_BANDWIDTH_GBS set to it (it prints
# the roofline: bandwidth / bytes per decode step, and its share of it), then HF transformers; each side's
# GPU memory peak is nvidia-smi's used memory sampled every 50 ms, minus what was in use before it started
# (so it includes the CUDA context). Last, the ratios deper / HF (> 1: deper is faster).
set -euo pipefail
model=${1:?MODEL_DIR}; image=${2:?IMAGE}; tokens=${3:-64}; repeats=${4:-3}; hidden=${5:-1024}; layers=${6:-8}
python=${7:-python3}
here=$(cd "$(dirname "$0")" && pwd)
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q -p deper-vlm --features cuda --example bench
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bin=$target/release/examples/bench
fi
if [ ! -f "$model/config.json" ]; then
  "$python" "$here/make_bench_model.py" "$model" --hidden "$hidden" --layers "$layers" >/dev/null
fi

gbs=$("$python" - <<'PY'
import time
import torch
x = torch.empty(512 * 2**20, dtype=torch.float32, device="cuda")  # 2 GiB, far above the L2
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(20):
    y.copy_(x)
torch.cuda.synchronize()
print(f"{2 * x.numel() * 4 * 20 / (time.perf_counter() - t) / 1e9:.0f}")
PY
)
echo "== $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
echo "device-to-device copy: $gbs GB/s (read + written)"

# shellcheck source=gpu_peak.sh
. "$here/gpu_peak.sh"
rust=$(with_gpu_peak env DEPER_BENCH_BANDWIDTH_GBS="$gbs" "$bin" "$model" "$image" "$tokens" "$repeats" 1 cuda)
hf=$(with_gpu_peak "$python" "$here/bench_hf.py" "$model" "$image" "$tokens" "$repeats" 1 cuda 2>/dev/null)
echo "== deper (burn CUDA)"; echo "$rust"
echo "== HF transformers (CUDA, float32, eager)"; echo "$hf"
# shellcheck source=bench_ratios.sh
. "$here/bench_ratios.sh"
print_ratios "$rust" "$hf"
