"""Damaged run directories (issue 10): cut-off, undecodable and corrupt lines, a corrupt or missing manifest, a
full disk. Every case once broke `report` or `--resume` with a traceback; now readers skip and name the damaged
lines, `--resume` moves them aside (never deletes) and finishes the run with every cell exactly once."""
from __future__ import annotations

import collections
import errno
import json
import os
import stat

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.core import results
from attnbench.engine import runner
from attnbench.suite.cells import expand
from attnbench.cli import main
from attnbench.core.errors import UserError
from attnbench.core.results import (ResultsWriter, read_manifest, read_rows, replace_atomically, scan_results,
                                    write_manifest)
from attnbench.suite.load import load_suite


def start(suite_path, out, **kw) -> runner.Summary:
    p = runner.plan(str(suite_path), out=str(out), cuda_available=False, **kw)
    return runner.run(p, progress=False, argv=["test"], isolate=False)


def resume(run_dir, suite_path=None) -> runner.Summary:
    p = runner.plan(None if suite_path is None else str(suite_path), resume=str(run_dir), cuda_available=False)
    return runner.run(p, progress=False, argv=["resume"], isolate=False)


def all_ids(suite_path) -> list[str]:
    return [c.cell_id for c in expand(load_suite(suite_path), cuda_available=False).cells]


def assert_each_cell_once(run_dir, suite_path) -> None:
    ids = [r["cell_id"] for r in read_rows(run_dir)]
    assert collections.Counter(ids) == collections.Counter(all_ids(suite_path))


@pytest.fixture
def finished(fake_metrics, write_suite, tmp_path):
    """(suite path, run dir, the lines of its results.jsonl) of a finished 8-cell run."""
    path, run_dir = write_suite(fakes.tiny_suite()), tmp_path / "run"
    start(path, run_dir)
    return path, run_dir, (run_dir / "results.jsonl").read_bytes().splitlines(keepends=True)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    """Exit 2, no traceback, one 'Error:' line holding every needle."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], result.output


@pytest.mark.parametrize("damage", ["cut inside a UTF-8 character", "corrupt middle line", "not UTF-8 middle line"])
def test_resume_repairs_damaged_lines_and_moves_them_aside(finished, damage):
    path, run_dir, lines = finished
    results_file = run_dir / "results.jsonl"
    if damage == "cut inside a UTF-8 character":
        # a row whose label ends in 'é' (2 bytes), cut between them: the old reader raised UnicodeDecodeError
        row = json.loads(lines[3]) | {"label": "tiny-é"}
        raw = json.dumps(row, ensure_ascii=False).encode()
        cut = raw[: raw.index("é".encode()) + 1]
        bad, kept = cut, lines[:3]
        results_file.write_bytes(b"".join(kept) + cut)
    else:
        bad = b'{"cell_id": "abc", "sta' if damage == "corrupt middle line" else b'{"label": "\xff\xfe"}'
        kept = lines[:2] + lines[3:]
        results_file.write_bytes(b"".join(lines[:2]) + bad + b"\n" + b"".join(lines[3:]))
    with pytest.warns(UserWarning, match="results.jsonl"):
        assert read_rows(run_dir) == [json.loads(x) for x in kept]  # readers skip and say which line

    with pytest.warns(UserWarning, match="moved to"):
        resume(run_dir)
    assert_each_cell_once(run_dir, path)
    assert (run_dir / "results.damaged.jsonl").read_bytes() == bad + b"\n"  # kept, never deleted
    assert scan_results(results_file).damaged == []


def test_scan_names_every_damaged_line_with_a_count(tmp_path):
    good = b'{"cell_id": "a"}\n'
    (tmp_path / "results.jsonl").write_bytes(good + b"oops\n" + good + b"[1, 2]\n" + b'{"cell_id": "b"')
    scan = scan_results(tmp_path / "results.jsonl")
    assert [n for n, _, _ in scan.damaged] == [2, 4, 5] and len(scan.rows) == 2
    message = scan.warning()
    assert message.startswith(f"{tmp_path / 'results.jsonl'}: skipping 3 damaged line(s) (line 2, 4, 5; line 2:")
    assert "\n" not in message


def test_complete_row_without_its_newline_is_kept(finished):
    path, run_dir, lines = finished
    (run_dir / "results.jsonl").write_bytes(b"".join(lines[:4]).rstrip(b"\n"))  # the newline never reached disk
    assert len(read_rows(run_dir)) == 4
    resume(run_dir)
    assert_each_cell_once(run_dir, path)
    assert not (run_dir / "results.damaged.jsonl").exists()


def test_report_survives_a_cut_off_last_line_with_accuracy_rows(finished, tmp_path):
    """`attnbench report` printed a traceback: its accuracy part re-read results.jsonl raw."""
    _, run_dir, lines = finished
    rows = [json.loads(line) for line in lines[:3]]
    for i, row in enumerate(rows):
        row.update(acc_top1=70.0 + i, acc_top5=90.0, acc_model="swap:tiny", acc_dataset="synthetic8@32")
    text = "".join(json.dumps(r) + "\n" for r in rows) + json.dumps(rows[0])[:30]
    (run_dir / "results.jsonl").write_text(text)
    result = cli("report", run_dir, "--out", tmp_path / "report", "--no-figures")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "results.jsonl:4: skipping an incomplete last line" in warnings[0]
    assert "72.00" in (tmp_path / "report" / "summary.md").read_text()  # the accuracy table is still there


def test_report_survives_a_corrupt_manifest(finished, tmp_path):
    _, run_dir, _ = finished
    (run_dir / "manifest.json").write_text('{"suite": {"name": ')
    result = cli("report", run_dir, "--out", tmp_path / "report", "--no-figures")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "not a valid manifest" in result.output


def test_corrupt_manifest_is_rebuilt_from_the_rows_with_the_suite(finished):
    path, run_dir, lines = finished
    (run_dir / "results.jsonl").write_bytes(b"".join(lines[:5]))
    (run_dir / "manifest.json").write_bytes(b'{"schema_version": 1, "suite": {"na\xff')
    # without the suite file: one line saying what to do
    assert_one_line_error(cli("run", "--resume", run_dir), "not a valid manifest",
                          f"attnbench run SUITE --resume {run_dir}", "suite tiny")
    resume(run_dir, path)
    assert_each_cell_once(run_dir, path)
    manifest = read_manifest(run_dir)
    assert manifest["rebuilt_from_rows"]["rows"] == 5 and manifest["counts"] == {"ok": 8}
    assert manifest["suite"] == load_suite(path).to_dict()
    assert (run_dir / "manifest.damaged.json").read_bytes().startswith(b'{"schema_version": 1')  # kept


def test_missing_manifest_is_rebuilt_and_a_foreign_suite_refused(finished, write_suite):
    path, run_dir, lines = finished
    (run_dir / "results.jsonl").write_bytes(b"".join(lines[:2]))
    (run_dir / "manifest.json").unlink()
    other = write_suite({**fakes.tiny_suite(), "name": "other"}, "other.yaml")
    with pytest.raises(UserError, match="the rows are of suite tiny, but .* is suite 'other'"):
        runner.plan(str(other), resume=str(run_dir), cuda_available=False)
    resume(run_dir, path)
    assert_each_cell_once(run_dir, path)


def test_disk_full_ends_the_run_with_one_line_and_the_manifest_end_state(fake_metrics, write_suite, tmp_path,
                                                                        monkeypatch):
    """A full disk left a partial last line, two tracebacks and a manifest with no end state."""
    path, run_dir = write_suite(fakes.tiny_suite()), tmp_path / "run"
    real, calls = results._write_all, []

    def fills_up(fd, data):
        calls.append(1)
        if len(calls) == 4:  # the 4th row: half of it fits, then the disk is full
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(results, "_write_all", fills_up)
    result = cli("run", path, "--out", run_dir, "--no-progress", "--no-isolate")
    assert_one_line_error(result, f"{run_dir / 'results.jsonl'}: No space left on device",
                          f"attnbench run --resume {run_dir}")
    assert (run_dir / "results.jsonl").read_bytes().endswith(b"\n")  # the half row was cut back
    assert len(read_rows(run_dir)) == 3
    manifest = read_manifest(run_dir)
    assert manifest["ended_at"] and manifest["counts"] == {"ok": 3}
    assert manifest["error"] == f"{run_dir / 'results.jsonl'}: No space left on device"

    monkeypatch.setattr(results, "_write_all", real)
    resume(run_dir)
    assert_each_cell_once(run_dir, path)
    assert read_manifest(run_dir)["error"] is None


@pytest.mark.parametrize("where", ["under a regular file", "read-only location"])
def test_file_system_errors_are_one_line(fake_metrics, write_suite, tmp_path, where):
    path = write_suite(fakes.tiny_suite())
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "plain" / "run" if where == "under a regular file" else "/sys/attnbench-test-run"
    result = cli("run", path, "--out", out, "--no-progress", "--no-isolate")
    assert_one_line_error(result, str(out), "cannot create the run directory")
    file_out = tmp_path / "plain"
    assert_one_line_error(cli("run", path, "--out", file_out, "--no-isolate"), str(file_out), "is a file")
    with pytest.raises(UserError, match="exists and is not a directory"):  # the Python API says the same
        runner.plan(str(path), out=str(file_out), cuda_available=False)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_manifest_and_shards_have_the_mode_of_results_jsonl(tmp_path, umask):
    """manifest.json (and any atomically replaced run file) was mkstemp's 0600 while results.jsonl was 0644 less
    the umask: a colleague who could read the rows could not read the manifest."""
    old = os.umask(umask)
    try:
        with ResultsWriter(tmp_path):
            pass
        write_manifest(tmp_path, {"suite": "s"})
        replace_atomically(tmp_path / "shard.jsonl", b"{}\n")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["results.jsonl", "manifest.json", "shard.jsonl"], 0o644 & ~umask)
