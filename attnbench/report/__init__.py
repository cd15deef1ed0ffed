"""Reports from run directories: a tidy table, a Markdown summary, seaborn figures and an offline HTML page.

Reads only ``results.jsonl`` and ``manifest.json`` (never torch or ``attentions``), so a run renders on any
machine. ``build_report(run_dirs, out_dir)`` is the whole job; ``load_runs`` gives the tidy DataFrame alone.
"""
from __future__ import annotations

from .build import Report, build_report, default_out_dir, make_report, resolve_run_dirs
from .load import Runs, find_latest_run, load_runs

__all__ = [
    "Report", "Runs", "build_report", "default_out_dir", "find_latest_run", "load_runs", "make_report",
    "resolve_run_dirs",
]
