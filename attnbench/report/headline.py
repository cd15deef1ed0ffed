"""The top of the report: warning banners, then the verdict (``verdict.py``) as tables of plain strings.

Banners (:func:`run_banners`): a run measured under load (the manifest's ``load.under_load``, or rows whose 1-min
load average before or after the cell exceeded the core count), and an incomplete run (interrupted, no end time,
or fewer rows than the cells it planned).
"""
from __future__ import annotations

import math

import pandas as pd

from .derive import numeric
from .failures import failed_at, with_failures
from .load import Runs
from .tables import Section, Table, fmt_count, fmt_num, fmt_ratio
from .verdict import (CONTEXT, THEORY, Winner, best_by_resolution, crossovers, pareto_front, pareto_fronts,
                      scaling_exponents)

__all__ = ["accuracy_fronts", "headline_sections", "run_banners"]

_PASS_ORDER = {"forward": 0, "forward_backward": 1}
_QUANTITY_TITLE = {"latency": "latency", "memory": "peak memory"}


# ----------------------------------------------------------------------------------------------------- banners

def _max(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.max()) if len(values) else math.nan


def _load_banner(run_id: str, manifest: dict, rows: pd.DataFrame) -> str | None:
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else {}
    cores = load.get("cores") or manifest.get("cpu_count")
    row_cores = numeric(rows, "cpu_count").fillna(float(cores) if cores else math.nan)
    row_load = pd.concat([numeric(rows, "load_before"), numeric(rows, "load_after")], axis=1).max(axis=1)
    over = int((row_load > row_cores).sum())
    if not load.get("under_load") and over == 0:
        return None
    max_load = load.get("max_load", _max(row_load))
    cores = cores or _max(row_cores)
    busy = load.get("max_busy", _max(pd.concat([numeric(rows, "busy_before"), numeric(rows, "busy_after")])))
    details = [f"1-min load average up to {fmt_num(float(max_load))}"
               + (f" on {int(cores)} cores" if cores and not pd.isna(cores) else "")]
    if over:
        details.append(f"{over} of {len(rows)} cells started or ended with more load than cores")
    if busy is not None and not pd.isna(busy) and busy > 0:
        details.append(f"up to {int(busy)} other busy processes")
    return (f"Run `{run_id}` was measured under load ({'; '.join(details)}). Absolute times are inflated, and paths "
            "made of many small ops lose more than fused ones: trust the paired ratios over the medians, and "
            "re-run on a quiet machine before quoting a time.")


def _incomplete_banner(run_id: str, manifest: dict, rows: pd.DataFrame) -> str | None:
    if not manifest:
        return None
    reasons = []
    if manifest.get("interrupted"):
        reasons.append("was interrupted (Ctrl-C or SIGTERM)")
    elif manifest.get("ended_at") is None:
        reasons.append("has no end time (still running, or killed)")
    cells = manifest.get("cells") if isinstance(manifest.get("cells"), dict) else {}
    planned = sum(v for v in (cells.get("to_run"), cells.get("skipped")) if isinstance(v, int))
    if planned and len(rows) < planned:
        reasons.append(f"has rows for {len(rows)} of the {planned} cells it planned")
    if not reasons:
        return None
    return (f"Run `{run_id}` is incomplete: it {' and '.join(reasons)}. Cells without a row are absent from the "
            f"verdict, the tables and the figures; `attnbench run --resume {run_id}` measures the rest.")


def run_banners(frame: pd.DataFrame, runs: Runs) -> list[str]:
    """Warnings to show above everything else, one per problem and run."""
    banners = []
    for run_id in runs.dirs:
        manifest = runs.manifests.get(run_id) or {}
        rows = frame[frame["run_id"] == run_id]
        banners += [b for b in (_incomplete_banner(run_id, manifest, rows), _load_banner(run_id, manifest, rows)) if b]
    return banners


# ----------------------------------------------------------------------------------------------------- verdict

def _grid_label(h, w) -> str:
    return f"{h}×{w}"


def _context_groups(frame: pd.DataFrame):
    """(caption prefix, rows) per run and (device, dtype, mode); the run is named only when there are several."""
    several = frame["run_id"].nunique() > 1
    for (run_id, device, dtype, mode), rows in frame.groupby(["run_id", "device", "dtype", "mode"], sort=False,
                                                              dropna=False):
        prefix = (f"run `{run_id}` · " if several else "") + f"{device} · {dtype} · {mode}"
        yield run_id, (device, dtype, mode), prefix, rows


def _pass_batches(rows: pd.DataFrame) -> list[tuple]:
    pairs = rows[["pass", "batch"]].drop_duplicates().itertuples(index=False, name=None)
    return sorted(pairs, key=lambda p: (_PASS_ORDER.get(p[0], 9), str(p[0]), -1 if pd.isna(p[1]) else int(p[1])))


def _grids(rows: pd.DataFrame) -> list[tuple]:
    grids = rows[["height", "width", "tokens"]].drop_duplicates().sort_values(["tokens", "height", "width"])
    return list(zip(grids["height"], grids["width"]))


def _winner_text(winner: Winner) -> str:
    if winner.tie:
        return " ≈ ".join(winner.names) + " (tie)"
    ratio = fmt_ratio(winner.ratio)
    return f"{winner.names[0]} {ratio}" if ratio else winner.names[0]


def _select(table: pd.DataFrame, run_id, context: tuple) -> pd.DataFrame:
    device, dtype, mode = context
    return table[(table["run_id"] == run_id) & (table["device"] == device) & (table["dtype"] == dtype)
                 & (table["mode"] == mode)]


def best_tables(frame: pd.DataFrame) -> list[Table]:
    """Per run and (device, dtype, mode): one row per (metric, pass, batch) and one for MACs, one column per H×W."""
    winners = {m: best_by_resolution(frame, m) for m in ("latency", "memory", "macs")}
    tables = []
    for run_id, context, prefix, rows in _context_groups(frame):
        grids = _grids(rows)
        body = []
        for metric in ("latency", "memory"):
            found = _select(winners[metric], run_id, context)
            for pass_, batch in _pass_batches(rows):
                cells = found[(found["pass"] == pass_) & (found["batch"] == batch)]
                by_grid = {(r["height"], r["width"]): _winner_text(r["winner"]) for _, r in cells.iterrows()}
                failed = failed_at(frame, run_id, context, pass_, batch)  # a failure is said, never hidden
                if by_grid or failed:
                    body.append([f"{_QUANTITY_TITLE[metric]} · {pass_} · batch {batch}"]
                                + [with_failures(by_grid.get(g), failed.get(g, [])) for g in grids])
        macs = winners["macs"][winners["macs"]["run_id"] == run_id]
        by_grid = {(r["height"], r["width"]): _winner_text(r["winner"]) for _, r in macs.iterrows()}
        if by_grid:
            body.append(["MACs (fvcore, batch 1, forward)"] + [by_grid.get(g, "—") for g in grids])
        if body:
            tables.append(Table(f"best attention per resolution — {prefix}",
                                ["lowest", *[_grid_label(*g) for g in grids]], body, numeric=False))
    return tables


def _crossover_text(statuses: list, crossover) -> str:
    measured = [s for _, _, s in statuses if s not in (None, "failed")]
    failed = [_grid_label(h, w) for h, w, s in statuses if s == "failed"]
    if not measured:
        return "failed" if failed else "—"
    if crossover is None:
        h, w, last = statuses[-1]
        tail = {"tie": f" (tie at {_grid_label(h, w)})", "above": "", None: f" (no value at {_grid_label(h, w)})",
                "failed": f" (failed at {', '.join(failed)})"}
        return "not in range" + tail.get(last, "")
    first = next((h, w) for h, w, s in statuses if s is not None)
    return f"everywhere (from {_grid_label(*crossover)})" if crossover == first else f"from {_grid_label(*crossover)}"


def crossover_tables(frame: pd.DataFrame) -> list[Table]:
    """Per metric, run and (device, dtype, mode): rows = non-baseline attentions, columns = pass · batch."""
    tables = []
    for metric in ("latency", "memory"):
        found = crossovers(frame, metric)
        for run_id, context, prefix, rows in _context_groups(frame):
            here = _select(found, run_id, context)
            columns, cells = [], {}
            for pass_, batch in _pass_batches(rows):
                part = here[(here["pass"] == pass_) & (here["batch"] == batch)]
                if not part.empty:
                    columns.append(f"{pass_} · batch {batch}")
                    for _, r in part.iterrows():
                        cells[(r["series"], columns[-1])] = _crossover_text(r["statuses"], r["crossover"])
            series = list(dict.fromkeys(s for s, _ in cells))
            if series:
                body = [[s, *[cells.get((s, c), "—") for c in columns]] for s in series]
                tables.append(Table(f"{_QUANTITY_TITLE[metric]}: below the baseline from — {prefix}",
                                    ["attention", *columns], body, numeric=False))
    return tables


def _fmt_fit(fit) -> str:
    if fit is None:
        return "—"
    s = fit.slope
    if not (math.isfinite(s.low) and math.isfinite(s.high)):
        return f"{s.estimate:.2f} ({s.n} points)"
    return f"{s.estimate:.2f} [{s.low:.2f}–{s.high:.2f}]"


def exponent_tables(frame: pd.DataFrame) -> list[Table]:
    """Fitted k of cost ∝ tokensᵏ: the counts per run, latency and memory per run and (device, dtype, mode)."""
    fits = scaling_exponents(frame)
    tables = []
    several = frame["run_id"].nunique() > 1
    counts = fits[fits["quantity"].isin(["macs_fvcore", "macs_analytic", "attention_term"])]
    for run_id, part in counts.groupby("run_id", sort=False):
        if part["fit"].isna().all():  # one grid: nothing to fit
            continue
        body = []
        for series, rows in part.groupby("series", sort=False):
            by_q = dict(zip(rows["quantity"], rows["fit"]))
            theory = THEORY.get(str(rows["attention"].iloc[0]), ("—", ""))[0]
            body.append([series, _fmt_fit(by_q.get("macs_fvcore")), _fmt_fit(by_q.get("macs_analytic")),
                         _fmt_fit(by_q.get("attention_term")), theory])
        caption = "MACs ∝ tokensᵏ: fitted k [95% interval]" + (f" — run `{run_id}`" if several else "")
        tables.append(Table(caption, ["attention", "MACs (fvcore)", "cost model (macs_analytic)",
                                      "attention term (N · keys_per_query)", "theory (asymptotic)"], body))
    measured = fits[fits["quantity"].isin(["latency", "memory"])]
    for quantity in ("latency", "memory"):
        for run_id, context, prefix, rows in _context_groups(frame):
            here = _select(measured[measured["quantity"] == quantity], run_id, context)
            cells = {(r["series"], r["pass"], r["batch"]): r["fit"] for _, r in here.iterrows()}
            columns = [c for c in _pass_batches(rows) if any(k[1:] == c and v is not None for k, v in cells.items())]
            series = list(dict.fromkeys(here["series"]))
            if columns and series:
                body = [[s, *[_fmt_fit(cells.get((s, *c))) for c in columns]] for s in series]
                tables.append(Table(f"{_QUANTITY_TITLE[quantity]} ∝ tokensᵏ: fitted k [95% interval] — {prefix}",
                                    ["attention", *[f"{p} · batch {b}" for p, b in columns]], body))
    return tables


def pareto_tables(frame: pd.DataFrame) -> list[Table]:
    """Per run and (device, dtype, mode): rows = front kind · pass · batch, columns = H×W, cells = the front."""
    fronts = pareto_fronts(frame)
    tables = []
    for run_id, context, prefix, rows in _context_groups(frame):
        here, grids = _select(fronts, run_id, context), _grids(rows)
        body = []
        for kind in dict.fromkeys(here["kind"]):
            for pass_, batch in _pass_batches(rows):
                part = here[(here["kind"] == kind) & (here["pass"] == pass_) & (here["batch"] == batch)]
                by_grid = {(r["height"], r["width"]): ", ".join(r["members"]) for _, r in part.iterrows()}
                if by_grid:
                    body.append([f"{kind} · {pass_} · batch {batch}", *[by_grid.get(g, "—") for g in grids]])
        if body:
            tables.append(Table(f"Pareto fronts (no other attention is lower on both) — {prefix}",
                                ["front", *[_grid_label(*g) for g in grids]], body, numeric=False))
    return tables


def accuracy_fronts(frame: pd.DataFrame) -> list[str]:
    """One sentence per (run, cost) for rows with ``acc_top1``: the attentions on the accuracy-vs-cost front."""
    if "acc_top1" not in frame.columns:
        return []
    lines = []
    rows = frame[(frame["status"] == "ok") & numeric(frame, "acc_top1").notna()]
    for run_id, part in rows.groupby("run_id", sort=False):
        for cost, unit, fmt in (("latency_ms_median", "ms", fmt_num), ("macs_fvcore", "MACs", fmt_count)):
            column = f"model_{cost}" if numeric(part, f"model_{cost}").notna().any() else cost
            points = pd.DataFrame({"series": part["series"], "cost": numeric(part, column),
                                   "acc": numeric(part, "acc_top1")}).dropna().drop_duplicates("series", keep="last")
            if len(points) < 2:
                continue
            front = points[pareto_front(points["cost"].to_numpy(), points["acc"].to_numpy())].sort_values("cost")
            members = " → ".join(f"{r.series} ({r.acc:.2f} %, {fmt(r.cost)} {unit})" for r in front.itertuples())
            lines.append(f"Accuracy vs {column} (run `{run_id}`): the front, cheapest first, is {members}.")
    return lines


def headline_sections(frame: pd.DataFrame) -> list[Section]:
    """The verdict, in reading order: winners, crossovers, scaling exponents, Pareto fronts."""
    theory = "; ".join(f"`{name}` {k}: {why}" for name, (k, why) in THEORY.items())
    sections = [
        Section("best", "Which attention is cheapest at each resolution",
                "Lowest latency (median), peak memory and MACs per context and H×W, with the winner's ratio to the "
                "baseline. `a ≈ b (tie)`: their latency intervals overlap (the paired ratios' intervals where the "
                "run measured them, else the 95% intervals of the medians); memory and MACs tie only when equal.",
                best_tables(frame)),
        Section("crossover", "From which resolution each attention beats the baseline",
                "The smallest H×W from which the ratio to the baseline stays below 1 at every larger resolution of "
                "the sweep (latency: its whole 95% interval below 1). `not in range`: it does not win at the largest "
                "resolution measured.", crossover_tables(frame)),
        Section("scaling", "How each cost scales with the token count",
                "k in cost ∝ tokensᵏ, the least-squares slope on log-log axes with its 95% t-interval (two points: "
                "no interval). The cost model's k is fitted over the same grids; the attention term's k = 1 + the "
                "slope of keys_per_query. Theory, asymptotic in N: " + theory + ". Over a small range the linear "
                "projections pull every fitted k toward 1.", exponent_tables(frame)),
        Section("pareto", "Pareto fronts",
                "The attentions no other attention beats on both costs at that resolution, cheapest in the first "
                "cost first.", pareto_tables(frame)),
    ]
    return [s for s in sections if s.tables]
