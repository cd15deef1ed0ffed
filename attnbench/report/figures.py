"""The report's figures (seaborn on matplotlib's Agg backend), each saved as PNG and SVG under ``figures/``.

Figures: latency and peak memory vs token count (log-log, the IQR as a band, faceted by batch and pass), MACs vs
token count (the three counters side by side), latency vs FLOPs with lines of constant achieved GFLOP/s, the
forward+backward / forward ratio of latency and memory, and, when rows carry ``acc_top1``, accuracy vs latency and
accuracy vs MACs with the Pareto front. A run with several (device, dtype, mode) combinations gets one file per
combination, suffixed ``_<device>-<dtype>-<mode>``. Only successful cells (status ``ok``) are drawn.
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

__all__ = ["Figure", "pareto_front", "render_figures"]

FIG_DIR = "figures"
_RC = {"svg.hashsalt": "attnbench", "svg.fonttype": "none", "figure.max_open_warning": 0}
_NUMERIC = ("height", "width", "tokens", "latency_ms_median", "latency_ms_q1", "latency_ms_q3",
            "mem_peak_bytes", "macs_fvcore", "macs_torch", "macs_analytic", "work_flops", "achieved_gflops_s")


@dataclasses.dataclass(frozen=True)
class Figure:
    """A saved figure; ``png`` and ``svg`` are paths relative to the report directory."""

    name: str
    title: str
    description: str
    png: str
    svg: str


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats: none has lower-or-equal cost and a higher score.

    Args:
        cost: (N,) lower is better (latency, MACs).
        score: (N,) higher is better (accuracy).
    """
    cost, score = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    order = np.lexsort((-score, cost))
    mask = np.zeros(len(cost), dtype=bool)
    best = -np.inf
    for i in order:
        if score[i] > best:
            mask[i], best = True, score[i]
    return mask


def render_figures(frame: pd.DataFrame, out_dir: Path) -> list[Figure]:
    """Draw every figure the rows allow into ``out_dir/figures``; figures without data are left out."""
    (Path(out_dir) / FIG_DIR).mkdir(parents=True, exist_ok=True)
    ok = _plain(frame[frame["status"] == "ok"])
    if ok.empty:
        return []
    series = list(dict.fromkeys(list(ok.loc[ok["is_baseline"], "series"]) + list(ok["series"])))
    style = {"hue_order": series, "palette": dict(zip(series, sns.color_palette("tab10", len(series))))}
    figures: list[Figure] = []
    with plt.rc_context(_RC), sns.axes_style("whitegrid"):
        figures += _maybe(out_dir, "macs_vs_tokens", _macs_vs_tokens, ok, style)
        contexts = list(ok.groupby(["device", "dtype", "mode"], sort=True))
        for (device, dtype, mode), rows in contexts:
            suffix = f"_{device}-{dtype}-{mode}" if len(contexts) > 1 else ""
            for name, draw in _PER_CONTEXT:
                figures += _maybe(out_dir, name + suffix, draw, rows, style)
        figures += _maybe(out_dir, "accuracy_vs_latency", _pareto_plot("latency_ms_median", "latency (ms)"), ok, style)
        figures += _maybe(out_dir, "accuracy_vs_macs", _pareto_plot("macs_fvcore", "MACs (fvcore)"), ok, style)
    return figures


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable numeric columns as float64 (matplotlib wants plain arrays)."""
    frame = frame.copy()
    for column in _NUMERIC + tuple(c for c in frame.columns if c.startswith("acc_")):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["mem_peak_mib"] = frame["mem_peak_bytes"] / 2**20
    # facet titles read "batch = 8", not "batch = 8.0"
    frame["batch"] = pd.to_numeric(frame["batch"], errors="coerce").fillna(-1).astype("int64")
    return frame


def _maybe(out_dir: Path, name: str, draw: Callable, rows: pd.DataFrame, style: dict) -> list[Figure]:
    """Run a drawer; it returns (figure, title, description) or None when the rows lack its data."""
    drawn = draw(rows, style)
    if drawn is None:
        return []
    fig, title, description = drawn
    png, svg = f"{FIG_DIR}/{name}.png", f"{FIG_DIR}/{name}.svg"
    fig.savefig(Path(out_dir) / png, dpi=110, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(Path(out_dir) / svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return [Figure(name, title, description, png, svg)]


def _log(axes, x: bool, y: bool) -> None:
    """Log scales with plain tick labels ("200", "1e+05"): the default mathtext labels cost ~1 s per figure."""
    for ax in axes:
        for on, axis, set_scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
            if on:
                set_scale("log")
                label = mticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4))
                axis.set_major_formatter(label)
                axis.set_minor_formatter(label)


def _line_band(data: pd.DataFrame, x: str, y: str, lo: str | None = None, hi: str | None = None,
               color=None, label=None, **_) -> None:
    data = data.dropna(subset=[x, y]).sort_values(x)
    ax = plt.gca()
    ax.plot(data[x], data[y], marker="o", markersize=4, color=color, label=label)
    if lo and hi:
        ax.fill_between(data[x], data[lo], data[hi], color=color, alpha=0.25, linewidth=0)


def _facet_vs_tokens(rows: pd.DataFrame, style: dict, y: str, ylabel: str, lo=None, hi=None):
    rows = rows.dropna(subset=[y])
    if rows.empty:
        return None
    grid = sns.FacetGrid(rows, row="batch", col="pass", hue="series", height=2.8, aspect=1.3,
                         margin_titles=True, sharey=False, **style)
    grid.map_dataframe(_line_band, x="tokens", y=y, lo=lo, hi=hi)
    _log(grid.axes.flat, x=True, y=True)
    grid.set_axis_labels("tokens (H·W)", ylabel)
    grid.add_legend(title="attention")
    return grid.figure


def _latency_vs_tokens(rows, style):
    fig = _facet_vs_tokens(rows, style, "latency_ms_median", "latency (ms)", "latency_ms_q1", "latency_ms_q3")
    return fig and (fig, "Latency vs token count",
                    "Median latency of the whole batch; the band spans q1 to q3 (log-log).")


def _memory_vs_tokens(rows, style):
    fig = _facet_vs_tokens(rows, style, "mem_peak_mib", "peak memory (MiB)")
    return fig and (fig, "Peak memory vs token count",
                    "Peak bytes held during the pass: inference for forward, training step for forward_backward.")


def _macs_vs_tokens(rows, style):
    counts = rows.drop_duplicates(["series", "height", "width"])
    long = counts.melt(id_vars=["series", "tokens"], value_vars=["macs_fvcore", "macs_torch", "macs_analytic"],
                       var_name="counter", value_name="macs").dropna(subset=["macs"])
    long = long[long["macs"] > 0]
    if long.empty:
        return None
    long["counter"] = long["counter"].map({"macs_fvcore": "fvcore", "macs_torch": "torch FLOPs / 2",
                                           "macs_analytic": "analytic"})
    grid = sns.FacetGrid(long, col="counter", hue="series", height=2.8, aspect=1.2, **style)
    grid.map_dataframe(_line_band, x="tokens", y="macs")
    _log(grid.axes.flat, x=True, y=True)
    grid.set_axis_labels("tokens (H·W)", "MACs (batch 1, forward)")
    grid.add_legend(title="attention")
    return (grid.figure, "MACs vs token count", "Multiply-adds of one forward pass at batch 1, by each counter.")


def _latency_vs_flops(rows, style):
    rows = rows.dropna(subset=["work_flops", "latency_ms_median"])
    rows = rows[rows["work_flops"] > 0].assign(gflop=lambda d: d["work_flops"] / 1e9)
    if rows.empty:
        return None
    grid = sns.FacetGrid(rows, col="pass", hue="series", height=3.2, aspect=1.2, **style)
    grid.map_dataframe(sns.scatterplot, x="gflop", y="latency_ms_median", s=25)
    _log(grid.axes.flat, x=True, y=True)
    for ax in grid.axes.flat:
        _iso_throughput(ax, rows["gflop"], rows["latency_ms_median"])
    grid.set_axis_labels("GFLOP of the pass (2 · MACs · batch · k)", "latency (ms)")
    grid.add_legend(title="attention")
    return (grid.figure, "Latency vs FLOPs",
            "Each point is a cell; dotted lines mark constant achieved GFLOP/s "
            "(2 · macs_fvcore · batch · k / latency, k = 1 forward, 3 forward_backward).")


def _iso_throughput(ax, gflop: pd.Series, latency_ms: pd.Series) -> None:
    """Dotted lines of constant GFLOP/s across the data's range, at powers of ten."""
    rates = gflop / (latency_ms * 1e-3)
    x = np.geomspace(gflop.min() / 2, gflop.max() * 2, 16)
    y_lo, y_hi = latency_ms.min() / 2, latency_ms.max() * 2
    for rate in 10.0 ** np.arange(np.floor(np.log10(rates.min())), np.ceil(np.log10(rates.max())) + 1):
        y = x / rate * 1e3
        ax.plot(x, y, ":", color="0.6", linewidth=0.8)
        inside = np.flatnonzero((y > y_lo) & (y < y_hi))
        if len(inside):
            i = inside[len(inside) // 2]
            ax.annotate(f"{rate:g} GFLOP/s", (x[i], y[i]), fontsize=6, color="0.4", rotation=30)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y_lo, y_hi)


def _fwd_vs_fwdbwd(rows, style):
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
                         margin_titles=True, sharey=False, **style)
    grid.map_dataframe(_line_band, x="tokens", y="ratio")
    _log(grid.axes.flat, x=True, y=False)
    grid.set_axis_labels("tokens (H·W)", "forward+backward / forward")
    grid.add_legend(title="attention")
    return (grid.figure, "Forward vs forward+backward",
            "How much a training step costs relative to inference: latency and peak-memory ratios.")


def _pareto_plot(x: str, xlabel: str) -> Callable:
    def draw(rows: pd.DataFrame, style: dict):
        if "acc_top1" not in rows.columns:
            return None
        x_col, x_label = x, xlabel
        # accuracy rows carry the whole trained model's cost: prefer it to the attention-level cell column
        if f"model_{x}" in rows.columns and rows[f"model_{x}"].notna().any():
            x_col, x_label = f"model_{x}", f"model {xlabel}"
        return _draw_pareto(rows, x_col, x_label, style)

    return draw


def _draw_pareto(rows: pd.DataFrame, x: str, xlabel: str, style: dict):
    points = rows.dropna(subset=[x, "acc_top1"])
    points = points[points[x] > 0]
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sns.scatterplot(points, x=x, y="acc_top1", hue="series", ax=ax, s=40, **style)
    front = points[pareto_front(points[x].to_numpy(), points["acc_top1"].to_numpy())].sort_values(x)
    ax.step(front[x], front["acc_top1"], where="post", color="0.3", linestyle="--", label="Pareto front")
    ax.set(xlabel=xlabel, ylabel="top-1 accuracy (%)")
    _log([ax], x=True, y=False)
    ax.legend(fontsize=7, title="attention")
    return fig, f"Accuracy vs {xlabel}", f"Top-1 accuracy against {xlabel}; the dashed line is the Pareto front."


_PER_CONTEXT = (
    ("latency_vs_tokens", _latency_vs_tokens),
    ("memory_vs_tokens", _memory_vs_tokens),
    ("latency_vs_flops", _latency_vs_flops),
    ("fwd_vs_fwdbwd", _fwd_vs_fwdbwd),
)
