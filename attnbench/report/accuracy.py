"""The accuracy part of a report: one table per run and the training-loss curves.

The accuracy-vs-cost Pareto figures are drawn with the other figures (``figures.py``), on the model-level costs.

Reads the rows of the ``accuracy`` metric as written (``results.jsonl``), because its text and list columns
(``acc_model``, ``acc_dataset``, ``acc_loss_curve``, ``acc_top1_curve``) do not survive the numeric frame.
Only ``acc_top1`` and ``acc_top5`` are percentages; ``acc_params``, ``acc_epochs``, ``acc_train_loss_final`` and
``acc_train_throughput_img_s`` are counts, a loss and a rate. The cost axes are the whole trained model's
(``model_macs_fvcore``, ``model_latency_ms_median``), not the attention-level cell columns.

Entry point: :func:`render_accuracy` (markdown text and saved figures); nothing here imports torch.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ..core.results import read_rows
from .load import read_manifest

__all__ = ["ACC_PERCENT_COLUMNS", "ACC_NON_PERCENT_COLUMNS", "accuracy_rows", "accuracy_table", "render_accuracy",
           "accuracy_sections"]

ACC_PERCENT_COLUMNS = ("acc_top1", "acc_top5", "acc_top1_ci_low", "acc_top1_ci_high", "acc_top5_ci_low",
                       "acc_top5_ci_high")
ACC_NON_PERCENT_COLUMNS = ("acc_params", "acc_epochs", "acc_img_size", "acc_world_size", "acc_resumed_from_epoch",
                           "acc_train_loss_final", "acc_train_throughput_img_s",
                           "acc_model", "acc_dataset", "acc_loss_curve", "acc_top1_curve", "acc_threads",
                           "acc_threads_how", "acc_threads_probe_ms", "acc_val_n", "acc_seed", "acc_top1_correct")
_TABLE = [("label", "attention"), ("acc_model", "model"), ("acc_img_size", "img_size"), ("acc_dataset", "data"),
          ("acc_epochs", "epochs"),
          ("acc_params", "params (M)"), ("model_macs_fvcore", "MMACs"), ("model_latency_ms_median", "latency (ms)"),
          ("acc_val_n", "val images"), ("acc_top1", "top-1 (%) [95%]"), ("delta", "Δ top-1 (pt) [95%]"),
          ("acc_top5", "top-5 (%) [95%]"), ("acc_train_loss_final", "final train loss"),
          ("acc_train_throughput_img_s", "train img/s")]


def accuracy_rows(run_dirs: list[str | Path]) -> pd.DataFrame:
    """One row per (run, label) with an ``acc_top1`` value (the last such row of a label wins), plus the run's
    baseline label; empty when no run measured accuracy."""
    records: list[dict[str, Any]] = []
    for run_dir in map(Path, run_dirs):
        manifest = _quiet_manifest(run_dir)
        baseline = (manifest.get("suite") or {}).get("baseline", "mhsa")
        for row in _quiet_rows(run_dir):
            if row.get("status") == "ok" and row.get("acc_top1") is not None:
                records.append({**row, "run": run_dir.name, "label": row.get("label") or row.get("attention"),
                                "baseline": baseline})
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame(records)
    frame["seed"] = frame["seed"] if "seed" in frame else None  # the identity column of a suite with seeds
    return frame.drop_duplicates(["run", "label", "seed"], keep="last").reset_index(drop=True)


def _quiet_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The run's rows through the one reader (:mod:`attnbench.core.results`); its warnings were already shown by the
    main table's load, so they are not repeated here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_rows(run_dir)


def _quiet_manifest(run_dir: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_manifest(run_dir)


def accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The display table, one line per attention (its seeds folded into mean ± sd): formatted values with their
    95% intervals, Δ top-1 in points against the run's baseline label with the interval of the difference
    (``acc_uncertainty.compare``: paired where per-image correctness was stored) and ``tie`` when it holds 0."""
    from .acc_uncertainty import compare, estimates, fmt_acc, fmt_acc_diff

    out = rows.copy()
    if "acc_img_size" not in out or out["acc_img_size"].isna().any():  # rows of runs made before the column
        parsed = out.get("acc_dataset", pd.Series([None] * len(out), index=out.index)).map(_img_size_of)
        out["acc_img_size"] = out["acc_img_size"].fillna(parsed) if "acc_img_size" in out else parsed
    top1, top5 = estimates(out, "acc_top1", "label"), estimates(out, "acc_top5", "label")
    baseline = out["baseline"].iloc[0] if len(out) else None
    out = out.drop_duplicates("label", keep="last").reset_index(drop=True)

    def acc(found: dict, label: str) -> Optional[str]:
        est = found.get(label)
        if est is None:
            return None
        low, high = est.interval
        return fmt_acc(est.mean, low, high, est.std, len(est.per_seed), list(est.per_seed.values()))

    def delta(label: str) -> Optional[str]:
        if baseline not in top1 or label not in top1:
            return None
        if label == baseline:
            return "+0.00 pt (baseline)"
        d = compare(top1[label], top1[baseline])
        return fmt_acc_diff(d.diff, d.low, d.high, d.method, d.p_value, d.tie) or None

    out["acc_top1"] = [acc(top1, label) for label in out["label"]]
    out["acc_top5"] = [acc(top5, label) for label in out["label"]]
    out["delta"] = [delta(label) for label in out["label"]]
    fmt = {"acc_img_size": lambda v: f"{int(v)}", "acc_epochs": lambda v: f"{int(v)}",
           "acc_params": lambda v: f"{v / 1e6:.2f}", "model_macs_fvcore": lambda v: f"{v / 1e6:.1f}",
           "model_latency_ms_median": lambda v: f"{v:.2f}", "acc_val_n": lambda v: f"{int(v)}",
           "acc_train_loss_final": lambda v: f"{v:.4f}", "acc_train_throughput_img_s": lambda v: f"{v:.1f}"}
    table = pd.DataFrame()
    for column, title in _TABLE:
        values = out[column] if column in out else pd.Series([None] * len(out))
        f = fmt.get(column, str)
        table[title] = [("—" if v is None or (isinstance(v, float) and pd.isna(v)) else f(v)) for v in values]
    return table


def _img_size_of(dataset) -> Optional[int]:
    """The image side from a dataset label such as ``imagenette@224`` or ``synthetic8@32``."""
    match = re.search(r"@(\d+)", str(dataset or ""))
    return int(match.group(1)) if match else None


def accuracy_sections(frame: pd.DataFrame) -> list:
    """The report section of the accuracy rows: one table per run, a row per attention with the model, image
    size and epochs it was trained at. Accuracy is a property of a trained model, not of the attention-level cell
    (its token grid, batch, pass), so it has its own table rather than columns of H×W."""
    from .tables import Section, Table

    if "acc_top1" not in frame.columns:
        return []
    rows = frame[(frame["status"] == "ok") & pd.to_numeric(frame["acc_top1"], errors="coerce").notna()]
    if rows.empty:
        return []
    rows = rows.assign(run=rows["run_id"], label=rows["series"],
                       baseline=rows["run_id"].map(rows[rows["is_baseline"].astype(bool)]
                                                   .drop_duplicates("run_id").set_index("run_id")["series"]))
    keys = ["run", "label"] + (["seed"] if "seed" in rows.columns else [])  # each training seed is a row
    rows = rows.drop_duplicates(keys, keep="last")
    tables = []
    several = rows["run"].nunique() > 1
    for run, group in rows.groupby("run", sort=False):
        table = accuracy_table(group)
        tables.append(Table(f"run `{run}`" if several else "after the last epoch", list(table.columns),
                            [list(map(str, r)) for r in table.itertuples(index=False)], numeric=False))
    return [Section("accuracy", "Accuracy (%)",
                    "Top-1/top-5 on the validation split after the last epoch, with the backbone, image size and "
                    "epochs each attention was trained at; Δ is top-1 minus the baseline's, in points. Params, MACs "
                    "and latency are the whole trained model's.", tables)]


def _markdown(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(map(str, r)) + " |" for r in table.itertuples(index=False)])


def _figures(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def save(fig, name: str) -> None:
        for ext in ("png", "svg"):
            fig.savefig(fig_dir / f"{name}.{ext}", dpi=150, bbox_inches="tight")
            saved.append(fig_dir / f"{name}.{ext}")
        plt.close(fig)

    curves = rows.dropna(subset=["acc_loss_curve"]) if "acc_loss_curve" in rows else rows.iloc[:0]
    if not curves.empty:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for r in curves.itertuples():
            label = r.label if pd.isna(r.seed) else f"{r.label} seed {int(r.seed)}"  # one curve per training seed
            ax.plot(range(1, len(r.acc_loss_curve) + 1), r.acc_loss_curve, marker="o", ms=3, label=label)
        ax.set(xlabel="epoch", ylabel="training loss", title="Training loss per epoch")
        ax.legend(fontsize=7)
        save(fig, "accuracy_loss_curves")
    return saved


def render_accuracy(run_dirs: list[str | Path], out_dir: str | Path, figures: bool = True) -> tuple[str, list[Path]]:
    """(markdown section, saved figure paths) for the accuracy rows of ``run_dirs``; ("", []) when there are none."""
    rows = accuracy_rows(run_dirs)
    if rows.empty:
        return "", []
    parts = ["## Accuracy", "",
             "Top-1/top-5 on the validation split after the last epoch, [95% Wilson score interval]; with several "
             "training seeds the mean ± the seed-to-seed sd (per-seed values). Δ is top-1 minus the baseline's, "
             "in points, [its 95% interval]: paired on the same validation images where the rows store per-image "
             "correctness (Newcombe's paired interval, McNemar's p), else unpaired (Newcombe's hybrid score); "
             "`tie`: indistinguishable, the interval (or, with seeds, the seed-level Welch interval) holds 0. "
             "Params, MACs (fvcore, batch 1) and latency (eval forward) are the whole trained model's.", ""]
    for run, group in rows.groupby("run", sort=False):
        parts += [f"Run `{run}`:", "", _markdown(accuracy_table(group)), ""]
    saved = _figures(rows, Path(out_dir)) if figures else []
    return "\n".join(parts), saved
