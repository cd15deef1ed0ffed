"""Accuracy jobs live in the run directory (issue 10): a fresh `attnbench run --out NEW` silently reused a finished
job of an earlier run from ./runs/accuracy (old throughput copied, nothing in the row said so), and resuming
depended on the working directory. Now the job folder is under the run directory, its key covers every input (data
file listing, code), and the row says when a finished job was reused."""
from __future__ import annotations

import pytest
import torch

from accuracy_helpers import FAST_RECIPE

from attnbench.accuracy import job as job_module
from attnbench.accuracy.job import RUN_DIR_ENV, make_job
from attnbench.metrics import accuracy
from attnbench.metrics.base import MetricContext

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")
pytest.importorskip("torchvision", reason="the accuracy extra (timm, torchvision) is not installed")


def settings(**extra) -> dict:
    return {"synthetic": True, "img_size": 32, "macro": "tiny", "synthetic_train_per_class": 4,
            "synthetic_val_per_class": 2, "log": False, "recipe": {**FAST_RECIPE, "epochs": 1}, **extra}


def measure(s: dict) -> dict:
    ctx = MetricContext(attention="mhsa", config={"dim": 64, "num_heads": 2}, make_module=lambda: None, batch=1,
                        height=8, width=8, dtype=torch.float32, device=torch.device("cpu"),
                        settings={"accuracy": s}, seed=0)
    return accuracy.measure(ctx)


def test_jobs_live_in_the_run_directory_and_rows_say_when_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the old default, ./runs/accuracy, would be shared by both runs
    monkeypatch.delenv("ATTNBENCH_ACC_WORK", raising=False)
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run1"))
    first = measure(settings())
    assert first["acc_reused"] is False and first["acc_resumed_from_epoch"] == 0
    assert len(list((tmp_path / "run1" / "accuracy" / "jobs").glob("mhsa-*/checkpoint.pt"))) == 1
    assert not (tmp_path / "runs").exists()
    again = measure(settings())  # resume of the same run: the finished job is reused, and the row says so
    assert again["acc_reused"] is True and again["acc_resumed_from_epoch"] == 1
    assert again["acc_train_throughput_img_s"] == first["acc_train_throughput_img_s"]
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run2"))
    fresh = measure(settings())  # a new run trains its own job
    assert fresh["acc_reused"] is False
    assert (tmp_path / "run2" / "accuracy" / "jobs").is_dir()


def test_job_key_covers_the_data_listing_and_the_code(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "n01").mkdir(parents=True)
        (root / split / "n01" / "a.JPEG").write_bytes(b"x")
    s = settings(synthetic=False, data_root=str(root), subset=["n01"])
    key = make_job(s, "mhsa", {}, "cpu").key()
    assert make_job(s, "mhsa", {}, "cpu").key() == key  # stable
    (root / "train" / "n01" / "b.JPEG").write_bytes(b"y")  # an image added to the data root
    job_module.data_digest.cache_clear()
    key2 = make_job(s, "mhsa", {}, "cpu").key()
    assert key2 != key
    monkeypatch.setattr(job_module, "code_digest", lambda: "other-code")
    assert make_job(s, "mhsa", {}, "cpu").key() != key2
    fingerprint = make_job(s, "mhsa", {}, "cpu").fingerprint()
    assert fingerprint["data"]["root"] == str(root.resolve()) and fingerprint["code"] == "other-code"


def test_work_root_order(tmp_path, monkeypatch):
    from attnbench.accuracy.job import AccuracySettings, default_work_root

    monkeypatch.setenv("ATTNBENCH_ACC_WORK", str(tmp_path / "shared"))
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    assert default_work_root(AccuracySettings()) == tmp_path / "run" / "accuracy"
    assert default_work_root(AccuracySettings(work_dir=str(tmp_path / "w"))) == tmp_path / "w"
    monkeypatch.delenv(RUN_DIR_ENV)
    assert default_work_root(AccuracySettings()) == tmp_path / "shared"
