#!/usr/bin/env bash
# The one prepared GPU check for attentions/kernels: one try on an H100/H200 (torch 2.11 / triton 3.6 or newer, only
# python3 needed: no pytest, no nvidia-smi, no registry), ending by TOTAL_S = 420 s (7 minutes) whatever happens.
# The rows that matter run first; every stage runs under `timeout` with min(its budget, what is left minus a
# 20 s reserve) and is skipped when under 20 s remain. Order (docs/kernels.md §6 has the budgets):
#   1. 512² batch 64, DBRA and pixel-to-agent: official, triton, Flex (the H100 targets)
#   2. 512² batch 64, BRA: official, triton, Flex
#   3. correctness: the kernel tests on the GPU (pytest if it imports, else tests/kernels/plain_runner.py), autotuning
#      off, Flex's own tests deselected (the tables check Flex's output and gradients at every shape)
#   4. 224² batch 64: official, triton, Flex
#   5. batch 1 (512² and 224²): official, lean torch, triton (short calls: CUDA-graph times too)
#   6. 512² batch 64 with skewed routing: official, triton
# Every table lists every planned cell from the start and marks each "measured" or "not measured: <why>" (not
# reached, skipped, killed by the stage's timeout or by --cell-timeout-s, failed); the last step joins them into
# bench-all-<card>.md with the target verdicts, where a target without its rows is "not measured", never "met".
#
# Writes to the first argument, else $OUT, else reports/kernels/ (files named with the card):
#   env-<card>.txt, kernel-tests-<card>.log, ceilings-<card>.json,
#   bench-<stage>-<card>.{md,csv,log} for the stages 512-b64-dbra-pixel, 512-b64-bra, 224-b64, b1, 512-b64-skewed,
#   bench-all-<card>.{md,csv}
# Run from anywhere:   bash scripts/gpu_check.sh /tmp/out
# CPU rehearsal:       GPU_CHECK_REHEARSAL=1 bash scripts/gpu_check.sh /tmp/out
#   the same script on this CPU under the Triton interpreter, tiny shapes (same labels), a named fake card and its
#   own short budgets (the "sizes" block below is the only difference); tests/kernels/test_gpu_check.py runs it.
# Knobs (environment): TOTAL_S, GPU_CHECK_REHEARSAL.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${1:-${OUT:-reports/kernels}}"

# -- sizes: the only lines the CPU rehearsal changes ------------------------------------------------------------------
if [ "${GPU_CHECK_REHEARSAL:-0}" = 1 ]; then
    export TRITON_INTERPRET=1  # kernels run in the interpreter on CPU tensors
    TOTAL_S="${TOTAL_S:-270}"
    BUDGET=(70 35 40 35 25 20)  # seconds per stage, in the order above
    CELL_S=30
    SIZE_ARGS="--tiny --min-samples 1 --warmup-ms 0 --rep-ms 0"
    TESTS="tests/kernels/test_kernel_wiring.py"
    FAKE_CARD="rehearsal CPU (Triton interpreter)"
else
    unset TRITON_INTERPRET
    TOTAL_S="${TOTAL_S:-420}"
    BUDGET=(150 70 55 50 35 40)
    CELL_S=50
    SIZE_ARGS=""
    TESTS="tests/kernels"
    FAKE_CARD=""
fi
RESERVE_S=20  # kept for the last step: a killed stage's 5 s grace, joining the tables (≤ 12 s), the summary
# ---------------------------------------------------------------------------------------------------------------------

mkdir -p "$OUT"
t0=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - t0) )); }

card="$FAKE_CARD"
if [ -z "$card" ] && command -v nvidia-smi >/dev/null 2>&1; then
    card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
fi
if [ -z "$card" ]; then  # no nvidia-smi on the machine: ask torch
    card="$(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' \
            2>/dev/null)"
fi
if [ -z "$card" ]; then
    echo "gpu_check: no GPU (neither nvidia-smi nor torch.cuda found one); for a CPU rehearsal set GPU_CHECK_REHEARSAL=1"
    exit 1
fi
tag="$(echo "$card" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')"
echo "gpu_check: $card -> $OUT (tag $tag), ${TOTAL_S}s in all"

{
    echo "card: $card"
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
            --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__,
"triton", triton.__version__, "cuda", torch.version.cuda); p = torch.cuda.is_available() and \
torch.cuda.get_device_properties(0); print("device:", p and f"{p.name}, {p.multi_processor_count} SMs, \
{p.total_memory / 2**30:.0f} GiB" or "none (CPU)")'
    python3 -c 'import pytest; print("pytest", pytest.__version__)' 2>/dev/null || echo "pytest: not installed"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo 'unknown (not a git checkout)')"
    echo "sizes: TOTAL_S=$TOTAL_S BUDGET=${BUDGET[*]} CELL_S=$CELL_S SIZE_ARGS=$SIZE_ARGS TESTS=$TESTS"
} > "$OUT/env-$tag.txt" 2>&1
cat "$OUT/env-$tag.txt"

# the benchmark stages: name and arguments (the correctness stage runs between the second and the third)
NAMES=(512-b64-dbra-pixel 512-b64-bra 224-b64 b1 512-b64-skewed)
ARGS=("--res 512 --batch 64 --ops dbra,pixel --routing uniform --providers official,triton,flex"
      "--res 512 --batch 64 --ops bra --routing uniform --providers official,triton,flex"
      "--res 224 --batch 64 --routing uniform --providers official,triton,flex"
      "--res 512,224 --batch 1 --routing uniform --providers official,torch,triton"
      "--res 512 --batch 64 --ops bra,dbra --routing skewed --providers official,triton")
table() { echo "$OUT/bench-$1-$tag"; }

# every table exists from the start, every cell "not measured" until its stage measures it (one python process)
plan=()
for i in "${!NAMES[@]}"; do plan+=("$(table "${NAMES[$i]}").md" "${ARGS[$i]} $SIZE_ARGS"); done
timeout -k 5 60 python3 - "${plan[@]}" <<'EOF'
import shlex, sys
sys.path.insert(0, "scripts")
import bench_kernels
for out, args in zip(sys.argv[1::2], sys.argv[2::2]):
    bench_kernels.main(shlex.split(args) + ["--out", out, "--plan-only"])
EOF

# run_stage NAME WANT LOG CMD...: CMD under `timeout` for min(WANT, time left − reserve) s, or skipped
rc_all=0
summary=()
run_stage() {
    local name=$1 want=$2 log=$3; shift 3
    local budget=$(( $(left) - RESERVE_S ))
    [ "$budget" -gt "$want" ] && budget=$want
    if [ "$budget" -lt 20 ]; then
        echo "== $name: skipped, only $(left)s left of the ${TOTAL_S}s ==" | tee "$log"
        summary+=("$name: skipped (time)"); rc_all=1
        return
    fi
    echo "== $name (timeout ${budget}s, $(left)s left) =="
    BUDGET_S=$budget timeout -k 5 "$budget" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local what="rc=$rc"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && what="killed by its ${budget}s timeout"
    echo "== $name: $what =="
    summary+=("$name: $what"); [ "$rc" -eq 0 ] || rc_all=1
}

bench_stage() {  # bench_stage INDEX: one benchmark stage; it stops starting cells 15 s before its timeout
    local i=$1
    run_stage "table ${NAMES[$i]}" "${BUDGET[$(( i < 2 ? i : i + 1 ))]}" "$(table "${NAMES[$i]}").log" \
        bash -c 'python3 scripts/bench_kernels.py $0 --budget-s $((BUDGET_S - 15)) --cell-timeout-s '"$CELL_S"' \
                 --ceilings "$1" --out "$2"' "${ARGS[$i]} $SIZE_ARGS" "$OUT/ceilings-$tag.json" "$(table "${NAMES[$i]}").md"
}

bench_stage 0
bench_stage 1
if python3 -c 'import pytest' >/dev/null 2>&1; then
    tests=(python3 -m pytest -q -p no:cacheprovider $TESTS -k "not flex")
else
    echo "gpu_check: pytest is not installed; the kernel tests run under tests/kernels/plain_runner.py"
    tests=(python3 tests/kernels/plain_runner.py $TESTS --exclude flex)
fi
run_stage "correctness: kernel tests" "${BUDGET[2]}" "$OUT/kernel-tests-$tag.log" \
    env ATTN_KERNELS_AUTOTUNE=0 "${tests[@]}"
bench_stage 2
bench_stage 3
bench_stage 4

all=(); for name in "${NAMES[@]}"; do all+=("$(table "$name").csv"); done
timeout -k 2 10 python3 scripts/bench_kernels_report.py --merge "${all[@]}" --out "$(table all).md" \
    > /dev/null 2>&1 || echo "gpu_check: joining the tables failed; the stage tables stand on their own"

echo "== summary ($(( $(date +%s) - t0 ))s of ${TOTAL_S}s, $card) =="
for line in "${summary[@]}"; do echo "  $line"; done
echo "  kernel tests: $(grep -E '(passed|failed|skipped|error)' "$OUT/kernel-tests-$tag.log" | tail -n 1)"
if [ -f "$(table all).md" ]; then
    echo "  $(grep -m1 -- '^- cells:' "$(table all).md" | cut -c3-) (bench-all-$tag.md)"
    grep -a -A 40 '^### Targets' "$(table all).md"
fi
exit $rc_all
