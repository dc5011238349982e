# Sourced by bench_vs_hf.sh and bench_cuda.sh: prints prefill and decode tokens/s of deper and HF and
# the ratios deper / HF (> 1: deper is faster) from the outputs of bench.rs and bench_hf.py.
#   print_ratios "$deper_output" "$hf_output"
rate() { echo "$1" | sed -n "s/^$2: \([0-9.]*\) tokens\/s.*/\1/p"; }
print_ratios() {
  local phase
  for phase in prefill decode; do
    awk -v p="$phase" -v a="$(rate "$1" "$phase")" -v b="$(rate "$2" "$phase")" \
      'BEGIN { printf "%s: deper %.1f tokens/s, HF %.1f tokens/s, ratio %.2fx\n", p, a, b, a / b }'
  done
}
