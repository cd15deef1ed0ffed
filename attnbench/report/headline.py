"""The top of the report: warning banners, then the verdict (``verdict.py``) as tables of plain strings.

Banners (:func:`run_banners`): a run measured under load (the one load rule, :func:`attnbench.core.machine_load.judge`,
over its rows: preempted samples, other running processes, the load average), and an incomplete run (interrupted, no end time,
or fewer rows than the cells it planned).
"""
from __future__ import annotations

import math

import pandas as pd

from ..core import machine_load, uncertainty
from .acc_uncertainty import accuracy_front, estimates, most_accurate
from .derive import numeric
from .failures import all_failed, failed_at, with_failures
from .load import Runs
from .tables import Section, Table, fmt_count, fmt_num, fmt_ratio
from .verdict import (CONTEXT, THEORY, Winner, accuracy_winner, best_by_resolution, crossovers, pareto_fronts,
                      scaling_exponents)

__all__ = ["accuracy_fronts", "accuracy_tables", "headline_sections", "run_banners"]

_PASS_ORDER = {"forward": 0, "forward_backward": 1}
_QUANTITY_TITLE = {"latency": "latency", "memory": "peak memory"}


# ----------------------------------------------------------------------------------------------------- banners

def _load_banner(run_id: str, manifest: dict, rows: pd.DataFrame) -> str | None:
    """The under-load warning, by the one load rule (:func:`attnbench.core.machine_load.summarize`) over the rows."""
    load = machine_load.summarize(rows.to_dict("records"))
    if not load["under_load"]:
        return None
    return (f"Run `{run_id}` was measured under load ({'; '.join(load['why'])}). Absolute times are inflated, and "
            "paths made of many small ops lose more than fused ones: trust the paired ratios over the medians, and "
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


def _precision_note(run_id: str, rows: pd.DataFrame) -> str | None:
    """How many latency cells reached their target interval and how many stopped at their budget first."""
    if "latency_stop" not in rows.columns:
        return None
    timed = rows[(rows["status"] == "ok") & rows["latency_stop"].notna()]
    if timed.empty or "latency_target_rel_ci" not in timed.columns:
        return None
    within = [uncertainty.reached_target(r) for r in timed.to_dict("records")]
    reached = int(sum(within))
    early = timed[[not w for w in within]]
    noisy = int(early["latency_noisy"].astype(bool).sum()) if len(early) else 0
    targets = sorted({float(t) for t in numeric(timed, "latency_target_rel_ci").dropna()})
    target = "/".join(f"±{t * 100:g}%" for t in targets) or "its target"
    text = (f"Run `{run_id}`: {reached} of {len(timed)} latency cells reached their {target} interval; "
            f"{len(early)} stopped at their budget first")
    if len(early):
        text += f" ({noisy} of them noisy)" if noisy else " (none of them noisy)"
    total_noisy = int(timed["latency_noisy"].astype(bool).sum())
    return text + f"; {total_noisy} of {len(timed)} cells noisy in all (`~`: interval wider than the noisy limit)."


def run_banners(frame: pd.DataFrame, runs: Runs) -> list[str]:
    """Warnings to show above everything else, one per problem and run."""
    banners = []
    for run_id in runs.dirs:
        manifest = runs.manifests.get(run_id) or {}
        rows = frame[frame["run_id"] == run_id]
        banners += [b for b in (_incomplete_banner(run_id, manifest, rows), _load_banner(run_id, manifest, rows)) if b]
    return banners


def precision_notes(frame: pd.DataFrame, runs: Runs) -> list[str]:
    """Each run's latency precision: cells that reached their target interval, stopped at their budget, noisy."""
    notes = [_precision_note(run_id, frame[frame["run_id"] == run_id]) for run_id in runs.dirs]
    return [n for n in notes if n]


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
    """One sentence per (run, cost) for rows with ``acc_top1``: the attentions on the accuracy-vs-cost front, where
    indistinguishable accuracies count as equal (``acc_uncertainty.accuracy_front``); when every accuracy is
    indistinguishable the sentence says it is a tie and names the cheapest."""
    if "acc_top1" not in frame.columns:
        return []
    lines = []
    rows = frame[(frame["status"] == "ok") & numeric(frame, "acc_top1").notna()]
    for run_id, part in rows.groupby("run_id", sort=False):
        found = estimates(part)  # one value per attention and seed, whatever the cell's pass or batch
        tied, _ = most_accurate(found)
        for cost, unit, fmt in (("latency_ms_median", "ms", fmt_num), ("macs_fvcore", "MACs", fmt_count)):
            column = f"model_{cost}" if numeric(part, f"model_{cost}").notna().any() else cost
            costs = pd.DataFrame({"series": part["series"], "cost": numeric(part, column)}).dropna()
            costs = costs.groupby("series", sort=False)["cost"].median().to_dict()
            if len([n for n in found if n in costs]) < 2:
                continue
            front = accuracy_front(found, costs)
            members = " → ".join(f"{n} ({found[n].mean:.2f} %, {fmt(costs[n])} {unit})" for n in front)
            if len(tied) == len(found):
                lines.append(f"Accuracy vs {column} (run `{run_id}`): a tie — the top-1 accuracies of "
                             f"{', '.join(found)} are indistinguishable (every 95% interval of a difference holds "
                             f"0), so no attention buys accuracy with cost here; the cheapest is {members}.")
            else:
                # rows without acc_val_n (older runs) have no interval: their accuracies compare as plain numbers
                note = " (indistinguishable accuracies count as equal)" if all(e.n for e in found.values()) else ""
                lines.append(f"Accuracy vs {column} (run `{run_id}`): the front, cheapest first, is {members}{note}.")
    return lines


def accuracy_tables(frame: pd.DataFrame) -> list[Table]:
    """Per run: one row per cell context with accuracy, the most accurate attention (``a ≈ b (tie)`` for
    indistinguishable ones) and how it was decided."""
    if "acc_top1" not in frame.columns:
        return []
    rows = frame[(frame["status"] == "ok") & numeric(frame, "acc_top1").notna()]
    tables = []
    for run_id, part in rows.groupby("run_id", sort=False):
        body, seen = [], set()
        for key, group in part.groupby(["device", "dtype", "mode", "pass", "batch"], sort=False, dropna=False):
            winner = accuracy_winner(group)
            found = estimates(group)
            text = ", ".join(f"{n} {e.mean:.2f}" for n, e in found.items())
            if winner is None or text in seen:  # accuracy does not depend on the pass or batch: one line
                continue
            seen.add(text)
            if len(winner.names) == len(found) > 1:
                verdict = " ≈ ".join(winner.names) + " (tie: indistinguishable)"
            elif winner.tie:
                verdict = " ≈ ".join(winner.names) + " (tie)"
            else:
                verdict = winner.names[0] + (f" ({winner.ratio:+.2f} pt vs the baseline)"
                                             if not math.isnan(winner.ratio) else "")
            body.append([verdict, winner.basis, text])
        if body:
            tables.append(Table(f"most accurate (top-1) — run `{run_id}`", ["most accurate", "decided by",
                                                                             "top-1 (%)"], body, numeric=False))
    return tables


def headline_sections(frame: pd.DataFrame) -> list[Section]:
    """The verdict, in reading order: winners, crossovers, scaling exponents, Pareto fronts; a run whose every
    cell failed gets one section saying so instead (:func:`attnbench.report.failures.all_failed`)."""
    nothing = all_failed(frame)
    said = [Section("all_failed", f"Every cell of run `{run_id}` failed", text, []) for run_id, text in nothing.items()]
    frame = frame[~frame["run_id"].isin(list(nothing))]
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
        Section("accuracy", "Which attention is most accurate",
                "The highest top-1 and every attention indistinguishable from it: `a ≈ b (tie)` when the 95% "
                "interval of their difference holds 0 — paired (McNemar, Newcombe's interval) on the same "
                "validation images where the rows store per-image correctness, else Newcombe's unpaired interval, "
                "and with several seeds also the seed-to-seed Welch interval (docs/accuracy.md).",
                accuracy_tables(frame)),
        Section("pareto", "Pareto fronts",
                "The attentions no other attention beats on both costs at that resolution, cheapest in the first "
                "cost first.", pareto_tables(frame)),
    ]
    return said + [s for s in sections if s.tables]
