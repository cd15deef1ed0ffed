#!/usr/bin/env bash
# The one prepared GPU check for attentions/kernels, sized to fit one try of at most 8 minutes on an H100/H200
# (torch 2.11 / triton 3.6 or newer). Stages, each with its own time budget; a stage that no longer fits in what is
# left of the 8 minutes is skipped with a printed reason:
#   1. correctness: the kernel tests on the real GPU (tests/conftest.py sets TRITON_INTERPRET only without CUDA;
#      tests/kernels/conftest.py turns TF32 off), autotuning off (ATTN_KERNELS_AUTOTUNE=0: no tuning compiles),
#      Flex's own tests deselected by default (PYTEST_ARGS="-k 'not flex'": each costs a 10-30 s compile, and the
#      tables check Flex's output and gradients at every shape anyway);
#   2. the 224² table (scripts/bench_kernels.py --res 224), Flex at batch 64 only, measured after every other cell;
#   3. the 512² table (--res 512), likewise.
# Every table is written after every problem, so a stage cut short still leaves its rows.
# Writes to $OUT, or to the first argument, else reports/kernels/ (files named with the card):
#   env-<card>.txt, kernel-tests-<card>.log, bench-224-<card>.{md,csv,log}, bench-512-<card>.{md,csv,log}
# Needs no install: run from anywhere, e.g.   OUT=/tmp/out bash scripts/gpu_check.sh
# Knobs (environment): TOTAL_S (480), TEST_S (140), T224_S (150), PYTEST_ARGS, BENCH_ARGS (extra benchmark
# arguments, e.g. "--smoke" for a dry rehearsal on a machine without a GPU but with an nvidia-smi).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT="${1:-${OUT:-reports/kernels}}"
TOTAL_S="${TOTAL_S:-480}"
TEST_S="${TEST_S:-140}"
T224_S="${T224_S:-150}"
mkdir -p "$OUT"
t0=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - t0) )); }

card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
[ -n "$card" ] || { echo "gpu_check: nvidia-smi found no GPU"; exit 1; }
tag="$(echo "$card" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')"
echo "gpu_check: $card -> $OUT (tag $tag), ${TOTAL_S}s in all"

{
    echo "card: $card"
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
        --format=csv
    python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__,
"triton", triton.__version__, "cuda", torch.version.cuda)'
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo 'unknown (not a git checkout)')"
} > "$OUT/env-$tag.txt" 2>&1
cat "$OUT/env-$tag.txt"

# run_stage NAME SECONDS LOG CMD...: run CMD under a timeout of min(SECONDS, time left - reserve), or skip it
rc_all=0
run_stage() {
    local name=$1 want=$2 reserve=$3 log=$4; shift 4
    local budget=$(( $(left) - reserve ))
    [ "$budget" -gt "$want" ] && budget=$want
    if [ "$budget" -lt 30 ]; then
        echo "== $name: skipped, only ${budget}s left of the ${TOTAL_S}s (needs >= 30 s) ==" | tee "$log"
        rc_all=1
        return
    fi
    echo "== $name (timeout ${budget}s) =="
    BUDGET_S=$budget timeout "$budget" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: rc=$rc (124 = timeout; tables are written after every problem) =="
    [ "$rc" -eq 0 ] || rc_all=1
}

run_stage "correctness: kernel tests" "$TEST_S" 300 "$OUT/kernel-tests-$tag.log" \
    env ATTN_KERNELS_AUTOTUNE=0 python3 -m pytest -q -p no:cacheprovider tests/kernels ${PYTEST_ARGS:--k "not flex"}
# --budget-s stops starting new cells 25 s before the stage's timeout (one cell, a compile, may still run)
run_stage "224² table" "$T224_S" 150 "$OUT/bench-224-$tag.log" \
    bash -c 'python3 scripts/bench_kernels.py --res 224 --flex-at 224x64 --budget-s $((BUDGET_S - 25)) \
             --out "$0" ${BENCH_ARGS:-}' "$OUT/bench-224-$tag.md"
run_stage "512² table" 600 5 "$OUT/bench-512-$tag.log" \
    bash -c 'python3 scripts/bench_kernels.py --res 512 --flex-at 512x64 --budget-s $((BUDGET_S - 25)) \
             --out "$0" ${BENCH_ARGS:-}' "$OUT/bench-512-$tag.md"

echo "== summary ($(( $(date +%s) - t0 ))s) =="
tail -n 3 "$OUT/kernel-tests-$tag.log"
[ -f "$OUT/bench-512-$tag.md" ] && grep -A 30 '^### Targets' "$OUT/bench-512-$tag.md"
exit $rc_all
