"""The "Why" section under the verdict: where each losing attention's time goes, how close it runs to the machine,
and the largest grid it fits in a memory budget. Pure functions over the report frame, plus three figures.

* **Why sentences** (:func:`why_sentences`): for every latency comparison of the verdict (run, context, H×W) and
  every attention that is not among its winners, one sentence naming the part that takes most of its profiled time
  (``breakdown`` metric), that part's share of its MACs, and its time relative to the winner and the baseline.
* **Per-part table** (:func:`part_tables`): the dominant part and its time share per attention and grid.
* **Roofline table** (:func:`roofline_tables`): achieved GFLOP/s, arithmetic intensity and the fraction of the
  probed peak (the manifest's ``machine_peak``, float32 or bfloat16 matmul as the cell's dtype) per cell.
* **Capacity table** (:func:`capacity_tables`): measured and predicted largest grid per attention, pass and batch,
  with the reason when they differ by more than one search step.
* Figures (:func:`render_why_figures`): stacked bars of per-part time shares, the roofline, the capacity bars.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from .derive import numeric
from .tables import Section, Table, fmt_num
from .verdict import CONTEXT, best_by_resolution

__all__ = ["parts_of", "dominant_part", "why_sentences", "part_tables", "roofline_tables", "capacity_tables",
           "why_sections", "render_why_figures", "peak_of"]

_SHARE = re.compile(r"^breakdown_(.+)_share$")
#: stacking order of the usual parts (others follow, then ``other``)
_ORDER = ("projections", "routing", "attention", "offsets_sampling_rpe", "lce")


def parts_of(columns) -> list[str]:
    """The parts a frame's breakdown columns name, in the metric's order (the cost model's parts, then ``other``).
    Read from the columns, not from ``attentions.cost``: the report never imports torch or the attentions."""
    found = list(dict.fromkeys(m.group(1) for c in columns if (m := _SHARE.match(str(c)))))
    return sorted(found, key=lambda p: (p == "other", _ORDER.index(p) if p in _ORDER else len(_ORDER)))
_PEAK_KEY = {"float32": "fp32_gflops", "bfloat16": "bf16_gflops"}


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and numeric(frame, column).notna().any()


def dominant_part(row: pd.Series) -> Optional[tuple[str, float, float]]:
    """(part, its share of the profiled time, its share of the MACs) of the part with the largest time share."""
    shares = {p: row.get(f"breakdown_{p}_share") for p in parts_of(row.index)}
    shares = {p: float(s) for p, s in shares.items() if s is not None and not _nan(s)}
    if not shares:
        return None
    part = max(shares, key=shares.get)
    macs = row.get(f"breakdown_macs_share_{part}")
    return part, shares[part], 0.0 if macs is None or _nan(macs) else float(macs)


def _nan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _context_text(pass_: str, batch: Any) -> str:
    return f"{pass_}, batch {int(batch)}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def why_sentences(frame: pd.DataFrame) -> list[str]:
    """One sentence per attention that loses a latency comparison of the verdict and has a breakdown."""
    if not _has(frame, "breakdown_total_ms") or "latency_ms_median" not in frame.columns:
        return []
    ok = frame[frame["status"] == "ok"]
    lines = []
    for _, comparison in best_by_resolution(frame, "latency").iterrows():
        winner = comparison["winner"]
        rows = ok
        for key in (*CONTEXT, "height", "width"):
            rows = rows[rows[key] == comparison[key]]
        best = rows[rows["series"] == winner.names[0]]
        best_ms = float(numeric(best, "latency_ms_median").iloc[0]) if len(best) else math.nan
        for _, row in rows.iterrows():
            if row["series"] in winner.names:
                continue
            found = dominant_part(row)
            if found is None:
                continue
            part, share, macs = found
            where = ("outside every part (`other`: layout, padding, dispatch)" if part == "other"
                     else f"in `{part}`")
            ms = float(numeric(pd.DataFrame([row]), "latency_ms_median").iloc[0])
            versus = [f"{ms / best_ms:.1f}× the time of {winner.names[0]}"] if best_ms > 0 else []
            ratio = row.get("latency_ratio")
            baseline = rows[rows["is_baseline"].astype(bool)]["series"].tolist() if "is_baseline" in rows else []
            if baseline and baseline[0] != winner.names[0] and not row.get("is_baseline") and not _nan(ratio):
                versus.append(f"{float(ratio):.1f}× the baseline's")
            lines.append(f"**{row['series']}** at {int(row['height'])}×{int(row['width'])} "
                         f"({_context_text(row['pass'], row['batch'])}): {_pct(share)} of its time {where}, "
                         f"{_pct(macs)} of its MACs ({'; '.join(versus)}).")
    return lines


def _grid_columns(rows: pd.DataFrame) -> list[tuple[int, int]]:
    grids = rows[["tokens", "height", "width"]].drop_duplicates().sort_values("tokens")
    return [(int(h), int(w)) for h, w in zip(grids["height"], grids["width"])]


def _per_cell_tables(frame: pd.DataFrame, column: str, cell_text, caption: str) -> list[Table]:
    ok = frame[(frame["status"] == "ok") & numeric(frame, column).notna()]
    several = ok["run_id"].nunique() > 1
    tables = []
    for key, rows in ok.groupby(list(CONTEXT), sort=False, dropna=False):
        ctx = dict(zip(CONTEXT, key))
        grids = _grid_columns(rows)
        body = []
        for series, part in rows.groupby("series", sort=False):
            by_grid = {(int(r["height"]), int(r["width"])): cell_text(r) for _, r in part.iterrows()}
            body.append([series, *[by_grid.get(g, "—") for g in grids]])
        prefix = (f"run `{ctx['run_id']}` · " if several else "") + \
            f"{ctx['device']} · {ctx['dtype']} · {ctx['mode']} · {ctx['pass']} · batch {int(ctx['batch'])}"
        tables.append(Table(f"{caption} — {prefix}", ["attention", *[f"{h}×{w}" for h, w in grids]], body,
                            numeric=False))
    return tables


def part_tables(frame: pd.DataFrame) -> list[Table]:
    """Per context: the part with most of each attention's time, its time share and its MACs share."""
    def text(row):
        found = dominant_part(row)
        if found is None:
            return "—"
        part, share, macs = found
        return f"{part} {_pct(share)} (MACs {_pct(macs)})"
    return _per_cell_tables(frame, "breakdown_total_ms", text, "Part with most of the profiled time (its MACs share)")


def peak_of(manifest: dict, dtype: str) -> Optional[dict]:
    """``{"gflops", "copy_gbs"}`` of the run's probed machine for ``dtype`` (None without a probe)."""
    peak = (manifest or {}).get("machine_peak") or {}
    gflops = peak.get(_PEAK_KEY.get(str(dtype), "fp32_gflops"))
    if not gflops or not peak.get("copy_gbs"):
        return None
    return {"gflops": float(gflops), "copy_gbs": float(peak["copy_gbs"])}


def roofline_tables(frame: pd.DataFrame, manifests: dict[str, dict]) -> list[Table]:
    """Per context: achieved GFLOP/s (profiled), its fraction of the probed peak, arithmetic intensity (FLOP/B)."""
    def text(row):
        gflops = row.get("breakdown_gflops")
        if gflops is None or _nan(gflops):
            return "—"
        peak = peak_of(manifests.get(row["run_id"], {}), row["dtype"])
        frac = f" ({_pct(float(gflops) / peak['gflops'])} of peak)" if peak else ""
        return f"{fmt_num(float(gflops))}{frac}, AI {fmt_num(float(row.get('breakdown_intensity') or math.nan))}"
    return _per_cell_tables(frame, "breakdown_gflops", text, "Achieved GFLOP/s (fraction of the probed matmul peak), "
                            "arithmetic intensity FLOP/byte")


def _capacity_rows(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[(frame["status"] == "ok") & numeric(frame, "capacity_grid").notna()]
    return ok.drop_duplicates(["run_id", "series", "device", "dtype", "mode", "pass", "batch"])


def capacity_reason(row: pd.Series) -> Optional[str]:
    """Why the predicted and the measured largest grid differ by more than one step (None when they agree)."""
    limited = row.get("capacity_limited_by")
    if limited and limited != "budget":
        return f"the search stopped at `{limited}`: the measured grid is a lower bound"
    if row.get("capacity_agree") is True or row.get("capacity_agree") == 1:
        return None
    predicted = row.get("capacity_grid_predicted")
    if predicted is None or _nan(predicted):
        return "fewer than two grids fitted: no exponent to extrapolate"
    probes = [(int(g), None if b is None else int(b)) for g, b in (row.get("capacity_probes") or [])]
    growth = [probes[0]] if probes else []
    for g, b in probes[1:]:  # the growth phase: grids rise until the first one over the budget
        if g <= growth[-1][0]:
            break
        growth.append((g, b))
    budget = float(row.get("capacity_budget_gib") or 0) * (1 << 30)
    fit = [(g, b) for g, b in growth if b is not None and b <= budget]
    exponent = float(row.get("capacity_mem_exponent"))
    measured = dict(probes).get(int(row["capacity_grid"]))
    if len(fit) < 2 or not measured:
        return f"peak memory is not one power law (exponent {exponent:.2f} below the limit)"
    (g1, _), (g2, b2) = fit[-2], fit[-1]
    g = int(row["capacity_grid"])
    expected = b2 * (g * g / (g2 * g2)) ** exponent
    above = sorted((p, b) for p, b in probes if p > g)
    if abs(measured - expected) <= 0.05 * expected and above:  # the law holds up to g: the next grid jumps
        p, b = above[0]
        need = "runs out of memory" if b is None else f"needs {b / 2**20:.1f} MiB"
        return (f"the power law (exponent {exponent:.2f}) holds up to {g}² ({measured / 2**20:.1f} MiB), but the peak "
                f"jumps right above it: {p}² {need} (padding to region multiples, a new chunk)")
    return (f"peak memory is not one power law: at {g}² it is {measured / 2**20:.1f} MiB where the exponent "
            f"{exponent:.2f} of {g1}²→{g2}² predicts {expected / 2**20:.1f} MiB (fixed and linear terms, padding to "
            "region multiples, chunked kernels)")


def capacity_tables(frame: pd.DataFrame) -> tuple[list[Table], list[str]]:
    """Per run and (device, dtype, mode): rows = attentions, columns = pass · batch, cells = measured grid
    (predicted); and one note per disagreement."""
    rows = _capacity_rows(frame)
    tables, notes = [], []
    several = rows["run_id"].nunique() > 1 if len(rows) else False
    for key, part in rows.groupby(["run_id", "device", "dtype", "mode"], sort=False, dropna=False):
        columns = sorted({(p, int(b)) for p, b in zip(part["pass"], part["batch"])},
                         key=lambda c: (c[0] != "forward", c[1]))
        cells = {}
        for _, r in part.iterrows():
            measured, pred = int(r["capacity_grid"]), r.get("capacity_grid_predicted")
            pred_text = "—" if pred is None or _nan(pred) else str(int(pred))
            mark = "" if capacity_reason(r) is None else " *"
            cells[(r["series"], r["pass"], int(r["batch"]))] = f"{measured}² (pred. {pred_text}²){mark}"
            reason = capacity_reason(r)
            if reason:
                notes.append([f"{r['series']} · {r['pass']} · batch {int(r['batch'])}", f"{measured}²",
                              f"{pred_text}²", reason])
        budget = float(part["capacity_budget_gib"].iloc[0])
        budget_text = f"{budget * 1024:.0f} MiB" if budget < 1 else f"{budget:.3g} GiB"
        step = int(part["capacity_step"].iloc[0])
        prefix = (f"run `{key[0]}` · " if several else "") + f"{key[1]} · {key[2]} · {key[3]}"
        body = [[s, *[cells.get((s, p, b), "—") for p, b in columns]] for s in dict.fromkeys(part["series"])]
        tables.append(Table(f"Largest square token grid within {budget_text} (measured, ± {step}; predicted from "
                            f"the memory exponent; * differ by more than one step) — {prefix}",
                            ["attention", *[f"{p} · batch {b}" for p, b in columns]], body, numeric=False))
    if notes:
        tables.append(Table("Where prediction and measurement differ by more than one step, and why",
                            ["cell", "measured", "predicted", "why"], notes, numeric=False))
    return tables, [f"{n[0]}: measured {n[1]}, predicted {n[2]}: {n[3]}." for n in notes]


def why_sections(frame: pd.DataFrame, manifests: dict[str, dict]) -> tuple[list[Section], list[str]]:
    """(sections, sentences) of the Why part of the report; both empty for a run without these metrics."""
    sentences = why_sentences(frame)
    sections = []
    if _has(frame, "breakdown_total_ms"):
        sections.append(Section(
            "why_parts", "Where the time goes",
            "The `breakdown` metric profiles each cell's pass (a few calls, apart from the latency samples) and "
            "splits its time over the parts of the attention's cost model; `other` is everything outside the "
            "parts (layout copies, padding, region partitioning, dispatch). Profiling adds a few µs per operator, "
            "so many-small-op parts look larger than in the latency samples (`breakdown_profiled_over_wall`).",
            part_tables(frame)))
        sections.append(Section(
            "why_roofline", "How close to the machine",
            "Achieved GFLOP/s = the pass's FLOPs (2 × the counted MACs; × 3 for forward+backward) / profiled time, "
            "beside the probed matmul peak of the run's machine (`machine_peak` in the manifest) and the arithmetic "
            "intensity, FLOPs per byte of compulsory traffic (every operator reads its inputs and writes its "
            "outputs once).", roofline_tables(frame, manifests)))
    tables, _ = capacity_tables(frame) if _has(frame, "capacity_grid") else ([], [])
    if tables:
        sections.append(Section(
            "capacity", "How far it goes",
            "The `capacity` metric: growing square grids, then bisection, over the measured peak memory of one "
            "call of the pass; the prediction extrapolates the memory exponent of the two largest grids of the "
            "growth phase.", tables))
    return sections, sentences


# -- figures ------------------------------------------------------------------------------------------------------

def render_why_figures(frame: pd.DataFrame, out_dir: Path, manifests: dict[str, dict]) -> list:
    """The stacked per-part bars, the roofline and the capacity figure, where the rows allow them."""
    from .figures import _RC, _maybe  # matplotlib: only when figures are drawn
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .figures import FIG_DIR
    from .style import series_styles

    ok = frame[frame["status"] == "ok"]
    (Path(out_dir) / FIG_DIR).mkdir(parents=True, exist_ok=True)
    figures: list = []
    styles = series_styles(list(ok["series"]))
    with plt.rc_context(_RC), sns.axes_style("whitegrid"):
        figures += _maybe(out_dir, "why_parts", _parts_figure, ok, None)
        figures += _maybe(out_dir, "why_roofline", lambda rows, _: _roofline_figure(rows, manifests, styles), ok,
                          None)
        figures += _maybe(out_dir, "why_capacity", lambda rows, _: _capacity_figure(rows, styles), ok, None)
    return figures


_PART_COLORS = {"projections": "#4c72b0", "routing": "#dd8452", "attention": "#55a868",
                "offsets_sampling_rpe": "#c44e52", "lce": "#8172b3", "other": "#b0b0b0"}


def _contexts(rows: pd.DataFrame) -> list[tuple[str, int]]:
    return sorted({(p, int(b)) for p, b in zip(rows["pass"], rows["batch"])}, key=lambda c: (c[0] != "forward", c[1]))


def _parts_figure(rows: pd.DataFrame, _look):
    import matplotlib.pyplot as plt

    rows = rows[numeric(rows, "breakdown_total_ms").notna()]
    if rows.empty:
        return None
    contexts = _contexts(rows)
    fig, axes = plt.subplots(len(contexts), 1, figsize=(12, 2.8 * len(contexts)), squeeze=False)
    for ax, (pass_, batch) in zip(axes[:, 0], contexts):
        here = rows[(rows["pass"] == pass_) & (rows["batch"].astype(int) == batch)].sort_values(["tokens", "series"])
        labels = [f"{s}\n{int(h)}²" for s, h in zip(here["series"], here["height"])]
        bottom = [0.0] * len(here)
        for part in parts_of(rows.columns):
            share = numeric(here, f"breakdown_{part}_share").fillna(0.0).tolist()
            if any(share):
                ax.bar(range(len(here)), share, bottom=bottom, color=_PART_COLORS.get(part, "#777777"), label=part, width=0.8)
                bottom = [b + s for b, s in zip(bottom, share)]
        ax.set_xticks(range(len(here)), labels, fontsize=6.5)
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        ax.set_title(f"{pass_} · batch {batch}", fontsize=9)
        ax.set_ylabel("share of time")
    seen = {}
    for ax in axes[:, 0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    fig.tight_layout()
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=len(seen), bbox_to_anchor=(0.5, 1.0))
    return (fig, "Where the time goes: per-part share of the profiled time",
            "One bar per attention and grid, per pass and batch: the share of the profiled call spent in each part "
            "of the cost model (breakdown metric); other = outside every part (layout, padding, dispatch).")


def _roofline_figure(rows: pd.DataFrame, manifests: dict[str, dict], styles):
    import matplotlib.pyplot as plt
    import numpy as np

    rows = rows[numeric(rows, "breakdown_gflops").notna()]
    if rows.empty:
        return None
    run_id, dtype = rows["run_id"].iloc[0], rows["dtype"].iloc[0]
    peak = peak_of(manifests.get(run_id, {}), dtype)
    contexts = _contexts(rows)
    fig, axes = plt.subplots(1, len(contexts), figsize=(4.2 * len(contexts), 4), squeeze=False, sharey=True)
    markers = {"projections": "s", "routing": "v", "attention": "o", "offsets_sampling_rpe": "D", "lce": "^",
               "total": "*"}
    for ax, (pass_, batch) in zip(axes[0], contexts):
        here = rows[(rows["pass"] == pass_) & (rows["batch"].astype(int) == batch)]
        here = here[here["tokens"] == here["tokens"].max()]  # the largest grid of this context
        for _, r in here.iterrows():
            color = styles[r["series"]].color
            for part in (*[p for p in parts_of(rows.columns) if p != "other"], "total"):
                suffix = "" if part == "total" else f"_{part}"
                x, y = r.get(f"breakdown_intensity{suffix}"), r.get(f"breakdown_gflops{suffix}")
                if x is None or y is None or _nan(x) or _nan(y) or float(x) <= 0 or float(y) <= 0:
                    continue
                ax.scatter(float(x), float(y), color=color, marker=markers.get(part, "P"),
                           s=90 if part == "total" else 28, edgecolor="black" if part == "total" else "none")
        if peak:
            xs = np.logspace(-1, 3, 100)
            ax.plot(xs, np.minimum(peak["gflops"], xs * peak["copy_gbs"]), color="black", lw=1)
            ax.text(0.98, 0.02, f"roof: matmul {peak['gflops']:.0f} GFLOP/s, copy {peak['copy_gbs']:.1f} GB/s",
                    fontsize=7, ha="right", va="bottom", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        grid = f"{int(here['height'].iloc[0])}²" if len(here) else ""
        ax.set_title(f"{pass_} · batch {batch} · {grid}", fontsize=9)
    axes[0, 0].set_ylabel("achieved GFLOP/s (profiled)")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=styles[s].color, marker="o", ls="", label=s) for s in dict.fromkeys(rows["series"])]
    handles += [Line2D([], [], color="gray", marker=m, ls="", label=p) for p, m in markers.items()]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 11), fontsize=7, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return (fig, "Roofline: achieved GFLOP/s vs arithmetic intensity, per attention and part",
            "At the largest grid of each pass and batch: one point per attention (colour) and part (marker; the star "
            "is the whole call) against the roof of the run's probed machine (matmul peak, copy bandwidth). FLOPs "
            "are the counted MACs × 2 (× 3 for forward+backward), time the profiled time.")


def _capacity_figure(rows: pd.DataFrame, styles):
    import matplotlib.pyplot as plt

    rows = _capacity_rows(rows)
    if rows.empty:
        return None
    contexts = _contexts(rows)
    series = list(dict.fromkeys(rows["series"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(contexts) * len(series) / 3), 4))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        for j, (pass_, batch) in enumerate(contexts):
            r = rows[(rows["series"] == s) & (rows["pass"] == pass_) & (rows["batch"].astype(int) == batch)]
            if r.empty:
                continue
            x = j + (i - (len(series) - 1) / 2) * width
            ax.bar(x, float(r["capacity_grid"].iloc[0]), width=width, color=styles[s].color,
                   label=s if j == 0 else None)
            pred = r["capacity_grid_predicted"].iloc[0]
            if pred is not None and not _nan(pred):
                ax.plot(x, float(pred), marker="_", color="black", markersize=12, mew=2,
                        label="predicted" if (i, j) == (0, 0) else None)
    ax.set_xticks(range(len(contexts)), [f"{p} · batch {b}" for p, b in contexts])
    ax.set_ylabel("largest square grid (tokens per side)")
    budget = float(rows["capacity_budget_gib"].iloc[0])
    budget_text = f"{budget * 1024:.0f} MiB" if budget < 1 else f"{budget:.3g} GiB"
    ax.legend(fontsize=8)
    title = f"Largest grid within {budget_text}"
    return (fig, title, f"{title}, per attention, pass and batch: bars measured (grow, then bisect over the measured "
            "peak memory), black ticks predicted from the memory exponent of the two largest fitting grids.")
