"""``settings.accuracy.threads``: validation, the ``auto`` rule and its probe, the count used for training and
the model latency, the columns that record it, and the report header that shows it."""
from __future__ import annotations

import json
import os

import pytest
import torch

from accuracy_helpers import FAST_RECIPE
from attnbench.accuracy import threads as th
from attnbench.metrics import accuracy
from attnbench.metrics.base import MetricContext

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")


def tiny_settings(work, **extra) -> dict:
    return {"synthetic": True, "img_size": 32, "macro": "tiny", "synthetic_train_per_class": 4,
            "synthetic_val_per_class": 2, "work_dir": str(work), "log": False,
            "recipe": {**FAST_RECIPE, "epochs": 1}, **extra}


def context(attention: str, settings: dict) -> MetricContext:
    return MetricContext(attention=attention, config={"impl": "torch"} if attention == "bra" else {},
                         make_module=lambda: None, batch=1, height=8, width=8, dtype=torch.float32,
                         device=torch.device("cpu"), settings={"accuracy": settings}, seed=0)


def small_net() -> torch.nn.Module:
    """A net with BatchNorm (whose running statistics a training step moves) and dropout (which draws)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))


@pytest.mark.parametrize("value", [0, -2, "fast", "Auto", True, 1.5, None, [2]])
def test_bad_threads_setting_names_the_key(value):
    with pytest.raises(ValueError, match=r"settings\.accuracy\.threads=.* is not allowed: expected a positive int "
                                         r".* or 'auto'"):
        accuracy.validate_settings({"threads": value})


@pytest.mark.parametrize("value", [1, 3, "auto"])
def test_good_threads_settings_load(value):
    accuracy.validate_settings({"threads": value})


def test_command_line_threads_flag_is_checked(capsys):
    from attnbench.accuracy.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--threads", "0", "--synthetic"])
    assert exc.value.code == 2 and "--threads=0 is not allowed" in capsys.readouterr().err


def test_explicit_count_is_used_as_given():
    assert th.choose_threads(3, torch.nn.Identity(), torch.device("cpu"), 32, 8) == th.ThreadChoice(3, "set")


def test_auto_rules_without_a_probe(monkeypatch):
    model = torch.nn.Identity()  # never run: none of these rules probes
    assert th.choose_threads("auto", model, torch.device("cuda"), 32, 8) == \
        th.ThreadChoice(torch.get_num_threads(), "auto-cuda")
    with th.use_threads(1):
        assert th.choose_threads("auto", model, torch.device("cpu"), 32, 8) == th.ThreadChoice(1, "auto-one-core")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(th, "other_load", lambda: 2.5)  # 4 cores less 2.5 busy: one free thread
    with th.use_threads(4):
        assert th.choose_threads("auto", model, torch.device("cpu"), 32, 8) == th.ThreadChoice(1, "auto-loaded")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(th, "usable_cores", lambda: 16)
    assert th.choose_threads("auto", model, torch.device("cpu"), 32, 8) == th.ThreadChoice(8, "auto-ddp")
    monkeypatch.setattr(th, "usable_cores", lambda: 1)
    assert th.choose_threads("auto", model, torch.device("cpu"), 32, 8) == th.ThreadChoice(1, "auto-ddp")


@pytest.mark.parametrize("medians, pick", [
    ({1: 100.0, 2: 40.0, 4: 20.0}, 4),   # all cores clearly fastest (an idle machine)
    ({1: 20.0, 2: 90.0, 4: 300.0}, 1),   # one thread fastest (a loaded machine)
    ({1: 100.0, 2: 50.0, 4: 49.0}, 2),   # within 5% of the fastest: the tie goes to fewer threads
])
def test_probe_decision(monkeypatch, medians, pick):
    seen = {}
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(th, "other_load", lambda: 3.0)  # 8 cores less 3 busy, at most the process default 4

    def fake_probe(model, candidates, img_size, batch, in_chans=3):
        seen.update(candidates=candidates, batch=batch)
        return {n: medians[n] for n in candidates}

    monkeypatch.setattr(th, "probe", fake_probe)
    with th.use_threads(4):
        choice = th.choose_threads("auto", torch.nn.Identity(), torch.device("cpu"), 32, batch_size=64)
    assert seen == {"candidates": [1, 2, 4], "batch": th.PROBE_MAX_BATCH}
    assert choice == th.ThreadChoice(pick, "auto-probe", {str(n): ms for n, ms in medians.items()})


@pytest.mark.parametrize("sample, load", [({"load": 3.5, "busy": 1}, 2.5), ({"load": 0.4, "busy": 2}, 2.0),
                                          ({"load": None, "busy": None}, 0.0)])
def test_other_load_reads_the_machine(monkeypatch, sample, load):
    from attnbench.core import machine_load

    monkeypatch.setattr(machine_load, "sample", lambda: sample)
    assert th.other_load() == load


def test_probe_interleaves_and_leaves_everything_as_it_was(monkeypatch):
    """One warm-up step, then rounds in alternating order; the model (BatchNorm statistics included), the
    random state and the thread count are untouched."""
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    monkeypatch.setattr(th, "DROP_FACTOR", float("inf"))  # keep both candidates whatever the machine's load
    with th.use_threads(2):
        calls.clear()
        medians = th.probe(model, [1, 2], 32, batch=4)
        assert torch.get_num_threads() == 2
        assert calls == [1] + [1, 2] + [2, 1] + [1, 2] + [2]  # warm-up, 3 rounds, the previous count restored
    assert set(medians) == {1, 2} and all(ms > 0 for ms in medians.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_probe_drops_a_candidate_twice_as_slow_after_the_first_round(monkeypatch):
    """A fake clock makes a step with 2 threads take 5x one with 1: after one timed step, 2 is out."""
    import types

    cost, now = {1: 0.010, 2: 0.050}, [0.0]

    def perf_counter():
        now[0] += cost.get(torch.get_num_threads(), 0.0)
        return now[0]

    monkeypatch.setattr(th, "time", types.SimpleNamespace(perf_counter=perf_counter))
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    with th.use_threads(1):
        calls.clear()
        medians = th.probe(small_net(), [1, 2], 32, batch=2)
        assert calls == [1] + [1, 2] + [1] + [1] + [1]  # warm-up, round 1, rounds 2-3 without 2, restore
    assert medians == pytest.approx({1: 10.0, 2: 50.0})


def test_probe_stops_at_the_budget(monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    with th.use_threads(1):
        calls.clear()
        medians = th.probe(small_net(), [1], 32, batch=2, budget_s=0.0)
        assert calls == [1, 1, 1] and list(medians) == [1]  # warm-up, one round (always), restore


def test_training_and_model_latency_use_the_count_and_rows_record_it(tmp_path, monkeypatch):
    from attnbench.accuracy import train

    seen = {}
    real_fit, real_cost = train.fit, accuracy.model_cost

    def spy_fit(*args, **kwargs):
        seen["fit"] = torch.get_num_threads()
        return real_fit(*args, **kwargs)

    def spy_cost(*args, **kwargs):
        seen["cost"] = torch.get_num_threads()
        return real_cost(*args, **kwargs)

    monkeypatch.setattr(train, "fit", spy_fit)
    monkeypatch.setattr(accuracy, "model_cost", spy_cost)
    with th.use_threads(2):
        cols = accuracy.measure(context("agent", tiny_settings(tmp_path, threads=1)))
        assert torch.get_num_threads() == 2  # restored for the suite's other metrics
    assert seen == {"fit": 1, "cost": 1}
    assert (cols["acc_threads"], cols["acc_threads_how"], cols["acc_threads_probe_ms"]) == (1, "set", None)


def test_auto_probe_is_recorded_and_does_not_change_the_result(tmp_path, monkeypatch):
    """``auto`` on an idle two-core machine probes; the trained model is the one of an explicit count."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(th, "other_load", lambda: 0.0)  # an idle machine (whatever this one is doing now)
    real_probe = th.probe

    def one_thread_probe(model, candidates, *args, **kwargs):
        # the real probe runs on the job's model (its steps must leave no trace), but only with one thread: a
        # two-thread step on this shared test machine can take seconds; two is then reported ten times slower
        assert candidates == [1, 2]
        ms = real_probe(model, [1], *args, **kwargs)[1]
        return {1: ms, 2: 10 * ms}

    monkeypatch.setattr(th, "probe", one_thread_probe)
    recipe = {**FAST_RECIPE, "epochs": 1, "batch_size": 8}
    with th.use_threads(2):
        auto = accuracy.measure(context("agent", tiny_settings(tmp_path / "a", recipe=recipe)))
    assert (auto["acc_threads"], auto["acc_threads_how"]) == (1, "auto-probe")
    assert set(auto["acc_threads_probe_ms"]) == {"1", "2"} and auto["acc_threads_probe_ms"]["1"] > 0
    fixed = accuracy.measure(context("agent", tiny_settings(tmp_path / "b", threads=1, recipe=recipe)))
    assert fixed["acc_threads_how"] == "set"
    assert fixed["acc_loss_curve"] == auto["acc_loss_curve"] and fixed["acc_top1"] == auto["acc_top1"]


def test_report_header_shows_the_threads_of_the_rows(tmp_path):
    from attnbench.report.build import make_report
    from attnbench.report.load import load_runs

    run = tmp_path / "run"
    run.mkdir()
    manifest = {"suite": {"name": "t", "baseline": "mhsa"}, "threads": 2}  # the process default at start
    (run / "manifest.json").write_text(json.dumps(manifest))
    base = {"run_id": "r1", "height": 8, "width": 8, "batch": 1, "dtype": "float32", "device": "cpu",
            "pass": "forward", "mode": "eager", "status": "ok"}
    rows = [{**base, "cell_id": "a", "attention": "mhsa", "latency_ms_median": 1.0, "threads": 1,
             "acc_top1": 50.0, "acc_threads": 1, "acc_threads_how": "auto-probe",
             "acc_threads_probe_ms": {"1": 10.0, "2": 30.0}},
            {**base, "cell_id": "b", "attention": "bra", "latency_ms_median": 2.0, "threads": 1,
             "acc_top1": 60.0, "acc_threads": 1, "acc_threads_how": "auto-probe",
             "acc_threads_probe_ms": {"1": 12.0, "2": 31.0}}]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, frame, _ = make_report(load_runs([run]))
    table = {r[0]: r[1:] for r in report.environment.rows}
    assert table["threads"] == ["latency 1; accuracy 1 (auto-probe)"]
    assert list(frame["acc_threads_how"]) == ["auto-probe", "auto-probe"]  # text survives the numeric frame
    # a run whose rows record no threads shows the manifest's default, marked as such
    for r in rows:
        for key in ("threads", "acc_threads", "acc_threads_how", "acc_threads_probe_ms"):
            r.pop(key)
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, _, _ = make_report(load_runs([run]))
    assert {r[0]: r[1:] for r in report.environment.rows}["threads"] == [
        "2 (process default; no row records its threads)"]
