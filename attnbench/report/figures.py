"""The report's figures (seaborn on matplotlib's Agg backend), each saved as PNG and SVG under ``figures/``.

Figures: latency and peak memory vs token count (log-log, the IQR as a band, faceted by batch and pass), MACs vs
token count (the three counters side by side), latency vs FLOPs with lines of constant achieved FLOP/s, the
forward+backward / forward ratio of latency and memory, and, when rows carry ``acc_top1``, accuracy vs latency and
accuracy vs MACs with the Pareto front. A run with several (device, dtype, mode) combinations gets one file per
combination, suffixed ``_<device>-<dtype>-<mode>``.

Readability rules (issue 8): every series keeps one colour and marker in every report (``style.py``); the token
axis is ticked at the measured grids and labelled ``H×W`` (upright, 8 pt; vertical, and thinned, only where they
would touch); value axes carry SI prefixes and units ("1 ms", "10 M") from matplotlib's ``EngFormatter``, except
memory, in MiB as in the tables; a cell that produced no value (out of memory, failed, skipped, excluded
by the suite) is drawn as its own marker at the bottom of its panel, in its series' colour, and counted in
:attr:`Figure.missing`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # a report renders headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .failures import failed_legend  # noqa: E402
from .style import MISSING_MARKERS, series_styles  # noqa: E402
from .verdict import pareto_front  # noqa: E402

__all__ = ["Figure", "pareto_front", "render_figures"]

FIG_DIR = "figures"
_RC = {"svg.hashsalt": "attnbench", "svg.fonttype": "none", "figure.max_open_warning": 0}
_NUMERIC = ("height", "width", "tokens", "latency_ms_median", "latency_ms_q1", "latency_ms_q3",
            "mem_peak_bytes", "macs_fvcore", "macs_torch", "macs_analytic", "work_flops", "achieved_gflops_s",
            "model_latency_ms_median", "model_macs_fvcore")


@dataclasses.dataclass(frozen=True)
class Figure:
    """A saved figure; ``png`` and ``svg`` are paths relative to the report directory; ``missing``: how many
    cells without a value it marks."""

    name: str
    title: str
    description: str
    png: str
    svg: str
    missing: int = 0


@dataclasses.dataclass
class Look:
    """What every drawer shares: the series' fixed styles, the token ticks, and the cells without a value."""

    colors: dict[str, str]
    markers: dict[str, str]
    token_labels: dict[float, str]
    missing: pd.DataFrame

    @property
    def facet(self) -> dict:
        """FacetGrid keywords: hue order (baseline, then alphabetical) and the fixed colours."""
        return {"hue_order": list(self.colors), "palette": self.colors}


def render_figures(frame: pd.DataFrame, out_dir: Path, missing: pd.DataFrame | None = None) -> list[Figure]:
    """Draw every figure the rows allow into ``out_dir/figures``; figures without data are left out.

    Args:
        frame: the report frame (``derive.add_derived``).
        missing: cells without a value (``derive.missing_cells``), drawn as markers; None: the non-ok rows.
    """
    (Path(out_dir) / FIG_DIR).mkdir(parents=True, exist_ok=True)
    ok = _plain(frame[frame["status"] == "ok"])
    if ok.empty:
        return []
    if missing is None:
        missing = frame.loc[frame["status"] != "ok"].assign(reason=frame.get("error"))
    missing = _plain(missing) if len(missing) else missing
    styles = series_styles(list(ok["series"]) + list(missing["series"].dropna() if len(missing) else []))
    figures: list[Figure] = []
    with plt.rc_context(_RC), sns.axes_style("whitegrid"):
        figures += _maybe(out_dir, "macs_vs_tokens", _macs_vs_tokens, ok, _look(styles, ok, missing.iloc[:0]))
        contexts = list(ok.groupby(["device", "dtype", "mode"], sort=True))
        for (device, dtype, mode), rows in contexts:
            suffix = f"_{device}-{dtype}-{mode}" if len(contexts) > 1 else ""
            here = missing
            if len(missing):
                here = missing[(missing["device"] == device) & (missing["dtype"] == dtype) & (missing["mode"] == mode)]
            look = _look(styles, rows, here)
            for name, draw in _PER_CONTEXT:
                figures += _maybe(out_dir, name + suffix, draw, rows, look)
        look = _look(styles, ok, missing.iloc[:0])
        figures += _maybe(out_dir, "accuracy_vs_latency", _pareto_plot("latency_ms_median", "latency"), ok, look)
        figures += _maybe(out_dir, "accuracy_vs_macs", _pareto_plot("macs_fvcore", "MACs (fvcore)"), ok, look)
    return figures


def _look(styles: dict, rows: pd.DataFrame, missing: pd.DataFrame) -> Look:
    names = sorted(set(rows["series"]) | (set(missing["series"].dropna()) if len(missing) else set()))
    baselines = sorted(set(rows.loc[rows["is_baseline"].astype(bool), "series"])) if "is_baseline" in rows else []
    names = baselines + [n for n in names if n not in baselines]  # the legend lists the baseline first
    grids = pd.concat([rows[["height", "width", "tokens"]]] +
                      ([missing[["height", "width", "tokens"]]] if len(missing) else [])).dropna().drop_duplicates()
    labels: dict[float, str] = {}
    for (tokens, h, w) in sorted(zip(grids["tokens"], grids["height"], grids["width"])):
        text = f"{int(h)}×{int(w)}"
        labels[float(tokens)] = f"{labels[float(tokens)]}/{text}" if float(tokens) in labels else text
    return Look({n: styles[n].color for n in names}, {n: styles[n].marker for n in names}, labels, missing)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable numeric columns as float64 (matplotlib wants plain arrays); latency also in seconds."""
    frame = frame.copy()
    for column in _NUMERIC + tuple(c for c in frame.columns if c.startswith("acc_") and c != "acc_top1_correct"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("latency_ms_median", "latency_ms_q1", "latency_ms_q3", "model_latency_ms_median"):
        if column in frame.columns:
            frame[column.replace("_ms", "_s")] = frame[column] / 1e3
    if "mem_peak_bytes" in frame.columns:
        frame["mem_peak_mib"] = frame["mem_peak_bytes"] / 2**20
    # facet titles read "batch = 8", not "batch = 8.0"
    frame["batch"] = pd.to_numeric(frame["batch"], errors="coerce").fillna(-1).astype("int64")
    return frame


def _maybe(out_dir: Path, name: str, draw: Callable, rows: pd.DataFrame, look: Look) -> list[Figure]:
    """Run a drawer; it returns (figure, title, description[, missing markers drawn]) or None without data."""
    drawn = draw(rows, look)
    if drawn is None:
        return []
    fig, title, description, *rest = drawn
    _fit_tick_labels(fig)
    png, svg = f"{FIG_DIR}/{name}.png", f"{FIG_DIR}/{name}.svg"
    fig.savefig(Path(out_dir) / png, dpi=110, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(Path(out_dir) / svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return [Figure(name, title, description, png, svg, rest[0] if rest else 0)]


def _token_axis(ax, look: Look) -> None:
    """Log scale ticked at the measured grids, labelled H×W (several grids of one size share a tick)."""
    ax.set_xscale("log")
    ticks = sorted(look.token_labels)
    if ticks:  # every grid of the context, measured or not, so a no-value marker has its tick
        ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
    ax.xaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(mticker.FixedFormatter([look.token_labels[t] for t in ticks]))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.tick_params(axis="x", labelrotation=0, labelsize=8)  # upright; _fit_tick_labels turns them if crowded


def _fit_tick_labels(fig) -> None:
    """Make the drawn tick labels readable: crowded x labels stand vertical, and one that would still touch its
    neighbour is hidden (its tick stays); a panel's y labels that run into the panel on its left widen the gap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        if _overlapping(labels, renderer):
            for t in labels:
                t.set_rotation(90)
            fig.canvas.draw()
            kept = None
            for t in labels:
                box = t.get_window_extent(renderer)
                if kept is not None and box.x0 < kept.x1 + 1:
                    t.set_visible(False)
                else:
                    kept = box
    for _ in range(3):  # each round widens by what the worst label lacks
        lacking = max((_intrusion(ax, other, renderer) for ax in fig.axes for other in fig.axes if ax is not other),
                      default=0.0)
        if lacking <= 0:
            return
        width = float(np.mean([ax.get_window_extent(renderer).width for ax in fig.axes]))
        fig.subplots_adjust(wspace=fig.subplotpars.wspace + (lacking + 6) / width)
        fig.canvas.draw()


def _overlapping(labels, renderer) -> bool:
    boxes = [t.get_window_extent(renderer) for t in labels]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _intrusion(right, left, renderer) -> float:
    """How far (px) the y tick labels of ``right`` reach into ``left`` when ``left`` is the panel beside it."""
    rb, lb = right.get_window_extent(renderer), left.get_window_extent(renderer)
    if not (lb.x1 <= rb.x0 and lb.y0 < rb.y1 and rb.y0 < lb.y1):
        return 0.0
    xs = [t.get_window_extent(renderer).x0 for t in right.get_yticklabels()
          if t.get_visible() and t.get_text() and rb.y0 <= t.get_window_extent(renderer).y0 <= rb.y1]
    return max((lb.x1 + 2 - x for x in xs), default=0.0)


def _si_axis(axis, unit: str) -> None:
    """A log axis with SI-prefixed labels ("1 ms", "10 M"); ticks at 1-2-5 when the data spans under 2 decades."""
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    lo, hi = axis.get_view_interval()
    subs = (1.0, 2.0, 5.0) if lo > 0 and hi / lo < 100 else (1.0,)
    axis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    if unit == "MiB":  # binary units, as the tables: the value itself, no SI prefix
        axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.4g} MiB"))
    else:
        axis.set_major_formatter(mticker.EngFormatter(unit=unit, places=None, sep=" "))
    axis.set_minor_formatter(mticker.NullFormatter())


def _line_band(data: pd.DataFrame, x: str, y: str, lo: str | None = None, hi: str | None = None,
               color=None, label=None, markers: dict | None = None, **_) -> None:
    data = data.dropna(subset=[x, y]).sort_values(x)
    ax = plt.gca()
    ax.plot(data[x], data[y], marker=(markers or {}).get(label, "o"), markersize=5, color=color, label=label)
    if lo and hi:
        ax.fill_between(data[x], data[lo], data[hi], color=color, alpha=0.2, linewidth=0)


def _scatter(data: pd.DataFrame, x: str, y: str, color=None, label=None, markers: dict | None = None, **_) -> None:
    plt.gca().scatter(data[x], data[y], marker=(markers or {}).get(label, "o"), s=30, color=color, label=label)


def _facet_axes(grid) -> dict:
    """(row value, column value) -> axes of a FacetGrid (None for an axis that is not faceted)."""
    rows, cols = grid.row_names or [None], grid.col_names or [None]
    return {(r, c): grid.axes[i, j] for i, r in enumerate(rows) for j, c in enumerate(cols)}


def _draw_missing(ax, cells: pd.DataFrame, look: Look) -> int:
    """A marker per cell without a value at the bottom edge of ``ax``, in its series' colour; returns the count."""
    drawn = 0
    for _, cell in cells.iterrows():
        marker = MISSING_MARKERS.get(str(cell["status"]), MISSING_MARKERS["failed"])[0]
        if pd.isna(cell["tokens"]):
            continue
        ax.scatter([cell["tokens"]], [0.03], transform=ax.get_xaxis_transform(), marker=marker, s=55,
                   color=look.colors.get(cell["series"], "0.3"), clip_on=False, zorder=5)
        drawn += 1
    return drawn


def _missing_legend(statuses) -> dict:
    """Legend entries for the no-value markers present."""
    return {f"no value: {MISSING_MARKERS[s][1]}": Line2D([], [], marker=MISSING_MARKERS[s][0], color="0.3",
                                                          linestyle="none", markersize=7)
            for s in sorted(set(map(str, statuses))) if s in MISSING_MARKERS}


def _facet_vs_tokens(rows: pd.DataFrame, look: Look, y: str, ylabel: str, unit: str, lo=None, hi=None):
    rows = rows.dropna(subset=[y])
    if rows.empty:
        return None
    grid = sns.FacetGrid(rows, row="batch", col="pass", height=2.8, aspect=1.3, margin_titles=True, sharey=False,
                         hue="series", **look.facet)
    grid.map_dataframe(_line_band, x="tokens", y=y, lo=lo, hi=hi, markers=look.markers)
    drawn, statuses = 0, []
    for (batch, pass_), ax in _facet_axes(grid).items():
        cells = look.missing
        if len(cells):
            cells = cells[(cells["batch"] == batch) & (cells["pass"] == pass_)]
            drawn += _draw_missing(ax, cells, look)
            statuses += list(cells["status"])
    for ax in grid.axes.flat:
        _si_axis(ax.yaxis, unit)
        _token_axis(ax, look)
    grid.set_axis_labels("resolution H×W (log tokens)", ylabel)
    extra = {**failed_legend(look.missing, look.colors, look.markers), **_missing_legend(statuses)}
    grid.add_legend(title="attention", legend_data={**grid._legend_data, **extra},
                    label_order=list(grid._legend_data) + list(extra))
    return grid.figure, drawn


def _latency_vs_tokens(rows, look):
    drawn = _facet_vs_tokens(rows, look, "latency_s_median", "latency", "s", "latency_s_q1", "latency_s_q3")
    return drawn and (drawn[0], "Latency vs token count",
                      "Median latency of the whole batch; the band spans q1 to q3 (log-log). Markers at the bottom "
                      "edge: cells without a value (see the list).", drawn[1])


def _memory_vs_tokens(rows, look):
    drawn = _facet_vs_tokens(rows, look, "mem_peak_mib", "peak memory", "MiB")
    return drawn and (drawn[0], "Peak memory vs token count",
                      "Peak memory held during the pass in MiB (2²⁰ bytes, as in the tables): inference for forward, "
                      "training step for forward_backward. Markers at the bottom edge: cells without a value.",
                      drawn[1])


def _macs_vs_tokens(rows, look):
    counts = rows.drop_duplicates(["series", "height", "width"])
    long = counts.melt(id_vars=["series", "tokens"], value_vars=["macs_fvcore", "macs_torch", "macs_analytic"],
                       var_name="counter", value_name="macs").dropna(subset=["macs"])
    long = long[long["macs"] > 0]
    if long.empty:
        return None
    long["counter"] = long["counter"].map({"macs_fvcore": "fvcore", "macs_torch": "torch FLOPs / 2",
                                           "macs_analytic": "analytic"})
    grid = sns.FacetGrid(long, col="counter", hue="series", height=2.8, aspect=1.2, **look.facet)
    grid.map_dataframe(_line_band, x="tokens", y="macs", markers=look.markers)
    for ax in grid.axes.flat:
        _si_axis(ax.yaxis, "")
        _token_axis(ax, look)
    grid.set_axis_labels("resolution H×W (log tokens)", "MACs (batch 1, forward)")
    grid.add_legend(title="attention")
    return (grid.figure, "MACs vs token count", "Multiply-adds of one forward pass at batch 1, by each counter.")


def _latency_vs_flops(rows, look):
    rows = rows.dropna(subset=["work_flops", "latency_s_median"])
    rows = rows[rows["work_flops"] > 0]
    if rows.empty:
        return None
    grid = sns.FacetGrid(rows, col="pass", hue="series", height=3.2, aspect=1.2, **look.facet)
    grid.map_dataframe(_scatter, x="work_flops", y="latency_s_median", markers=look.markers)
    for ax in grid.axes.flat:
        _iso_throughput(ax, rows["work_flops"], rows["latency_s_median"])
        _si_axis(ax.xaxis, "")
        _si_axis(ax.yaxis, "s")
    grid.set_axis_labels("FLOP of the pass (2 · MACs · batch · k)", "latency")
    grid.add_legend(title="attention")
    return (grid.figure, "Latency vs FLOPs",
            "Each point is a cell; dotted lines mark constant achieved FLOP/s "
            "(2 · macs_fvcore · batch · k / latency, k = 1 forward, 3 forward_backward).")


def _iso_throughput(ax, flop: pd.Series, latency_s: pd.Series) -> None:
    """Dotted lines of constant FLOP/s across the data's range, at powers of ten, labelled with SI prefixes."""
    rates = flop / latency_s
    x = np.geomspace(flop.min() / 2, flop.max() * 2, 16)
    y_lo, y_hi = latency_s.min() / 2, latency_s.max() * 2
    name = mticker.EngFormatter(unit="FLOP/s", places=None, sep=" ")
    for rate in 10.0 ** np.arange(np.floor(np.log10(rates.min())), np.ceil(np.log10(rates.max())) + 1):
        y = x / rate
        ax.plot(x, y, ":", color="0.6", linewidth=0.8)
        inside = np.flatnonzero((y > y_lo) & (y < y_hi))
        if len(inside):
            i = inside[len(inside) // 2]
            ax.annotate(name(rate), (x[i], y[i]), fontsize=6, color="0.4", rotation=30)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y_lo, y_hi)


def _fwd_vs_fwdbwd(rows, look):
    keys = ["series", "height", "width", "tokens", "batch"]
    wide = rows.pivot_table(index=keys, columns="pass", values=["latency_ms_median", "mem_peak_mib"],
                            aggfunc="first")
    if "forward" not in wide.columns.get_level_values(1) or "forward_backward" not in wide.columns.get_level_values(1):
        return None
    ratio = (wide.xs("forward_backward", axis=1, level=1) / wide.xs("forward", axis=1, level=1)).reset_index()
    long = ratio.melt(id_vars=keys, value_vars=["latency_ms_median", "mem_peak_mib"], var_name="quantity",
                      value_name="ratio").dropna(subset=["ratio"])
    if long.empty:
        return None
    long["quantity"] = long["quantity"].map({"latency_ms_median": "latency", "mem_peak_mib": "peak memory"})
    grid = sns.FacetGrid(long, row="quantity", col="batch", hue="series", height=2.6, aspect=1.3,
                         margin_titles=True, sharey=False, **look.facet)
    grid.map_dataframe(_line_band, x="tokens", y="ratio", markers=look.markers)
    for ax in grid.axes.flat:
        _token_axis(ax, look)
    grid.set_axis_labels("resolution H×W (log tokens)", "forward+backward / forward")
    grid.add_legend(title="attention")
    return (grid.figure, "Forward vs forward+backward",
            "How much a training step costs relative to inference: latency and peak-memory ratios.")


def _pareto_plot(x: str, xlabel: str) -> Callable:
    def draw(rows: pd.DataFrame, look: Look):
        if "acc_top1" not in rows.columns:
            return None
        x_col, x_label = x, xlabel
        # accuracy rows carry the whole trained model's cost: prefer it to the attention-level cell column
        if f"model_{x}" in rows.columns and rows[f"model_{x}"].notna().any():
            x_col, x_label = f"model_{x}", f"model {xlabel}"
        return _draw_pareto(rows, x_col, x_label, look)

    return draw


def _draw_pareto(rows: pd.DataFrame, x: str, xlabel: str, look: Look):
    unit = "s" if "latency_ms" in x else ""
    column = x.replace("_ms", "_s") if unit == "s" else x  # latency drawn in seconds, so the prefix reads "ms"
    points = rows.dropna(subset=[column, "acc_top1"])
    points = points[points[column] > 0]
    if points.empty:
        return None
    from .acc_uncertainty import accuracy_front, estimates

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    found = estimates(points)
    costs = points.groupby("series", sort=False)[column].median().to_dict()
    for name, part in points.groupby("series", sort=True):
        _scatter(part, column, "acc_top1", color=look.colors.get(name), label=name, markers=look.markers)
        est = found[name]
        low, high = est.interval
        if np.isfinite(low) and np.isfinite(high):  # the 95% interval of the (seed-mean) accuracy
            ax.errorbar([costs[name]], [est.mean], yerr=[[est.mean - low], [high - est.mean]], fmt="none",
                        ecolor=look.colors.get(name), elinewidth=1, capsize=3)
    front = accuracy_front(found, costs)
    ax.step([costs[n] for n in front], [found[n].mean for n in front], where="post", color="0.3", linestyle="--",
            label="Pareto front")
    ax.set(xlabel=xlabel, ylabel="top-1 accuracy (%)")
    _si_axis(ax.xaxis, unit)
    ax.legend(fontsize=7, title="attention")
    return fig, f"Accuracy vs {xlabel}", (f"Top-1 accuracy against {xlabel}; bars: 95% intervals (Wilson); the "
                                          "dashed line is the Pareto front, indistinguishable accuracies counting "
                                          "as equal.")


_PER_CONTEXT = (
    ("latency_vs_tokens", _latency_vs_tokens),
    ("memory_vs_tokens", _memory_vs_tokens),
    ("latency_vs_flops", _latency_vs_flops),
    ("fwd_vs_fwdbwd", _fwd_vs_fwdbwd),
)
