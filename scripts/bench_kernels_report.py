#!/usr/bin/env python3
"""The tables of ``scripts/bench_kernels.py``: Markdown and .csv, the target verdicts, and joining several runs'
tables into one (``--merge``). No torch import: the GPU check joins its stage tables in its last seconds.

    python3 scripts/bench_kernels_report.py --merge a.csv b.csv --out all.md
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

DETERMINISTIC = ("triton",)  # providers that promise bit-identical gradients from run to run (docs/kernels.md)

COLUMNS = ["op", "res", "stage", "batch", "routing", "shape", "provider", "status", "fwd_ms", "fwdbwd_ms", "fwd_n",
           "fwdbwd_n", "fwd_graph_ms", "fwdbwd_graph_ms", "mask_ms", "fwd_peak_mib", "fwdbwd_peak_mib", "fwd_tflops",
           "fwdbwd_tflops", "fwdbwd_mm_pct", "fwd_gbps", "fwdbwd_gbps", "fwdbwd_copy_pct", "max_err", "grad_err",
           "bitwise", "error"]
_NUMERIC = {"res", "stage", "batch", "fwd_n", "fwdbwd_n"}  # read back as int by --merge; other numbers as float


def _fmt(v, digits=3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


_TABLE = [("op", "op"), ("res", "res"), ("stage", "stage"), ("batch", "B"), ("shape", "shape"),
          ("provider", "provider"), ("status", "measured?"), ("fwd_ms", "fwd ms"), ("fwdbwd_ms", "fwd+bwd ms"),
          ("fwdbwd_n", "samples"), ("fwd_graph_ms", "fwd graph ms"), ("fwdbwd_graph_ms", "fwd+bwd graph ms"),
          ("mask_ms", "mask ms"), ("fwd_peak_mib", "fwd peak MiB"), ("fwdbwd_peak_mib", "fwd+bwd peak MiB"),
          ("fwdbwd_tflops", "fwd+bwd TFLOP/s"), ("fwdbwd_mm_pct", "% matmul"), ("fwdbwd_gbps", "fwd+bwd GB/s"),
          ("fwdbwd_copy_pct", "% copy"), ("max_err", "out err"), ("grad_err", "grad rel err"),
          ("bitwise", "bit-identical rerun")]


def _bitwise(r) -> str:
    """The rerun column: a "no" is a failure only for providers that promise determinism."""
    if r.get("bitwise") == "no" and r.get("provider") not in DETERMINISTIC:
        return "no (not promised)"
    return _fmt(r.get("bitwise"))


def markdown(rows, header: list[str]) -> str:
    lines = header + ["", "| " + " | ".join(t for _, t in _TABLE) + " | note |", "|" + "---|" * (len(_TABLE) + 1)]
    for r in rows:
        cells = [_bitwise(r) if c == "bitwise" else _fmt(r.get(c)) for c, _ in _TABLE]
        lines.append("| " + " | ".join(cells) + f" | {r.get('error') or ''} |")
    return "\n".join(lines + ["", *targets(rows)])


_TARGETS = (("speed", "official", "fwdbwd_ms", 3.0), ("memory", "official", "fwdbwd_peak_mib", 5.0),
            ("vs Flex", "flex", "fwdbwd_ms", 1.0))


def targets(rows) -> list[str]:
    """The H100 targets at 512² batch 64, per problem: speed-up and memory ratio vs official, speed vs Flex. Each
    target is met, missed, or not measured (its triton, official or Flex row has no number); the verdict is "met"
    only when every target was measured and met."""
    out = ["### Targets (512², batch 64): Triton fwd+bwd ≥ 3× faster, ≥ 5× less peak memory than official, "
           "not slower than Flex", "", "| op | stage | routing | × faster than official | × less memory | "
           "Flex / Triton time | verdict |", "|---|---|---|---|---|---|---|"]
    by = {(r["op"], r["res"], r["stage"], r["batch"], r.get("routing"), r["provider"]): r for r in rows}
    for (op, res, stage, batch, routing, prov), tri in sorted(by.items(), key=lambda kv: str(kv[0])):
        if prov != "triton" or res != 512 or batch != 64:
            continue
        key = (op, res, stage, batch, routing)
        ratios, missed, unmeasured = [], [], []
        for name, other, column, need in _TARGETS:
            ratio = _ratio(by.get(key + (other,), {}).get(column), tri.get(column))
            ratios.append(ratio)
            if ratio is None:
                unmeasured.append(name)
            elif ratio < need:
                missed.append(name)
        verdict = "; ".join(filter(None, ["missed: " + ", ".join(missed) if missed else "",
                                          "not measured: " + ", ".join(unmeasured) if unmeasured else ""])) or "met"
        out.append(f"| {op} | {stage} | {routing} | " + " | ".join(_fmt(x) for x in ratios) + f" | {verdict} |")
    return out


def _ratio(a, b):
    return a / b if a and b else None


def write(rows, header, out) -> None:
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:  # replaced whole: a process killed mid-write leaves the previous table
        f.write(markdown(rows, header) + "\n")
    os.replace(out + ".tmp", out)
    path = os.path.splitext(out)[0] + ".csv"
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)


def read_rows(path: str) -> list[dict]:
    """Rows of a table's .csv, numbers back as int/float, empty cells dropped."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                if v == "":
                    continue
                if k in _NUMERIC:
                    v = int(v)
                elif k not in ("op", "routing", "shape", "provider", "status", "bitwise", "error"):
                    try:
                        v = float(v)
                    except ValueError:
                        pass  # e.g. "graph failed: ..."
                row[k] = v
            rows.append(row)
    return rows


def merge(paths: list[str], out: str | None) -> int:
    """One Markdown table (and .csv) with the rows of several runs' .csv files, in the given order, and the
    targets over all of them (a target's official, triton and Flex rows may come from different runs)."""
    rows, header = [], ["# Kernel benchmark: all stages", "", "- rows of " + ", ".join(
        os.path.basename(p) for p in paths) + " (each file's header has its environment)"]
    for path in paths:
        if os.path.exists(path):
            rows += read_rows(path)
        else:
            header.append(f"- {os.path.basename(path)}: missing (its stage did not start)")
    measured = sum(r.get("status") == "measured" for r in rows)
    header.append(f"- cells: {measured} measured, {len(rows) - measured} not measured")
    write(rows, header, out)
    print(markdown(rows, header))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--merge", nargs="+", metavar="CSV", required=True, help="the .csv tables to join, in order")
    p.add_argument("--out", help="Markdown path of the joined table (a .csv is written beside it)")
    args = p.parse_args(argv)
    return merge(args.merge, args.out)


if __name__ == "__main__":
    sys.exit(main())
