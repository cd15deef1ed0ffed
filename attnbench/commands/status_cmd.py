"""``attnbench status RUN_DIR``: the batch jobs of a run, their state, scheduler ids, cells and log files."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["command"]


def _remember(path: Path, statuses) -> None:
    """Record the states the scheduler reports now in the ledger, when no attnbench process is writing the run
    (a parent that runs records them itself): a job Slurm forgets later keeps its last known state."""
    from ..core.errors import UserError
    from ..core.job_record import remember_states
    from ..engine.executors.ledger import read_ledger, write_ledger
    from ..engine.run_lock import RunLock

    try:
        lock = RunLock(path).acquire()
    except (UserError, OSError):
        return
    try:
        ledger = read_ledger(path)
        if ledger and remember_states(ledger, {s.job_id: s.raw for s in statuses if s.job_id and s.raw}):
            write_ledger(path, ledger)
    finally:
        lock.release()


@click.command("status")
@click.argument("run_dir", type=click.Path(file_okay=False))
def command(run_dir: str) -> None:
    """Show RUN_DIR's jobs (queued, running, done, failed) and how many cells have a row.

    Rows still in the jobs' shards are merged into results.jsonl by the run's parent process or by
    `attnbench run --resume RUN_DIR`. When no attnbench run holds RUN_DIR, the scheduler's states are recorded in
    its jobs.json, so a job the scheduler forgets later keeps its last known state.
    """
    from ..core.errors import UserError
    from ..core.hints import check_run_dir

    check_run_dir(run_dir)
    from ..engine.executors.ledger import job_statuses, read_ledger
    from ..engine.executors.shards import rows_by_job
    from ..core.results import MANIFEST_FILE, finished_ids, read_manifest, read_rows

    path = Path(run_dir)
    if not (path / MANIFEST_FILE).exists():
        raise UserError(f"{run_dir}: no {MANIFEST_FILE}; expected a run directory made by attnbench run")
    manifest = read_manifest(path)
    merged = finished_ids(read_rows(path))
    ledger = read_ledger(path)
    planned = (manifest.get("cells") or {})
    total = (planned.get("to_run") or 0) + (planned.get("skipped") or 0)
    if ledger is None:
        click.echo(f"{run_dir}: run in-process (no batch jobs); {len(merged)} of {total} cells have a row")
        return
    in_shards = set().union(*rows_by_job(path).values()) - merged
    statuses = job_statuses(path, ledger)
    _remember(path, statuses)
    cells = {c for j in ledger["jobs"] for c in j["cells"]}
    missing = len(cells - merged - in_shards)
    click.echo(f"{run_dir} (executor {ledger['executor']}): {len(merged)} cells merged in results.jsonl, "
               f"{len(in_shards)} in job shards not merged yet, {missing} of the jobs' cells without a row")
    id_head = "slurm id" if ledger["executor"] == "slurm" else "pid"
    rows = [("job", "state", id_head, "cells", "tries", "now", "log")]
    for s in statuses:
        tries = str(s.tries) + (f" ({', '.join(s.history)})" if len(s.history) > 1 or s.tries > 1 else "")
        rows.append((s.name, s.state, s.job_id or "-", f"{s.cells_done}/{s.cells}", tries, s.progress or "-",
                     s.stdout or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r[:6], widths)) + "  " + r[6])
    counts: dict[str, int] = {}
    for s in statuses:
        key = "failed" if s.state.startswith("failed") else s.state
        counts[key] = counts.get(key, 0) + 1
    click.echo(", ".join(f"{counts.get(k, 0)} {k}" for k in ("queued", "running", "done", "failed")))
    if in_shards or any(s.state.startswith("failed") for s in statuses):
        click.echo(f"next: attnbench run --resume {run_dir}   (merges the shards, re-submits cells without a row)")
