"""Fixture runs for the report and compare tests, written by hand from the results contract (row_schema).

The standard run: mhsa (baseline), bra and dbra at 8×8 and 16×16 tokens, batch 1, forward and forward_backward.
Numbers are chosen so ratios are easy to check by hand; dbra fails at 16×16 forward and runs out of memory at
16×16 forward_backward; bra's 16×16 forward latency is noisy.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

PARAMS = {"mhsa": 16_640, "bra": 17_000, "dbra": 20_800}
#: MACs at batch 1, forward, per (attention, H)
MACS = {("mhsa", 8): 2_000_000, ("mhsa", 16): 16_000_000, ("bra", 8): 1_500_000, ("bra", 16): 6_000_000,
        ("dbra", 8): 1_000_000, ("dbra", 16): 4_000_000}
#: median latency (ms) per (attention, H, pass)
LATENCY = {("mhsa", 8, "forward"): 2.0, ("mhsa", 16, "forward"): 10.0,
           ("mhsa", 8, "forward_backward"): 6.0, ("mhsa", 16, "forward_backward"): 30.0,
           ("bra", 8, "forward"): 3.0, ("bra", 16, "forward"): 8.0,
           ("bra", 8, "forward_backward"): 9.0, ("bra", 16, "forward_backward"): 24.0,
           ("dbra", 8, "forward"): 4.0, ("dbra", 8, "forward_backward"): 12.0}
#: peak memory (MiB) per (attention, H, pass)
MEMORY_MIB = {("mhsa", 8, "forward"): 1.0, ("mhsa", 16, "forward"): 8.0,
              ("mhsa", 8, "forward_backward"): 4.0, ("mhsa", 16, "forward_backward"): 32.0,
              ("bra", 8, "forward"): 1.5, ("bra", 16, "forward"): 4.0,
              ("bra", 8, "forward_backward"): 5.0, ("bra", 16, "forward_backward"): 16.0,
              ("dbra", 8, "forward"): 0.5, ("dbra", 8, "forward_backward"): 2.0}
FAILED = {("dbra", 16, "forward"): ("failed", "RuntimeError: non-finite output"),
          ("dbra", 16, "forward_backward"): ("oom", "OutOfMemoryError: CUDA out of memory")}
NOISY = {("bra", 16, "forward")}


def cell_id(row: dict) -> str:
    keys = ("suite", "attention", "label", "config", "height", "width", "batch", "dtype", "device", "pass", "mode")
    blob = json.dumps({k: row[k] for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def make_row(attention: str, size: int, pass_: str, run_id: str = "fixture-run", suite: str = "fixture") -> dict:
    """One contract row; metrics absent for failed cells, as the runner writes them."""
    row = {"schema_version": 1, "run_id": run_id, "suite": suite, "attention": attention, "label": attention,
           "config": {"dim": 64, "num_heads": 2}, "height": size, "width": size, "tokens": size * size,
           "batch": 1, "dtype": "float32", "device": "cpu", "pass": pass_, "mode": "eager",
           "status": "ok", "error": None, "started_at": "2026-01-01T00:00:00Z", "duration_s": 0.5}
    row["cell_id"] = cell_id(row)
    key = (attention, size, pass_)
    if key in FAILED:
        row["status"], row["error"] = FAILED[key]
        return row
    macs = MACS[(attention, size)]
    median = LATENCY[key]
    q1, q3 = (median - 2, median + 2) if key in NOISY else (median * 0.96, median * 1.04)
    row.update({
        "params": PARAMS[attention], "params_trainable": PARAMS[attention], "macs_fvcore": macs,
        "flops_torch": 2 * macs, "macs_analytic": macs, "macs_analytic_attention": macs // 2,
        "keys_per_query": float(size * size), "flops_uncounted_ops": "aten::topk" if attention != "mhsa" else "",
        "latency_ms_median": median, "latency_ms_q1": q1, "latency_ms_q3": q3, "latency_ms_iqr": q3 - q1,
        "latency_n": 5, "latency_samples_ms": [q1, q1, median, q3, q3], "latency_noisy": (q3 - q1) / median > 0.1,
        "latency_timer": "perf_counter", "compile_time_s": None, "threads": 2,
        "mem_peak_bytes": int(MEMORY_MIB[key] * 2**20), "mem_method": "profiler",
    })
    return row


def fixture_rows(**kwargs) -> list[dict]:
    return [make_row(a, s, p, **kwargs) for a in ("mhsa", "bra", "dbra") for s in (8, 16)
            for p in ("forward", "forward_backward")]


def manifest(name: str = "fixture", baseline: str | None = "mhsa") -> dict:
    suite = {"name": name, "metrics": ["params", "flops", "latency", "memory"]}
    if baseline is not None:
        suite["baseline"] = baseline
    return {"schema_version": 1, "suite": suite, "suite_path": f"suites/{name}.yaml", "attnbench_version": "0.1.0",
            "git_commit": "0123456789abcdef", "versions": {"python": "3.11.9", "torch": "2.14.1", "fvcore": "0.1.5"},
            "device_name": "cpu", "cpu_model": "Test CPU @ 2.0GHz", "threads": 2, "cuda": None,
            "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:01:00Z",
            "argv": ["attnbench", "run", f"suites/{name}.yaml"]}


def write_run(run_dir: Path, rows: list[dict], manifest_: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "results.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    if manifest_ is not None:
        (run_dir / "manifest.json").write_text(json.dumps(manifest_))
    return run_dir


# --------------------------------------------------------------------------------- synthetic power-law sweeps

#: cost ∝ (tokens / 64)^k: (latency ms at 8×8, latency k, memory bytes at 8×8, memory k, MACs at 8×8, MACs k)
POWER_LAW = {"mhsa": (0.1, 2.0, 1_000_000, 2.0, 1_000_000, 2.0),
             "agent": (0.4, 1.0, 1_000_000, 1.0, 2_000_000, 1.0),
             "bra": (0.8, 1.5, 1_000_000, 1.0, 500_000, 1.5),
             "dbra-topk8": (0.3, 1.2, 3_000_000, 1.0, 4_000_000, 1.2)}
SIZES = (8, 16, 32, 64)


def power_law_rows(laws: dict = POWER_LAW, sizes=SIZES, rounds: int = 31, seed: int = 0, paired: bool = True,
                   shared_sigma: float = 0.3, noise: float = 0.02, oom: tuple = ("dbra-topk8", 64),
                   run_id: str = "synthetic", suite: str = "synthetic") -> list[dict]:
    """Rows of a forward, batch-1 sweep whose costs follow known power laws in the token count.

    Latency samples are ``true · slow_i · noise``: ``slow_i`` (log-normal, ``shared_sigma``) is the machine's load in
    round i and hits the cell and the baseline alike (interleaved rounds), ``noise`` is each call's own jitter. The
    paired columns are what the runner stores: the per-round ratios, their median and bootstrap interval
    (attnbench.core.stats.paired_ratio). ``oom``: (label, size) of a cell that ran out of memory.
    """
    from attnbench.core import stats
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        scale = size * size / 64
        slow = np.exp(rng.normal(0.0, shared_sigma, rounds))
        base_true = laws["mhsa"][0] * scale ** laws["mhsa"][1]
        base = base_true * slow * np.exp(rng.normal(0.0, noise, rounds))
        for label, (lat, k_lat, mem, k_mem, macs, k_macs) in laws.items():
            attention = label.split("-")[0]
            row = make_row("mhsa", 8, "forward", run_id=run_id, suite=suite)
            row.update(attention=attention, label=label, height=size, width=size, tokens=size * size)
            row["cell_id"] = cell_id(row)
            if (label, size) == oom:
                row.update(status="oom", error="OutOfMemoryError: synthetic")
                rows.append({k: v for k, v in row.items() if not k.startswith(("latency", "mem_", "macs", "flops"))})
                continue
            true = lat * scale ** k_lat
            samples = base if label == "mhsa" else true * slow * np.exp(rng.normal(0.0, noise, rounds))
            ci = stats.median_interval(samples)
            q1, q3 = np.percentile(samples, [25, 75])
            row.update(latency_ms_median=float(np.median(samples)), latency_ms_q1=float(q1), latency_ms_q3=float(q3),
                       latency_ms_iqr=float(q3 - q1), latency_n=rounds, latency_samples_ms=samples.tolist(),
                       latency_noisy=bool((q3 - q1) / np.median(samples) > 0.1), latency_ms_ci_low=ci.low,
                       latency_ms_ci_high=ci.high, latency_block=1, latency_stop="samples",
                       mem_peak_bytes=int(mem * scale ** k_mem), macs_fvcore=int(macs * scale ** k_macs),
                       macs_analytic=int(macs * scale ** k_macs), flops_torch=2 * int(macs * scale ** k_macs),
                       keys_per_query=float(size * size if attention == "mhsa" else 9),
                       load_before=0.5, load_after=0.6, busy_before=0, busy_after=0, cpu_count=2,
                       flush_denormal=True)
            if paired and label != "mhsa":
                ratio = stats.paired_ratio(samples, base)
                row.update(paired_baseline="mhsa", paired_ratio=ratio.estimate, paired_ratio_low=ratio.low,
                           paired_ratio_high=ratio.high, paired_rounds=rounds,
                           paired_ratios=(samples / base).tolist())
            rows.append(row)
    return rows


def excluded_cell(label: str, size: int, reason: str = "too slow on CPU") -> dict:
    """An entry of the manifest's ``cells.excluded_cells``."""
    return {"label": label, "attention": label.split("-")[0], "height": size, "width": size, "batch": 1,
            "pass": "forward", "dtype": "float32", "device": "cpu", "mode": "eager", "reason": reason}


def synthetic_manifest(rows: list[dict], excluded: list[dict] = (), **extra) -> dict:
    """A finished run's manifest that planned exactly ``rows`` (plus ``extra`` keys, e.g. ``load``)."""
    out = manifest("synthetic")
    out.update(interrupted=False, cells={"to_run": len(rows), "skipped": 0, "excluded": len(excluded),
                                         "excluded_cells": list(excluded)},
               load={"cores": 2, "max_load": 0.6, "mean_load": 0.55, "max_busy": 1, "under_load": False})
    out.update(extra)
    return out
