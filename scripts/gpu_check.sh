#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU (nothing here runs on a CPU-only machine):
#
#   1. the tests that need CUDA (they skip without it): CUDA graphs against eager decoding, GPU against CPU;
#   2. `evalkit bench --preset 7b --device cuda --dtype bfloat16` with a few layers of the real Codestral
#      Mamba 7B and Mistral 7B shapes (GPU_CHECK_LAYERS, default 4; 0 keeps all 64 and 32 layers);
#   3. benchmarks/bench_decode.py on cuda in bf16, with and without CUDA graphs, next to transformers.
#
# Everything lands in results/bench/7b-cuda-<device name>/: bench.json/.csv and plots, decode.txt/.json,
# tests.txt, and environment.txt (device name, driver, torch and CUDA versions).
#
#   scripts/gpu_check.sh            # about 5 minutes on one H100/H200-class GPU
#   GPU_CHECK_LAYERS=0 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, whatever is installed

say() { printf '\n== %s\n' "$*"; }

python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing to check")'
device=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))')
slug=$(printf '%s' "$device" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-*//; s/-*$//')
out="results/bench/7b-cuda-${slug}"
mkdir -p "$out"
layers="${GPU_CHECK_LAYERS:-4}"
status=0

say "environment -> $out/environment.txt"
{
  echo "device: $device"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability(0))'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
  date -u +"%Y-%m-%dT%H:%M:%SZ"
} | tee "$out/environment.txt"

say "CUDA tests -> $out/tests.txt"
python3 -m pytest -q -rs -k cuda tests/test_generate.py tests/test_mistral.py tests/test_mamba2.py 2>&1 \
  | tee "$out/tests.txt" || status=1

say "evalkit bench, 7b shapes (GPU_CHECK_LAYERS=$layers) -> $out"
config=$(mktemp --suffix=.json)
trap 'rm -f "$config"' EXIT
if [ "$layers" = 0 ]; then
  echo '{"preset": "7b", "name": "7b"}' >"$config"
else
  printf '{"preset": "7b", "name": "7b, %s layers", "mamba2": {"n_layers": %s}, "transformer": {"n_layers": %s}}\n' \
    "$layers" "$layers" "$layers" >"$config"
fi
evalkit bench --preset 7b --config "$config" --device cuda --dtype bfloat16 --no-progress --output-path "$out" \
  || status=1

say "decode benchmark -> $out/decode.txt"
python3 benchmarks/bench_decode.py --device cuda --dtype bfloat16 --cuda-graphs --quick --json "$out/decode.json" \
  2>&1 | tee "$out/decode.txt" || status=1

say "done (status $status): $out"
exit "$status"
