"""``attnbench run suites/smoke.yaml`` end to end with the real attentions and metrics (a few seconds; its latency
budget cut to 1 s, tests/engine/conftest.py)."""
from __future__ import annotations

from attnbench.core.results import read_manifest, read_rows


def test_smoke_suite_end_to_end(smoke_run):
    result, out = smoke_run  # tests/engine/conftest.py
    assert result.exit_code == 0, result.output
    assert "10 ok, 0 failed, 0 oom, 0 skipped" in result.output
    rows = read_rows(out)
    assert sorted((r["attention"], r["pass"]) for r in rows) == sorted(
        (a, p) for a in ("agent", "bra", "dat", "dbra", "mhsa") for p in ("forward", "forward_backward"))
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert (row["height"], row["width"], row["batch"], row["device"]) == (14, 14, 1, "cpu")
        # one column of each metric, with values that must hold whatever the machine
        assert row["params"] > 0 and row["macs_fvcore"] > 0 and row["macs_analytic"] > 0
        assert row["latency_n"] >= 5 and len(row["latency_samples_ms"]) == row["latency_n"]
        assert row["latency_ms_median"] > 0 and row["threads"] == 1
        if row["label"] != "mhsa":  # every other cell is timed interleaved with mhsa, in the shape's group
            assert row["paired_baseline"] == "mhsa" and row["latency_group_size"] == 5
            assert row["paired_rounds"] * row["latency_per_round"] == row["latency_n"]
            assert row["paired_ratio_low"] <= row["paired_ratio"] <= row["paired_ratio_high"]
        assert row["mem_peak_bytes"] > 0
    by_attention = {(r["attention"], r["pass"]): r for r in rows}
    for name in ("agent", "bra", "dat", "dbra", "mhsa"):  # params and FLOPs do not depend on the pass
        fwd, both = by_attention[(name, "forward")], by_attention[(name, "forward_backward")]
        assert (fwd["params"], fwd["macs_fvcore"]) == (both["params"], both["macs_fvcore"])
    manifest = read_manifest(out)
    assert manifest["suite"]["name"] == "smoke" and manifest["counts"] == {"ok": 10}
    assert manifest["options"]["device"] == "cpu"
