"""``attnbench compare``: the regression rule and its exit codes, on fixture runs that differ in one place."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from click.testing import CliRunner

from attnbench.cli import main
from attnbench.report.compare import compare_runs

from report_fixtures import fixture_rows, manifest, write_run


def _runs(tmp_path, edit):
    """(base dir, new dir); ``edit(rows)`` changes the new run's rows in place."""
    base = write_run(tmp_path / "base", fixture_rows(), manifest())
    rows = copy.deepcopy(fixture_rows())
    edit(rows)
    return base, write_run(tmp_path / "new", rows, manifest())


def _find(rows, label, size, pass_):
    return next(r for r in rows if (r["label"], r["height"], r["pass"]) == (label, size, pass_))


def _compare(tmp_path, edit, *args):
    base, new = _runs(tmp_path, edit)
    return CliRunner().invoke(main, ["compare", str(base), str(new), *args])


def _set_latency(row, median, q1, q3):
    # twelve raw samples spread over [q1, q3]: enough for the rank test to be able to call a change clear
    row.update(latency_ms_median=median, latency_ms_q1=q1, latency_ms_q3=q3, latency_ms_iqr=q3 - q1,
               latency_samples_ms=[float(v) for v in np.linspace(q1, q3, 12)])


def _verdicts(tmp_path, edit, threshold=0.05):
    base, new = _runs(tmp_path, edit)
    comparison = compare_runs(base, new, threshold)
    changed = comparison.rows[comparison.rows["verdict"] != "same"]
    return comparison, [tuple(r) for r in changed[["label", "resolution", "pass", "metric", "verdict"]].values]


def test_identical_runs_exit_0(tmp_path):
    result = _compare(tmp_path, lambda rows: None)
    assert result.exit_code == 0, result.output
    assert "no regression: exit 0" in result.output


def test_changed_params_exit_1(tmp_path):
    def edit(rows):
        _find(rows, "bra", 8, "forward")["params"] += 1

    result = _compare(tmp_path, edit)
    assert result.exit_code == 1
    assert _verdicts(tmp_path / "v", edit)[1] == [("bra", "8×8", "forward", "params", "changed")]


def test_flop_improvement_is_flagged_too(tmp_path):
    def edit(rows):
        _find(rows, "mhsa", 16, "forward")["macs_fvcore"] = 15_000_000

    assert _compare(tmp_path, edit).exit_code == 1
    assert _verdicts(tmp_path / "v", edit)[1] == [("mhsa", "16×16", "forward", "macs_fvcore", "changed")]


def test_analytic_part_change_is_flagged_and_shown(tmp_path):
    def edit(rows):
        _find(rows, "dbra", 8, "forward")["macs_analytic_attention"] += 10

    comparison, changed = _verdicts(tmp_path, edit)
    assert comparison.exit_code == 1
    assert changed == [("dbra", "8×8", "forward", "macs_analytic_attention", "changed")]


def test_slower_by_20_percent_with_separated_iqrs_exit_1(tmp_path):
    def edit(rows):  # base mhsa 16×16 forward: 10.0 [9.6, 10.4]; new 12.0 [11.5, 12.5]: q1 11.5 > q3 10.4
        _set_latency(_find(rows, "mhsa", 16, "forward"), 12.0, 11.5, 12.5)

    result = _compare(tmp_path, edit, "--threshold", "5")
    assert result.exit_code == 1
    assert "1.200×" in result.output
    assert _verdicts(tmp_path / "v", edit)[1] == [("mhsa", "16×16", "forward", "latency_ms", "slower")]
    assert _compare(tmp_path / "t", edit, "--threshold", "25").exit_code == 0  # within a 25% threshold
    # the default threshold (20%) sits above the run-to-run variation of a CPU: a 1.2× change is not past it
    default = _compare(tmp_path / "d", edit)
    assert default.exit_code == 0 and "threshold 20%" in default.output


def test_slower_by_half_fails_at_the_default_threshold(tmp_path):
    def edit(rows):  # base 10.0 [9.6, 10.4]; new 15.0 [14.5, 15.5]
        _set_latency(_find(rows, "mhsa", 16, "forward"), 15.0, 14.5, 15.5)

    result = _compare(tmp_path, edit)
    assert result.exit_code == 1 and "1.500×" in result.output and "threshold 20%" in result.output


def test_slower_by_20_percent_inside_the_noise_exit_0(tmp_path):
    def edit(rows):  # base bra 16×16 forward: 8.0 [6.0, 10.0]; new 9.6 [8.0, 11.0]: q1 8.0 <= q3 10.0
        _set_latency(_find(rows, "bra", 16, "forward"), 9.6, 8.0, 11.0)

    assert _compare(tmp_path, edit).exit_code == 0
    assert _verdicts(tmp_path / "v", edit)[1] == [("bra", "16×16", "forward", "latency_ms", "slower?")]


def test_faster_and_more_memory_do_not_fail(tmp_path):
    def edit(rows):
        _set_latency(_find(rows, "mhsa", 8, "forward"), 1.0, 0.9, 1.1)
        _find(rows, "bra", 8, "forward")["mem_peak_bytes"] *= 2

    comparison, changed = _verdicts(tmp_path, edit)
    assert comparison.exit_code == 0
    assert changed == [("bra", "8×8", "forward", "mem_peak_mib", "higher"),
                       ("mhsa", "8×8", "forward", "latency_ms", "faster")]


def test_a_cell_that_breaks_fails_and_one_that_is_fixed_does_not(tmp_path):
    def broke(rows):
        _find(rows, "bra", 8, "forward").update(status="failed", error="RuntimeError: x", params=None)

    assert ("bra", "8×8", "forward", "status", "broke") in _verdicts(tmp_path / "a", broke)[1]
    assert _compare(tmp_path / "b", broke).exit_code == 1
    base = write_run(tmp_path / "c" / "base", [_find(fixture_rows(), "dbra", 16, "forward")], manifest())
    fixed = dict(_find(fixture_rows(), "mhsa", 16, "forward"), **{k: _find(fixture_rows(), "dbra", 16, "forward")[k]
                 for k in ("cell_id", "label", "attention")})
    new = write_run(tmp_path / "c" / "new", [fixed], manifest())
    comparison = compare_runs(base, new)
    assert comparison.exit_code == 0
    assert comparison.rows.loc[comparison.rows["metric"] == "status", "verdict"].tolist() == ["fixed"]


def test_cells_in_one_run_only_are_listed(tmp_path):
    def edit(rows):
        rows.remove(_find(rows, "dbra", 8, "forward"))
        rows.append(dict(_find(rows, "mhsa", 8, "forward"), cell_id="aaaaaaaaaaaa", label="agent"))

    result = _compare(tmp_path, edit, "--format", "md")
    assert result.exit_code == 0, result.output
    assert "**only in base** (1):\n- dbra 8×8 batch 1 forward float32 cpu eager (ok)" in result.output
    assert "**only in new** (1):\n- agent 8×8 batch 1 forward float32 cpu eager (ok)" in result.output
    assert result.output.startswith("| label | resolution | batch | pass | metric | base | new | ratio | verdict |")


def test_changed_only_hides_same_rows(tmp_path):
    def edit(rows):
        _find(rows, "bra", 8, "forward")["params"] += 1

    lines = _compare(tmp_path, edit, "--changed-only").output.splitlines()
    assert len([line for line in lines if line.startswith("bra ")]) == 1


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_bad_input_exit_2(tmp_path, case):
    base = write_run(tmp_path / "base", fixture_rows(), manifest())
    new = tmp_path / "nope" if case == "missing" else write_run(tmp_path / "new", [], manifest())
    result = CliRunner().invoke(main, ["compare", str(base), str(new)])
    assert result.exit_code == 2
    assert str(new) in result.output
    assert ("not a directory" if case == "missing" else "no results") in result.output


def _with_samples(row, samples):
    s = sorted(samples)
    row.update(latency_samples_ms=list(samples), latency_ms_median=float(np.median(s)), latency_n=len(s),
               latency_ms_q1=float(np.percentile(s, 25)), latency_ms_q3=float(np.percentile(s, 75)))


def _lognormal(seed, scale=1.0, n=30):
    # timing-like samples: a floor plus a right-skewed tail, 10% spread
    rng = np.random.default_rng(seed)
    return list(scale * 10.0 * np.exp(rng.normal(0.0, 0.1, n)))


def _set_all(rows, make):
    for i, row in enumerate(rows):
        if row.get("status") == "ok" and row.get("latency_ms_median") is not None:
            _with_samples(row, make(i))


@pytest.mark.parametrize("seed", range(5))
def test_injected_2x_slowdown_is_flagged(tmp_path, seed):
    base_rows, new_rows = fixture_rows(), copy.deepcopy(fixture_rows())
    _set_all(base_rows, lambda i: _lognormal(1000 * seed + i))
    _set_all(new_rows, lambda i: _lognormal(1000 * seed + 500 + i))
    _with_samples(_find(new_rows, "bra", 16, "forward"), _lognormal(7 + seed, scale=2.0))
    base = write_run(tmp_path / "base", base_rows, manifest())
    new = write_run(tmp_path / "new", new_rows, manifest())
    comparison = compare_runs(base, new, 0.05)
    slow = comparison.rows[comparison.rows["verdict"] == "slower"]
    assert [(r.label, r.resolution, r.pass_) for r in slow.rename(columns={"pass": "pass_"}).itertuples()] == [
        ("bra", "16×16", "forward")]
    assert comparison.exit_code == 1


@pytest.mark.parametrize("seed", range(8))
def test_same_distribution_different_seeds_is_not_flagged(tmp_path, seed):
    base_rows, new_rows = fixture_rows(), copy.deepcopy(fixture_rows())
    _set_all(base_rows, lambda i: _lognormal(1000 * seed + i))
    _set_all(new_rows, lambda i: _lognormal(1000 * seed + 500 + i))
    base = write_run(tmp_path / "base", base_rows, manifest())
    new = write_run(tmp_path / "new", new_rows, manifest())
    comparison = compare_runs(base, new, 0.05)
    latency = comparison.rows[comparison.rows["metric"] == "latency_ms"]
    assert len(latency) > 0 and not latency["verdict"].isin(["slower", "faster"]).any()
    assert comparison.exit_code == 0


def test_zero_comparable_cells_is_an_error(tmp_path):
    base = write_run(tmp_path / "base", fixture_rows(), manifest())
    other = copy.deepcopy(fixture_rows())
    for row in other:
        row["suite"], row["cell_id"], row["label"] = "another_suite", row["cell_id"][::-1], row["label"] + "-x"
    new = write_run(tmp_path / "new", other, manifest())
    result = CliRunner().invoke(main, ["compare", str(base), str(new)])
    assert result.exit_code == 2
    assert "no comparable cells" in result.output and "another_suite" in result.output
    assert "Traceback" not in result.output


def test_suites_that_differ_only_by_name_are_matched_by_content(tmp_path):
    """Issue 19 #9: a renamed copy of a suite could not be compared (cells matched on the suite name)."""
    base = write_run(tmp_path / "base", fixture_rows(), manifest())
    renamed = copy.deepcopy(fixture_rows())
    for row in renamed:
        row["suite"], row["cell_id"] = "fixture_copy", row["cell_id"][::-1]
    _set_latency(_find(renamed, "mhsa", 16, "forward"), 40.0, 39.0, 41.0)
    new = write_run(tmp_path / "new", renamed, manifest("fixture_copy"))
    result = CliRunner().invoke(main, ["compare", str(base), str(new), "--changed-only"])
    assert result.exit_code == 1, result.output  # the injected slowdown is found: cells were really paired
    assert "cells matched by content: the suite names differ ('fixture' vs 'fixture_copy')" in result.output
    comparison = compare_runs(base, new)
    assert not comparison.only_base and not comparison.only_new
    assert len(comparison.rows) == len(compare_runs(base, base).rows)


def _pair(row, ratio, low, high):
    row.update(paired_baseline="mhsa", paired_ratio=ratio, paired_ratio_low=low, paired_ratio_high=high)


def test_paired_ratios_of_two_runs_agree_tie_or_flip(tmp_path):
    base_rows, new_rows = fixture_rows(), copy.deepcopy(fixture_rows())
    _pair(_find(base_rows, "bra", 8, "forward"), 0.5, 0.45, 0.55)
    _pair(_find(new_rows, "bra", 8, "forward"), 0.6, 0.55, 0.65)      # both clearly faster: agree
    _pair(_find(base_rows, "bra", 16, "forward"), 0.9, 0.8, 1.02)
    _pair(_find(new_rows, "bra", 16, "forward"), 1.1, 1.05, 1.2)      # one interval holds 1: tie
    _pair(_find(base_rows, "dbra", 8, "forward"), 0.8, 0.75, 0.85)
    _pair(_find(new_rows, "dbra", 8, "forward"), 1.3, 1.2, 1.4)       # clear and opposite: flipped
    base = write_run(tmp_path / "base", base_rows, manifest())
    new = write_run(tmp_path / "new", new_rows, manifest())
    comparison = compare_runs(base, new, 0.05)
    paired = comparison.rows[comparison.rows["metric"] == "ratio_to_mhsa"]
    assert [(r["label"], r["resolution"], r["verdict"]) for _, r in paired.iterrows()] == [
        ("bra", "8×8", "agree"), ("bra", "16×16", "tie"), ("dbra", "8×8", "flipped")]
    from attnbench.report.compare import render
    assert "1 agree, 1 tie, 1 flipped" in render(comparison)
    # judged by the ratio to the baseline (the default): dbra's ratio went from 0.8 to 1.3 of mhsa's, clearly
    judged = comparison.rows[comparison.rows["metric"] == "latency_vs_mhsa"]
    verdicts = {(r["label"], r["resolution"]): r["verdict"] for _, r in judged.iterrows()}
    assert verdicts[("dbra", "8×8")] == "slower"
    assert comparison.exit_code == 1
    # on absolute medians (unchanged in these rows) the same runs pass
    assert compare_runs(base, new, 0.05, mode="absolute").exit_code == 0
