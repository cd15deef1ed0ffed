"""The paper table of a model suite: each backbone's measured params, GMACs, throughput and training memory beside
the figures its paper prints, with the difference in % and whether they match to the printed digit.

Reads the rows only (the ``published`` metric wrote the printed figures into them as ``paper_*`` text), so it needs
neither torch nor ``attentions``. One table row per model (series), in suite order:

* **params (M)**: ``params`` / 1e6; the paper's figure; Δ% = (ours − paper) / paper × 100 with the paper's figure
  as printed; ✓ when ours, rounded half-up to the paper's printed decimals, equals the printed figure, else ✗.
* **GMACs**: ``macs_fvcore`` / 1e9 (fvcore multiply-adds, batch 1, forward): what the papers call GFLOPs. Same
  Δ% and ✓/✗.
* **throughput (img/s)**: ``throughput_img_s`` of the model's ``forward`` cell (the largest batch; a CUDA cell
  before a CPU one) with its 95% interval, batch, device and (CPU) the torch threads it was timed with; the
  paper's figure with its hardware.
* **peak train memory (MiB)**: ``mem_peak_bytes`` of the model's ``forward_backward`` cell (largest batch), batch
  and device.
* **paper top-1 (%)** and the **note** of the published table (a documented discrepancy, a rounding convention).

Figures the source does not print, and models nothing is published for (the swap presets), show ``—``.
"""
from __future__ import annotations

import decimal
import math
from typing import Any, Optional

import pandas as pd

from .tables import Section, Table, fmt_num

__all__ = ["MATCH", "MISMATCH", "NONE", "delta_pct", "matches_printed", "paper_table", "paper_sections",
           "is_model_frame"]

MATCH, MISMATCH, NONE = "✓", "✗", "—"
MIB = 2 ** 20


def _printed(value: Any) -> Optional[str]:
    """A published figure as its printed text, or None (missing, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> Optional[float]:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def delta_pct(ours: float, printed: str) -> float:
    """(ours − paper) / paper × 100, the paper's figure taken as printed."""
    paper = float(printed)
    return (ours - paper) / paper * 100.0


def matches_printed(ours: float, printed: str) -> bool:
    """Whether ``ours`` rounded (half up) to the decimals ``printed`` shows equals ``printed``: 21.496 vs '21.5'
    and 44.008 vs '44' match, 21.496 vs '21.4' does not."""
    shown = decimal.Decimal(printed)
    exponent = shown.as_tuple().exponent
    step = decimal.Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return decimal.Decimal(repr(float(ours))).quantize(step, rounding=decimal.ROUND_HALF_UP) == shown


def is_model_frame(frame: pd.DataFrame) -> bool:
    """True when the rows are a model suite's (``kind`` = ``model``)."""
    return "kind" in frame.columns and bool((frame["kind"] == "model").any())


def _first(rows: pd.DataFrame, column: str) -> Any:
    if column not in rows.columns:
        return None
    values = rows[column].dropna()
    return values.iloc[0] if len(values) else None


def _pick(rows: pd.DataFrame, pass_: str, column: str) -> Optional[pd.Series]:
    """The row of ``pass_`` with a value of ``column``: a CUDA row before a CPU one, then the largest batch."""
    if column not in rows.columns:
        return None
    rows = rows[(rows["pass"] == pass_) & (rows["status"] == "ok") & rows[column].notna()]
    if rows.empty:
        return None
    order = rows.assign(_gpu=(rows["device"] == "cuda").astype(int), _b=pd.to_numeric(rows["batch"]))
    return order.sort_values(["_gpu", "_b"], ascending=False, kind="stable").iloc[0]


def _compare(ours: Optional[float], printed: Optional[str], digits: int) -> list[str]:
    """[ours, paper, Δ%, ✓/✗] text for one figure."""
    ours_text = NONE if ours is None else f"{ours:.{digits}f}"
    if printed is None or ours is None:
        return [ours_text, printed or NONE, NONE, NONE]
    mark = MATCH if matches_printed(ours, printed) else MISMATCH
    return [ours_text, printed, f"{delta_pct(ours, printed):+.2f}%", mark]


def _throughput(row: Optional[pd.Series]) -> str:
    if row is None:
        return NONE
    value, low, high = (_number(row.get(c)) for c in
                        ("throughput_img_s", "throughput_img_s_ci_low", "throughput_img_s_ci_high"))
    interval = f" [{fmt_num(low)}–{fmt_num(high)}]" if low is not None and high is not None else ""
    where = f"b{int(row['batch'])}, {row['device']}"
    threads = _number(row.get("threads"))
    if row["device"] == "cpu" and threads:
        where += f", {int(threads)} thread{'s' if threads != 1 else ''}"
    return f"{fmt_num(value)}{interval} ({where})"


def _memory(row: Optional[pd.Series]) -> str:
    if row is None:
        return NONE
    return f"{fmt_num(float(row['mem_peak_bytes']) / MIB)} (b{int(row['batch'])}, {row['device']})"


def _paper_throughput(rows: pd.DataFrame) -> str:
    value = _printed(_first(rows, "paper_throughput_img_s"))
    if value is None:
        return NONE
    hardware = _printed(_first(rows, "paper_throughput_hardware"))
    return f"{value} ({hardware})" if hardware else value


def _series_order(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["series"]))


def paper_table(frame: pd.DataFrame, machines: str = "") -> tuple[Table, dict[str, list[str]]]:
    """The paper table of a model frame (with ``series``, see ``derive.add_derived``), and per compared figure
    (``params``, ``gmacs``) the models that match / do not match the printed digit."""
    header = ["model", "params (M)", "paper", "Δ%", "match", "GMACs", "paper GFLOPs", "Δ%", "match",
              "throughput (img/s) [95% CI]", "paper img/s", "peak train memory (MiB)", "paper top-1 (%)", "note"]
    body: list[list[str]] = []
    tally: dict[str, list[str]] = {"params_match": [], "params_mismatch": [], "gmacs_match": [],
                                   "gmacs_mismatch": []}
    models = frame[frame["kind"] == "model"] if "kind" in frame.columns else frame
    for name in _series_order(models):
        rows = models[models["series"] == name]
        params = _number(_first(rows, "params"))
        macs = _number(_first(rows, "macs_fvcore"))
        params_m = None if params is None else params / 1e6
        gmacs = None if macs is None else macs / 1e9
        paper_name = _printed(_first(rows, "paper_name"))
        p_params, p_gflops = _printed(_first(rows, "paper_params_m")), _printed(_first(rows, "paper_gflops"))
        params_cells = _compare(params_m, p_params, 3)
        gmacs_cells = _compare(gmacs, p_gflops, 4)
        for key, cells in (("params", params_cells), ("gmacs", gmacs_cells)):
            if cells[3] != NONE:
                tally[f"{key}_match" if cells[3] == MATCH else f"{key}_mismatch"].append(paper_name or name)
        note = _printed(_first(rows, "paper_note")) or ("" if paper_name else "nothing published for this model")
        label = f"{name} ({paper_name})" if paper_name and paper_name != name else name
        body.append([label, *params_cells, *gmacs_cells, _throughput(_pick(rows, "forward", "throughput_img_s")),
                     _paper_throughput(rows), _memory(_pick(rows, "forward_backward", "mem_peak_bytes")),
                     _printed(_first(rows, "paper_top1")) or NONE, note])
    caption = ("ours vs published at 224²: params and GMACs (fvcore, batch 1, forward); throughput = batch / median "
               "forward latency" + (f" on {machines}" if machines else "")
               + "; peak memory of one training step (forward + backward)")
    return Table(caption=caption, header=header, rows=body, numeric=True), tally


def _machines(manifests: dict[str, dict]) -> str:
    """The device name of each run, from the manifests (the threads are the rows' own, in the cells)."""
    out = []
    for manifest in manifests.values():
        name = (manifest or {}).get("device_name") or (manifest or {}).get("cpu_model")
        if name and str(name) not in out:
            out.append(str(name))
    return "; ".join(out)


def _summary(tally: dict[str, list[str]]) -> str:
    parts = []
    for key, what in (("params", "Params"), ("gmacs", "GMACs")):
        match, miss = tally[f"{key}_match"], tally[f"{key}_mismatch"]
        if match or miss:
            text = f"{what} match the printed digit for {len(match)} of {len(match) + len(miss)} published models"
            parts.append(text + (f" (not: {', '.join(miss)}; see the notes)" if miss else ""))
    return ". ".join(parts) + "." if parts else "No model of this run has published figures."


def paper_sections(frame: pd.DataFrame, manifests: dict[str, dict] | None = None) -> list[Section]:
    """``[Section]`` holding the paper table when the frame is a model suite's, else ``[]``."""
    if not is_model_frame(frame):
        return []
    table, tally = paper_table(frame, _machines(manifests or {}))
    description = (f"{_summary(tally)} `match`: {MATCH} when our value rounded to the paper's printed precision equals "
                   f"the printed figure, {MISMATCH} when not; Δ% = (ours − paper) / paper. The papers' GFLOPs are "
                   "fvcore multiply-adds, the convention of our GMACs. `—`: not published (or not measured).")
    return [Section("paper", "Paper table: ours vs published", description, [table])]
