"""Running a suite's cells as batch jobs: submitit's ``local`` executor on this machine, or Slurm on a cluster.

``attnbench run SUITE --executor slurm|local`` groups the cells into jobs (:mod:`.grouping`), submits them with
submitit (:mod:`.submit`), and each job measures its cells into its own shard, ``RUN_DIR/shards/<job>/results.jsonl``
(:mod:`.shards`). Only the submitting process (the *parent*) writes ``RUN_DIR/results.jsonl``: it merges the
shards into it atomically, keeping the first final row of every cell, so a re-queued or pre-empted job can never
duplicate or lose a row, and ``report``, ``compare`` and ``--resume`` read the run directory as if it had run
in one process. ``RUN_DIR/jobs.json`` (:mod:`.ledger`) lists the jobs, their scheduler ids and log files; ``attnbench
status RUN_DIR`` shows them. The suite's ``executor:`` section (:class:`.config.ExecutorSection`) holds the job
resources; command-line flags override it. See ``docs/cluster.md``.

Importing this package imports neither torch nor submitit.
"""
from __future__ import annotations

from ...suite.executor_config import EXECUTORS, ExecutorSection

__all__ = ["EXECUTORS", "ExecutorSection"]
