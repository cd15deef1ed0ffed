"""Accuracy cells as batch jobs (``--executor local``, the same code path as Slurm): several processes per job
with the torch.distributed environment submitit exports, and resuming a pre-empted training from its checkpoint.

Slow (each job imports torch and trains): ``python3 -m pytest -q -m slow tests/accuracy/test_accuracy_cluster.py``.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")
pytest.importorskip("torchvision", reason="the accuracy extra (timm, torchvision) is not installed")

from accuracy_helpers import FAST_RECIPE  # noqa: E402

from attnbench.engine import runner  # noqa: E402
from attnbench.engine.executors.ledger import read_ledger  # noqa: E402
from attnbench.core.results import shard_dir  # noqa: E402
from attnbench.engine.executors.submit import run_with_executor  # noqa: E402
from attnbench.core.results import read_rows  # noqa: E402

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))  # executor_fakes (waiting, processes)
import executor_fakes as xfakes  # noqa: E402


def write_suite(tmp_path, epochs: int, executor: dict) -> Path:
    import yaml

    suite = {"name": "acc_cluster", "attentions": [{"name": "agent"}], "axes": {"resolution": [8], "device": ["cpu"]},
             "metrics": ["accuracy"], "baseline": "agent", "executor": {"poll_s": 0.5, **executor},
             "settings": {"accuracy": {"synthetic": True, "img_size": 32, "macro": "tiny", "log": False,
                                       "synthetic_train_per_class": 4, "synthetic_val_per_class": 2,
                                       "recipe": {**FAST_RECIPE, "epochs": epochs, "batch_size": 8}}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_accuracy_cell_trains_in_two_processes_of_one_job(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_suite(tmp_path, 1, {"tasks_per_node": 2})
    summary = run_with_executor(runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False), "local",
                                progress=False, argv=["test"])
    (row,) = read_rows(tmp_path / "run")
    assert row["status"] == "ok", row["error"]
    assert row["acc_world_size"] == 2 and row["acc_epochs"] == 1 and summary.missing == 0
    (job,) = (tmp_path / "run" / "accuracy" / "jobs").iterdir()  # the checkpoint lives in the run directory
    history = torch.load(job / "checkpoint.pt", weights_only=False)["history"]
    assert history[0]["train_images"] == 32  # 2 processes x 2 steps x batch 8: both trained
    assert len(read_ledger(tmp_path / "run")["jobs"]) == 1


def test_preempted_accuracy_job_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_suite(tmp_path, 6, {})
    run_dir = tmp_path / "run"
    run_with_executor(runner.plan(str(path), out=str(run_dir), cuda_available=False), "local", wait=False,
                      progress=False, argv=["test"])
    controller = int(read_ledger(run_dir)["jobs"][0]["submissions"][0]["job_id"])
    work = run_dir / "accuracy" / "jobs"
    xfakes.wait_for(lambda: list(work.glob("*/checkpoint.pt")), 300, "the first epoch's checkpoint", step=0.05)
    os.kill(xfakes.task_of(controller)[0], signal.SIGUSR2)  # what Slurm sends before pre-empting the job
    summary = run_with_executor(runner.plan(None, resume=str(run_dir), cuda_available=False), "local",
                                progress=False, argv=["resume"])
    (row,) = read_rows(run_dir)
    assert row["status"] == "ok" and row["acc_epochs"] == 6 and summary.submitted == 0
    assert 1 <= row["acc_resumed_from_epoch"] < 6  # the re-queued job continued from the checkpoint
    assert len(read_rows(shard_dir(run_dir, "job-0000"))) == 1


def test_accuracy_cell_on_slurm_runs_two_srun_tasks(tmp_path, monkeypatch):
    """The same through real sbatch/srun (single-node Slurm from scripts/slurm_local.sh; skipped without it)."""
    conf, why = xfakes.local_slurm()
    if conf is None:
        pytest.skip(why)
    monkeypatch.setenv("SLURM_CONF", conf)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_suite(tmp_path, 1, {"tasks_per_node": 2, "cpus_per_task": 1, "timeout_min": 10})
    summary = run_with_executor(runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False), "slurm",
                                progress=False, argv=["test"])
    (row,) = read_rows(tmp_path / "run")
    assert row["status"] == "ok" and row["acc_world_size"] == 2 and summary.missing == 0, row["error"]
    (sub,) = read_ledger(tmp_path / "run")["jobs"][0]["submissions"]
    assert "--ntasks-per-node=2" in Path(sub["stdout"]).parent.joinpath(f"{sub['job_id']}_submission.sh").read_text()
