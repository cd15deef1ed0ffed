"""The import contracts of pyproject.toml hold (layers, attentions never imports attnbench, readers without torch,
no cycles; docs/architecture.md), and the linter really reads the code: a contract the code breaks is reported."""
from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[1]


def _lint(config: Path) -> int:
    cwd = os.getcwd()
    os.chdir(REPO)  # grimp finds the packages from the repository root
    try:
        return lint_imports(config_filename=str(config), no_cache=True)
    finally:
        os.chdir(cwd)


def test_the_import_contracts_hold():
    assert _lint(REPO / "pyproject.toml") == 0


def test_a_broken_contract_is_reported(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["attnbench"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "report may not read results (it must)"\n'
                      'type = "forbidden"\nsource_modules = ["attnbench.report.load"]\n'
                      'forbidden_modules = ["attnbench.core.results"]\n')
    assert _lint(config) == 1
