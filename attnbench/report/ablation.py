"""The ablation section: one table per factor, each change from the reference with its interval, a summary that
names the factors with a clear effect, and a small-multiples figure.

A run has factors when its rows carry ``factor_reference`` (``vary``/``vary_product`` in the suite,
:mod:`attnbench.suite.factors`). For each reference (per run) and each of its factors, a table: one row per value, the
reference's row marked, and per metric the variant's value with its change from the reference at the same cell:

- params and MACs (fvcore, batch 1, forward; per H×W when they differ across grids): exact counts, a ratio;
- latency (per H×W · pass): the ratio to the reference with its 95% interval, computed by the report's own
  machinery (:func:`attnbench.report.derive.add_ratios` with the reference as the baseline): the run's paired
  ratio where the variant was timed interleaved with its reference (the engine pairs them), else the ratio of
  medians with a bootstrap interval;
- peak memory (per H×W · pass): a ratio (a deterministic count);
- accuracy (rows with ``acc_top1``): the difference in points with Newcombe's 95% interval for two independent
  proportions (:func:`attnbench.core.stats.proportion_diff_interval`) over the ``acc_val_n`` validation images;
  the trained model's params and MACs beside it when the rows have them.

An interval that holds "no change" (1×, or 0 points) reads **no clear effect**; counts change or stay the same.
A run whose rows are all one reference and its variants gets this section instead of the competitor verdict.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ..core import stats
from ..suite.factors import PRODUCT_JOIN, value_text
from .derive import add_ratios, numeric
from .tables import Section, Table, fmt_count, fmt_num

__all__ = ["Ablation", "Effect", "ablation", "effects", "render_ablation_figures"]

NO_EFFECT = "no clear effect"
_PASS_SHORT = {"forward": "fwd", "forward_backward": "fwd+bwd"}
_CONTEXT = ["device", "dtype", "mode", "batch"]
#: metric key -> (column, title, kind); kind: count (exact, per grid), cell (per grid · pass), accuracy
_METRICS = (
    ("params", "params", "params", "count"),
    ("macs", "macs_fvcore", "MACs", "count"),
    ("latency", "latency_ms_median", "latency", "cell"),
    ("memory", "mem_peak_bytes", "peak memory", "cell"),
    ("model_params", "acc_params", "model params", "model"),
    ("model_macs", "model_macs_fvcore", "model MACs", "model"),
    ("accuracy", "acc_top1", "top-1", "accuracy"),
)


@dataclasses.dataclass(frozen=True)
class Effect:
    """One variant's change in one metric at one cell, against the reference at the same cell.

    ``change`` is a ratio (counts, latency, memory) or a difference in points (accuracy); ``low``/``high`` its 95%
    interval (NaN where there is none: counts are exact); ``clear``: the change is real (a count that differs, an
    interval that excludes no-change)."""

    run_id: str
    reference: str
    factor: str
    value: Any
    label: str
    metric: str
    where: str
    value_text: str
    change: float
    low: float
    high: float
    clear: bool


@dataclasses.dataclass
class Ablation:
    """What the report shows of a run's factors: the summary paragraphs, the tables (one section per reference),
    the figures, and whether it replaces the verdict (every row is one reference or its variants)."""

    summary: list[str]
    sections: list[Section]
    figures: list = dataclasses.field(default_factory=list)
    replaces_verdict: bool = False


def _groups(frame: pd.DataFrame):
    """(run_id, reference label, rows of the reference and its variants) for every reference in the frame."""
    if "factor_reference" not in frame.columns:
        return
    rows = frame[frame["factor_reference"].notna()]
    for (run_id, ref), part in rows.groupby(["run_id", "factor_reference"], sort=False):
        if (part["label"] == ref).any() and part["factor"].notna().any():
            yield str(run_id), str(ref), part


def _compared(part: pd.DataFrame, ref: str) -> pd.DataFrame:
    """The group's rows with every ratio column computed against the reference instead of the run's baseline."""
    sub = part[part["status"] == "ok"].copy()
    sub["is_baseline"] = sub["label"] == ref
    add_ratios(sub)
    return sub


def _factors(part: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(part["factor"].dropna()))


def _config_value(rows: pd.DataFrame, factor: str) -> tuple[bool, Any]:
    """(known, value) of the factor in the config of the rows' first (a product: a mapping of its keys)."""
    config = rows["config"].iloc[0] if len(rows) else {}
    config = config if isinstance(config, dict) else {}
    keys = factor.split(PRODUCT_JOIN)
    if not all(k in config for k in keys):
        return False, None
    return True, (config[keys[0]] if len(keys) == 1 else {k: config[k] for k in keys})


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={value_text(v)}" for k, v in value.items())
    return value_text(value)


def _ordered(values: list[Any]) -> bool:
    """Numbers (not true/false): drawn as lines and tabled in ascending order; anything else is categorical."""
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _levels(part: pd.DataFrame, factor: str, ref: str) -> list[tuple[str, Any, bool]]:
    """(label, value, is reference) of the factor's rows, in value order for an ordered factor (the reference at
    its value, or first when its value is not in its config), else reference first then suite order."""
    variants = part[part["factor"] == factor].drop_duplicates("label")
    # the value from the row's config: pandas turns a column of 2s and nulls into 2.0s
    levels = [(str(r["label"]), _config_value(variants.loc[[i]], factor)[1], False) for i, r in variants.iterrows()]
    known, value = _config_value(part[part["label"] == ref], factor)
    if _ordered([v for _, v, _ in levels]) and known and _ordered([value]):
        return sorted(levels + [(ref, value, True)], key=lambda t: t[1])
    if _ordered([v for _, v, _ in levels]):
        levels.sort(key=lambda t: t[1])
    return [(ref, value if known else "default", True)] + levels


def _grid(h: Any, w: Any) -> str:
    return f"{int(h)}×{int(w)}"


def _cells(sub: pd.DataFrame, kind: str) -> list[tuple]:
    """The columns a metric is shown in: grids for counts, (grid, pass) for per-cell metrics, one for the rest."""
    if kind == "count":
        return sorted({(int(h), int(w)) for h, w in zip(sub["height"], sub["width"])}, key=lambda g: (g[0] * g[1], g))
    if kind == "cell":
        order = {"forward": 0, "forward_backward": 1}
        keys = {(int(h), int(w), p) for h, w, p in zip(sub["height"], sub["width"], sub["pass"])}
        return sorted(keys, key=lambda k: (k[0] * k[1], k[0], order.get(k[2], 9)))
    return [()]


def _where(kind: str, cell: tuple) -> str:
    if kind == "count":
        return _grid(*cell)
    if kind == "cell":
        return f"{_grid(cell[0], cell[1])} {_PASS_SHORT.get(cell[2], cell[2])}"
    return ""


def _select(sub: pd.DataFrame, label: str, kind: str, cell: tuple) -> pd.DataFrame:
    rows = sub[sub["label"] == label]
    if kind == "count":
        rows = rows[(rows["height"] == cell[0]) & (rows["width"] == cell[1])]
    elif kind == "cell":
        rows = rows[(rows["height"] == cell[0]) & (rows["width"] == cell[1]) & (rows["pass"] == cell[2])]
    return rows


def _fmt_value(metric: str, x: float) -> str:
    if x is None or pd.isna(x):
        return "—"
    if metric == "latency":
        return f"{fmt_num(x)} ms"
    if metric == "memory":
        return f"{fmt_num(x / 2**20)} MiB"
    if metric == "accuracy":
        return f"{x:.2f} %"
    return fmt_count(x)


def _factor_text(x: float) -> str:
    """``1.45``, ``12.3``; a change too small for two decimals keeps four (``1.0012``), so it does not read as 1."""
    if x != 1 and round(x, 2) == 1:
        return f"{x:.{min(8, math.ceil(-math.log10(abs(x - 1))) + 1)}f}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _change_text(e: Effect) -> str:
    """``1.45× [1.40–1.50]``, ``no clear effect: 1.01× [0.97–1.04]``, ``+2.10 pt [−0.5, +4.7]``, ``same``."""
    if e.metric == "accuracy":
        text = f"{e.change:+.2f} pt" + (f" [{e.low:+.2f}, {e.high:+.2f}]" if not pd.isna(e.low) else ", no interval")
    elif pd.isna(e.low):
        if e.metric in ("params", "macs", "memory", "model_params", "model_macs"):
            return "same" if e.change == 1 else f"{_factor_text(e.change)}×"
        text = f"{_factor_text(e.change)}×, no interval"
    else:
        text = f"{_factor_text(e.change)}× [{_factor_text(e.low)}–{_factor_text(e.high)}]"
    return text if e.clear or pd.isna(e.low) else f"{NO_EFFECT}: {text}"


def _accuracy(sub: pd.DataFrame, label: str) -> tuple[float, float]:
    """(top-1 in %, validation images) of a label's rows (NaN where absent)."""
    rows = sub[sub["label"] == label]
    top1 = numeric(rows, "acc_top1").dropna()
    n = numeric(rows, "acc_val_n").dropna()
    return (float(top1.iloc[0]) if len(top1) else math.nan, float(n.iloc[0]) if len(n) else math.nan)


def _effect(sub: pd.DataFrame, run_id: str, ref: str, factor: str, value: Any, label: str, metric: str,
            column: str, kind: str, cell: tuple) -> Optional[Effect]:
    """The variant's change at one cell, or None where the variant or the reference has no value there."""
    where = _where(kind, cell)
    if metric == "accuracy":
        (acc, n), (ref_acc, ref_n) = _accuracy(sub, label), _accuracy(sub, ref)
        if pd.isna(acc) or pd.isna(ref_acc):
            return None
        low = high = math.nan
        if not (pd.isna(n) or pd.isna(ref_n)):
            _, lo, hi = stats.proportion_diff_interval(round(acc / 100 * n), int(n), round(ref_acc / 100 * ref_n),
                                                       int(ref_n))
            low, high = 100 * lo, 100 * hi
        clear = not pd.isna(low) and not (low <= 0 <= high)
        return Effect(run_id, ref, factor, value, label, metric, where, _fmt_value(metric, acc), acc - ref_acc,
                      low, high, clear)
    rows, ref_rows = _select(sub, label, kind, cell), _select(sub, ref, kind, cell)
    mine, theirs = numeric(rows, column).dropna(), numeric(ref_rows, column).dropna()
    if not len(mine) or not len(theirs) or theirs.iloc[0] == 0:
        return None
    text = _fmt_value(metric, float(mine.iloc[0]))
    if metric == "latency":
        ratio, low, high = (float(numeric(rows, c).iloc[0]) for c in
                            ("latency_ratio", "latency_ratio_low", "latency_ratio_high"))
        if pd.isna(ratio):
            return None
        clear = not pd.isna(low) and not (low <= 1 <= high)
        return Effect(run_id, ref, factor, value, label, metric, where, text, ratio, low, high, clear)
    ratio = float(mine.iloc[0]) / float(theirs.iloc[0])
    return Effect(run_id, ref, factor, value, label, metric, where, text, ratio, math.nan, math.nan, ratio != 1)


def _reference_text(sub: pd.DataFrame, ref: str, metric: str, column: str, kind: str, cell: tuple) -> str:
    """The reference's own value (latency with its 95% interval, accuracy with its Wilson interval)."""
    if metric == "accuracy":
        acc, n = _accuracy(sub, ref)
        if pd.isna(acc):
            return "—"
        if pd.isna(n):
            return _fmt_value(metric, acc)
        lo, hi = stats.proportion_interval(round(acc / 100 * n), int(n))
        return f"{acc:.2f} % [{100 * lo:.2f}–{100 * hi:.2f}]"
    rows = _select(sub, ref, kind, cell)
    values = numeric(rows, column).dropna()
    if not len(values):
        return "—"
    if metric == "latency":
        lo, hi = numeric(rows, "latency_ci_low").iloc[0], numeric(rows, "latency_ci_high").iloc[0]
        if not pd.isna(lo) and lo != hi:
            return f"{fmt_num(values.iloc[0])} ms [{fmt_num(lo)}–{fmt_num(hi)}]"
    return _fmt_value(metric, float(values.iloc[0]))


def _metric_columns(sub: pd.DataFrame) -> list[tuple[str, str, str, str, list[tuple]]]:
    """(metric, column, title, kind, cells) of every metric the group's rows have, counts collapsed to one column
    when they are the same at every grid."""
    out = []
    for metric, column, title, kind in _METRICS:
        values = numeric(sub, column)
        if values.isna().all():
            continue
        cells = _cells(sub, kind)
        if kind == "count" and len(cells) > 1:
            per_label = sub.assign(_v=values).groupby("label")["_v"].nunique(dropna=True)
            if (per_label <= 1).all():
                cells = cells[:1]
        out.append((metric, column, title, "cell" if kind == "cell" else kind, cells))
    return out


def effects(frame: pd.DataFrame) -> list[Effect]:
    """Every variant's change in every metric at every cell, against its reference (the tables' and the summary's
    numbers; also what the figure draws)."""
    out = []
    for run_id, ref, part in _groups(frame):
        for ctx, sub in _compared(part, ref).groupby(_CONTEXT, sort=False, dropna=False):
            for factor in _factors(sub):
                for label, value, is_ref in _levels(sub, factor, ref):
                    if is_ref:
                        continue
                    for metric, column, _, kind, cells in _metric_columns(sub):
                        for cell in cells:
                            e = _effect(sub, run_id, ref, factor, value, label, metric, column, kind, cell)
                            if e is not None:
                                out.append(e)
    return out


def _context_text(ctx: tuple) -> str:
    device, dtype, mode, batch = ctx
    return f"{device} · {dtype} · {mode} · batch {batch}"


def _tables(run_id: str, ref: str, part: pd.DataFrame, several_runs: bool) -> list[Table]:
    tables = []
    compared = _compared(part, ref)
    contexts = list(compared.groupby(_CONTEXT, sort=False, dropna=False))
    for ctx, sub in contexts:
        metrics = _metric_columns(sub)
        header = ["value"] + [f"{title} {_where(kind, cell)}".strip() for _, _, title, kind, cells in metrics
                              for cell in cells]
        for factor in _factors(sub):
            body, bold = [], []
            for label, value, is_ref in _levels(sub, factor, ref):
                name = _text(value) + (" (reference)" if is_ref else "")
                row = [name]
                for metric, column, _, kind, cells in metrics:
                    for cell in cells:
                        if is_ref:
                            row.append(_reference_text(sub, ref, metric, column, kind, cell))
                            continue
                        e = _effect(sub, run_id, ref, factor, value, label, metric, column, kind, cell)
                        if e is None:
                            row.append("—")
                        elif metric == "latency":  # medians of different cells met different load: the ratio
                            text = _change_text(e)     # (paired: measured in the same rounds) is the answer
                            row.append(f"{text.split(': ', 1)[1]} ({NO_EFFECT})" if text.startswith(NO_EFFECT)
                                       else text)
                        else:
                            row.append(f"{e.value_text} ({_change_text(e)})")
                body.append(row)
                bold.append([is_ref] * len(row))
            where = (f" — run `{run_id}`" if several_runs else "") + \
                (f" — {_context_text(ctx)}" if len(contexts) > 1 else "")
            tables.append(Table(f"{factor} (reference `{ref}`){where}", header, body, numeric=True, bold=bold))
    return tables


#: the summary's and the figure's order: what was trained first, then time, memory and the counts
_SUMMARY_METRICS = (("accuracy", "top-1"), ("latency", "latency"), ("memory", "peak memory"), ("macs", "MACs"),
                    ("params", "params"), ("model_macs", "model MACs"), ("model_params", "model params"))


def _largest(found: list[Effect]) -> Effect:
    if found[0].metric == "accuracy":
        return max(found, key=lambda e: abs(e.change))
    return max(found, key=lambda e: abs(math.log(e.change)) if e.change > 0 else math.inf)


def _summary(run_id: str, ref: str, found: list[Effect], several_runs: bool) -> str:
    """One paragraph: per metric, the factors with a clear effect (each with its largest change) and those
    without (counts, which are exact: the factors that change them and those that do not)."""
    factors = list(dict.fromkeys(e.factor for e in found))
    parts = []
    for metric, title in _SUMMARY_METRICS:
        mine = [e for e in found if e.metric == metric]
        if not mine:
            continue
        clear = [f for f in factors if any(e.clear and e.factor == f for e in mine)]
        unclear = [f for f in factors if f not in clear and any(e.factor == f for e in mine)]
        texts = []
        for f in clear:
            e = _largest([x for x in mine if x.factor == f and x.clear])
            at = f" at {e.where}" if e.where else ""
            texts.append(f"`{f}` (largest: {_text(e.value)} → {_change_text(e)}{at})")
        exact = metric not in ("latency", "accuracy")  # counts change or do not; intervals can be unclear
        changes, none = ("changes with", "no change") if exact else ("clear effects from", NO_EFFECT)
        sentence = f"**{title}**: " + (f"{changes} " + ", ".join(texts) if texts else none)
        if clear and unclear:
            sentence += f"; {none} from " + ", ".join(f"`{f}`" for f in unclear)
        parts.append(sentence)
    run = f" in run `{run_id}`" if several_runs else ""
    return (f"Against the reference `{ref}`{run}, one factor at a time (95% intervals; counts are exact): "
            + "; ".join(parts) + ".")


def ablation(frame: pd.DataFrame) -> Optional[Ablation]:
    """The ablation section of a report frame (``derive.add_derived``), or None when no run has factors."""
    groups = list(_groups(frame))
    if not groups:
        return None
    several = frame["run_id"].nunique() > 1
    found = effects(frame)
    summary = [_summary(run_id, ref, [e for e in found if (e.run_id, e.reference) == (run_id, ref)], several)
               for run_id, ref, _ in groups]
    sections = [Section(f"ablation-{ref}", f"Factors of `{ref}`" + (f" (run `{run_id}`)" if several else ""),
                        "One table per factor, one row per value; the reference row is bold and shows its own values "
                        "(latency: median [95% interval]; accuracy: top-1 [Wilson 95% interval]). Each other row: the "
                        "variant's value and, in brackets, its change from the reference at the same cell — a ratio, "
                        "or the top-1 difference in points with Newcombe's 95% interval. Latency shows the ratio "
                        "alone, with its 95% interval: paired where the variant was timed interleaved with the "
                        "reference, so load that hit both cancels. "
                        f"`{NO_EFFECT}`: the interval holds no change; `same`: an identical count.",
                        _tables(run_id, ref, part, several))
                for run_id, ref, part in groups]
    ok = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    refs = ok["factor_reference"] if "factor_reference" in ok.columns else pd.Series(dtype=object)
    replaces = bool(len(ok)) and refs.notna().all() and ok.groupby("run_id")["factor_reference"].nunique().max() == 1
    return Ablation(summary, sections, replaces_verdict=bool(replaces))


# ------------------------------------------------------------------------------------------------------ figure

def render_ablation_figures(frame: pd.DataFrame, out_dir: Path) -> list:
    """One small-multiples figure per reference: a column per factor, a row per metric; x the factor's value
    (ordered factors as lines in value order, categorical ones as points), y the change from the reference (a
    ratio; accuracy: points) with its interval; one line per H×W · pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker

    from .figures import FIG_DIR, Figure, _RC

    found = effects(frame)
    figures = []
    for run_id, ref, part in _groups(frame):
        mine = [e for e in found if (e.run_id, e.reference) == (run_id, ref)]
        if not mine:
            continue
        factors = list(dict.fromkeys(e.factor for e in mine))
        metrics = [(m, t) for m, t in _SUMMARY_METRICS if any(e.metric == m for e in mine)]
        with plt.rc_context(_RC):
            fig, axes = plt.subplots(len(metrics), len(factors), figsize=(2.4 * len(factors) + 0.8,
                                                                          1.6 * len(metrics) + 0.8),
                                     squeeze=False, sharey="row", sharex="col")
            wheres = list(dict.fromkeys(e.where for e in mine if e.where))
            colors = {w: plt.get_cmap("tab10")(i % 10) for i, w in enumerate(wheres)}
            for j, factor in enumerate(factors):
                levels = _levels(part[part["status"] == "ok"], factor, ref)
                ordered = _ordered([v for _, v, is_ref in levels if not (is_ref and v == "default")])
                xs = {label: i for i, (label, _, _) in enumerate(levels)}
                for i, (metric, title) in enumerate(metrics):
                    ax = axes[i][j]
                    no_change = 0.0 if metric == "accuracy" else 1.0
                    ax.axhline(no_change, color="0.5", linewidth=0.8, linestyle=":")
                    for where in dict.fromkeys(e.where for e in mine if e.metric == metric):
                        pts = sorted(((xs[e.label], e) for e in mine if e.metric == metric and e.factor == factor
                                      and e.where == where and e.label in xs), key=lambda t: t[0])
                        ref_x = [xs[label] for label, _, is_ref in levels if is_ref]
                        points = [(x, e.change, e.low, e.high) for x, e in pts] + [(x, no_change, no_change, no_change)
                                                                                   for x in ref_x]
                        points.sort()
                        if not pts:
                            continue
                        x = [p[0] for p in points]
                        y = [p[1] for p in points]
                        err = [[max(p[1] - p[2], 0) if not pd.isna(p[2]) else 0 for p in points],
                               [max(p[3] - p[1], 0) if not pd.isna(p[3]) else 0 for p in points]]
                        color = colors.get(where, "0.2")
                        ax.errorbar(x, y, yerr=err, color=color, marker="o", markersize=3.5, capsize=2,
                                     linewidth=1.2 if ordered else 0, elinewidth=0.8,
                                     label=where or "_nolegend_")  # one series per panel: no legend
                    for x in [xs[label] for label, _, is_ref in levels if is_ref]:
                        ax.axvline(x, color="0.75", linewidth=3, zorder=0)
                    if metric != "accuracy":  # linear: the ratios of an ablation stay within a few ×
                        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.4g}×"))
                    ax.set_xticks(range(len(levels)))
                    # a product's tick is its values in key order (the title names the keys): 2/4
                    ax.set_xticklabels(["/".join(value_text(x) for x in v.values()) if isinstance(v, dict)
                                        else _text(v) for _, v, _ in levels], fontsize=7)
                    ax.tick_params(axis="both", which="both", labelsize=6.5)
                    if i == 0:
                        ax.set_title(factor.replace(PRODUCT_JOIN, " / "), fontsize=9)
                    if j == 0:
                        ax.set_ylabel(f"{title}\n" + ("Δ pt" if metric == "accuracy" else "× reference"),
                                      fontsize=8)
            handles = {}
            for ax in axes.flat:
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    handles.setdefault(lab, h)
            if handles:
                fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 6),
                           fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.02))
            fig.tight_layout(rect=(0, 0.05, 1, 1))
            name = f"ablation_{ref}".replace("=", "_")
            png, svg = f"{FIG_DIR}/{name}.png", f"{FIG_DIR}/{name}.svg"
            (Path(out_dir) / FIG_DIR).mkdir(parents=True, exist_ok=True)
            fig.savefig(Path(out_dir) / png, dpi=110, bbox_inches="tight", metadata={"Software": None})
            fig.savefig(Path(out_dir) / svg, bbox_inches="tight", metadata={"Date": None})
            plt.close(fig)
        figures.append(Figure(name, f"Factors of {ref}",
                              "Each metric against each factor's value, as a change from the reference (the grey "
                              "band; dotted: no change): ratios, accuracy in points, bars the 95% "
                              "intervals; ordered factors as lines, categorical ones as points; one colour per "
                              "H×W · pass.", png, svg))
    return figures
