"""``attnbench run --executor local``: real submitit jobs on this machine (no mocks of the engine or submitit).

Each job is a fresh Python process started by submitit's LocalExecutor; the fake metrics (engine_fakes,
executor_fakes) keep the cells cheap, so the cost is the jobs' start-up (importing torch, ~2 s each).
"""
from __future__ import annotations

import collections
import os
import signal

import pytest
from click.testing import CliRunner

import engine_fakes as fakes
import executor_fakes as xfakes

from attnbench import metrics
from attnbench.engine import runner
from attnbench.cli import main
from attnbench.engine.executors.ledger import read_ledger
from attnbench.core.results import shard_dir
from attnbench.engine.executors.shard_job import ShardJob
from attnbench.engine.executors.shards import merge_shards, shard_rows
from attnbench.engine.executors.submit import run_with_executor
from attnbench.core.results import ResultsWriter, read_manifest, read_rows

EXACT = ("fake_params", "fake_tokens", "fake_batch", "fake_trip")


@pytest.fixture
def nap(fake_metrics, monkeypatch):
    """The fake metrics plus ``nap`` (0.6 s per cell)."""
    monkeypatch.setitem(fakes.FAKE_METRICS, "nap", xfakes.nap_metric)
    monkeypatch.setitem(metrics.METRICS, "nap", "_fake_nap")
    return fake_metrics


def plan(path, out=None, resume=None):
    return runner.plan(str(path) if path else None, out=str(out) if out else None,
                       resume=str(resume) if resume else None, cuda_available=False)


def local(p, **kw):
    return run_with_executor(p, "local", kw.pop("overrides", None), progress=False, argv=["test"], **kw)


def by_cell(rows):
    return {r["cell_id"]: r for r in rows}


def test_local_executor_matches_inline_run(fake_metrics, write_suite, tmp_path):
    path = write_suite(fakes.tiny_suite(executor={"cells_per_job": 5, "max_parallel": 2, "poll_s": 0.2}))
    # the reference run in-process (a dotted-path attention would otherwise get a child, and a torch import, per cell)
    runner.run(plan(path, tmp_path / "inline"), isolate=False, progress=False, argv=["test"])
    summary = local(plan(path, tmp_path / "local"))
    inline, rows = read_rows(tmp_path / "inline"), read_rows(tmp_path / "local")
    ids = [r["cell_id"] for r in rows]
    assert collections.Counter(ids) == collections.Counter(r["cell_id"] for r in inline)  # each exactly once
    assert summary.counts == {"ok": 8} and summary.missing == 0 and summary.ran == 8
    for cell_id, row in by_cell(inline).items():
        other = by_cell(rows)[cell_id]
        assert [other[k] for k in EXACT] == [row[k] for k in EXACT] and other["status"] == "ok"
        assert list(other)[:20] == list(row)[:20] and other["run_id"] == "local"
    ledger = read_ledger(tmp_path / "local")
    assert ledger["executor"] == "local" and [len(j["cells"]) for j in ledger["jobs"]] == [5, 3]
    assert sorted(c for j in ledger["jobs"] for c in j["cells"]) == sorted(ids)
    assert all(len(j["submissions"]) == 1 and os.path.exists(j["submissions"][0]["stdout"]) for j in ledger["jobs"])
    assert {k: len(v) for k, v in shard_rows(tmp_path / "local").items()} == {"job-0000": 5, "job-0001": 3}
    assert not (tmp_path / "local" / "jobs" / "%j").exists()  # issue 19: submitit's folder pattern, left empty
    options = read_manifest(tmp_path / "local")["options"]["executor"]
    assert options["name"] == "local" and options["cells_per_job"] == 5
    # one run lifecycle (engine/lifecycle.py): the executor's manifest ends like the in-process runner's
    ended, ended_inline = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "inline")
    assert ended["error"] is None and ended["interrupted"] is False and ended["counts"] == {"ok": 8}
    assert "under_load" in ended["load"] and set(ended["load"]) == set(ended_inline["load"])
    assert ended["missing_cells"] == 0 and {"load", "error", "ended_at"} <= set(ended_inline)
    status = CliRunner().invoke(main, ["status", str(tmp_path / "local")])
    assert status.exit_code == 0, status.output
    assert "0 queued, 0 running, 2 done, 0 failed" in status.output and "job-0001  done" in status.output
    # resuming a complete run submits nothing and changes no row
    again = local(plan(None, resume=tmp_path / "local"))
    assert again.submitted == 0 and read_rows(tmp_path / "local") == rows


def test_merge_keeps_the_first_final_row_of_each_cell(tmp_path):
    def row(cell, status="ok", value=0):
        return {"cell_id": cell, "status": status, "value": value}

    with ResultsWriter(tmp_path) as w:
        w.append(row("a", value=1))
    before = (tmp_path / "results.jsonl").read_bytes()
    for job, rows in {"job-0000": [row("a", value=2), row("b", value=3), {"note": "no cell id"}],
                      "job-0001": [row("b", "failed", 4), row("c", "oom", 5), row("d", "running", 6)]}.items():
        shard_dir(tmp_path, job).mkdir(parents=True)
        with ResultsWriter(shard_dir(tmp_path, job)) as w:
            for r in rows:
                w.append(r)
    result = merge_shards(tmp_path, [row("e", "skipped", 7)])
    assert [(r["cell_id"], r["value"]) for r in result.added] == [("e", 7), ("b", 3), ("c", 5)]
    assert result.duplicates == 2  # a (already merged) and b's second row
    merged = (tmp_path / "results.jsonl").read_bytes()
    assert merged.startswith(before)  # existing lines kept byte for byte
    assert [(r["cell_id"], r["value"]) for r in read_rows(tmp_path)] == [("a", 1), ("e", 7), ("b", 3), ("c", 5)]
    assert merge_shards(tmp_path).added == [] and (tmp_path / "results.jsonl").read_bytes() == merged
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_restarted_job_measures_only_its_missing_cells(fake_metrics, write_suite, tmp_path):
    """What a re-queued job does (run here in-process: the job is a plain callable)."""
    path = write_suite(fakes.tiny_suite())
    p = plan(path, tmp_path / "run")
    from attnbench.engine.execute import CellRunner

    job = ShardJob(str(tmp_path / "run"), "job-0000", [c.identity() for c in p.to_run],
                   CellRunner(["shape", "trip"], {}, 0).locations())
    fakes.TRIPS["interrupt"] = 6  # dies (like a pre-empted process) at the first 6x6 cell
    with pytest.raises(KeyboardInterrupt):
        job()
    assert len(read_rows(shard_dir(tmp_path / "run", "job-0000"))) == 4
    fakes.TRIPS.clear()
    fakes.CALLS.clear()
    assert job()["measured"] == 4
    assert {c[1] for c in fakes.CALLS} == {6}  # only the missing 6x6 cells were measured again
    ids = [r["cell_id"] for r in read_rows(shard_dir(tmp_path / "run", "job-0000"))]
    assert sorted(ids) == sorted(c.cell_id for c in p.to_run) and len(set(ids)) == 8


@pytest.mark.slow  # local jobs killed and requeued: ~20-35 s on one loaded core; .ci/run runs it
def test_preempted_local_job_is_requeued_and_loses_no_row(nap, write_suite, tmp_path):
    """SIGUSR2 to the job's task is what Slurm sends before pre-empting it: submitit checkpoints the job and
    re-queues it; the new incarnation skips the cells already in its shard."""
    suite = fakes.tiny_suite(metrics=["shape", "nap"], executor={"cells_per_job": 8, "poll_s": 0.2})
    path, run_dir = write_suite(suite), tmp_path / "run"
    first = local(plan(path, run_dir), wait=False)
    assert first.submitted == 1
    controller = int(read_ledger(run_dir)["jobs"][0]["submissions"][0]["job_id"])
    shard = shard_dir(run_dir, "job-0000")
    xfakes.wait_for(lambda: len(read_rows(shard)) >= 2, 60, "two rows in the job's shard")
    task = xfakes.wait_for(lambda: xfakes.task_of(controller), 10, "the job's task process")[0]
    os.kill(task, signal.SIGUSR2)
    summary = local(plan(None, resume=run_dir))  # waits for the live job, merges
    ids = [r["cell_id"] for r in read_rows(run_dir)]
    assert collections.Counter(ids) == collections.Counter(c.cell_id for c in plan(path, tmp_path / "x").to_run)
    assert len(set(ids)) == 8 and summary.missing == 0 and summary.submitted == 0
    shard_ids = [r["cell_id"] for r in read_rows(shard)]
    assert len(shard_ids) == len(set(shard_ids)) == 8  # the re-queued job wrote no row twice
    log = open(read_ledger(run_dir)["jobs"][0]["submissions"][0]["stderr"]).read()
    assert "this job is preempted" in log, log[-2000:]  # submitit's handler ran; the re-queue was in-job
    for row in read_rows(run_dir):
        assert row["nap_tokens"] == row["tokens"] and row["status"] == "ok"


@pytest.mark.slow  # four job start-ups one after the other: ~25 s on 2 loaded cores
def test_cancelled_job_shows_failed_and_resume_resubmits_only_its_missing_cells(nap, write_suite, tmp_path):
    suite = fakes.tiny_suite(metrics=["shape", "nap"], executor={"cells_per_job": 4, "max_parallel": 1,
                                                                "poll_s": 0.2})
    path, run_dir = write_suite(suite), tmp_path / "run"
    local(plan(path, run_dir), wait=False)
    ledger = read_ledger(run_dir)
    controller = int(ledger["jobs"][0]["submissions"][0]["job_id"])
    xfakes.wait_for(lambda: len(read_rows(shard_dir(run_dir, "job-0000"))) >= 1, 60, "a first row")
    for pid in xfakes.task_of(controller) + [controller]:  # the job dies with its node, say
        os.kill(pid, signal.SIGKILL)
    xfakes.wait_for(lambda: "failed" in CliRunner().invoke(main, ["status", str(run_dir)]).output, 10,
                    "status to show the failed job")
    out = CliRunner().invoke(main, ["status", str(run_dir)]).output
    assert "job-0001" in out and "queued" in out  # never submitted (max_parallel 1): queued
    done_before = len(read_rows(shard_dir(run_dir, "job-0000")))
    summary = local(plan(None, resume=run_dir), overrides={"max_parallel": 3})
    ledger = read_ledger(run_dir)
    # the killed job's missing cells go again as a second try of job-0000 (the ledger keeps both tries);
    # the never-submitted job-0001 is planned again
    first = ledger["jobs"][0]
    assert first["name"] == "job-0000" and len(first["submissions"]) == 2
    assert first["submissions"][1]["cells"] == 4 - done_before
    assert sum(j["submissions"][-1]["cells"] for j in ledger["jobs"][1:]) == 4  # only the cells without a row
    ids = [r["cell_id"] for r in read_rows(run_dir)]
    assert len(ids) == len(set(ids)) == 8 and summary.missing == 0


@pytest.mark.slow  # a job plus two isolated cell processes, each importing torch: ~20 s on 2 loaded cores
def test_isolated_cells_in_a_job_survive_a_crashing_cell(fake_metrics, write_suite, tmp_path):
    suite = fakes.tiny_suite(attentions=[{"name": fakes.dotted("Crashy"), "label": "crashy"},
                                         {"name": fakes.dotted("Tiny"), "label": "tiny"}],
                             axes={"resolution": [4], "device": ["cpu"]}, executor={"poll_s": 0.2})
    summary = local(plan(write_suite(suite), tmp_path / "run"), isolate=True)
    rows = {r["label"]: r for r in read_rows(tmp_path / "run")}
    assert rows["tiny"]["status"] == "ok" and rows["crashy"]["status"] == "failed"
    assert "SIGSEGV" in rows["crashy"]["error"] and summary.missing == 0


def test_executor_flags_need_an_executor_and_bad_values_are_one_line(fake_metrics, write_suite, tmp_path):
    path = write_suite(fakes.tiny_suite())
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "r"), "--partition", "gpu"])
    assert result.exit_code == 2 and "need --executor local|slurm" in result.output
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "r"), "--executor", "local",
                                       "--sbatch", "nokeyvalue"])
    assert result.exit_code == 2 and "--sbatch 'nokeyvalue': expected KEY=VALUE" in result.output
    bad = write_suite(fakes.tiny_suite(executor={"timeout_min": "60"}), "bad.yaml")
    result = CliRunner().invoke(main, ["run", str(bad), "--dry-run"])
    assert result.exit_code == 2 and "executor.timeout_min" in result.output


def test_job_grouping_keeps_gpu_and_cpu_apart_and_follows_the_budget():
    from attnbench.suite.cells import Cell
    from attnbench.suite.executor_config import ExecutorSection
    from attnbench.engine.executors.grouping import group_cells, job_parameters

    cells = [Cell("s", "a", "a", {"dim": 8}, h, h, 1, "float32", dev, "forward", "eager")
             for h in (4, 6, 8) for dev in ("cpu", "cuda")]
    jobs = group_cells(cells, ExecutorSection(cells_per_job=2))
    assert [(j.name, j.device, [c.height for c in j.cells]) for j in jobs] == [
        ("job-0000", "cpu", [4, 6]), ("job-0001", "cpu", [8]), ("job-0002", "cuda", [4, 6]),
        ("job-0003", "cuda", [8])]
    assert [len(j.cells) for j in group_cells(cells, ExecutorSection(minutes_per_job=30, cell_minutes=10))] == [3, 3]
    section = ExecutorSection(partition="gpu", cpu_partition="cpu", account="lab", constraint="h100",
                              gpus_per_node=8, cpus_per_task=12, mem_gb=64, nodes=2, sbatch={"exclude": "n1"})
    gpu = job_parameters(section, jobs[2], "slurm", "s")
    assert (gpu["slurm_partition"], gpu["gpus_per_node"], gpu["nodes"], gpu["tasks_per_node"]) == ("gpu", 8, 1, 1)
    assert gpu["slurm_additional_parameters"] == {"exclude": "n1"} and gpu["mem_gb"] == 64
    cpu = job_parameters(section, jobs[0], "slurm", "s")
    assert cpu["slurm_partition"] == "cpu" and "gpus_per_node" not in cpu
    acc = group_cells(cells, section, accuracy=True)
    assert [len(j.cells) for j in acc] == [3, 3]  # one job per trained model (attention, config, device)
    acc_gpu = job_parameters(section, acc[1], "slurm", "s")
    assert (acc_gpu["nodes"], acc_gpu["tasks_per_node"], acc_gpu["gpus_per_node"]) == (2, 8, 8)


def test_slurm_jobs_that_cannot_start_are_reported_once(monkeypatch):
    """A job pending for a reason waiting never clears (two tasks on a one-CPU node: PartitionConfig) gets one
    warning naming the job, the reason and the fix; jobs merely waiting for resources get none."""
    from attnbench.engine.executors import ledger, submit
    from attnbench.engine.executors.ledger import JobStatus

    calls = []

    def fake_squeue(cmd):
        calls.append(cmd)
        return "11|PartitionConfig\n12|Resources\n13|Priority\n99|PartitionConfig\n"

    monkeypatch.setattr(ledger.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(ledger, "_quiet", fake_squeue)
    assert ledger.slurm_stuck(["11", "12", "13"]) == {"11": "PartitionConfig"}  # 99 is not ours
    assert calls[-1][:4] == ["squeue", "-h", "-t", "PENDING"]

    parent = object.__new__(submit._Parent)
    parent.warned = set()
    statuses = [JobStatus("job-0000", "queued", "11", 0, 1, None, None, 1),
                JobStatus("job-0001", "queued", "12", 0, 1, None, None, 1),
                JobStatus("job-0002", "running", "13", 0, 1, None, None, 1)]
    with pytest.warns(UserWarning, match=r"job-0000 \(Slurm job 11\) cannot start: .*PartitionConfig.*scancel 11"):
        parent.warn_stuck(statuses)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parent.warn_stuck(statuses)  # said once only


@pytest.mark.slow  # a local submitit job (its own processes, a torch import): 6-12 s; .ci/run runs it
def test_memory_is_the_same_inline_and_through_the_local_executor(write_suite, tmp_path):
    """CPU peak memory depends on torch's thread count (mhsa forward: +35% with 2 threads). The memory metric runs
    the call with settings.memory.threads (default 1) wherever the cell runs, and records it: an inline run in a
    process with 2 threads and a local job (OMP_NUM_THREADS=1) give the same bytes."""
    import torch

    suite = {"name": "mem", "attentions": [{"name": "mhsa"}, {"name": "dat"}], "defaults": {"dim": 32, "num_heads": 2},
             "axes": {"resolution": [14], "batch": [1], "device": ["cpu"], "pass": ["forward", "forward_backward"]},
             "metrics": ["memory"], "executor": {"cells_per_job": 4, "poll_s": 0.2}}
    path = write_suite(suite)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner.run(plan(path, tmp_path / "inline"), progress=False, isolate=False, argv=["test"])
    finally:
        torch.set_num_threads(before)
    local(plan(path, tmp_path / "local"))
    inline, jobs = by_cell(read_rows(tmp_path / "inline")), by_cell(read_rows(tmp_path / "local"))
    assert set(inline) == set(jobs) and len(inline) == 4
    for cell_id, row in inline.items():
        assert row["status"] == jobs[cell_id]["status"] == "ok"
        assert row["mem_threads"] == jobs[cell_id]["mem_threads"] == 1
        assert row["mem_peak_bytes"] == jobs[cell_id]["mem_peak_bytes"], row["label"]
