"""Cells into jobs, and what each job asks the scheduler for.

Cells keep the suite's expansion order inside a job, so a job holds neighbouring cells (one attention, one grid,
its batches and passes) and the per-process reuse of ``DEPENDS_ON`` metrics (params, FLOPs) still pays.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from ...suite.cells import Cell
from ...suite.executor_config import ExecutorSection

__all__ = ["JobSpec", "group_cells", "job_parameters"]


@dataclasses.dataclass
class JobSpec:
    """A job to submit: its name (``job-0007``), its cells, the device kind they need, whether it trains."""

    name: str
    cells: list[Cell]
    device: str          # "cuda" or "cpu"
    accuracy: bool = False


def _device_kind(cell: Cell) -> str:
    return "cuda" if cell.device.startswith("cuda") else "cpu"


def group_cells(cells: list[Cell], section: ExecutorSection, *, accuracy: bool = False,
                first_index: int = 0) -> list[JobSpec]:
    """Jobs for ``cells``: GPU and CPU cells apart; at most ``section.cells_in_job()`` cells a job; with
    ``accuracy``, one job per trained model (attention, config, device), whose cells share one training run."""
    buckets: dict[Any, list[Cell]] = {}
    for cell in cells:
        key: Any = _device_kind(cell)
        if accuracy:
            key = (key, cell.attention, json.dumps(cell.config, sort_keys=True, default=str))
        buckets.setdefault(key, []).append(cell)
    size = section.cells_in_job()
    jobs: list[JobSpec] = []
    for key, group in buckets.items():
        chunks = [group] if accuracy else [group[i:i + size] for i in range(0, len(group), size)]
        for chunk in chunks:
            name = f"job-{first_index + len(jobs):04d}"
            jobs.append(JobSpec(name, chunk, _device_kind(chunk[0]), accuracy))
    return jobs


def job_parameters(section: ExecutorSection, job: JobSpec, cluster: str, suite: str,
                   setup: Optional[list[str]] = None) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for ``job`` on ``cluster`` (``local`` or ``slurm``)."""
    gpus = section.gpus_per_node if job.device == "cuda" else 0
    tasks = 1
    nodes = 1
    if job.accuracy:
        nodes = section.nodes
        tasks = section.tasks_per_node or max(gpus, 1)
    params: dict[str, Any] = {"name": f"attnbench-{suite}-{job.name}", "timeout_min": section.timeout_min,
                              "nodes": nodes, "tasks_per_node": tasks}
    if gpus:
        params["gpus_per_node"] = gpus
    if section.cpus_per_task:
        params["cpus_per_task"] = section.cpus_per_task
    lines = list(setup or []) + list(section.setup)
    if cluster == "slurm":
        if section.mem_gb:
            params["mem_gb"] = section.mem_gb
        partition = section.cpu_partition if (job.device == "cpu" and section.cpu_partition) else section.partition
        for key, value in (("partition", partition), ("account", section.account), ("qos", section.qos),
                           ("constraint", section.constraint)):
            if value:
                params[f"slurm_{key}"] = value
        if section.sbatch:
            params["slurm_additional_parameters"] = {k.replace("-", "_"): v for k, v in section.sbatch.items()}
        if lines:
            params["slurm_setup"] = lines
    elif lines:
        params["local_setup"] = lines
    return params
