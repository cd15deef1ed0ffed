#!/usr/bin/env bash
# The one prepared GPU check for attentions/kernels (about 8 minutes on one H100):
#   1. the kernel tests on the real GPU (no interpreter: tests/conftest.py sets TRITON_INTERPRET only without CUDA),
#   2. the benchmark (scripts/bench_kernels.py), largest problems first, Flex only at 512² batch 64 (its
#      compiles cost ~10-30 s per problem), stopped after BENCH_BUDGET_S seconds.
# Writes to $OUT if set, else reports/kernels/ (at most 5 files, named with the card):
#   env-<card>.txt, kernel-tests-<card>.log, bench-kernels-<card>.{md,csv,log}
# Needs no install: run from the repository root, e.g.  OUT=/tmp/out bash scripts/gpu_check.sh
# Knobs (environment): TEST_TIMEOUT_S, BENCH_BUDGET_S, BENCH_TIMEOUT_S, PYTEST_ARGS (extra pytest arguments),
# BENCH_ARGS (extra benchmark arguments, e.g. "--smoke" for a dry rehearsal on a CPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT="${OUT:-reports/kernels}"
TEST_TIMEOUT_S="${TEST_TIMEOUT_S:-200}"
BENCH_BUDGET_S="${BENCH_BUDGET_S:-200}"
BENCH_TIMEOUT_S="${BENCH_TIMEOUT_S:-260}"
mkdir -p "$OUT"

card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
[ -n "$card" ] || { echo "gpu_check: nvidia-smi found no GPU"; exit 1; }
tag="$(echo "$card" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')"
echo "gpu_check: $card -> $OUT (tag $tag)"

{
    echo "card: $card"
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
        --format=csv
    python -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__,
"triton", triton.__version__, "cuda", torch.version.cuda)'
    git rev-parse HEAD 2>/dev/null | sed 's/^/commit: /'
} > "$OUT/env-$tag.txt" 2>&1
cat "$OUT/env-$tag.txt"

echo "== kernel tests (timeout ${TEST_TIMEOUT_S}s) =="
timeout "$TEST_TIMEOUT_S" python -m pytest -q -p no:cacheprovider tests/kernels ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/kernel-tests-$tag.log"
tests_rc=${PIPESTATUS[0]}

echo "== benchmark (budget ${BENCH_BUDGET_S}s, timeout ${BENCH_TIMEOUT_S}s) =="
timeout "$BENCH_TIMEOUT_S" python scripts/bench_kernels.py --out "$OUT/bench-kernels-$tag.md" \
    --budget-s "$BENCH_BUDGET_S" --flex-at 512x64 ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-kernels-$tag.log"
bench_rc=${PIPESTATUS[0]}

echo "== summary: tests rc=$tests_rc, benchmark rc=$bench_rc (124 = timeout; tables are written after each problem) =="
tail -n 3 "$OUT/kernel-tests-$tag.log"
[ -f "$OUT/bench-kernels-$tag.md" ] && grep -A 20 '^### Targets' "$OUT/bench-kernels-$tag.md"
exit $(( tests_rc != 0 || bench_rc != 0 ))
