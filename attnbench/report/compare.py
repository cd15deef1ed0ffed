"""Compare two runs cell by cell (matched by ``cell_id``) and decide whether the new one regressed.

The rule (exit code 1 when any holds, else 0):

- a deterministic count changed: ``params``, ``params_trainable``, ``macs_fvcore``, ``flops_torch``,
  ``macs_analytic`` or any ``macs_analytic_<part>`` — an improvement too, since a count moves only when the code
  or the counting did, and the expected numbers must then be refreshed on purpose (PyTorch's PR-time benchmark
  rule, see ../shared/design/benchmarking-practice.md §5);
- **a latency got worse by more than the threshold, clearly.** By default (``mode="paired"``) a cell is judged by
  its ratio to the suite's baseline measured interleaved in the same run: the change is ``new ratio / base ratio``
  and its 95% interval combines the two runs' ratio intervals (each already carries its run's between-epoch
  spread; in log space the half-widths add in quadrature). ``slower`` when the whole interval lies above
  1 + threshold. A machine that is slower or busier in one run moves the cell and its baseline together and
  cancels; absolute medians of unchanged code moved by up to 12% between processes and made the old absolute rule
  cry wolf. The baseline's own cells have no ratio: they are judged through the others — when every paired cell
  at the baseline's shape got clearly *faster* relative to it, the baseline got slower (``slower`` for the
  baseline's cell, ``inferred``). Cells without a ratio in both runs, or every cell with ``mode="absolute"``,
  are judged on their absolute medians: the ratio of medians with both runs' median intervals combined the same
  way, and the two-sided Mann-Whitney U test on the clean samples at p < 0.01 (asv's rule);
- a cell that was ``ok`` in the base is ``failed``/``oom``/``skipped`` in the new run (``broke``).

Peak memory is shown with its ratio (``higher``/``lower`` past the threshold) but does not fail the comparison;
rows measured with different thread counts (``mem_threads``) are ``not comparable``: the CPU peak depends on it.
Where both runs timed a cell interleaved with their baseline, the two paired ratios are also shown side by side
(``ratio_to_<baseline>``: ``agree``, ``tie`` when an interval holds 1, ``flipped`` when both are clear and
opposite). Each run measured under load (:func:`attnbench.core.machine_load.judge`) is named with its readings.
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
from typing import Optional

import pandas as pd

from ..core import machine_load, stats, uncertainty
from ..core.errors import UserError
from .load import load_runs
from .markdown import md_table
from .tables import Table, fmt_num

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
        load_notes: one line per run measured under load, with the readings that say so.
        mode: ``"paired"`` or ``"absolute"`` (how latencies were judged).
    """

    rows: pd.DataFrame
    only_base: list[str]
    only_new: list[str]
    threshold: float
    load_notes: list[str] = dataclasses.field(default_factory=list)
    mode: str = "paired"
    note: str = ""  # how the cells were matched, when not by cell_id

    @property
    def regressions(self) -> int:
        return int(self.rows["verdict"].isin(FAILING).sum()) if len(self.rows) else 0

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def compare_runs(base_dir: str | Path, new_dir: str | Path, threshold: float = 0.20,
                 mode: str = "paired") -> Comparison:
    """Compare ``new_dir`` against ``base_dir``; ``threshold`` is a fraction (0.20 = 20%, the CLI default);
    ``mode``: ``"paired"`` (ratios to the suite's baseline where both runs have them) or ``"absolute"``.

    Raises:
        attnbench.core.errors.UserError: a directory is missing or holds no results.
    """
    if mode not in ("paired", "absolute"):
        raise ValueError(f"mode={mode!r}: expected 'paired' or 'absolute'")
    base_runs, new_runs = load_runs([base_dir]), load_runs([new_dir])
    base = base_runs.frame.set_index("cell_id", drop=False)
    new = new_runs.frame.set_index("cell_id", drop=False)
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
    baselines = {str(v) for v in base.get("paired_baseline", pd.Series(dtype=object)).dropna()}
    rows = []
    for cell in sorted(common, key=lambda c: _order(base.loc[c])):
        rows += _compare_cell(base.loc[cell], new.loc[cell], threshold, mode, baselines)
    if mode == "paired":
        _infer_baseline(rows, baselines, threshold)
    columns = ["label", "resolution", "batch", "pass", *_AXES, "metric", "base", "new", "ratio", "verdict"]
    return Comparison(
        rows=pd.DataFrame(rows, columns=columns),
        load_notes=[line for line in (_load_note("base", base_dir, base_runs.frame),
                                      _load_note("new", new_dir, new_runs.frame)) if line],
        mode=mode,
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


def _load_note(which: str, run_dir, frame: pd.DataFrame) -> Optional[str]:
    load = machine_load.summarize(frame.to_dict("records"))
    return f"{which} run {run_dir} was measured under load: {'; '.join(load['why'])}" if load["under_load"] else None


def _compare_cell(b: pd.Series, n: pd.Series, threshold: float, mode: str, baselines: set[str]) -> list[dict]:
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
    _compare_latency(b, n, threshold, mode, str(b["label"]) in baselines, add)
    _compare_paired(b, n, add)
    bm, nm = _num(b.get("mem_peak_bytes")), _num(n.get("mem_peak_bytes"))
    if not (math.isnan(bm) and math.isnan(nm)):
        ratio = nm / bm if bm else math.nan
        bt, nt = _num(b.get("mem_threads")), _num(n.get("mem_threads"))
        if not math.isnan(bt) and not math.isnan(nt) and bt != nt:
            verdict = f"not comparable (threads {bt:g} vs {nt:g})"
        else:
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


def change_interval(base: stats.Interval, new: stats.Interval) -> stats.Interval:
    """``new / base`` with a 95% interval from the two intervals: in log space the lower half-width is
    ``√(new's lower² + base's upper²)`` and the upper ``√(new's upper² + base's lower²)`` (independent runs)."""
    def halves(iv: stats.Interval) -> tuple[float, float]:
        if not (iv.estimate > 0 and iv.low > 0 and math.isfinite(iv.high)):
            return math.inf, math.inf
        return math.log(iv.estimate / iv.low), math.log(iv.high / iv.estimate)

    (bl, bu), (nl, nu) = halves(base), halves(new)
    ratio = new.estimate / base.estimate if base.estimate else math.nan
    return stats.Interval(ratio, ratio * math.exp(-math.hypot(nl, bu)), ratio * math.exp(math.hypot(nu, bl)), 0)


def _compare_latency(b: pd.Series, n: pd.Series, threshold: float, mode: str, is_baseline: bool, add) -> None:
    bm, nm = _num(b.get("latency_ms_median")), _num(n.get("latency_ms_median"))
    if math.isnan(bm) and math.isnan(nm):
        return
    verdict = _missing(bm, nm)
    if verdict is not None:
        add("latency_ms", _latency_text(b), _latency_text(n), math.nan, verdict)
        return
    if mode == "paired":
        base_ratio, new_ratio = uncertainty.ratio_interval(b), uncertainty.ratio_interval(n)
        if base_ratio is not None and new_ratio is not None:
            change = change_interval(base_ratio, new_ratio)
            out = add(f"latency_vs_{b.get('paired_baseline')}", _paired_text(b), _paired_text(n), change.estimate,
                      stats.classify_ratio(change, threshold, clear=True))
            out["ratio"] += f" [{change.low:.3f}–{change.high:.3f}]"
            out["_change"] = change
            return
    base_samples, new_samples = uncertainty.clean_samples(b), uncertainty.clean_samples(n)
    base_iv, new_iv = uncertainty.median_interval(b), uncertainty.median_interval(n)
    if len(base_samples) >= 2 and len(new_samples) >= 2 and base_iv is not None and new_iv is not None:
        change = change_interval(base_iv, new_iv)
        p = stats.mann_whitney_p(base_samples, new_samples)
        verdict = stats.classify_ratio(change, threshold, clear=p < 0.01)
        if mode == "paired" and is_baseline:
            verdict = _info(verdict)  # the baseline's own cell: judged through the others' ratios
        out = add("latency_ms", _latency_text(b), _latency_text(n), change.estimate, verdict)
        out["ratio"] += f" [{change.low:.3f}–{change.high:.3f}] p={p:.2g}"
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


def _info(verdict: str) -> str:
    """A verdict that is shown but does not fail (absolute time of the baseline's own cell in paired mode)."""
    return {"slower": "slower (absolute)", "faster": "faster (absolute)"}.get(verdict, verdict)


def _infer_baseline(rows: list[dict], baselines: set[str], threshold: float) -> None:
    """Judge each baseline cell through the cells paired with it at its shape: when every one of them got clearly
    faster relative to the baseline (its change interval wholly below 1 / (1 + threshold)), the baseline itself
    got slower — a ``slower`` row that fails; when every one got clearly slower, ``faster``."""
    def key(r: dict) -> tuple:
        return (r["resolution"], r["batch"], r["pass"], *(r[a] for a in _AXES))

    groups: dict[tuple, list[stats.Interval]] = {}
    for r in rows:
        if "_change" in r:
            groups.setdefault(key(r), []).append(r["_change"])
    for r in [r for r in rows if r["label"] in baselines and r["metric"] == "latency_ms"]:
        changes = groups.get(key(r), [])
        if not changes:
            continue
        if all(c.high < 1 / (1 + threshold) for c in changes):
            verdict = "slower"
        elif all(c.low > 1 / (1 - threshold) if threshold < 1 else False for c in changes):
            verdict = "faster"
        else:
            continue
        rows.append({**{k: v for k, v in r.items() if not k.startswith("_")}, "metric": "latency_inferred",
                     "base": "", "new": "", "ratio": f"{len(changes)} ratio(s) to it moved together",
                     "verdict": verdict})


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
    lines += [f"note: {note}" for note in comparison.load_notes]
    how = ("latencies judged by their ratio to the baseline measured in the same run (paired)"
           if comparison.mode == "paired" else "latencies judged on absolute medians")
    lines.append(f"{total} comparisons, threshold {comparison.threshold * 100:g}%, {how}; {verdict}")
    return "\n".join(lines) + "\n"


def _text_table(table: Table) -> str:
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h)
              for i, h in enumerate(table.header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(table.header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table.rows]
    return "\n".join(lines)
