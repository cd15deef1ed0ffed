#!/usr/bin/env bash
# Reproduces the checks of docs/metrics.md "Verdicts on a machine we did not tune on" (issue 17):
#   quiet   the resolution sweep on an otherwise idle machine            -> OUT/quiet-N
#   busy    the same with one busy neighbour (python3 -c 'while True: pass') -> OUT/busy-N
#   compare 11 smoke runs of unchanged code, `attnbench compare` on the 10 consecutive pairs, then one smoke run
#           with agent slowed 1.5x (ATTNBENCH_SLOWDOWN=agent=1.5) compared against the last unchanged one
# and prints what scripts/verdict_stability.py says about them (durations, noisy cells, containment).
# Usage: bash scripts/verdict_check.sh OUT_DIR STEP [STEP ...]   e.g.  bash scripts/verdict_check.sh runs/check quiet busy compare
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/verdict_check.sh OUT_DIR quiet|busy|compare ...}
shift
mkdir -p "$out"
PY=${PYTHON:-python3}
# after the busy step: wait (at most 3 minutes) until the 1-minute load average is below 0.8, so the next run is not
# judged under load by the hog's decaying average (on 2026-12-06 a quiet run started right after it was)
settle() { for _ in $(seq 1 36); do awk '{exit !($1 < 0.8)}' /proc/loadavg && return; sleep 5; done; }
next() { local n=1; while [ -e "$out/$1-$n" ]; do n=$((n + 1)); done; echo "$out/$1-$n"; }
sweep() {
    local dir=$1
    echo "[$(date -u +%H:%M:%S)] $(lscpu | sed -n 's/^Model name: *//p'); load $(cut -d' ' -f1-3 /proc/loadavg): $PY -m attnbench run suites/resolution_sweep.yaml --out $dir"
    local t0=$SECONDS
    $PY -m attnbench run suites/resolution_sweep.yaml --out "$dir" --no-progress > "$dir.log" 2>&1 || echo "run exited $?"
    echo "[$(date -u +%H:%M:%S)] took $((SECONDS - t0)) s"
    $PY scripts/verdict_stability.py runs "$dir"
}
for step in "$@"; do
    case "$step" in
        quiet)
            sweep "$(next quiet)";;
        busy)
            python3 -c 'while True: pass' & hog=$!
            sweep "$(next busy)"
            kill $hog
            settle;;
        compare)
            runs=()
            for i in $(seq 1 11); do
                d="$out/smoke-$i"; rm -rf "$d"
                $PY -m attnbench run suites/smoke.yaml --out "$d" --no-progress > "$d.log" 2>&1
                runs+=("$d")
            done
            $PY scripts/verdict_stability.py compare "${runs[@]}"
            rm -rf "$out/smoke-slow"
            ATTNBENCH_SLOWDOWN=agent=1.5 $PY -m attnbench run suites/smoke.yaml --out "$out/smoke-slow" --no-progress \
                > "$out/smoke-slow.log" 2>&1
            echo "== agent slowed 1.5x:"
            $PY -m attnbench compare "$out/smoke-11" "$out/smoke-slow" --changed-only; echo "exit $?";;
        *) echo "unknown step $step (quiet, busy, compare)" >&2; exit 2;;
    esac
done
if ls "$out"/quiet-1 >/dev/null 2>&1; then
    others=$(ls -d "$out"/quiet-* "$out"/busy-* 2>/dev/null | grep -v '\.log$' | grep -v '/quiet-1$' || true)
    [ -n "$others" ] && $PY scripts/verdict_stability.py contain "$out/quiet-1" $others
fi
