"""``attnbench ci``: the CI regression gate (against ``benchmarks/baseline.json``) or PR versus base (``--base``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

__all__ = ["command"]


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from attnbench.core.errors import UserError

        raise UserError("--device cuda: no CUDA device is available")
    return device


@click.command("ci")
@click.option("--base", "base_ref", metavar="REF", default=None,
              help="PR mode: run this git revision and the working tree interleaved in this job and compare them.")
@click.option("--baseline", type=click.Path(path_type=Path), default=Path("benchmarks/baseline.json"),
              show_default=True, help="Gate mode: the committed baseline file.")
@click.option("--update-baseline", is_flag=True,
              help="Gate mode: measure and (re)write the baseline instead of comparing (with --only: those only).")
@click.option("--only", "patterns", multiple=True, metavar="GLOB",
              help="Benchmarks whose name matches (repeatable), e.g. 'attention-mhsa-*'.")
@click.option("--threshold", type=click.FloatRange(min=0), default=None,
              help="Time change (percent) that fails when statistically clear [gate 25, PR mode 10].")
@click.option("--rounds", type=click.IntRange(min=2), default=15, show_default=True,
              help="Paired rounds per benchmark.")
@click.option("--block-ms", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Target duration of one timed block of calls.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="torch threads while measuring (0: torch's default).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("ci-results"), show_default=True,
              help="Where benchmarks.json (pytest-benchmark JSON), summary.md and verdicts.json go.")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="PR mode: the git working tree that is the head.")
def command(base_ref, baseline, update_baseline, patterns, threshold, rounds, block_ms, device, threads, out_dir,
            repo) -> None:
    """Benchmark regression check for CI.

    Gate mode (default): every benchmark's time in units of a reference workload timed interleaved in this job,
    compared with --baseline (change past --threshold and statistically clear fails), FLOPs and peak memory
    compared exactly. PR mode (--base REF): base and head run interleaved in two worker processes; the per-round
    head/base ratio decides. Prints a Markdown table; exit 1 on a regression, 2 on bad input.
    """
    from attnbench.core.errors import UserError

    # the checks that need no torch come first (attnbench.ci imports it)
    if base_ref and update_baseline:
        raise UserError("--update-baseline and --base are exclusive (the PR mode has no baseline file)")
    if not base_ref and not update_baseline and not baseline.is_file():
        raise UserError(f"baseline {baseline} not found: create it with `attnbench ci --update-baseline` (or pass "
                        "--baseline PATH)")  # the words of attnbench.ci.gate.load_baseline, which checks the rest
    from attnbench.ci import cases as ci_cases
    from attnbench.ci import pbjson, verdicts
    try:
        selected = ci_cases.select(patterns)
        ci_cases.slowdown_factor("")  # validates ATTNBENCH_CI_SLOWDOWN early
    except ValueError as e:
        raise UserError(str(e)) from None
    device = _device(device)
    block_s = block_ms / 1e3
    out_dir.mkdir(parents=True, exist_ok=True)

    if base_ref:
        from attnbench.ci import pr

        thr = pr.DEFAULT_THRESHOLD if threshold is None else threshold / 100
        rows, head_entries, base_entries, info = pr.run_pr(
            repo, base_ref, selected, device, rounds, block_s, thr, threads,
            progress=lambda case, rs: click.echo(f"[ci] {case.name}: {rs[0].verdict}", err=True))
        pbjson.write(out_dir / "benchmarks.json", pbjson.document(head_entries, device, repo))
        pbjson.write(out_dir / "base.json", pbjson.document(base_entries, device, Path(info["head_tree"])))
        title = f"Benchmarks: head vs base `{base_ref}` ({info['base_commit'][:10]})"
        notes = [f"Interleaved in one job on {device} ({threads or 'default'} thread(s)), {rounds} paired rounds per "
                 f"benchmark; ratio = head/base, median of the per-round ratios with its 95% bootstrap interval; "
                 f"fails when the whole interval is above {1 + thr:g} (> {thr * 100:g}% slower), or FLOPs/memory "
                 f"grew."]
    else:
        from attnbench.ci import gate

        thr = gate.DEFAULT_THRESHOLD if threshold is None else threshold / 100
        previous = gate.load_baseline(baseline) if update_baseline and patterns and baseline.is_file() else None
        reference = None if update_baseline else gate.load_baseline(baseline)
        runs = gate.run_gate(selected, device, rounds, block_s, threads or None,
                             progress=lambda r: click.echo(f"[ci] {r.case.name}: "
                                                           f"{r.error or 'ok'}", err=True))
        import torch

        used_threads = threads or torch.get_num_threads()
        pbjson.write(out_dir / "benchmarks.json", pbjson.document(gate.gate_entries(runs), device))
        if update_baseline:
            gate.write_baseline(baseline, gate.baseline_document(runs, device, used_threads, previous))
            failed = [r for r in runs if r.error]
            click.echo(f"wrote {baseline}: {len(runs) - len(failed)} benchmark(s)"
                       + (f"; {len(failed)} failed and were not written" if failed else ""))
            sys.exit(1 if failed else 0)
        rows = gate.compare_to_baseline(runs, reference, thr, device, used_threads)
        title = f"Benchmarks vs `{baseline}`"
        notes = [f"Times in units of the reference workload ({gate.Reference.description}) timed interleaved in this "
                 f"job, {rounds} rounds, {device}, {used_threads} thread(s); fails when the whole 95% interval of "
                 f"the ratio to the baseline is above {1 + thr:g} (> {thr * 100:g}% slower) and Mann-Whitney "
                 f"p < 0.01, or FLOPs/memory changed. "
                 f"Refresh after an intended change: `{gate.REFRESH_COMMAND}`."]
    text = verdicts.render_markdown(rows, title, notes)
    (out_dir / "summary.md").write_text(text)
    (out_dir / "verdicts.json").write_text(json.dumps(verdicts.rows_json(rows), indent=1) + "\n")
    click.echo(text, nl=False)
    sys.exit(verdicts.exit_code(rows))
