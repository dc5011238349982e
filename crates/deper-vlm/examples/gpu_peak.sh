# Sourced by bench_cuda.sh and deper-train's stage1_bench_cuda.sh: the GPU memory a command takes, as
# nvidia-smi sees it (used memory sampled every 50 ms, CUDA context included, minus what was in use
# before the command started).
#   out=$(with_gpu_peak CMD ARGS…)   # CMD's stdout, then "peak GPU memory: N MiB (…)"
#   gpu_peak_mib "$out"              # N
gpu_used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
with_gpu_peak() {
  local before log sampler
  before=$(gpu_used_mib); log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$log" &
  sampler=$!
  "$@"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  echo "peak GPU memory: $(( $(sort -n "$log" | tail -1) - before )) MiB (nvidia-smi, context included)"
  rm -f "$log"
}
gpu_peak_mib() { echo "$1" | sed -n 's/^peak GPU memory: \([0-9-]*\) MiB.*/\1/p' | tail -1; }
