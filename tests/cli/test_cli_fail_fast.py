"""The CLI fails fast and helps (issue 11): argument and file errors are reported before torch is imported, with the
nearest name ("did you mean") for commands, suite files, run directories, images and attention patterns.

The CLI runs in a fresh interpreter, started from a script file as the ``attnbench`` console script is (so the
working directory is not on ``sys.path``); the script records whether ``torch`` is in ``sys.modules``, which is the
deterministic proof of "before torch". The error cases share one such interpreter (one start-up instead of one per
case): it runs them one after the other, each in its own working directory, and records after each whether torch has
been imported yet; a case that imports torch fails, and so do the cases after it, so a regression cannot hide. The
last case of that batch is a valid dry run, which must see torch (the record is not blind). The time of each case
inside the batch is printed (``pytest -s``), never asserted. The last tests check the three ways a user's own
attention is found (docs/cli.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attnbench.core import hints
from attnbench.cli import main

REPO = Path(__file__).resolve().parents[2]

#: runs the CLI as the `attnbench` console script does: from a file, so the working directory is not on sys.path;
#: at exit, one marker line says whether torch was imported
DRIVER = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("\\n@@torch_imported=%s\\n" % ("torch" in sys.modules)))
from attnbench.cli import main
main(sys.argv[1:], prog_name="attnbench")
"""
#: the error cases in one interpreter: argv[1] is a JSON list of [args, cwd]; prints one JSON list of results
BATCH_DRIVER = """
import json, os, sys, time
from click.testing import CliRunner
from attnbench.cli import main
results = []
for args, cwd in json.loads(sys.argv[1]):
    os.chdir(cwd)
    start = time.perf_counter()
    result = CliRunner().invoke(main, args, prog_name="attnbench")
    results.append({"code": result.exit_code, "text": result.output.strip(), "torch": "torch" in sys.modules,
                    "wall": time.perf_counter() - start})
print("@@batch=" + json.dumps(results))
"""
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "attnbench_driver.py"
    path.write_text(DRIVER)
    return path


def cli(driver: Path, args: list[str], cwd: Path = REPO, pythonpath: tuple[str, ...] = ()
        ) -> tuple[int, str, bool, float]:
    """(exit code, output without the marker, torch imported?, wall seconds) of `attnbench ARGS` in a subprocess."""
    path = [*pythonpath, str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(driver), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    wall = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    marker = [line for line in out.splitlines() if line.startswith("@@torch_imported=")]
    assert len(marker) == 1, out
    text = "\n".join(line for line in out.splitlines() if not line.startswith("@@")).strip()
    return proc.returncode, text, marker[0].endswith("True"), wall


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SUITE = {"name": "tiny", "attentions": [{"name": "mhsa"}, {"name": "bra"}],
         "axes": {"resolution": [7, 14], "batch": [1, 2], "device": ["cpu"]}, "metrics": ["params"]}


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A working directory with a suite, a run directory under runs/, an image, a used --out and a broken suite."""
    root = tmp_path_factory.mktemp("place")
    write_yaml(root / "tiny.yaml", SUITE)
    write_yaml(root / "typo.yaml", {**SUITE, "metric": ["params"]})
    run = root / "runs" / "smoke-20261128-050000"
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text('{"cell_id": "x"}\n')
    (run / "manifest.json").write_text("{}")
    (root / "runs" / "notes").mkdir()  # a directory that is not a run: never suggested for a run directory
    (root / "astronaut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "used").mkdir()
    (root / "used" / "results.jsonl").write_text('{"cell_id": "x"}\n')
    write_yaml(root / "toppk.yaml", {**SUITE, "attentions": [{"name": "mhsa"}, {"name": "bra", "config": {"toppk": 4}}]})
    return root


#: case -> (args, cwd: "repo" or "place", words the one-line error must contain)
CASES = {
    # attnbench run: the suite file and option values
    "run: missing suite file": (["run", "missing.yaml"], "place", ["missing.yaml", "cannot read suite file"]),
    "run: typo in a shipped suite's name": (["run", "suites/resolution_swep.yaml"], "repo",
                                            ["suites/resolution_swep.yaml",
                                             "did you mean suites/resolution_sweep.yaml?"]),
    "run: a bare suite name": (["run", "resolution_sweep"], "repo",
                               ["resolution_sweep:", "did you mean suites/resolution_sweep.yaml?"]),
    "run: typo in a local suite's name": (["run", "tiyn.yaml"], "place", ["tiyn.yaml", "did you mean tiny.yaml?"]),
    "run: unknown --only key": (["run", "suites/resolution_sweep.yaml", "--only", "bogus=1", "--dry-run"], "repo",
                                ["--only: unknown key 'bogus'", "keys: attention"]),
    "run: misspelt --only key": (["run", "tiny.yaml", "--only", "atention=bra", "--dry-run"], "place",
                                 ["--only: unknown key 'atention'", "did you mean 'attention'?"]),
    "run: unknown suite key": (["run", "typo.yaml", "--dry-run"], "place",
                               ["typo.yaml", "metric: unknown key", "did you mean 'metrics'?"]),
    "run: more cells than --max-cells": (["run", "tiny.yaml", "--max-cells", "3", "--dry-run"], "place",
                                         ["expands to 8 cells", "--max-cells 8"]),
    "run: --out holds results": (["run", "tiny.yaml", "--out", "used"], "place", ["--out used", "already holds"]),
    "run: --resume missing": (["run", "--resume", "runs/smoke-2026112"], "place",
                              ["--resume runs/smoke-2026112", "did you mean runs/smoke-20261128-050000?"]),
    "run: executor flag without --executor": (["run", "tiny.yaml", "--partition", "gpu"], "place",
                                              ["need --executor local|slurm"]),
    "run: bad --device": (["run", "tiny.yaml", "--device", "tpu"], "place", ["--device", "'tpu'"]),
    "run: bad --max-cells": (["run", "tiny.yaml", "--max-cells", "0"], "place", ["--max-cells", "0"]),
    # report, compare, status: run directories
    "report: missing run dir": (["report", "/no/such/run"], "place", ["/no/such/run: not a directory"]),
    "report: near a run dir": (["report", "runs/smoke-2026112"], "place",
                               ["runs/smoke-2026112: not a directory", "did you mean runs/smoke-20261128-050000?"]),
    "compare: both dirs missing": (["compare", "base_nope", "new_nope"], "place",
                                   ["base_nope: not a directory", "new_nope: not a directory"]),
    "compare: bad --threshold": (["compare", "runs/smoke-20261128-050000", "runs/smoke-20261128-050000",
                                  "--threshold", "-1"], "place", ["--threshold", "-1"]),
    "status: missing run dir": (["status", "runs/smoke-20261128"], "place",
                                ["runs/smoke-20261128: not a directory", "did you mean runs/smoke-20261128-050000?"]),
    # viz: images, weight sources and option values
    "viz: missing image": (["viz", "astronut.png", "--random"], "place",
                           ["image astronut.png: no such file or folder", "did you mean astronaut.png?"]),
    "viz: unknown shipped photo": (["viz", "skimage:astronot", "--random"], "place",
                                   ["skimage:astronot", "did you mean 'skimage:astronaut'?"]),
    "viz: no weight source": (["viz", "astronaut.png"], "place", ["exactly one of --run"]),
    "viz: missing --run dir": (["viz", "--run", "runs/smoke-2026112"], "place",
                               ["--run runs/smoke-2026112", "did you mean runs/smoke-20261128-050000?"]),
    "viz: --official without =": (["viz", "--official", "debiformer_t"], "place", ["expected MODEL=CHECKPOINT"]),
    "viz: missing checkpoint": (["viz", "--official", "debiformer_t=nope.pth"], "place",
                                ["debiformer_t=nope.pth: no such checkpoint file"]),
    "viz: bad --stage": (["viz", "--random", "--stage", "0"], "place", ["--stage", "0"]),
    "viz: bad --size": (["viz", "--random", "--size", "8"], "place", ["--size 8", ">= 16"]),
    "viz: bad --query": (["viz", "--random", "--query", "2,0.5"], "place", ["--query", "[0, 1)"]),
    # ci and the command name itself
    "ci: missing baseline": (["ci", "--baseline", "nope.json"], "place", ["baseline nope.json not found"]),
    "ci: --base with --update-baseline": (["ci", "--base", "HEAD", "--update-baseline"], "place", ["exclusive"]),
    "unknown command": (["rnu", "suites/smoke.yaml"], "repo", ["No such command 'rnu'", "Did you mean 'run'?"]),
    "unknown command, a prefix": (["rep"], "repo", ["No such command 'rep'", "Did you mean 'report'?"]),
}


#: after the error cases, the batch runs one that needs the registry, which imports torch (the README says so)
AFTER_TORCH = {"run: unknown config key": (["run", "toppk.yaml", "--dry-run"], "place",
                                           ["bra has no parameter 'toppk'", "did you mean 'topk'?"])}

#: the valid dry run that ends the batch: it needs the registry, so the batch's record must show torch there
SEES_TORCH = (["run", "tiny.yaml", "--dry-run"], "place")


@pytest.fixture(scope="module")
def batch(place, tmp_path_factory) -> dict[str, dict]:
    """case -> {"code", "text", "torch", "wall"} of every error case of CASES and AFTER_TORCH, then SEES_TORCH under
    the key None."""
    path = tmp_path_factory.mktemp("bin") / "attnbench_batch_driver.py"
    path.write_text(BATCH_DRIVER)
    cases = [(args, str(REPO if where == "repo" else place)) for args, where, _ in [*CASES.values(),
                                                                                    *AFTER_TORCH.values()]]
    cases.append((SEES_TORCH[0], str(place)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, str(path), json.dumps(cases)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@batch=")]
    assert proc.returncode == 0 and len(lines) == 1, proc.stdout + proc.stderr
    results = json.loads(lines[0][len("@@batch="):])
    return dict(zip([*CASES, *AFTER_TORCH, None], results))


def test_the_batch_record_sees_torch_when_a_command_needs_it(batch):
    """The batch's torch record is not blind: its last case, a valid dry run, imports torch for the registry (the
    single-case driver's marker is shown not blind by the unknown-attention test, which must see torch)."""
    assert batch[None]["code"] == 0 and "suite tiny: 8 cells to run" in batch[None]["text"], batch[None]["text"]
    assert batch[None]["torch"]


@pytest.mark.parametrize("case", list(CASES))
def test_error_is_one_line_exit_2_and_before_torch(case, batch):
    args, _, words = CASES[case]
    code, text, torch_imported, wall = (batch[case][k] for k in ("code", "text", "torch", "wall"))
    TIMES[case] = wall
    print(f"\n[fail-fast] {wall:.2f} s  attnbench {' '.join(args)}")
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in text, text
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    assert not torch_imported, f"{case} (or a case before it in the batch): torch was imported before the error\n{text}"


@pytest.mark.parametrize("args, where, words", [
    (["run", "runs/smoke-20261128-050000"], "place",
     ["runs/smoke-20261128-050000: is a directory", "--resume runs/smoke-20261128-050000"]),
    (["run", "suites"], "repo", ["suites: is a directory", "expected a suite YAML file", "suites/smoke.yaml"]),
])
def test_a_directory_given_as_suite_is_one_line_without_usage(args, where, words, place, driver):
    """Issue 19 #9: a directory as SUITE was click's usage block; now one line, pointing at --resume for a run."""
    code, text, torch_imported, _ = cli(driver, args, REPO if where == "repo" else place)
    assert code == 2 and text.startswith("Error:") and len(text.splitlines()) == 1, text
    assert "Usage:" not in text and not torch_imported
    for word in words:
        assert word in text, text


def test_unknown_attention_or_config_key_is_one_line_after_torch_as_the_readme_says(tmp_path, driver, batch):
    """Issue 19 #9: the README said every bad input is reported before torch; these two need the registry, which
    imports torch. The error is still one line; the README now says what it costs. The unknown attention runs in
    its own interpreter (which shows that the single-case driver's torch record is not blind), the unknown config
    key in the batch, after its error cases."""
    write_yaml(tmp_path / "s.yaml", {**SUITE, "attentions": [{"name": "mhsa"}, {"name": "dbar"}]})
    outcomes = {"unknown attention": cli(driver, ["run", "s.yaml", "--dry-run"], tmp_path)[:3],
                "unknown config key": tuple(batch["run: unknown config key"][k] for k in ("code", "text", "torch"))}
    words = {"unknown attention": ["unknown attention 'dbar'", "did you mean 'dbra'?"],
             "unknown config key": AFTER_TORCH["run: unknown config key"][2]}
    for case, (code, text, torch_imported) in outcomes.items():
        assert code == 2 and len(text.splitlines()) == 1 and torch_imported, (case, text)
        for word in words[case]:
            assert word in text, (case, text)
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "An unknown attention name or config key is reported after it" in readme


def test_help_does_not_import_torch(driver):
    for args in (["--help"], ["run", "--help"], ["list", "--help"], ["viz", "--help"], ["report", "--help"]):
        code, text, torch_imported, _ = cli(driver, args)
        assert code == 0 and "Usage: attnbench" in text and not torch_imported, (args, text)


@pytest.mark.parametrize("pattern, words", [
    ("dbar", ["no registered attention matches 'dbar'", "did you mean 'dbra'?", "registered: agent, bra"]),
    ("DBRA", ["did you mean 'dbra'?"]),
    ("d", ["did you mean 'd*' (dat, dbra)?"]),
    ("zzz*", ["no registered attention matches 'zzz*'", "registered: agent, bra, dat, dbra, mhsa"]),
])
def test_list_pattern_that_matches_nothing_says_so(pattern, words):
    result = CliRunner().invoke(main, ["list", pattern])
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    for word in words:
        assert word in error, error


def test_list_pattern_that_matches_lists_only_those():
    result = CliRunner().invoke(main, ["list", "d*"])
    names = [line.split()[0] for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert result.exit_code == 0 and names == ["dat", "dbra"], result.output


def test_viz_knows_the_same_shipped_photos_as_the_image_loader():
    from attnbench.commands.viz_cmd import SKIMAGE_PHOTOS
    from attnbench.viz.images import SKIMAGE_PHOTOS as LOADER_PHOTOS

    assert SKIMAGE_PHOTOS == LOADER_PHOTOS


def test_closest_prefers_case_then_unique_prefix_then_similarity():
    names = ["list", "run", "report", "compare", "ci", "status", "viz"]
    assert hints.closest("RUN", names) == "run"
    assert hints.closest("rep", names) == "report"  # a unique prefix, though difflib's ratio is below 0.6
    assert hints.closest("re", names) is None  # too short to be a prefix hint; run and report both start with r
    assert hints.closest("stauts", names) == "status"
    assert hints.closest("xyzzy", names) is None


def test_suggest_suite_looks_beside_the_path_and_in_suites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yml").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "ablation_topk.yaml").write_text("")
    monkeypatch.setattr(hints, "shipped_suites_dir", lambda: tmp_path / "nowhere")
    assert hints.suggest_suite("mine") == os.path.join("suites", "mine.yml")
    assert hints.suggest_suite("suites/mien.yaml") == os.path.join("suites", "mine.yml")
    assert hints.suggest_suite("other/ablation_topc.yaml") == os.path.join("other", "ablation_topk.yaml")
    assert hints.suggest_suite("completely_different.yaml") is None


def test_a_dry_run_still_reports_an_unknown_attention_after_the_fast_checks(tmp_path):
    """The structure is checked torch-free first; the registry check that follows is not lost."""
    path = write_yaml(tmp_path / "s.yaml", {**SUITE, "attentions": [{"name": "mhsa"}, {"name": "dbar"}]})
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2 and "unknown attention 'dbar'; did you mean 'dbra'?" in result.output


USER_ATTENTION = '''"""A user's attention: a learned per-channel scale, (B, H, W, C) -> (B, H, W, C)."""
import torch
from torch import nn


class Scale(nn.Module):
    def __init__(self, dim: int = 32, num_heads: int = 2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.scale
'''


@pytest.fixture
def user_package(tmp_path) -> Path:
    """tmp_path/my_pkg/attn.py (class Scale) and a suite using it by dotted path."""
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "attn.py").write_text(USER_ATTENTION)
    write_yaml(tmp_path / "mine.yaml", {"name": "mine", "attentions": [{"name": "mhsa"},
                                                                       {"name": "my_pkg.attn:Scale", "label": "scale"}],
                                        "defaults": {"dim": 32, "num_heads": 2},
                                        "axes": {"resolution": [14], "device": ["cpu"]}, "metrics": ["params"]})
    return tmp_path


@pytest.mark.slow  # fresh interpreters that import torch: ~20-35 s on one loaded core; .ci/run runs it
def test_a_dotted_path_attention_is_found_through_pythonpath(user_package, driver):
    code, text, _, _ = cli(driver, ["run", "mine.yaml", "--dry-run"], user_package)
    assert code == 2 and "No module named 'my_pkg'" in text
    assert "my_pkg is in the working directory, which the attnbench command does not search" in text
    assert "PYTHONPATH=. attnbench" in text
    code, text, _, _ = cli(driver, ["run", "mine.yaml", "--dry-run"], user_package, pythonpath=(".",))
    assert code == 0 and "2 cells to run" in text and "scale 14x14" in text, text


def test_an_installed_package_joins_the_registry_through_its_entry_point(user_package, driver, tmp_path_factory):
    """An installed distribution (a .dist-info folder on sys.path is what pip leaves) with an entry point in the
    group ``attentions``: its name is listed and usable like a built-in one."""
    site = user_package / "site"
    dist = site / "my_pkg-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[attentions]\nmy_scale = my_pkg.attn:Scale\n")
    (user_package / "my_pkg").rename(site / "my_pkg")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    code, text, _, _ = cli(driver, ["list", "my_*"], elsewhere, pythonpath=(str(site),))
    assert code == 0 and text.startswith("my_scale  A user's attention"), text


def test_import_path_hint_names_the_missing_module_only():
    assert hints.import_path_hint("nowhere_pkg.m:C", ModuleNotFoundError("x", name="nowhere_pkg")).startswith(
        "; nowhere_pkg must be importable")
    # the user's module was found, a package it imports was not: no advice about the user's path
    assert hints.import_path_hint("my_pkg.m:C", ModuleNotFoundError("x", name="scipyy")) == ""
    assert hints.import_path_hint("my_pkg.m:C", AttributeError("no attribute")) == ""


def teardown_module(module):
    if TIMES:
        print("\n[fail-fast] wall time of each error case (in one interpreter: python start-up not included):")
        for case, wall in TIMES.items():
            print(f"  {wall:5.2f} s  {case}")
