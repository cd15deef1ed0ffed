"""Summary tables: one section per metric, one table per context, value and ratio to the baseline in each cell.

A table's rows are the attentions (the baseline first), its columns the token grids H×W in token order. A
per-cell metric (latency, memory, achieved GFLOP/s, accuracy) gets one table per (device, dtype, mode, pass,
batch); a count (params, MACs) one table, since counts are taken at batch 1, forward. A cell that did not produce
the metric shows its status (``failed``, ``oom``, ``skipped``) instead of disappearing; ``—`` means the metric was
not measured there. Tables are plain data (:class:`Table`) rendered by ``markdown.py`` and the HTML template.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

import pandas as pd

from .acc_uncertainty import fmt_acc_diff
from .derive import DELTA_PREFIX
from .verdict import accuracy_winner, exact_winners, latency_winner

__all__ = ["METRICS", "MetricSpec", "Section", "Table", "build_sections", "fmt_count", "fmt_num",
           "fmt_ratio", "missing_table"]

#: the mark of a noisy latency (attnbench.core.uncertainty.is_noisy)
NOISY_MARK = "~"
_CONTEXT_AXES = ("device", "dtype", "mode", "pass", "batch")
_PASS_ORDER = {"forward": 0, "forward_backward": 1}


@dataclasses.dataclass
class Table:
    """A rendered table: strings only."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    numeric: bool = True  # right-align every column but the first
    bold: list[list[bool]] | None = None  # parallel to rows: the best value of its column

    def is_bold(self, i: int, j: int) -> bool:
        return bool(self.bold and self.bold[i][j])


@dataclasses.dataclass
class Section:
    """One metric: a title, a sentence saying how to read it, and its tables."""

    key: str
    title: str
    description: str
    tables: list[Table]


def fmt_num(x: float) -> str:
    """Three significant digits without exponent: 1234.5 -> '1234', 12.34 -> '12.3', 0.01234 -> '0.0123'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:#.3g}"


def fmt_count(x: float) -> str:
    """A count with an SI suffix and three significant digits: 16576 -> '16.6 k', 2.654e9 -> '2.65 G'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{fmt_num(x / scale)} {suffix}"
    return fmt_num(float(x))


def _fmt_factor(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def fmt_ratio(ratio: float, low: float = math.nan, high: float = math.nan) -> str:
    """A ratio to the baseline with its 95% interval: ``0.34× [0.33–0.35]``; an interval that holds 1 is a tie,
    ``≈1× tie [0.92–1.05]``, never a win; without an interval, ``0.34×``."""
    if ratio is None or pd.isna(ratio):
        return ""
    if pd.isna(low) or pd.isna(high) or low == high == ratio:
        return f"{_fmt_factor(ratio)}×"
    interval = f"[{_fmt_factor(low)}–{_fmt_factor(high)}]"
    return f"≈1× tie {interval}" if low <= 1 <= high else f"{_fmt_factor(ratio)}× {interval}"


def _fmt_latency(row: pd.Series) -> str:
    text = f"{fmt_num(row['latency_ms_median'])} [{fmt_num(row['latency_ms_q1'])}–{fmt_num(row['latency_ms_q3'])}]"
    return NOISY_MARK + text if bool(row["latency_noisy"]) else text


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """How one metric is tabled.

    Attributes:
        key: section id (HTML anchor).
        title: section title, with the unit.
        column: the value column in the frame.
        description: one sentence on what the number is.
        fmt: row -> value text (the row is a pandas Series of the whole frame row).
        per_cell: True for a metric of the timed pass; False for a count at batch 1, forward.
    """

    key: str
    title: str
    column: str
    description: str
    fmt: Callable[[pd.Series], str]
    per_cell: bool = True
    better: str = "min"  # which end of a column is bold: "min" or "max"

    @property
    def compare(self) -> str:
        return "delta" if self.column.startswith(DELTA_PREFIX) else "ratio"


def _col(column: str, fmt: Callable[[float], str], scale: float = 1.0) -> Callable[[pd.Series], str]:
    return lambda row: fmt(float(row[column]) * scale)


METRICS = (
    MetricSpec("params", "Parameters", "params", "Parameter count of the attention module.",
               _col("params", fmt_count), per_cell=False),
    MetricSpec("macs_fvcore", "MACs (fvcore)", "macs_fvcore",
               "Multiply-adds counted by fvcore FlopCountAnalysis, forward, batch 1 (the papers' convention).",
               _col("macs_fvcore", fmt_count), per_cell=False),
    MetricSpec("macs_torch", "MACs (torch FlopCounterMode)", "macs_torch",
               "torch.utils.flop_counter FLOPs / 2, forward, batch 1, so it reads next to the other two counts.",
               _col("macs_torch", fmt_count), per_cell=False),
    MetricSpec("macs_analytic", "MACs (analytic)", "macs_analytic",
               "The module's own cost model (cost(H, W).total), forward, batch 1.",
               _col("macs_analytic", fmt_count), per_cell=False),
    MetricSpec("latency", "Latency (ms, median [q1–q3])", "latency_ms_median",
               "Wall time of the whole batch for the cell's pass. The bracket after `×` is the ratio's 95% interval: "
               "the paired (interleaved) ratio where the run measured one, else the ratio of medians with a "
               "bootstrap interval over the raw samples; bold: the fastest and every attention whose interval "
               "overlaps it. Absolute times are this run's: they follow the machine's speed while the cell ran, "
               "and on a shared machine a whole group of cells can run tens of percent faster or slower in another "
               "run (docs/metrics.md); the ratios, timed side by side, cancel most of that.", _fmt_latency),
    MetricSpec("memory", "Peak memory (MiB)", "mem_peak_bytes",
               "Peak bytes held during the pass (forward: inference under no_grad; forward_backward: training step).",
               _col("mem_peak_bytes", fmt_num, 1 / 2**20)),
    MetricSpec("achieved", "Achieved GFLOP/s", "achieved_gflops_s",
               "2 · macs_fvcore · batch · k / latency, k = 1 forward, 3 forward_backward.",
               _col("achieved_gflops_s", fmt_num), better="max"),
)


def build_sections(frame: pd.DataFrame) -> list[Section]:
    """One section per metric with at least one measured value; a table without one (every cell ``—``) is left
    out. Accuracy has its own section, by model rather than by H×W (``report/accuracy.py``)."""
    sections = []
    for spec in METRICS:
        if spec.column not in frame.columns or frame[spec.column].isna().all():
            continue
        tables = _count_tables(frame, spec) if not spec.per_cell else _cell_tables(frame, spec)
        tables = [t for t in tables if any(cell not in ("", "—") for row in t.rows for cell in row[1:])]
        if tables:
            sections.append(Section(spec.key, spec.title, spec.description, tables))
    return sections


def _count_tables(frame: pd.DataFrame, spec: MetricSpec) -> list[Table]:
    """Counts do not depend on batch or pass: one row per (series, H×W), the first measured value."""
    measured = frame[frame[spec.column].notna()]
    rest = frame[~frame.set_index(["series", "height", "width"]).index.isin(
        measured.set_index(["series", "height", "width"]).index)]
    rows = pd.concat([measured, rest]).drop_duplicates(["series", "height", "width"], keep="first")
    return [_pivot(rows, spec, "batch 1, forward (counts do not depend on the batch or the pass)")]


def _cell_tables(frame: pd.DataFrame, spec: MetricSpec) -> list[Table]:
    relevant = frame[frame[spec.column].notna() | (frame["status"] != "ok")]
    tables = []
    for context, rows in sorted(relevant.groupby(list(_CONTEXT_AXES), dropna=False), key=_context_order):
        device, dtype, mode, pass_, batch = context
        caption = f"{pass_} · batch {batch} · {dtype} · {device} · {mode}"
        tables.append(_pivot(rows.drop_duplicates(["series", "height", "width"], keep="last"), spec, caption))
    return tables


def _context_order(item: tuple) -> tuple:
    (device, dtype, mode, pass_, batch), _ = item
    return (str(device), str(dtype), str(mode), _PASS_ORDER.get(pass_, 9), str(pass_),
            -1 if pd.isna(batch) else int(batch))


def _pivot(rows: pd.DataFrame, spec: MetricSpec, caption: str) -> Table:
    grids = rows[["height", "width", "tokens"]].drop_duplicates().sort_values(["tokens", "height", "width"])
    grid_keys = [(h, w) for h, w in zip(grids["height"], grids["width"])]
    series = _series_order(rows)
    cells = {(r["series"], r["height"], r["width"]): r for _, r in rows.iterrows()}
    body = []
    for name in series:
        body.append([name] + [_cell_text(cells.get((name, h, w)), spec) for h, w in grid_keys])
    best = [_best(rows[(rows["height"] == h) & (rows["width"] == w)], spec) for h, w in grid_keys]
    bold = [[False] + [name in b for b in best] for name in series]
    return Table(caption=caption, header=["attention"] + [f"{h}×{w}" for h, w in grid_keys], rows=body, bold=bold)


def _best(rows: pd.DataFrame, spec: MetricSpec) -> tuple[str, ...]:
    """The series shown bold in one column: latency ties by interval (``verdict.latency_winner``), the rest exact."""
    rows = rows[rows[spec.column].notna()]
    if spec.column == "latency_ms_median":
        winner = latency_winner(rows)
        return winner.names if winner else ()
    if spec.compare == "delta":  # accuracy: no bold when every attention is indistinguishable from the best
        winner = accuracy_winner(rows, spec.column)
        return winner.names if winner and len(winner.names) < rows["series"].nunique() else ()
    return exact_winners(rows["series"].tolist(), rows[spec.column].astype("float64"), spec.better == "max")


def _series_order(rows: pd.DataFrame) -> list[str]:
    """The baseline(s) first, then in order of first appearance."""
    order = list(dict.fromkeys(rows["series"]))
    baselines = list(dict.fromkeys(rows.loc[rows["is_baseline"], "series"]))
    return baselines + [s for s in order if s not in baselines]


def _cell_text(row: pd.Series | None, spec: MetricSpec) -> str:
    if row is None:
        return ""
    value = row[spec.column]
    if pd.isna(value):
        return "—" if row["status"] == "ok" else str(row["status"])
    text = spec.fmt(row)
    if spec.compare == "delta":
        c = spec.column
        delta = fmt_acc_diff(row.get(f"{c}_delta"), row.get(f"{c}_delta_low"), row.get(f"{c}_delta_high"),
                             row.get(f"{c}_delta_method"), row.get(f"{c}_delta_p"), row.get(f"{c}_tie"))
        return f"{text} ({delta})" if delta and not row.get("is_baseline") else text
    if spec.column == "latency_ms_median":
        ratio = fmt_ratio(row.get("latency_ratio"), row.get("latency_ratio_low"), row.get("latency_ratio_high"))
    else:
        ratio = fmt_ratio(row.get(f"{spec.column}_ratio"))
    return f"{text} ({ratio})" if ratio else text


def missing_table(missing: pd.DataFrame) -> Table | None:
    """Every cell without a value — failed, out of memory, skipped, excluded by the suite — with its reason."""
    if missing.empty:
        return None
    header = ["attention", "H×W", "batch", "pass", "dtype", "device", "mode", "status", "reason"]
    rows = [[_text(r["series"]), f"{r['height']}×{r['width']}", _text(r["batch"]), _text(r["pass"]),
             _text(r["dtype"]), _text(r["device"]), _text(r["mode"]), _text(r["status"]), _text(r["reason"])]
            for _, r in missing.iterrows()]
    return Table(caption="cells without a value", header=header, rows=rows, numeric=False)


def attentions_table(frame: pd.DataFrame) -> Table:
    """What each row name was built from: registry name (or dotted path) and config, baseline first."""
    seen, rows = set(), []
    for _, r in frame.sort_values("is_baseline", ascending=False, kind="stable").iterrows():
        config = json.dumps(r["config"], sort_keys=True) if isinstance(r["config"], dict) else _text(r["config"])
        if (r["series"], r["attention"], config) not in seen:
            seen.add((r["series"], r["attention"], config))
            rows.append([str(r["series"]), str(r["attention"]), config])
    return Table(caption="attentions", header=["label", "attention", "config"], rows=rows, numeric=False)


def uncounted_ops(frame: pd.DataFrame) -> dict[str, str]:
    """series -> the ops no FLOP counter counted (only series with some)."""
    ops = frame.dropna(subset=["flops_uncounted_ops"])
    ops = ops[ops["flops_uncounted_ops"].astype(str) != ""]
    return {name: ", ".join(sorted(set(",".join(group.astype(str)).split(",")) - {""}))
            for name, group in ops.groupby("series", sort=False)["flops_uncounted_ops"]}


_ENV_FIELDS = (
    ("suite", lambda m: _join(((m.get("suite") or {}).get("name"), m.get("suite_path")), " — ")),
    ("device", lambda m: m.get("device_name")),
    ("CPU", lambda m: m.get("cpu_model")),
    ("CUDA", lambda m: _join(((m.get("cuda") or {}).get("version"),
                              _prefixed("driver ", (m.get("cuda") or {}).get("driver"))), ", ") or "none"),
    ("torch", lambda m: (m.get("versions") or {}).get("torch")),
    ("versions", lambda m: ", ".join(f"{k} {v}" for k, v in sorted((m.get("versions") or {}).items())
                                     if k != "torch")),
    ("started", lambda m: m.get("started_at")),
    ("ended", lambda m: m.get("ended_at") or "(not finished)"),
    ("commit", lambda m: m.get("git_commit")),
    ("attnbench", lambda m: m.get("attnbench_version")),
    ("command", lambda m: " ".join(m.get("argv") or [])),
)


def _join(parts, sep: str) -> str:
    return sep.join(str(p) for p in parts if p)


def _prefixed(prefix: str, value) -> str | None:
    return f"{prefix}{value}" if value else None


def environment_table(manifests: dict[str, dict], cells: dict[str, int],
                      frame: pd.DataFrame | None = None) -> Table:
    """One column per run: where and with what each run was measured (from its manifest); the threads row from
    the rows of ``frame`` (:func:`threads_used`)."""
    run_ids = list(manifests)
    rows = [["cells", *[str(cells.get(r, 0)) for r in run_ids]]]
    for name, get in _ENV_FIELDS:
        values = ["(no manifest)" if not manifests[r] else _text(get(manifests[r])) for r in run_ids]
        rows.append([name, *values])
        if name == "versions":
            rows.append(["threads", *[threads_used(frame, r, manifests[r]) for r in run_ids]])
    return Table(caption="environment", header=["run", *run_ids], rows=rows, numeric=False)


def threads_used(frame: pd.DataFrame | None, run_id: str, manifest: dict) -> str:
    """The torch threads a run's measurements used, from its rows: ``latency 1; accuracy 2 (auto-probe)``.

    The latency metric records ``threads`` per row, the accuracy metric ``acc_threads`` and ``acc_threads_how``.
    A run whose rows record neither shows the manifest's process default, marked as such.
    """
    rows = frame[frame["run_id"] == run_id] if frame is not None and "run_id" in frame else None
    parts = []
    if rows is not None and not rows.empty:
        if "threads" in rows:
            parts.append(("latency", _distinct_ints(rows["threads"]), []))
        if "acc_threads" in rows:
            how = sorted({str(h) for h in rows.get("acc_threads_how", pd.Series(dtype=object)).dropna()})
            parts.append(("accuracy", _distinct_ints(rows["acc_threads"]), how))
    text = "; ".join(f"{name} {', '.join(map(str, values))}" + (f" ({', '.join(how)})" if how else "")
                     for name, values, how in parts if values)
    if text:
        return text
    default = (manifest or {}).get("threads")
    return f"{default} (process default; no row records its threads)" if default is not None else "—"


def _distinct_ints(series: pd.Series) -> list[int]:
    return sorted({int(v) for v in pd.to_numeric(series, errors="coerce").dropna()})


def _text(value) -> str:
    if value is None or value == "" or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return "—"
    return str(value)
