"""A cluster record that lasts (issue 19, item 7), with the scheduler faked (no Slurm needed): a cancelled job
went from `failed (CANCELLED)` to `failed (UNKNOWN)` once Slurm forgot it, a resume lost the cancel (`tries 1`),
a USR2 re-queue still showed `tries 1`, accuracy jobs showed no epoch progress, and `status` said `done` while
`squeue` still ran the job."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.cli import main
from attnbench.core import job_record
from attnbench.engine.executors import ledger
from attnbench.engine.executors.ledger import job_statuses, read_ledger, write_ledger
from attnbench.core.results import shard_dir
from attnbench.core.results import ResultsWriter, make_row, write_manifest


@pytest.fixture
def slurm(monkeypatch):
    """The scheduler's answers: ``slurm["states"]`` is what squeue/sacct know now (a forgotten job is absent)."""
    box = {"states": {}}
    monkeypatch.setattr(ledger, "slurm_states", lambda ids: {i: s for i, s in box["states"].items() if i in ids})
    return box


def a_run(tmp_path, write_suite, rows: int = 0):
    """A run directory of the tiny suite with one Slurm job (job-0000, id 101) holding its 8 cells, ``rows`` of
    them measured in the job's shard."""
    p = runner.plan(str(write_suite(fakes.tiny_suite())), out=str(tmp_path / "run"), cuda_available=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_manifest(run_dir, {"run_id": "run", "suite": p.suite.to_dict(), "cells": {"to_run": 8, "skipped": 0}})
    ids = [c.cell_id for c in p.to_run]
    write_ledger(run_dir, {"executor": "slurm", "jobs": [{
        "name": "job-0000", "device": "cpu", "accuracy": False, "cells": ids,
        "submissions": [{"job_id": "101", "submitted_at": "t", "stdout": "out", "stderr": "err", "result": ""}]}]})
    shard = shard_dir(run_dir, "job-0000")
    shard.mkdir(parents=True)
    with ResultsWriter(shard) as w:
        for cell in p.to_run[:rows]:
            w.append(make_row(cell, "run", status="ok", started_at="t", duration_s=0.1))
    return p, run_dir


def status(run_dir) -> str:
    result = CliRunner().invoke(main, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_cancelled_job_stays_cancelled_after_slurm_forgets_it(slurm, fake_metrics, write_suite, tmp_path):
    _, run_dir = a_run(tmp_path, write_suite, rows=3)
    slurm["states"] = {"101": "CANCELLED"}
    assert "failed (CANCELLED)" in status(run_dir)  # status records what it saw (no parent holds the run)
    assert read_ledger(run_dir)["jobs"][0]["submissions"][0]["state"] == "CANCELLED"
    slurm["states"] = {}  # MinJobAge passed, no accounting database: Slurm knows nothing of job 101
    (st,) = job_statuses(run_dir, read_ledger(run_dir))
    assert st.state == "failed (CANCELLED)" and "UNKNOWN" not in status(run_dir)


def test_a_job_last_seen_running_that_slurm_forgot_is_not_unknown(slurm, fake_metrics, write_suite, tmp_path):
    _, run_dir = a_run(tmp_path, write_suite, rows=3)
    slurm["states"] = {"101": "RUNNING"}
    status(run_dir)
    slurm["states"] = {}
    (st,) = job_statuses(run_dir, read_ledger(run_dir))
    assert st.state == "failed (gone from the scheduler, last seen RUNNING)"


def test_status_is_running_not_done_while_the_scheduler_still_runs_the_job(slurm, fake_metrics, write_suite,
                                                                           tmp_path):
    _, run_dir = a_run(tmp_path, write_suite, rows=8)
    slurm["states"] = {"101": "RUNNING"}
    (st,) = job_statuses(run_dir, read_ledger(run_dir))
    assert (st.state, st.cells_done) == ("running", 8)
    slurm["states"] = {"101": "COMPLETED"}
    assert job_statuses(run_dir, read_ledger(run_dir))[0].state == "done"


def test_tries_count_requeues_and_resubmissions(slurm, fake_metrics, write_suite, tmp_path, monkeypatch):
    from attnbench.suite.executor_config import ExecutorSection
    from attnbench.engine.executors.submit import _Parent

    p, run_dir = a_run(tmp_path, write_suite, rows=3)
    # the job started, was pre-empted and re-queued by Slurm under the same id, started again
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    job_record.record_start(run_dir, "job-0000")
    job_record.record_start(run_dir, "job-0000")
    slurm["states"] = {"101": "CANCELLED"}  # then someone cancelled it
    (st,) = job_statuses(run_dir, read_ledger(run_dir))
    assert st.tries == 2 and st.state == "failed (CANCELLED)"
    # a resume submits its missing cells again, as another try of the same job
    parent = _Parent(p, "slurm", ExecutorSection(), {}, None)
    jobs = parent.plan_jobs(p.to_run[3:])  # the cells without a row (the parent merges the shards first)
    assert [(j.name, len(j.cells)) for j in jobs] == [("job-0000", 5)]
    entry = read_ledger(run_dir)["jobs"][0]
    entry["submissions"].append({"job_id": "102", "submitted_at": "t2", "stdout": "o2", "stderr": "e2",
                                 "result": ""})
    write_ledger(run_dir, {"executor": "slurm", "jobs": [entry]})
    slurm["states"] = {"102": "RUNNING"}  # 101 forgotten by now
    (st,) = job_statuses(run_dir, read_ledger(run_dir))
    assert (st.state, st.tries, st.history) == ("running", 3, ["CANCELLED", "RUNNING"])
    assert "3 (CANCELLED, RUNNING)" in status(run_dir)


def test_an_accuracy_job_reports_its_epoch(slurm, fake_metrics, write_suite, tmp_path, monkeypatch):
    _, run_dir = a_run(tmp_path, write_suite, rows=0)
    slurm["states"] = {"101": "RUNNING"}
    monkeypatch.delenv(job_record.PROGRESS_ENV, raising=False)
    job_record.set_cell(run_dir, "job-0000", "dbra")  # what the job does before measuring a cell
    assert "dbra" in status(run_dir)
    job_record.report_epoch(3, 10)  # what the training loop does after each epoch
    assert job_statuses(run_dir, read_ledger(run_dir))[0].progress == "dbra: epoch 3/10"
    assert "dbra: epoch 3/10" in status(run_dir)
    data = json.loads((shard_dir(run_dir, "job-0000") / job_record.PROGRESS_FILE).read_text())
    assert (data["epoch"], data["epochs"]) == (3, 10)
