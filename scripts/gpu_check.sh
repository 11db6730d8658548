#!/usr/bin/env bash
# Every GPU check and benchmark in ONE run (< 8 minutes on a bare H100/H200 with PyTorch + Triton, no network):
#   1. the kernel and model tests compiled on CUDA (bf16 included), and the Triton-backend model parity;
#   2. the fused-kernel benchmark vs every SDPA backend and eager math (kernels/bench.py);
#   3. the end-to-end latency benchmark of every engine available there (benchmarks/latency.py).
# Details go to $OUT (default artifacts/gpu_check); a short table is printed last.
# Usage (repo root):  OUT=/some/dir bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-artifacts/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"
} | tee "$OUT/machine.txt"

echo "== 1/3 GPU tests (kernel compiled, bf16, model with the Triton backend) =="
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/kernels tests/model -x 2>&1 | tee "$OUT/tests.txt" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2/3 kernel benchmark =="
timeout 200 $PY -m kernels.bench --out "$OUT/kernel" 2>&1 | tee "$OUT/kernel_bench.txt" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 3/3 end-to-end latency, every available engine =="
timeout 240 $PY benchmarks/latency.py --device cuda --random-weights --out "$OUT/latency" 2>&1 \
  | tee "$OUT/latency.txt" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "== summary ($(head -n 2 "$OUT/machine.txt" | tail -n 1)) =="
grep -E "passed|failed" "$OUT/tests.txt" | tail -n 1
grep -E "^(dtype|fp16|bf16|fp32) " "$OUT/kernel_bench.txt" | head -n 40
grep -E "^\|" "$OUT/latency.txt" | head -n 40
exit $status
