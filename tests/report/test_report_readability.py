"""What makes a report readable and honest: fixed styles, ratio intervals and ties, bold best values, warning
banners, cells without a value listed and drawn, the answer before the tables."""
from __future__ import annotations

import copy
from html.parser import HTMLParser

import pytest

from attnbench.report import build_report, load_runs, make_report
from attnbench.report.derive import add_derived, missing_cells
from attnbench.report.headline import run_banners
from attnbench.report.style import FIXED, series_styles
from attnbench.report.tables import fmt_ratio

from report_fixtures import excluded_cell, manifest, power_law_rows, synthetic_manifest, write_run


# ---------------------------------------------------------------------------------------------------- styles

def test_shipped_mechanisms_keep_their_style_whatever_the_order():
    names = ["agent", "mhsa", "dat", "bra", "dbra"]
    assert series_styles(names) == series_styles(list(reversed(names))) == {n: FIXED[n] for n in names}


def test_other_series_get_stable_distinct_styles():
    users = ["my_pkg.attn:Mine", "dbra-topk4", "dbra-topk8", "mhsa (run-a)", "mhsa (run-b)"]
    one = series_styles(users + ["mhsa", "dbra"])
    other = series_styles(list(reversed(users)) + ["dat"])
    assert one["dbra"] == FIXED["dbra"] and one["mhsa"] == FIXED["mhsa"]
    for name in users:
        assert one[name] == other[name]  # same name, same style, in another report with other series
        assert one[name] not in FIXED.values()
    styles = list(one.values())
    assert len(set(styles)) == len(styles)  # ablation labels and run-suffixed series are told apart
    # a label alone keeps its preferred style; the same label in a crowded report moves only on a collision
    for name in users:
        assert series_styles([name])[name] == one[name] or name in _collided(users)


def _collided(names: list[str]) -> set[str]:
    alone = {n: series_styles([n])[n] for n in names}
    together = series_styles(names)
    return {n for n in names if alone[n] != together[n]}


def test_colliding_names_still_get_distinct_styles():
    many = [f"user-{i}" for i in range(60)]
    styles = series_styles(many)
    assert len(set(styles.values())) == 60
    assert series_styles(list(reversed(many))) == styles


# ------------------------------------------------------------------------------------------ ratios, bold best

@pytest.mark.parametrize("args, text", [
    ((0.34, 0.33, 0.35), "0.34× [0.33–0.35]"),
    ((0.97, 0.92, 1.05), "≈1× tie [0.92–1.05]"),
    ((1.2, 1.0, 1.4), "≈1× tie [1.00–1.40]"),   # touching 1 is not clear of it
    ((347.8, 300.0, 400.0), "348× [300–400]"),
    ((0.5,), "0.50×"),                          # no interval: the bare ratio
    ((1.0, 1.0, 1.0), "1.00×"),                 # the baseline itself
    ((float("nan"),), ""),
])
def test_fmt_ratio(args, text):
    assert fmt_ratio(*args) == text


def test_best_value_of_each_column_is_bold(fixture_run):
    report, *_ = make_report(load_runs([fixture_run]))
    memory = next(s for s in report.sections if s.key == "memory").tables[0]  # forward, batch 1
    bold = {(row[0], memory.header[j]) for i, row in enumerate(memory.rows) for j in range(len(row))
            if memory.is_bold(i, j)}
    assert bold == {("dbra", "8×8"), ("bra", "16×16")}  # 0.5 MiB; 4 MiB (dbra failed there)
    achieved = next(s for s in report.sections if s.key == "achieved").tables[0]
    assert achieved.is_bold(0, 1) and not achieved.is_bold(2, 1)  # higher is better: mhsa 2.00 > dbra 0.500


# ------------------------------------------------------------------------------------------------- banners

def _banners(tmp_path, rows=None, **manifest_extra):
    rows = power_law_rows() if rows is None else rows
    runs = load_runs([write_run(tmp_path / "run", rows, synthetic_manifest(rows, **manifest_extra))])
    return run_banners(add_derived(runs), runs)


def test_a_clean_finished_run_has_no_banner(tmp_path):
    assert _banners(tmp_path) == []


def test_load_banner_by_the_one_load_rule(tmp_path):
    """The banner uses attnbench.core.machine_load's rule over the rows, whatever the manifest says: a busy neighbour
    on a 2-core machine (busy in 2 of 15 cells, load 1.95) is load; so are preempted samples."""
    rows = power_law_rows()
    for row in rows[:2]:
        row["busy_after"] = 1
    busy = _banners(tmp_path / "b", rows)
    assert len(busy) == 1 and "under load" in busy[0] and "another process running in 2 of 15 cells" in busy[0]
    rows = power_law_rows()
    for row in rows:
        row["load_before"], row["load_after"] = 1.9, 1.95
    loaded = _banners(tmp_path / "l", rows)
    assert len(loaded) == 1 and "mean 1-min load average 1.93 on 2 cores" in loaded[0]
    rows = power_law_rows()
    for row in rows[:4]:
        row["latency_preempted"] = 10  # 40 of the 4 x 31 samples judged (rows without the column are older)
    preempted = _banners(tmp_path / "p", rows)
    assert len(preempted) == 1 and "40 of 124 latency samples preempted" in preempted[0]
    rows = power_law_rows()
    for row in rows:  # a quiet-looking virtual machine whose host gave 3% of its CPU time to other guests
        row["duration_s"], row["steal_s"] = 10.0, 0.6
    stolen = _banners(tmp_path / "s", rows)
    assert len(stolen) == 1 and "the hypervisor stole 9.6 s of 320 CPU-seconds" in stolen[0]
    for row in rows:
        row["steal_s"] = 0.2  # 1%: below the rule's 2%
    assert _banners(tmp_path / "s1", rows) == []
    # a manifest that claims load does not override what the rows show
    assert _banners(tmp_path / "m", load={"cores": 2, "max_load": 5.5, "under_load": True}) == []


@pytest.mark.parametrize("extra, words", [
    ({"interrupted": True}, "was interrupted"),
    ({"ended_at": None}, "no end time"),
    ({"cells": {"to_run": 20, "skipped": 2, "excluded": 0}}, "rows for 16 of the 22 cells"),
])
def test_incomplete_run_banner(tmp_path, extra, words):
    banners = _banners(tmp_path, **extra)
    assert len(banners) == 1 and "incomplete" in banners[0] and words in banners[0]
    assert "--resume" in banners[0]


def test_no_manifest_no_banner(tmp_path):
    rows = power_law_rows()
    with pytest.warns(UserWarning, match="manifest.json: missing"):
        runs = load_runs([write_run(tmp_path / "run", rows)])
    assert run_banners(add_derived(runs), runs) == []


# ------------------------------------------------------------------------------------- cells without a value

def test_missing_cells_list_failures_and_the_suites_exclusions(tmp_path):
    rows = power_law_rows()  # dbra-topk8 64×64 ran out of memory
    runs = load_runs([write_run(tmp_path / "run", rows,
                                synthetic_manifest(rows, [excluded_cell("bra", 128, "exclude: too slow")]))])
    missing = missing_cells(add_derived(runs), runs)
    got = sorted(zip(missing["series"], missing["height"], missing["status"], missing["reason"]))
    assert got == [("bra", 128, "excluded", "exclude: too slow"),
                   ("dbra-topk8", 64, "oom", "OutOfMemoryError: synthetic")]


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    """(report directory, the cells each call of figures._draw_missing was given) of an interrupted run measured
    under load, with an out-of-memory cell and two cells the suite excluded."""
    from attnbench.report import figures

    root = tmp_path_factory.mktemp("synthetic")
    rows = [r for r in power_law_rows() if (r["label"], r["height"]) != ("bra", 64)]  # excluded: no row
    for row in rows:
        row["load_before"], row["load_after"], row["busy_after"] = 3.0, 4.0, 2  # measured under load
    run = write_run(root / "run", rows, synthetic_manifest(
        rows, [excluded_cell("bra", 64, "exclude: too slow"), excluded_cell("agent", 128, "exclude: too slow")],
        interrupted=True, load={"cores": 2, "max_load": 4.0, "mean_load": 3.0, "max_busy": 2, "under_load": True}))
    drawn = []
    real = figures._draw_missing
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "_draw_missing", lambda ax, cells, look: drawn.append(cells) or real(ax, cells, look))
        out = build_report([run], root / "out")
    return out, drawn


def test_missing_cells_are_listed(synthetic_report):
    text = (synthetic_report[0] / "summary.md").read_text()
    assert "| dbra-topk8 | 64×64 | 1 | forward | float32 | cpu | eager | oom | OutOfMemoryError: synthetic |" in text
    assert "| bra | 64×64 | 1 | forward | float32 | cpu | eager | excluded | exclude: too slow |" in text
    assert "| agent | 128×128 |" in text


def test_figures_mark_every_cell_without_a_value(synthetic_report):
    out, drawn = synthetic_report
    marked = [(r["series"], r["height"], r["status"]) for cells in drawn for _, r in cells.iterrows()]
    expected = {("dbra-topk8", 64, "oom"), ("bra", 64, "excluded"), ("agent", 128, "excluded")}
    assert set(marked) == expected and len(marked) == 2 * len(expected)  # latency and memory figures
    svg = (out / "figures" / "latency_vs_tokens.svg").read_text()
    assert "128×128" in svg  # a grid measured by nobody is still ticked, so its marker has a place
    assert "no value: out of memory" in svg and "no value: excluded by the suite" in svg  # the legend says why
    assert " ms" in svg and "1e+" not in svg  # SI latency ticks ("10 ms")


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.order = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") or "banner" in (attrs.get("class") or ""):
            self.order.append(attrs.get("id") or "banner")


def test_page_reads_warnings_verdict_figures_tables_in_that_order(synthetic_report):
    page = _Ids()
    html = (synthetic_report[0] / "index.html").read_text()
    page.feed(html)
    order = [i for i in page.order if i in ("banner", "verdict", "figures", "tables", "missing", "environment")]
    # banners: the failed attention's (issue 19), then the run's load and incompleteness
    assert order == ["banner"] * 3 + ["verdict", "figures", "tables", "missing", "environment"]
    assert "<b>" in html  # bold best values
    md = (synthetic_report[0] / "summary.md").read_text()
    assert md.index("> **Warning.**") < md.index("## Verdict") < md.index("## Figures") < md.index("## Tables")


def test_two_runs_with_shared_labels_keep_their_baselines(tmp_path):
    a = write_run(tmp_path / "a", power_law_rows(run_id="ra"), manifest("synthetic"))
    b_rows = copy.deepcopy(power_law_rows(run_id="rb", seed=3))
    b = write_run(tmp_path / "b", b_rows, manifest("synthetic"))
    report, frame, _ = make_report(load_runs([a, b]))
    best = report.verdict[0].tables
    assert len(best) == 2 and "run `ra`" in best[0].caption and "run `rb`" in best[1].caption
    assert best[0].rows[0][-1].startswith("agent (ra)")
