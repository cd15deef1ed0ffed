"""Build a report from run directories: ``results.csv``, ``summary.md``, ``figures/*.png|svg``, ``index.html``."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .accuracy import accuracy_sections
from .ablation import ablation
from .derive import add_derived, missing_cells
from .failures import failure_banners
from .headline import accuracy_fronts, headline_sections, precision_notes, run_banners
from .load import Runs, find_latest_run, load_runs, to_csv_frame
from .markdown import render_summary
from .paper import paper_sections
from .why import render_why_figures, why_sections
from .tables import (Section, Table, attentions_table, build_sections, environment_table, missing_table,
                     uncounted_ops)

__all__ = ["Report", "build_report", "default_out_dir", "make_report", "resolve_run_dirs"]


@dataclasses.dataclass
class Report:
    """Everything the summary and the HTML page show.

    Attributes:
        title: the suite name(s).
        environment: one column per run (see ``tables.environment_table``).
        attentions: each label's registry name and config.
        baseline_note: which attention the ratios divide by, per run.
        sections: one per metric with data.
        missing: the cells without a value (failed, oom, skipped, excluded), None when there are none.
        uncounted: series -> ops no FLOP counter counted.
        banners: warnings shown first (measured under load, incomplete run).
        precision: one line per run with latency: how many cells reached their target interval, how many stopped
            at their budget first, how many are noisy.
        verdict: the answer sections shown before everything else (``headline.headline_sections``).
        paper: a model suite's paper table (``paper.paper_sections``), shown first; empty for attention suites.
        verdict_notes: sentences under the verdict (accuracy Pareto fronts).
        figures: the saved figures (empty when figures were not drawn).
        ablation: the factors' tables, summary and figure (``ablation.Ablation``), shown first; None without factors.
    """

    title: str
    environment: Table
    attentions: Table
    baseline_note: str
    sections: list[Section]
    missing: Table | None
    uncounted: dict[str, str]
    banners: list[str] = dataclasses.field(default_factory=list)
    precision: list[str] = dataclasses.field(default_factory=list)
    verdict: list[Section] = dataclasses.field(default_factory=list)
    verdict_notes: list[str] = dataclasses.field(default_factory=list)
    figures: list = dataclasses.field(default_factory=list)
    paper: list[Section] = dataclasses.field(default_factory=list)
    #: the Why part under the verdict (``why.why_sections``): sentences and sections, empty without breakdown rows
    why: list[Section] = dataclasses.field(default_factory=list)
    why_notes: list[str] = dataclasses.field(default_factory=list)
    ablation: object = None


def resolve_run_dirs(run_dirs: tuple[str, ...] | list[str], runs_root: str | Path = "runs") -> list[Path]:
    """The run directories given, or the most recently modified one under ``runs_root``."""
    return [Path(d) for d in run_dirs] if run_dirs else [find_latest_run(runs_root)]


def default_out_dir(runs: Runs, reports_root: str | Path = "reports") -> Path:
    """``reports/<suite name>`` (several suites: their names joined by ``+``)."""
    name = "+".join(runs.suite_names()) or "report"
    return Path(reports_root) / re.sub(r"[^\w.+-]+", "_", name)


def make_report(runs: Runs):
    """(Report without figures, the frame with derived columns, the cells without a value)."""
    frame = add_derived(runs)
    missing = missing_cells(frame, runs)
    cells = frame.groupby("run_id").size().to_dict()
    why, why_notes = why_sections(frame, runs.manifests)
    factors = ablation(frame)
    replaced = factors is not None and factors.replaces_verdict
    if replaced:  # the accuracy-vs-cost fronts of the variants read under the ablation's summary
        factors.summary += accuracy_fronts(frame)
    return Report(
        title=", ".join(runs.suite_names()),
        environment=environment_table(runs.manifests, cells, frame),
        attentions=attentions_table(frame),
        baseline_note=_baseline_note(frame, runs),
        sections=build_sections(frame) + accuracy_sections(frame),
        missing=missing_table(missing),
        uncounted=uncounted_ops(frame),
        banners=failure_banners(frame) + run_banners(frame, runs),
        precision=precision_notes(frame, runs),
        # variants of one attention are not competitors: their ablation tables answer instead of the verdict
        verdict=[] if replaced else headline_sections(frame),
        verdict_notes=[] if replaced else accuracy_fronts(frame),
        paper=paper_sections(frame, runs.manifests),
        why=why, why_notes=why_notes,
        ablation=factors,
    ), frame, missing


def _baseline_note(frame, runs: Runs) -> str:
    notes = []
    for run_id in runs.dirs:
        name = runs.baseline(run_id)
        rows = frame[(frame["run_id"] == run_id) & frame["is_baseline"]]
        if rows.empty:
            notes.append(f"baseline `{name}` is not in run `{run_id}`: its cells have no ratios")
        else:
            notes.append(f"baseline `{rows['series'].iloc[0]}` in run `{run_id}`")
    return ("Ratios divide a cell's value by the baseline's in the same run at the same H×W, batch, dtype, device, "
            "pass and mode (counts: same H×W). " + "; ".join(notes) + ".")


def build_report(run_dirs: list[str | Path], out_dir: str | Path | None = None, figures: bool = True) -> Path:
    """Write the report of ``run_dirs`` into ``out_dir`` (default ``reports/<suite>``); returns ``out_dir``.

    Raises:
        attnbench.core.errors.UserError: a run directory is missing or holds no results.
    """
    runs = load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs)
    out.mkdir(parents=True, exist_ok=True)
    report, frame, missing = make_report(runs)
    to_csv_frame(frame).to_csv(out / "results.csv", index=False)
    if figures:
        from .figures import render_figures  # matplotlib is slow to import; tables alone do not need it

        report.figures = render_figures(frame, out, missing) + render_why_figures(frame, out, runs.manifests)
        if report.ablation is not None:
            from .ablation import render_ablation_figures

            report.ablation.figures = render_ablation_figures(frame, out)
    from .accuracy import render_accuracy  # the training-loss curves (the table is report.sections' "accuracy")

    render_accuracy(list(run_dirs), out, figures)
    summary = render_summary(report)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    from .html import render_html

    (out / "index.html").write_text(render_html(report), encoding="utf-8")
    from .viz_links import link_viz  # pictures of `attnbench viz` in the run directories, when there are any

    link_viz(list(run_dirs), out)
    return out
