"""What the docs and scripts point at exists (issue 19 #9: scripts/slurm_local.sh named a test file that did not
exist; docs/accuracy.md offered `attnbench run` a `--data` flag it does not have)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnbench.cli import main

REPO = Path(__file__).resolve().parents[1]
TEXTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "scripts").glob("*.*")),
         *sorted((REPO / "suites").glob("*.yaml"))]
# test and script files only: the docs name suite files that do not exist on purpose (typos in error examples)


@pytest.mark.parametrize("text", TEXTS, ids=lambda p: str(p.relative_to(REPO)))
def test_named_repository_files_exist(text):
    named = set(re.findall(r"(?<![\w/.])((?:tests|scripts)/[\w/.-]+\.(?:py|sh))", text.read_text()))
    missing = sorted(n for n in named if not (REPO / n).exists() and "*" not in n)
    assert not missing, f"{text.relative_to(REPO)} names files that do not exist: {missing}"


def run_options() -> set[str]:
    from attnbench.commands.run_cmd import command

    return {o for p in command.params for o in p.opts if o.startswith("--")}


def test_accuracy_doc_gives_run_only_its_own_flags():
    """Every `--flag` docs/accuracy.md sets on an `attnbench run` line is an option of `attnbench run`; the data
    root's `--data` is named as the option of `python -m attnbench.accuracy train`."""
    doc = (REPO / "docs" / "accuracy.md").read_text()
    known = run_options()
    assert "--data" not in known
    for line in doc.splitlines():
        if "attnbench run" in line:
            flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line.split("attnbench run", 1)[1]))
            assert flags <= known, (line, flags - known)
    for line in (ln for ln in doc.split("\n\n") if "`--data`" in ln):
        assert "python -m attnbench.accuracy train" in " ".join(line.split()), line
    result = CliRunner().invoke(main, ["run", "--data", "x"])
    assert result.exit_code == 2 and "No such option '--data'" in result.output
