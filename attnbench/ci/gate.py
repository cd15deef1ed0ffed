"""The machine-independent gate: each benchmark's time in units of a reference workload timed in the same job,
compared with the committed baseline ``benchmarks/baseline.json``; FLOPs and peak memory compared exactly.

Per benchmark: a fresh :class:`~attnbench.ci.cases.Work`, ``WARMUP`` untimed calls, then ``rounds`` paired rounds
(:func:`~attnbench.ci.timing.paired_rounds`): a block of benchmark calls and a block of reference calls of about the
same duration, the order alternating. The round's *normalised time* is (seconds per benchmark call) / (seconds
per reference call): a runner twice as fast makes both halves twice as fast, and a slow phase of the machine hits
both blocks of the round. The baseline stores these per-round values; the comparison is
``stats.detect_change(baseline, current, threshold)`` (two independent runs: ratio of medians past the threshold,
its bootstrap interval excluding 1 **and** Mann-Whitney p < 0.01). The gate runs with one thread by default, so
the CPU memory count (per-thread SDPA buffers) and the timing do not depend on the runner's core count.

Refresh after an intended change (commit the file)::

    attnbench ci --update-baseline            # all benchmarks; --only GLOB refreshes some and keeps the rest
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import statistics
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..core import stats
from ..core.errors import UserError
from . import pbjson, verdicts
from .cases import Case
from .costs import deterministic_columns
from .timing import BLOCK_S, ROUNDS, Reference, block_calls, estimate_call_s, paired_rounds, time_block

__all__ = ["CaseRun", "run_case", "run_gate", "DEFAULT_BASELINE", "REFRESH_COMMAND", "DEFAULT_THRESHOLD",
           "baseline_document", "write_baseline", "load_baseline", "compare_to_baseline", "gate_entries"]

DEFAULT_BASELINE = Path("benchmarks/baseline.json")
REFRESH_COMMAND = "attnbench ci --update-baseline"
#: normalised-time change that fails when clear (cross-run; see docs/ci.md for how it was chosen)
DEFAULT_THRESHOLD = 0.25
SCHEMA = 1


@dataclasses.dataclass
class CaseRun:
    """One benchmark's measurements: per-round seconds per call of the benchmark and of the reference."""

    case: Case
    times_s: list[float] = dataclasses.field(default_factory=list)
    ref_s: list[float] = dataclasses.field(default_factory=list)
    calls: int = 0
    ref_calls: int = 0
    columns: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: Optional[str] = None

    @property
    def normalized(self) -> list[float]:
        return [t / r for t, r in zip(self.times_s, self.ref_s)]


def run_case(case: Case, device: str, reference: Reference, rounds: int = ROUNDS, block_s: float = BLOCK_S) -> CaseRun:
    """Time ``case`` against ``reference`` in paired rounds, then count its FLOPs and peak memory.

    An exception is recorded in :attr:`CaseRun.error` (type and first line), never raised: one broken benchmark
    does not lose the others.
    """
    run = CaseRun(case)
    try:
        work = case.build(device)
        call_s = estimate_call_s(work)
        run.calls = block_calls(call_s, block_s)
        run.ref_calls = block_calls(estimate_call_s(reference), call_s * run.calls)
        run.times_s, run.ref_s = paired_rounds(lambda: time_block(work, run.calls),
                                               lambda: time_block(reference, run.ref_calls), rounds)
        run.columns = deterministic_columns(work)
    except Exception as e:  # noqa: BLE001 — recorded per benchmark
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        run.error = f"{type(e).__name__}: {msg}"
        traceback.print_exc()
    return run


def run_gate(cases: Sequence[Case], device: str, rounds: int = ROUNDS, block_s: float = BLOCK_S,
             threads: Optional[int] = 1, progress=None) -> list[CaseRun]:
    """:func:`run_case` for every case with ``threads`` torch threads (restored afterwards)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        reference = Reference(device)
        out = []
        for case in cases:
            out.append(run_case(case, device, reference, rounds, block_s))
            if progress:
                progress(out[-1])
        return out
    finally:
        torch.set_num_threads(previous)


def _environment(device: str) -> dict[str, Any]:
    return {"device": device, "torch": ".".join(torch.__version__.split("+")[0].split(".")[:2]),
            "threads": torch.get_num_threads()}


def baseline_document(runs: Sequence[CaseRun], device: str, threads: int,
                      previous: Optional[dict] = None) -> dict[str, Any]:
    """The baseline file's content: ``previous`` benchmarks kept, the successful ``runs`` written over them."""
    env = _environment(device)
    env["threads"] = threads
    benches = dict(previous["benchmarks"]) if previous else {}
    for run in runs:
        if run.error is None:
            benches[run.case.name] = {"normalized": [round(v, 6) for v in run.normalized],
                                      "flops": run.columns["flops"], "mem_peak_bytes": run.columns["mem_peak_bytes"],
                                      "mem_method": run.columns["mem_method"]}
    return {"schema": SCHEMA, "refresh": REFRESH_COMMAND, "reference": Reference.description,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": env, "machine": pbjson.cpu_name(),
            "benchmarks": dict(sorted(benches.items()))}


def write_baseline(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load_baseline(path: Path) -> dict[str, Any]:
    """The baseline file, checked; a missing or malformed file is a :class:`UserError` naming it."""
    if not path.is_file():
        raise UserError(f"baseline {path} not found: create it with `{REFRESH_COMMAND}` (or pass --baseline PATH)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"baseline {path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("benchmarks"), dict):
        raise UserError(f"baseline {path}: expected a mapping with schema {SCHEMA} and 'benchmarks'; "
                        f"refresh it with `{REFRESH_COMMAND}`")
    for name, b in doc["benchmarks"].items():
        missing = {"normalized", "flops", "mem_peak_bytes"} - set(b)
        if missing or len(b.get("normalized", [])) < 2:
            raise UserError(f"baseline {path}: benchmarks.{name} needs 'normalized' (>= 2 values), 'flops' and "
                            f"'mem_peak_bytes'")
    return doc


def _fmt_norm(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.3g} ref"


def compare_to_baseline(runs: Sequence[CaseRun], baseline: dict[str, Any], threshold: float, device: str,
                        threads: int) -> list[verdicts.Row]:
    """Rows of every run against the baseline: time (detect_change), FLOPs and memory (exact)."""
    env = _environment(device)
    env["threads"] = threads
    mem_ok = baseline.get("environment") == env
    rows = []
    for run in runs:
        name = run.case.name
        if run.error is not None:
            rows.append(verdicts.missing_row(name, "", run.error, fails=True))
            continue
        base = baseline["benchmarks"].get(name)
        if base is None:
            rows.append(verdicts.missing_row(name, "baseline"))
            continue
        change = stats.detect_change(base["normalized"], run.normalized, threshold)
        rows.append(verdicts.time_row(name, change, _fmt_norm(base["normalized"]), _fmt_norm(run.normalized)))
        rows += verdicts.count_rows(name, base, run.columns, exact=True, memory_comparable=mem_ok)
    return rows


def gate_entries(runs: Sequence[CaseRun]) -> list[dict[str, Any]]:
    """pytest-benchmark ``benchmarks[]`` entries of the successful runs (normalised values in extra_info)."""
    out = []
    for run in runs:
        if run.error is None:
            extra = {**run.columns, "reference": Reference.description, "reference_s": run.ref_s,
                     "reference_calls": run.ref_calls, "normalized": run.normalized,
                     "normalized_median": statistics.median(run.normalized)}
            out.append(pbjson.benchmark_entry(run.case.name, run.case.group, run.case.params, run.times_s,
                                              run.calls, extra))
    return out
