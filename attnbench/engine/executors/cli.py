"""The ``attnbench run`` options of the executors, and what the run command does with them."""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import click

from ...core.errors import UserError
from ...core.results import read_manifest

__all__ = ["executor_options", "run_if_executor"]

#: flag -> (ExecutorSection key, click type, help)
_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--partition": ("partition", str, "Slurm partition."),
    "--cpu-partition": ("cpu_partition", str, "Slurm partition for jobs of CPU cells (default --partition)."),
    "--account": ("account", str, "Slurm account."),
    "--qos": ("qos", str, "Slurm quality of service."),
    "--constraint": ("constraint", str, "Slurm node constraint, e.g. 'a100|h100'."),
    "--time": ("timeout_min", int, "Time limit of each job, minutes."),
    "--gpus": ("gpus_per_node", int, "GPUs per node of GPU jobs (accuracy jobs: one process each)."),
    "--cpus": ("cpus_per_task", int, "CPUs per task (also sets OMP_NUM_THREADS in the job)."),
    "--mem-gb": ("mem_gb", float, "Memory per node, GB."),
    "--nodes": ("nodes", int, "Nodes per accuracy job."),
    "--tasks-per-node": ("tasks_per_node", int, "Processes per node of accuracy jobs (default: one per GPU)."),
    "--cells-per-job": ("cells_per_job", int, "At most this many cells per job."),
    "--minutes-per-job": ("minutes_per_job", float, "Time budget per job (with the section's cell_minutes)."),
    "--max-parallel": ("max_parallel", int, "At most this many jobs submitted at once."),
    "--poll": ("poll_s", float, "Seconds between merges and state checks."),
}


def executor_options(fn: Callable) -> Callable:
    """Add ``--executor``, the resource flags, ``--sbatch``, ``--setup`` and ``--no-wait`` to a click command."""
    for flag, (key, kind, text) in reversed(list(_FLAGS.items())):
        fn = click.option(flag, f"x_{key}", type=kind, default=None, help=f"[--executor] {text}")(fn)
    fn = click.option("--sbatch", "x_sbatch", multiple=True, metavar="KEY=VALUE",
                      help="[--executor slurm] Extra sbatch option, e.g. --sbatch exclude=node12 (repeatable).")(fn)
    fn = click.option("--setup", "x_setup", multiple=True, metavar="LINE",
                      help="[--executor] Shell line run before each job, e.g. 'module load cuda' (repeatable).")(fn)
    fn = click.option("--no-wait", "x_no_wait", is_flag=True,
                      help="[--executor] Submit and return; collect with attnbench run --resume RUN_DIR.")(fn)
    fn = click.option("--executor", "x_executor", type=click.Choice(["inline", "local", "slurm"]), default=None,
                      help="Where cells run: inline (this process, the default), local (submitit jobs on this "
                           "machine) or slurm (submitit jobs on a Slurm cluster). See docs/cluster.md.")(fn)
    return fn


def _overrides(kw: dict[str, Any]) -> dict[str, Any]:
    out = {key: kw[f"x_{key}"] for key, _, _ in _FLAGS.values() if kw.get(f"x_{key}") is not None}
    if kw.get("x_sbatch"):
        sbatch = {}
        for item in kw["x_sbatch"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. --sbatch exclude=node12")
            sbatch[key.strip().lstrip("-")] = value.strip()
        out["sbatch"] = sbatch
    if kw.get("x_setup"):
        out["setup"] = list(kw["x_setup"])
    return out


def _chosen(p, flag: Optional[str]) -> str:
    """The flag, else the executor a resumed run used, else inline."""
    if flag:
        return flag
    if p.resume:
        stored = (read_manifest(p.run_dir).get("options") or {}).get("executor") or {}
        return stored.get("name", "inline")
    return "inline"


def run_if_executor(p, kw: dict[str, Any], *, isolate: bool, progress: bool, print_summary: Callable) -> bool:
    """Run ``p`` with the chosen executor and print its summary; False when the run is inline (the caller's)."""
    executor = _chosen(p, kw.get("x_executor"))
    if executor == "inline":
        if any(v for k, v in kw.items() if k != "x_executor"):
            raise UserError("the executor options (--partition, --time, --sbatch, ...) need --executor local|slurm")
        return False
    from .submit import run_with_executor

    wait = not kw.get("x_no_wait")
    summary = run_with_executor(p, executor, _overrides(kw), wait=wait, isolate=isolate,
                                argv=["attnbench", *sys.argv[1:]], progress=progress)
    if not wait:
        click.echo(f"submitted {summary.submitted} jobs; follow them with: attnbench status {summary.run_dir}\n"
                   f"collect the rows (and re-submit missing cells) with: attnbench run --resume {summary.run_dir}")
        return True
    if summary.interrupted:
        hint = ("the Slurm jobs keep running (scancel stops them); " if executor == "slurm" else "")
        click.echo(f"\ninterrupted: {hint}collect their rows with:\n  attnbench run --resume {summary.run_dir}",
                   err=True)
        sys.exit(130)
    print_summary(summary)
    if summary.missing:
        click.echo(f"{summary.missing} cells have no row (failed jobs above); re-submit them with:\n"
                   f"  attnbench run --resume {summary.run_dir}", err=True)
        sys.exit(1)
    return True
