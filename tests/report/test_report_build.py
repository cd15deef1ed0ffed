"""``attnbench report`` end to end on a fixture run: every file, the hand-computed ratios, an offline page, no torch.

The full report (with figures) is rendered once, in a fresh interpreter, which also proves that neither the
report nor compare imports torch or ``attentions``.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnbench.cli import main
from attnbench.report import load_runs
from attnbench.core.results import ROW_HEAD

from report_fixtures import fixture_rows, manifest, write_run

FIGURES = ("latency_vs_tokens", "memory_vs_tokens", "macs_vs_tokens", "latency_vs_flops", "fwd_vs_fwdbwd",
           "accuracy_vs_latency", "accuracy_vs_macs")
_SCRIPT = """
import sys
from attnbench.cli import main
try:
    main(["report", sys.argv[1], "--out", sys.argv[2]], standalone_mode=True)
except SystemExit as exc:
    assert not exc.code, exc.code
from attnbench.report.compare import compare_runs
import attnbench.commands.compare_cmd
assert compare_runs(sys.argv[1], sys.argv[1]).exit_code == 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "attentions", "triton"))
print("HEAVY", heavy)
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    acc = {"mhsa": 70.0, "bra": 72.5, "dbra": 74.25}
    rows = [dict(r, acc_top1=acc[r["label"]] + r["height"] / 8) if r["status"] == "ok" and r["pass"] == "forward"
            else r for r in fixture_rows()]
    run = write_run(root / "fixture-run", rows, manifest())
    out = root / "out"
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(run), str(out)], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout  # the report and compare never import torch or attentions
    return out


def test_every_file_is_written(report_dir):
    for name in ("results.csv", "summary.md", "index.html"):
        assert (report_dir / name).stat().st_size > 0
    for name in FIGURES:
        assert (report_dir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ET.parse(report_dir / "figures" / f"{name}.svg").getroot().tag.endswith("svg")


def test_results_csv_is_one_row_per_cell_identity_first(report_dir):
    with open(report_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert list(rows[0])[: len(ROW_HEAD)] == list(ROW_HEAD)
    by_key = {(r["label"], r["height"], r["pass"]): r for r in rows}
    bra = by_key[("bra", "16", "forward")]
    assert float(bra["latency_ms_median_ratio"]) == pytest.approx(0.8)
    assert json.loads(bra["latency_samples_ms"]) == [6.0, 6.0, 8.0, 10.0, 10.0]
    assert bra["params"] == "17000"  # counts stay integers
    assert by_key[("dbra", "16", "forward_backward")]["status"] == "oom"


def test_summary_holds_the_environment_ratios_and_failures(report_dir):
    text = (report_dir / "summary.md").read_text()
    assert "| CPU | Test CPU @ 2.0GHz |" in text and "| commit | 0123456789abcdef |" in text
    # 3/2 with its bootstrap interval; 8/10 has an interval that holds 1: a tie, bold beside the baseline
    assert "| bra | 3.00 [2.88–3.12] (1.50× [1.38–1.63]) | **~8.00 [6.00–10.0] (≈1× tie [0.58–1.04])** |" in text
    assert "| mhsa | **2.00 [1.92–2.08] (1.00×)** | **10.0 [9.60–10.4] (1.00×)** |" in text
    assert "| dbra | 4.00 [3.84–4.16] (2.00× [1.85–2.17]) | failed |" in text
    assert "| dbra | 12.0 [11.5–12.5] (2.00× [1.85–2.17]) | oom |" in text  # 12/6
    assert "| dbra | 20.8 k (1.25×) | failed |" in text  # 20800 / 16640
    assert "| 74.50 | +2.50 pt |" in text and text.count("top-1 (%) [95%]") == 1  # accuracy: one table, Δ in points
    assert "| dbra | 16×16 | 1 | forward | float32 | cpu | eager | failed | RuntimeError: non-finite output |" in text
    assert "`~` noisy latency" in text
    assert "![Latency vs token count](figures/latency_vs_tokens.png)" in text


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def test_html_shows_tables_and_figures_from_local_files_only(report_dir):
    page = _Links()
    page.feed((report_dir / "index.html").read_text())
    assert "script" not in page.tags and "link" not in page.tags
    files = [link for link in page.links if not link.startswith("#")]
    assert {f"figures/{n}.svg" for n in FIGURES} <= set(files)
    for link in files:
        assert "://" not in link and not link.startswith(("/", "//")), link
        assert (report_dir / link).is_file(), link
    assert page.tags.count("table") >= 8


def test_cli_defaults_to_latest_run_and_reports_dir(tmp_path, monkeypatch):
    old = write_run(tmp_path / "runs" / "old", fixture_rows(suite="old"), manifest("old"))
    write_run(tmp_path / "runs" / "new", fixture_rows(suite="new"), manifest("new"))
    os.utime(old / "results.jsonl", (1, 1)), os.utime(old / "manifest.json", (1, 1)), os.utime(old, (1, 1))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "runs/new" in result.output
    assert (tmp_path / "reports" / "new" / "summary.md").is_file()
    assert "figures" not in os.listdir(tmp_path / "reports" / "new")
    assert not (tmp_path / "reports" / "old").exists()


def test_cli_without_runs_says_where_it_looked_and_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report"])
    assert result.exit_code == 2
    assert "runs/*/results.jsonl" in result.output and "attnbench run" in result.output


def test_report_of_two_suites_goes_to_a_joined_directory(tmp_path):
    a = write_run(tmp_path / "a", fixture_rows(suite="a", run_id="ra"), manifest("a"))
    b = write_run(tmp_path / "b", fixture_rows(suite="b", run_id="rb"), manifest("b"))
    from attnbench.report import default_out_dir

    assert default_out_dir(load_runs([a, b])) == Path("reports/a+b")
