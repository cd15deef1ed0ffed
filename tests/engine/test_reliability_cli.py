"""No malformed input anywhere in the CLI gives a Python traceback (issue 10): each is one `Error:` line, exit 2."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.cli import main


@pytest.fixture
def files(fake_metrics, write_suite, tmp_path):
    good = write_suite(fakes.tiny_suite())
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "binary_run").mkdir()
    (tmp_path / "binary_run" / "results.jsonl").write_bytes(b"\x00\xff\xfe garbage \x00")
    (tmp_path / "binary_run" / "manifest.json").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "results_is_dir").mkdir()
    (tmp_path / "results_is_dir" / "results.jsonl").mkdir()
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "tab.yaml").write_text("name: s\n\tattentions: []\n")
    return {"good": good, "tmp": tmp_path}


CASES = {
    "missing suite": ["run", "{tmp}/nope.yaml"],
    "suite is a directory": ["run", "{tmp}/empty_dir"],
    "empty suite": ["run", "{tmp}/empty.yaml", "--dry-run"],
    "suite is a list": ["run", "{tmp}/list.yaml", "--dry-run"],
    "tab in YAML": ["run", "{tmp}/tab.yaml", "--dry-run"],
    "bad --only key": ["run", "{good}", "--dry-run", "--only", "colour=red"],
    "empty --only pattern": ["run", "{good}", "--dry-run", "--only", "label="],
    "bad --only resolution": ["run", "{good}", "--dry-run", "--only", "resolution=big"],
    "bad --device": ["run", "{good}", "--device", "tpu"],
    "bad --max-cells": ["run", "{good}", "--max-cells", "0"],
    "--resume missing": ["run", "--resume", "{tmp}/nope"],
    "--resume a file": ["run", "--resume", "{tmp}/plain.txt"],
    "--resume empty dir": ["run", "--resume", "{tmp}/empty_dir"],
    "--resume binary run": ["run", "--resume", "{tmp}/binary_run"],
    "--resume and --out": ["run", "{good}", "--resume", "{tmp}/empty_dir", "--out", "{tmp}/x"],
    "no suite": ["run"],
    "report missing dir": ["report", "{tmp}/nope"],
    "report empty dir": ["report", "{tmp}/empty_dir"],
    "report binary run": ["report", "{tmp}/binary_run", "--out", "{tmp}/r", "--no-figures"],
    "report results is a dir": ["report", "{tmp}/results_is_dir", "--out", "{tmp}/r", "--no-figures"],
    "compare missing dirs": ["compare", "{tmp}/nope", "{tmp}/nope2"],
    "compare binary runs": ["compare", "{tmp}/binary_run", "{tmp}/binary_run"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_one_line_with_exit_code_2(files, case):
    args = [a.format(tmp=files["tmp"], good=files["good"]) for a in CASES[case]]
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, SystemExit), f"{case}: {result.exception!r}\n{result.output}"
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
