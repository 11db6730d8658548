#!/usr/bin/env bash
# Every GPU check in ONE run, on a bare GPU machine (no network, no install: the working tree on PYTHONPATH).
#   OUT=/some/dir bash scripts/gpu_check.sh              # a CUDA GPU: < 8 minutes, every timeout below included
#   OUT=/some/dir bash scripts/gpu_check.sh --dry-run    # a CPU: the same steps through Triton's interpreter,
#                                                        # tiny shapes (~1 min; CI runs it: tests/scripts/)
# Steps (each under its own timeout; a failed or timed-out step is reported and the next one still runs):
#   0. wheels carried in .whl/ (scripts/gpu_wheels.sh, made on a machine with network) are installed into a
#      temporary folder put on PYTHONPATH (never into OUT, whose files are what comes back)
#   1. preflight: every module the run needs must import (the missing ones are named) and CUDA must work
#   2. tests/kernels compiled on CUDA: kernel vs reference incl. bf16, the model on the Triton backend,
#      the sm_80/sm_90 ahead-of-time compile with this machine's triton
#   3. kernels.bench: the kernel vs each SDPA backend and eager at B=1,32,256,1024 (time, achieved
#      bandwidth vs the measured copy bandwidth), every backend checked against the reference first
#   4. benchmarks/latency.py: every engine available there at B=1..1024 (eager, CUDA graphs,
#      torch.compile, the Triton backend; fp32, fp16), parity checked before timing
# What it writes to OUT (8 files, what a GPU lease brings back): gpu_check.log (all output), preflight.json,
# kernel/bench.{csv,json}, latency/results.{csv,json}, latency/latency.png, summary.txt; results are written
# as they are measured, and the summary table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-artifacts/gpu_check}
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""  # the interpreter needs the flag before triton is imported
fi

# Timeouts (seconds). They must add up to well under the 8 minutes the run is given (checked here).
T_PREFLIGHT=20 T_TESTS=120 T_KERNEL=70 T_LATENCY=200
TOTAL=$((T_PREFLIGHT + T_TESTS + T_KERNEL + T_LATENCY))
if [ "$TOTAL" -gt 420 ]; then
  echo "gpu_check.sh: the step timeouts add up to ${TOTAL} s, over the 420 s allowed" | tee -a "$LOG" >&2
  exit 2
fi
STATUS=0

# run_step NAME TIMEOUT COMMAND...: run under a timeout, log everything, record status and seconds
run_step() {
  local name=$1 limit=$2
  shift 2
  echo "== ${name} (timeout ${limit} s): $*" | tee -a "$LOG"
  local start=$SECONDS rc
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start)) status=ok note=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status=TIMEOUT note="killed after ${limit} s; partial results are in OUT"
  elif [ "$rc" -ne 0 ]; then
    status=FAILED note="exit code ${rc}"
  fi
  printf '@@step\t%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$note" >>"$LOG"  # read by the summary
  [ "$status" = ok ] || STATUS=1
  return "$rc"
}

# 0. carried wheels
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
  echo "== wheels: installing $(ls "$WHEELS"/*.whl | wc -l) carried wheel(s) into $SITE" | tee -a "$LOG"
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl 2>&1 | tee -a "$LOG"; then
    export PYTHONPATH="$PYTHONPATH:$SITE"
  else
    echo "wheels: pip could not install them (see above)" | tee -a "$LOG"
  fi
fi

if [ "$DRY" = 1 ]; then
  TESTS=(tests/kernels/test_balanced_attention.py -k "matches_reference or no_balance_tokens")
  KERNEL=(--dry-run)
  LATENCY=(--quick --tiny --engines eager-math,triton-attention,cuda-graphs,ort-cpu --batches 1)
else
  TESTS=(tests/kernels)
  # compiling the kernel's configs is CPU work: spread the tests over workers where pytest-xdist exists
  if $PY -c "import xdist" 2>/dev/null; then TESTS+=(-n 4); fi
  KERNEL=(--time-budget 55)
  # 4 batch sizes at the paper's length and two long videos; the internal limits end the run inside T_LATENCY
  LATENCY=(--device cuda --random-weights --batches 1,32,256,1024 --video-lens 75,1200 --long-batches 1,32
           --time-limit 140 --engine-budget 40 --skip compile-max-autotune)
fi

# 1. preflight: nothing else runs if it fails
PREFLIGHT=(scripts/gpu_check.py preflight "$OUT")
[ "$DRY" = 1 ] && PREFLIGHT+=(--dry-run)
[ -n "${GPU_CHECK_REQUIRE:-}" ] && PREFLIGHT+=(--require $GPU_CHECK_REQUIRE)  # more modules that must import
if ! run_step preflight "$T_PREFLIGHT" $PY "${PREFLIGHT[@]}"; then
  $PY scripts/gpu_check.py summary "$OUT"
  exit 2
fi
# 2-4
run_step tests "$T_TESTS" $PY -m pytest -q -p no:cacheprovider "${TESTS[@]}"
run_step kernel "$T_KERNEL" $PY -m kernels.bench --out "$OUT/kernel" "${KERNEL[@]}"
run_step latency "$T_LATENCY" $PY benchmarks/latency.py --out "$OUT/latency" "${LATENCY[@]}"

echo | tee -a "$LOG"
$PY scripts/gpu_check.py summary "$OUT" | tee -a "$LOG"
exit "$STATUS"
