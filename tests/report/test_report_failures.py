"""The verdict never hides a failure (issue 19, item 3): an attention that failed vanished from the verdict (the
winners named only the others), the crossover table showed `—` (documented as "not measured") and the figure
legend dropped the series."""
from __future__ import annotations

from report_fixtures import cell_id, fixture_rows, manifest, write_run

from attnbench.engine.failure_policy import REPEAT_STAGE
from attnbench.report.build import make_report
from attnbench.report.derive import add_derived, missing_cells
from attnbench.report.load import load_runs

METRICS = ("params", "macs_fvcore", "latency_ms_median", "mem_peak_bytes")


def rows_with_a_failing_attention() -> list[dict]:
    """The fixture run (mhsa, bra, dbra) plus `mine`, a user attention that failed twice with the same error and
    was not measured in its other cells."""
    rows = fixture_rows()
    mine = []
    for i, base in enumerate(r for r in rows if r["attention"] == "mhsa"):
        row = {k: v for k, v in base.items() if k in ("schema_version", "run_id", "suite", "config", "height",
                                                       "width", "tokens", "batch", "dtype", "device", "pass",
                                                       "mode", "started_at", "duration_s")}
        row.update(attention="user_attn:Mine", label="mine")
        if i < 2:
            row.update(status="failed", error="ContractError: output breaks the attention contract",
                       error_stage="correctness")
        else:
            row.update(status="skipped", error="not measured: mine failed with ContractError at correctness in 2 "
                       "cells already", error_stage=REPEAT_STAGE)
        row["cell_id"] = cell_id(row)
        mine.append(row)
    return rows + mine


def report(tmp_path):
    rows = rows_with_a_failing_attention()
    return make_report(load_runs([write_run(tmp_path / "run", rows, manifest())]))


def test_a_banner_names_each_attention_with_failed_cells_and_why(tmp_path):
    rep, _, _ = report(tmp_path)
    mine = [b for b in rep.banners if b.startswith("`mine`")]
    assert len(mine) == 1
    assert mine[0].startswith("`mine` failed in 2 of its 4 cells and 2 more were not measured after it failed the "
                              "same way twice: ContractError: output breaks the attention contract (2 cells).")
    assert "--retry-failed" in mine[0]
    dbra = [b for b in rep.banners if b.startswith("`dbra`")]  # the fixture's dbra: failed once, oom once
    assert len(dbra) == 1 and "RuntimeError: non-finite output" in dbra[0] and "OutOfMemoryError" in dbra[0]
    assert not any(b.startswith(("`mhsa`", "`bra`")) for b in rep.banners)


def test_the_verdict_marks_failed_cells_instead_of_leaving_them_out(tmp_path):
    rep, _, _ = report(tmp_path)
    best = rep.verdict[0].tables[0]
    latency_fwd = dict(zip(best.header, next(r for r in best.rows if r[0] == "latency · forward · batch 1")))
    assert latency_fwd["8×8"].endswith(" · failed: mine")  # the winner, then who could not compete
    assert latency_fwd["16×16"].endswith(" · failed: dbra, mine")
    crossover = {r[0]: r[1:] for r in rep.verdict[1].tables[0].rows}
    assert crossover["mine"] == ["failed", "failed"]  # never "—" (which means "not measured")
    assert crossover["dbra"][0] == "not in range (failed at 16×16)"


def test_the_figure_legend_keeps_a_series_that_failed_everywhere(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from attnbench.report.figures import _facet_vs_tokens, _look, _plain
    from attnbench.report.style import series_styles

    runs = load_runs([write_run(tmp_path / "run", rows_with_a_failing_attention(), manifest())])
    frame = add_derived(runs)
    ok = _plain(frame[frame["status"] == "ok"])
    missing = _plain(missing_cells(frame, runs))
    look = _look(series_styles(list(frame["series"])), ok, missing)
    figure, drawn = _facet_vs_tokens(ok, look, "latency_s_median", "latency", "s")
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert "mine: failed" in labels and "dbra: failed" in labels and "mhsa" in labels
    assert drawn >= 4  # mine's cells are drawn as markers too


def test_a_run_whose_every_cell_failed_gets_a_verdict_saying_so(tmp_path):
    keep = ("schema_version", "run_id", "suite", "attention", "label", "config", "height", "width", "tokens",
            "batch", "dtype", "device", "pass", "mode", "started_at", "duration_s", "cell_id")
    rows = [{**{k: v for k, v in r.items() if k in keep}, "status": "oom" if i == 0 else "failed",
             "error": "OutOfMemoryError: 2 GiB" if i == 0 else "RuntimeError: boom", "error_stage": "build"}
            for i, r in enumerate(fixture_rows())]
    rep, _, _ = make_report(load_runs([write_run(tmp_path / "run", rows, manifest())]))
    assert [(s.key, s.title, s.tables) for s in rep.verdict] == [
        ("all_failed", "Every cell of run `fixture-run` failed", [])]
    assert rep.verdict[0].description.startswith(
        "No cell of run `fixture-run` was measured (11 failed, 1 oom of 12 cells), so it has no winner, crossover, "
        "scaling exponent or front to report. Errors, most frequent first: RuntimeError: boom (11 cells); "
        "OutOfMemoryError: 2 GiB.")
    # one measured cell is enough for the ordinary verdict
    rows[3].update(status="ok", error=None, error_stage=None, latency_ms_median=1.0)
    rep, _, _ = make_report(load_runs([write_run(tmp_path / "run2", rows, manifest())]))
    assert "all_failed" not in [s.key for s in rep.verdict]
