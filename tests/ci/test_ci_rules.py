"""The CI gate's pure logic (no timing): slowdown hook, case selection, pairing order, comparison rules, baseline
file handling, Markdown table."""
from __future__ import annotations

import json

import pytest

from attnbench.ci import cases, gate, timing, verdicts
from attnbench.core.errors import UserError


def test_slowdown_spec_matches_globs_and_rejects_junk():
    assert cases.slowdown_factor("attention-mhsa-forward-14", "") == 1
    assert cases.slowdown_factor("attention-mhsa-forward-14", "3") == 3
    assert cases.slowdown_factor("attention-mhsa-forward-14", "op-*=4,attention-mhsa-*=2") == 2
    assert cases.slowdown_factor("attention-bra-forward-14", "attention-mhsa-*=2") == 1
    with pytest.raises(ValueError, match="ATTNBENCH_CI_SLOWDOWN"):
        cases.slowdown_factor("x", "mhsa=fast")
    with pytest.raises(ValueError, match="N must be >= 1"):
        cases.slowdown_factor("x", "0")


def test_cases_cover_every_builtin_both_passes_two_shapes_ops_and_a_backbone():
    import attentions

    names = [c.name for c in cases.all_cases()]
    assert len(names) == len(set(names))
    for attention in attentions.available():
        for grid in cases.GRIDS:
            for pass_ in ("forward", "forward_backward"):
                assert f"attention-{attention}-{pass_}-{grid}" in names
    assert {"op-routed_attention-forward_backward-28", "op-pixel_agent-forward-28",
            "backbone-dbra_tiny-train_step-32"} <= set(names)


def test_select_filters_by_glob_and_names_unknown_patterns():
    picked = [c.name for c in cases.select(["attention-dat-*-14"])]
    assert picked == ["attention-dat-forward-14", "attention-dat-forward_backward-14"]
    with pytest.raises(ValueError, match="'nope\\*' matches no benchmark"):
        cases.select(["nope*"])


def test_paired_rounds_alternate_the_order():
    calls = []
    a, b = (lambda: calls.append("a") or 1.0), (lambda: calls.append("b") or 2.0)
    ta, tb = timing.paired_rounds(a, b, rounds=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert ta == [1.0] * 4 and tb == [2.0] * 4


def _run(name: str, normalized: list[float], flops: int = 100, mem: int = 1000, error=None) -> gate.CaseRun:
    run = gate.CaseRun(cases.get_case(name), times_s=list(normalized), ref_s=[1.0] * len(normalized),
                       columns={"flops": flops, "mem_peak_bytes": mem, "mem_method": "m"}, error=error)
    return run


NOISE = [1.00, 1.04, 0.97, 1.02, 0.99, 1.05, 0.96, 1.01, 1.03, 0.98, 1.00, 1.02]


def _baseline(**over) -> dict:
    runs = [_run("attention-mhsa-forward-14", NOISE), _run("attention-bra-forward-14", NOISE)]
    doc = gate.baseline_document(runs, "cpu", 1)
    doc["benchmarks"]["attention-mhsa-forward-14"].update(over)
    return doc


def _by(rows, name, metric):
    return next(r for r in rows if r.benchmark == name and r.metric == metric)


def test_gate_flags_a_clear_slowdown_and_count_changes_but_not_noise():
    base = _baseline()
    slow = _run("attention-mhsa-forward-14", [2 * v for v in reversed(NOISE)], flops=200)
    same = _run("attention-bra-forward-14", list(reversed(NOISE)))
    rows = gate.compare_to_baseline([slow, same], base, 0.25, "cpu", 1)
    assert _by(rows, slow.case.name, "time").verdict == "slower"
    assert _by(rows, slow.case.name, "flops").verdict == "changed"
    assert _by(rows, slow.case.name, "memory").verdict == "same"
    assert _by(rows, same.case.name, "time").verdict == "same"
    assert verdicts.exit_code(rows) == 1
    assert verdicts.exit_code([r for r in rows if r.benchmark == same.case.name]) == 0


def test_gate_fails_on_a_memory_win_too_but_not_across_environments():
    base = _baseline(mem_peak_bytes=2000)
    run = _run("attention-mhsa-forward-14", NOISE)
    assert _by(gate.compare_to_baseline([run], base, 0.25, "cpu", 1), run.case.name, "memory").verdict == "changed"
    other_threads = gate.compare_to_baseline([run], base, 0.25, "cpu", 2)
    assert _by(other_threads, run.case.name, "memory").verdict == "not comparable"
    assert verdicts.exit_code(other_threads) == 0


def test_gate_reports_broken_and_unpinned_benchmarks():
    broken = _run("attention-mhsa-forward-14", NOISE, error="RuntimeError: boom")
    new = _run("attention-dat-forward-14", NOISE)
    rows = gate.compare_to_baseline([broken, new], _baseline(), 0.25, "cpu", 1)
    assert rows[0].verdict == "failed: RuntimeError: boom" and rows[0].fails
    assert rows[1].verdict == "missing in baseline" and not rows[1].fails


def test_pr_counts_fail_only_when_they_grow():
    rows = verdicts.count_rows("b", {"flops": 10, "mem_peak_bytes": 10}, {"flops": 5, "mem_peak_bytes": 20},
                               exact=False)
    assert [(r.metric, r.verdict, r.fails) for r in rows] == [("flops", "lower", False), ("memory", "higher", True)]


def test_baseline_round_trip_merge_and_bad_files(tmp_path):
    path = tmp_path / "baseline.json"
    gate.write_baseline(path, _baseline())
    doc = gate.load_baseline(path)
    refreshed = gate.baseline_document([_run("attention-dat-forward-14", NOISE, flops=7)], "cpu", 1, previous=doc)
    assert set(refreshed["benchmarks"]) == {"attention-mhsa-forward-14", "attention-bra-forward-14",
                                            "attention-dat-forward-14"}
    with pytest.raises(UserError, match="not found.*attnbench ci --update-baseline"):
        gate.load_baseline(tmp_path / "missing.json")
    path.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        gate.load_baseline(path)
    bad = _baseline()
    del bad["benchmarks"]["attention-bra-forward-14"]["flops"]
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="benchmarks.attention-bra-forward-14 needs"):
        gate.load_baseline(path)


def test_markdown_table_marks_regressions_and_states_the_exit():
    rows = gate.compare_to_baseline([_run("attention-mhsa-forward-14", [2 * v for v in NOISE])], _baseline(),
                                    0.25, "cpu", 1)
    text = verdicts.render_markdown(rows, "T", ["note"])
    assert "| benchmark | metric | base | head | ratio (95% CI) | verdict |" in text
    assert "| attention-mhsa-forward-14 | time |" in text and "**slower**" in text
    assert "| attention-mhsa-forward-14 | flops |" not in text  # unchanged counts are not listed
    assert text.rstrip().endswith("**1 regression(s): exit 1**")
