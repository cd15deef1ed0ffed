"""Do the suite's verdicts hold from one run to the next? Reads run directories only (no torch).

    python3 scripts/verdict_stability.py runs RUN [RUN ...]
        per run: cells, duration, load judgement, noisy cells, cells stopped at their budget before the target;
    python3 scripts/verdict_stability.py contain REF_RUN OTHER_RUN [...]
        for each paired cell: does OTHER's ratio to the baseline fall inside REF's 95% interval? (the issue-17 check:
        a quiet run's intervals must hold a loaded run's ratios in >= 95% of cells)
    python3 scripts/verdict_stability.py compare RUN_A RUN_B [RUN_C ...]
        `attnbench compare` on each consecutive pair, counting exit codes (0: no regression).

The numbers this prints are the ones docs/metrics.md ("Verdicts on a machine we did not tune on") quotes.
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnbench.core import machine_load, uncertainty  # noqa: E402
from attnbench.core.results import read_manifest, read_rows  # noqa: E402
from attnbench.report.compare import change_interval  # noqa: E402


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok" and r.get("latency_ms_median") is not None]


def describe(run: str) -> None:
    rows, manifest = read_rows(Path(run)), read_manifest(Path(run))
    timed = _ok(rows)
    start, end = manifest.get("started_at"), manifest.get("ended_at")
    took = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() if start and end else None
    load = machine_load.summarize(rows)
    noisy = [r for r in timed if uncertainty.is_noisy(r)]
    early = [r for r in timed if not uncertainty.reached_target(r)]
    print(f"{run}: {len(rows)} cells, {len(timed)} timed, "
          f"{'%dm%02ds' % divmod(round(took), 60) if took else '?'}; cpu {manifest.get('cpu_model')}; "
          f"under load: {load['under_load']} {load['why']}; mean load {load['mean_load']}, "
          f"preempted {load['preempted_samples']}/{load['latency_samples']}")
    print(f"  noisy: {len(noisy)} of {len(timed)} ({100 * len(noisy) / max(1, len(timed)):.0f}%); "
          f"stopped at the budget before the target: {len(early)}")
    for r in noisy:
        print(f"    ~ {r['label']} {r['height']}x{r['width']} b{r['batch']} {r['pass']}: {uncertainty.noisy_reason(r)}")


def _within_pooled(a: dict, b: dict) -> bool:
    """Does the interval of b's ratio over a's, combined from the two runs' intervals as `compare` combines them,
    hold 1 (no change)?"""
    change = change_interval(uncertainty.ratio_interval(a), uncertainty.ratio_interval(b))
    return change.low <= 1.0 <= change.high


def contain(ref: str, others: list[str]) -> None:
    base = {r["cell_id"]: r for r in _ok(read_rows(Path(ref)))}
    for other in others:
        inside, pooled, total, diffs, outside = 0, 0, 0, [], []
        for r in _ok(read_rows(Path(other))):
            b = base.get(r["cell_id"])
            if b is None or b.get("paired_ratio") is None or r.get("paired_ratio") is None:
                continue
            total += 1
            ok = b["paired_ratio_low"] <= r["paired_ratio"] <= b["paired_ratio_high"]
            inside += ok
            diffs.append(abs(r["paired_ratio"] / b["paired_ratio"] - 1))
            pooled += _within_pooled(b, r)
            if not ok:
                outside.append(f"{r['label']} {r['height']} b{r['batch']} {r['pass']}: {r['paired_ratio']:.3f} vs "
                               f"{b['paired_ratio']:.3f} [{b['paired_ratio_low']:.3f}-{b['paired_ratio_high']:.3f}]")
        print(f"{other} vs {ref}: ratio inside the reference interval in {inside} of {total} paired cells "
              f"({100 * inside / max(1, total):.0f}%); |ratio difference| median "
              f"{100 * statistics.median(diffs) if diffs else float('nan'):.1f}%, max "
              f"{100 * max(diffs) if diffs else float('nan'):.1f}%")
        print(f"  difference inside the two runs' combined 95% interval (what compare judges by) in {pooled} of "
              f"{total} ({100 * pooled / max(1, total):.0f}%). Even with exact 95% intervals of equal width the "
              f"other run's ratio falls inside this run's interval only ~83% of the time (|Z| < 1.96/sqrt 2); "
              f"the combined interval is the one that should hold ~95%.")
        for line in outside:
            print("    outside:", line)


def compare(runs: list[str]) -> None:
    codes = []
    for a, b in zip(runs, runs[1:]):
        proc = subprocess.run([sys.executable, "-m", "attnbench", "compare", a, b, "--changed-only"],
                              capture_output=True, text=True)
        codes.append(proc.returncode)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()
        print(f"{a} -> {b}: exit {proc.returncode}: {last}")
        if proc.returncode:
            print("\n".join("    " + line for line in proc.stdout.splitlines() if " slower" in line))
    print(f"{codes.count(0)} of {len(codes)} comparisons exit 0")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("runs", "contain", "compare"):
        print(__doc__)
        return 2
    if argv[0] == "runs":
        for run in argv[1:]:
            describe(run)
    elif argv[0] == "contain":
        contain(argv[1], argv[2:])
    else:
        compare(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
