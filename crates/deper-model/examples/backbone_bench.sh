#!/usr/bin/env bash
# CPU speed of the DINOv3 image backbones: deper (burn NdArray, `examples/backbone_bench.rs`) against HF
# transformers (`examples/backbone_bench_torch.py`) on the same checkpoints, inputs sizes and thread count.
#
#   bash crates/deper-model/examples/backbone_bench.sh [THREADS] [IMAGES] [SIZE] [PYTHON]
#
# 1. makes architecture-exact random checkpoints with transformers' save_pretrained in a temp folder
#    (DINOv3 ViT-S/16 with 4 registers, and ConvNeXt-Tiny); MODELS=DIR reuses (or fills) DIR instead;
# 2. builds `backbone_bench` in release with `--features ndarray-threads` (burn-ndarray's rayon and threaded
#    matmul, off in this workspace) unless BENCH_BIN=PATH names a prebuilt binary;
# 3. for each model, one deper process and one torch process (so each peak RSS is that model's alone), each
#    timing IMAGES images (default 16) at batch 1 and at batch 8 after one warm-up batch, SIZE x SIZE inputs
#    (default 448), on THREADS threads (default 1: RAYON_NUM_THREADS, MATMUL_NUM_THREADS; torch.set_num_threads,
#    OMP_NUM_THREADS);
# 4. prints the RESULT and PEAK lines, then a RATIO line per model and batch: images/s deper / torch (> 1: deper
#    is faster) and peak RSS deper / torch (< 1: deper uses less; torch's includes `import torch`).
# PYTHON is an interpreter with torch and transformers (default ../venv/bin/python). Not run in CI.
set -euo pipefail
threads=${1:-1}; images=${2:-16}; size=${3:-448}
python=${4:-../venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)

models=${MODELS:-}
if [ -z "$models" ]; then
  models=$(mktemp -d)
  trap 'rm -rf "$models"' EXIT
fi
if [ ! -f "$models/vits16/config.json" ] || [ ! -f "$models/convnext_tiny/config.json" ]; then
  "$python" "$here/backbone_bench_torch.py" make "$models" 2>&1 | grep -v "Writing model"
fi

bench=${BENCH_BIN:-}
if [ -z "$bench" ]; then
  cargo build --release -q -p deper-model --features ndarray-threads --example backbone_bench
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bench="$target/release/examples/backbone_bench"
fi

echo "threads=$threads images=$images size=$size cpu=\"$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)\" load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
out=""
for model in vits16 convnext_tiny; do
  rust=$(RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads "$bench" "$models/$model" "$images" "$size" 1,8 \
    | grep -E '^(RESULT|PEAK)')
  echo "$rust"
  torch=$(OMP_NUM_THREADS=$threads "$python" "$here/backbone_bench_torch.py" time "$models/$model" "$threads" \
    "$images" "$size" 1,8 2>/dev/null | grep -E '^(RESULT|PEAK)')
  echo "$torch"
  out+="$rust"$'\n'"$torch"$'\n'
done

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
for family in dinov3_vit dinov3_convnext; do
  rm_=$(echo "$out" | grep "^PEAK impl=deper family=$family " | field peak_mib)
  tm_=$(echo "$out" | grep "^PEAK impl=torch family=$family " | field peak_mib)
  for batch in 1 8; do
    rs=$(echo "$out" | grep "^RESULT impl=deper family=$family batch=$batch " | field images_per_s)
    ts=$(echo "$out" | grep "^RESULT impl=torch family=$family batch=$batch " | field images_per_s)
    awk -v f="$family" -v b="$batch" -v t="$threads" -v rs="$rs" -v ts="$ts" -v rm="$rm_" -v tm="$tm_" \
      'BEGIN { printf "RATIO family=%s batch=%s threads=%s images_per_s=%.2fx (deper %.3f / torch %.3f) peak_mib=%.2fx (deper %.0f / torch %.0f)\n",
               f, b, t, rs / ts, rs, ts, rm / tm, rm, tm }'
  done
done
