"""Compare two runs cell by cell (matched by ``cell_id``) and decide whether the new one regressed.

The rule (exit code 1 when any holds, else 0):

- a deterministic count changed: ``params``, ``params_trainable``, ``macs_fvcore``, ``flops_torch``,
  ``macs_analytic`` or any ``macs_analytic_<part>`` — an improvement too, since a count moves only when the code
  or the counting did, and the expected numbers must then be refreshed on purpose (PyTorch's PR-time benchmark
  rule, see ../shared/design/benchmarking-practice.md §5);
- a latency got worse by more than the threshold **and** the change is statistically clear, tested on the raw
  samples (``latency_samples_ms``) of both runs with :func:`attnbench.stats.detect_change`: the 95% bootstrap
  interval of the ratio of medians new/base lies wholly above 1 + threshold, and the two-sided Mann-Whitney U
  test gives p < 0.01. A slowdown past the threshold that is not clear is reported (``slower?``) but does not
  fail. Rows of runs made before raw samples were stored fall back to "the IQRs do not overlap";
- a cell that was ``ok`` in the base is ``failed``/``oom``/``skipped`` in the new run (``broke``).

Peak memory is shown with its ratio (``higher``/``lower`` past the threshold) but does not fail the comparison.
Where both runs timed a cell interleaved with their baseline, the two paired ratios are shown side by side
(``ratio_to_<baseline>``: ``agree``, ``tie`` when an interval holds 1, ``flipped`` when both are clear and opposite),
which is how two runs of one suite are checked for agreement; this never fails the comparison.
Cells present in only one run are listed and do not fail it. Two runs with no ``cell_id`` in common are matched by
content (every identity column but the suite name: a renamed or copied suite), and the output says so; with no
cell in common even then (different suites, or a filter that matched nothing) it is an error (exit 2), never a
pass. Reads only the results files; never
imports torch.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from . import stats
from .errors import UserError
from .report.load import load_runs
from .report.markdown import md_table
from .report.tables import Table, fmt_num

__all__ = ["COUNT_COLUMNS", "Comparison", "compare_runs", "render"]

#: exact counts; any change fails
COUNT_COLUMNS = ("params", "params_trainable", "macs_fvcore", "flops_torch", "macs_analytic")
#: verdicts that make the comparison fail
FAILING = frozenset({"changed", "slower", "broke"})
_AXES = ("dtype", "device", "mode")


@dataclasses.dataclass
class Comparison:
    """The result of :func:`compare_runs`.

    Attributes:
        rows: one row per (cell, metric): label, resolution, batch, pass, dtype, device, mode, metric, base, new,
            ratio, verdict (base/new/ratio as display strings).
        only_base, only_new: descriptions ("label H×W batch pass ...") of cells found in one run only.
        threshold: the latency/memory threshold as a fraction (0.05 = 5%).
    """

    rows: pd.DataFrame
    only_base: list[str]
    only_new: list[str]
    threshold: float
    note: str = ""  # how the cells were matched, when not by cell_id

    @property
    def regressions(self) -> int:
        return int(self.rows["verdict"].isin(FAILING).sum()) if len(self.rows) else 0

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def compare_runs(base_dir: str | Path, new_dir: str | Path, threshold: float = 0.20) -> Comparison:
    """Compare ``new_dir`` against ``base_dir``; ``threshold`` is a fraction (0.20 = 20%, the CLI default).

    Raises:
        attnbench.errors.UserError: a directory is missing or holds no results.
    """
    base = load_runs([base_dir]).frame.set_index("cell_id", drop=False)
    new = load_runs([new_dir]).frame.set_index("cell_id", drop=False)
    common = [c for c in base.index if c in new.index]
    note = ""
    if not common:  # suites renamed (or copied under another name): the same cells by content
        base, new = (_by_content(frame) for frame in (base, new))
        common = [c for c in base.index if c in new.index]
        if common:
            note = (f"cells matched by content: the suite names differ ({_names(base)} vs {_names(new)}); label, "
                    "config, shape, batch, dtype, device, pass and mode are equal")
    if not common:
        suites = sorted(set(base["suite"].astype(str)) | set(new["suite"].astype(str)))
        raise UserError(
            f"no comparable cells: {base_dir} ({len(base)} cells) and {new_dir} ({len(new)} cells) share none "
            f"(suites: {', '.join(suites)}); cells match on label, config, shape, batch, dtype, device, pass and "
            "mode (and the suite name when any cell matches with it), so compare two runs of the same cells")
    rows = []
    for cell in sorted(common, key=lambda c: _order(base.loc[c])):
        rows += _compare_cell(base.loc[cell], new.loc[cell], threshold)
    columns = ["label", "resolution", "batch", "pass", *_AXES, "metric", "base", "new", "ratio", "verdict"]
    return Comparison(
        rows=pd.DataFrame(rows, columns=columns),
        only_base=[_describe(base.loc[c]) for c in base.index if c not in new.index],
        only_new=[_describe(new.loc[c]) for c in new.index if c not in base.index],
        threshold=threshold,
        note=note,
    )


#: a cell's identity without the suite name (cells.Cell.identity less ``suite``)
_CONTENT = ("kind", "attention", "label", "config", "height", "width", "batch", "dtype", "device", "pass", "mode")


def _by_content(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` indexed by its cells' content (every identity column but the suite name)."""
    import json

    def key(row: pd.Series) -> str:
        values = {c: row.get(c) for c in _CONTENT}
        values["kind"] = values["kind"] if isinstance(values["kind"], str) else "attention"
        return json.dumps(values, sort_keys=True, default=str)

    return frame.set_index(frame.apply(key, axis=1), drop=False)


def _names(frame: pd.DataFrame) -> str:
    return ", ".join(repr(n) for n in sorted(set(frame["suite"].astype(str))))


def _order(row: pd.Series) -> tuple:
    return (str(row["label"]), _num(row["tokens"]), _num(row["batch"]), str(row["pass"]), str(row["dtype"]),
            str(row["device"]), str(row["mode"]))


def _num(value) -> float:
    return math.nan if pd.isna(value) else float(value)


def _describe(row: pd.Series) -> str:
    return (f"{row['label']} {row['height']}×{row['width']} batch {row['batch']} {row['pass']} "
            f"{row['dtype']} {row['device']} {row['mode']} ({row['status']})")


def _compare_cell(b: pd.Series, n: pd.Series, threshold: float) -> list[dict]:
    ident = {"label": b["label"], "resolution": f"{b['height']}×{b['width']}", "batch": b["batch"],
             "pass": b["pass"], **{axis: b[axis] for axis in _AXES}}
    out = []

    def add(metric: str, base: str, new: str, ratio: float, verdict: str, digits: int = 3) -> None:
        ratio_text = "" if pd.isna(ratio) else f"{ratio:.{digits}f}×"
        out.append({**ident, "metric": metric, "base": base, "new": new, "ratio": ratio_text, "verdict": verdict})
        return out[-1]

    if b["status"] != n["status"]:
        verdict = "broke" if b["status"] == "ok" else "fixed" if n["status"] == "ok" else "changed status"
        add("status", str(b["status"]), str(n["status"]), math.nan, verdict)
    parts = sorted(c for c in set(b.index) | set(n.index) if str(c).startswith("macs_analytic_"))
    for column in (*COUNT_COLUMNS, *parts):
        bv, nv = _num(b.get(column)), _num(n.get(column))
        if math.isnan(bv) and math.isnan(nv):
            continue
        verdict = _count_verdict(bv, nv)
        if column in COUNT_COLUMNS or verdict != "same":  # per-part rows only when they moved
            # counts move by a few units out of millions: six decimals keep a change visible in the ratio
            add(column, _int_text(bv), _int_text(nv), nv / bv if bv else math.nan, verdict, digits=6)
    _compare_latency(b, n, threshold, add)
    _compare_paired(b, n, add)
    bm, nm = _num(b.get("mem_peak_bytes")), _num(n.get("mem_peak_bytes"))
    if not (math.isnan(bm) and math.isnan(nm)):
        ratio = nm / bm if bm else math.nan
        verdict = _missing(bm, nm) or ("higher" if ratio > 1 + threshold else
                                       "lower" if ratio < 1 - threshold else "same")
        add("mem_peak_mib", fmt_num(bm / 2**20), fmt_num(nm / 2**20), ratio, verdict)
    return out


def _count_verdict(base: float, new: float) -> str:
    return _missing(base, new) or ("same" if base == new else "changed")


def _missing(base: float, new: float) -> str | None:
    if math.isnan(new):
        return "missing in new"
    if math.isnan(base):
        return "missing in base"
    return None


def _int_text(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}" if value == int(value) else f"{value:g}"


def _samples(row: pd.Series) -> list[float]:
    value = row.get("latency_samples_ms")
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else []


def _compare_latency(b: pd.Series, n: pd.Series, threshold: float, add) -> None:
    bm, nm = _num(b.get("latency_ms_median")), _num(n.get("latency_ms_median"))
    if math.isnan(bm) and math.isnan(nm):
        return
    verdict = _missing(bm, nm)
    if verdict is not None:
        add("latency_ms", _latency_text(b), _latency_text(n), math.nan, verdict)
        return
    base_samples, new_samples = _samples(b), _samples(n)
    if len(base_samples) >= 2 and len(new_samples) >= 2:
        change = stats.detect_change(base_samples, new_samples, threshold)
        r = change.ratio
        out = add("latency_ms", _latency_text(b), _latency_text(n), r.estimate, change.verdict)
        out["ratio"] += f" [{r.low:.3f}–{r.high:.3f}] p={change.p_value:.2g}"
        return
    # runs without raw samples: the older rule, IQRs apart
    ratio = nm / bm if bm else math.nan
    separated_up = _num(n.get("latency_ms_q1")) > _num(b.get("latency_ms_q3"))
    separated_down = _num(n.get("latency_ms_q3")) < _num(b.get("latency_ms_q1"))
    if ratio > 1 + threshold:
        verdict = "slower" if separated_up else "slower?"
    elif ratio < 1 - threshold:
        verdict = "faster" if separated_down else "faster?"
    else:
        verdict = "same"
    add("latency_ms", _latency_text(b), _latency_text(n), ratio, verdict)


def _paired_text(row: pd.Series) -> str:
    return (f"{_num(row['paired_ratio']):.3f}× [{_num(row['paired_ratio_low']):.3f}–"
            f"{_num(row['paired_ratio_high']):.3f}]")


def _side(row: pd.Series) -> str:
    """Where the cell's paired ratio to the baseline lies: 'faster', 'slower' (interval clear of 1) or 'tie'."""
    return {"below": "faster", "above": "slower", "tie": "tie"}[stats.Interval(
        _num(row["paired_ratio"]), _num(row["paired_ratio_low"]), _num(row["paired_ratio_high"]), 0).compare_to(1.0)]


def _compare_paired(b: pd.Series, n: pd.Series, add) -> None:
    """The ratio to the baseline, measured interleaved in each run: do the two runs order the cell and the
    baseline the same way? ``agree`` (same side of 1 in both), ``tie`` (an interval holds 1), ``flipped`` (clear
    and opposite: the timing is not to be trusted). Informational: never fails the comparison."""
    if any(math.isnan(_num(r.get("paired_ratio"))) for r in (b, n)):
        return
    sides = _side(b), _side(n)
    verdict = "tie" if "tie" in sides else "agree" if sides[0] == sides[1] else "flipped"
    add(f"ratio_to_{b.get('paired_baseline')}", _paired_text(b), _paired_text(n), math.nan, verdict)


def _latency_text(row: pd.Series) -> str:
    if pd.isna(row.get("latency_ms_median")):
        return "—"
    return f"{fmt_num(row['latency_ms_median'])} [{fmt_num(row['latency_ms_q1'])}–{fmt_num(row['latency_ms_q3'])}]"


def render(comparison: Comparison, fmt: str = "text", changed_only: bool = False) -> str:
    """The comparison as an aligned text table (``text``) or a Markdown pipe table (``md``), with the one-run
    cells and a closing verdict line; ``changed_only`` hides the rows whose verdict is ``same``."""
    rows = comparison.rows
    total = len(rows)
    if changed_only:
        rows = rows[~rows["verdict"].isin(["same", "agree", "tie"])]
    varying = [a for a in _AXES if rows[a].nunique() > 1] if len(rows) else []
    columns = ["label", "resolution", "batch", "pass", *varying, "metric", "base", "new", "ratio", "verdict"]
    table = Table(caption="", header=columns, rows=[[str(v) for v in r] for r in rows[columns].itertuples(index=False)],
                  numeric=False)
    text = md_table(table) if fmt == "md" else _text_table(table)
    lines = [text, ""] + ([comparison.note, ""] if comparison.note else [])
    for title, cells in (("only in base", comparison.only_base), ("only in new", comparison.only_new)):
        if cells:
            lines += [f"{'**' + title + '**' if fmt == 'md' else title} ({len(cells)}):"]
            lines += [f"- {c}" for c in cells] + [""]
    verdict = (f"{comparison.regressions} regression(s): exit 1" if comparison.exit_code
               else "no regression: exit 0")
    paired = comparison.rows[comparison.rows["metric"].str.startswith("ratio_to_")] if total else comparison.rows
    if len(paired):
        counts = paired["verdict"].value_counts()
        lines.append(f"ratios to the baseline (paired, 95% intervals): {counts.get('agree', 0)} agree, "
                     f"{counts.get('tie', 0)} tie, {counts.get('flipped', 0)} flipped between the runs")
    lines.append(f"{total} comparisons, threshold {comparison.threshold * 100:g}%; "
                 f"{verdict}")
    return "\n".join(lines) + "\n"


def _text_table(table: Table) -> str:
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h)
              for i, h in enumerate(table.header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(table.header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table.rows]
    return "\n".join(lines)
