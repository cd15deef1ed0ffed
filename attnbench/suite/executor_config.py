"""The ``executor:`` section of a suite: how cells become jobs and what each job asks the scheduler for.

Every key is optional; ``attnbench run --executor ...`` flags override them (``docs/cluster.md`` lists both).
Strict like the rest of the suite schema: ``timeout_min: "60"`` is an error naming the key.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EXECUTORS", "ExecutorSection"]

#: ``--executor`` values that submit jobs (``inline``, the default, measures in the ``attnbench run`` process)
EXECUTORS = ("local", "slurm")


class ExecutorSection(BaseModel):
    """Job grouping and resources.

    Grouping: a job holds at most ``cells_per_job`` cells, or, with ``minutes_per_job``, as many cells as fit
    that budget at ``cell_minutes`` each; GPU cells and CPU cells never share a job. An accuracy suite makes one
    job per trained model (attention, config, device): its cells share one training run.

    Resources (passed to submitit; Slurm names in brackets): ``partition`` (``--partition``; ``cpu_partition``
    for jobs of CPU cells when set), ``account``, ``qos``, ``constraint``, ``timeout_min`` (``--time``),
    ``gpus_per_node`` (GPU jobs only), ``cpus_per_task``, ``mem_gb`` (``--mem``), ``sbatch`` (any other sbatch
    option, ``{exclude: node12, reservation: r1}``), ``setup`` (shell lines run before the job, e.g. ``module
    load`` or activating an environment). Accuracy jobs run on ``nodes`` nodes × ``tasks_per_node`` processes
    (default: one per GPU; 1 on CPU) with the torch.distributed environment set.

    Behaviour: ``max_requeues`` is how often a timed-out job is re-queued from its checkpoint (pre-emptions do not
    count); ``max_parallel`` caps the jobs submitted at once (default: 1 for ``local``, so timings on one machine
    are not taken side by side; unlimited for ``slurm``, whose scheduler queues them); ``poll_s`` is how often the
    parent merges shards and asks for job states.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cells_per_job: int = Field(default=16, gt=0)
    minutes_per_job: Optional[float] = Field(default=None, gt=0)
    cell_minutes: float = Field(default=1.0, gt=0)
    partition: Optional[str] = None
    cpu_partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    timeout_min: int = Field(default=60, gt=0)
    gpus_per_node: int = Field(default=1, ge=0)
    cpus_per_task: Optional[int] = Field(default=None, gt=0)
    mem_gb: Optional[float] = Field(default=None, gt=0)
    nodes: int = Field(default=1, gt=0)
    tasks_per_node: Optional[int] = Field(default=None, gt=0)
    sbatch: dict[str, Any] = {}
    setup: list[str] = []
    max_requeues: int = Field(default=3, ge=0)
    max_parallel: Optional[int] = Field(default=None, gt=0)
    poll_s: float = Field(default=5.0, gt=0)

    def cells_in_job(self) -> int:
        """The most cells one job holds: the size budget, or the time budget at ``cell_minutes`` per cell."""
        if self.minutes_per_job is not None:
            return max(1, int(self.minutes_per_job // self.cell_minutes))
        return self.cells_per_job

    def merged(self, overrides: Optional[dict[str, Any]]) -> "ExecutorSection":
        """This section with the non-None ``overrides`` (command-line flags) applied and validated."""
        values = self.model_dump()
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return ExecutorSection.model_validate(values)
