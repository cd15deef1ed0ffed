"""Hostile suite files (issue 10): an alias bomb grew to ~4 GB, a 10^6-cell grid took ~85 s to dry-run, duplicate
keys were silently accepted, binary/non-UTF-8 files and deep nesting ended in tracebacks, config x shape
constraints of built-in attentions passed --dry-run, one message repeated its key path. Every case is now one
clear error (exit 2) naming the file."""
from __future__ import annotations

import resource

import pytest
import yaml
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.suite import load as suite_module
from attnbench.cli import main
from attnbench.core.errors import UserError
from attnbench.suite.schema import SuiteError
from attnbench.suite.load import load_suite


def bomb(levels: int = 9) -> str:
    """The 'billion laughs': 9 levels of 9 aliases each expand to 9^9 (387 million) strings."""
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


def error_of(path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value.message)
    assert str(path) in message and "Traceback" not in message
    return message


def test_alias_bomb_is_refused_without_expanding_it(write_suite):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    msg = error_of(write_suite(bomb()))
    assert "expands to more than 100,000 YAML nodes (aliases included)" in msg
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000  # the expansion (gigabytes) never happened


def test_duplicate_keys_are_rejected_with_both_lines(write_suite):
    text = "name: s\nattentions: [{name: mhsa}]\naxes:\n  resolution: [14]\n  resolution: [28]\nmetrics: [params]\n"
    msg = error_of(write_suite(text))
    assert msg.endswith("duplicate key 'resolution' on lines 4 and 5; YAML would silently keep only the last")


@pytest.mark.parametrize("content, expected", [
    (b"name: s\ndescription: caf\xe9\n", "not UTF-8 text: byte 0xe9 on line 2"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "a binary file (it holds NUL bytes)"),
    (b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply to parse"),
    (b"name: " + b"[" * 40 + b"]" * 40 + b"\n", "nested deeper than 32 levels (line 1)"),
    (b"a: &a [*a]\n", "nested deeper than 32 levels"),  # an alias that contains itself
], ids=["latin-1", "binary", "5000-deep", "40-deep", "self-alias"])
def test_undecodable_binary_and_deep_files_are_one_line(tmp_path, content, expected):
    path = tmp_path / "suite.yaml"
    path.write_bytes(content)
    msg = error_of(path)
    assert expected in msg and "\n" not in msg


def test_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(suite_module, "MAX_SUITE_BYTES", 100)
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\n" + "# padding\n" * 20)
    assert "208 bytes is too large for a suite file (limit 100 bytes)" in error_of(path)


def test_huge_grid_is_refused_by_counting_and_the_limit_can_be_raised(fake_metrics, write_suite, tmp_path):
    data = fakes.tiny_suite()
    data["axes"].update(resolution=list(range(2, 1002)), batch=list(range(1, 1001)))  # 2 x 10^6 cells
    path = write_suite(data)
    with pytest.raises(UserError, match="suite 'tiny' expands to 2,000,000 cells, more than the limit of 10,000; "
                                        "narrow its axes or, if you mean it, raise the limit with --max-cells 2000000"):
        runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False)
    small = write_suite(fakes.tiny_suite(), "small.yaml")  # 8 cells
    with pytest.raises(UserError, match="expands to 8 cells, more than the limit of 5"):
        runner.plan(str(small), cuda_available=False, max_cells=5)
    result = CliRunner().invoke(main, ["run", str(small), "--dry-run", "--max-cells", "8"])
    assert result.exit_code == 0 and result.output.startswith("suite tiny: 8 cells to run"), result.output


def test_builtin_attention_config_shape_conflicts_are_plan_errors_naming_each_cell(write_suite):
    data = {"name": "c", "attentions": [{"name": "bra", "config": {"n_win": 7, "topk": 100}},
                                        {"name": "dbra", "config": {"n_win": 7, "auto_pad": False}}],
            "axes": {"resolution": [56, 30], "device": ["cpu"]}, "metrics": ["params"], "baseline": "bra"}
    path = write_suite(data)
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Error: {path}: cell bra 56x56 b1 float32 cpu fwd eager (")
    assert "topk=100 is not allowed" in lines[0]
    assert any(line.startswith(f"{path}: cell dbra 30x30 b1 float32 cpu fwd eager (") and "n_win=7" in line
               for line in lines)
    assert not any("dbra 56x56" in line for line in lines)  # 56 = 8 x 7 fits
    assert lines[-1].endswith("fix the config values named above (auto_pad: true for the grids that do not fit) or "
                              "leave these cells out with an exclude entry")
    data["attentions"] = [{"name": "dbra", "config": {"n_win": 7, "auto_pad": False}}]
    data.update(baseline="dbra", exclude=[{"resolution": 30}])
    assert runner.plan(str(write_suite(data)), cuda_available=False).to_run  # excluded: fine
    data.pop("exclude")
    result = CliRunner().invoke(main, ["run", str(write_suite(data)), "--dry-run"])
    assert result.output.splitlines()[-1].endswith("fix the config (e.g. auto_pad: true) or leave these cells out "
                                                   "with an exclude entry")


def test_a_topk_error_does_not_suggest_auto_pad(write_suite):
    """Issue 19 #9: padding does not help a topk larger than the region count; the hint no longer says auto_pad."""
    data = {"name": "c", "attentions": [{"name": "bra", "config": {"n_win": 7, "topk": 100}}],
            "axes": {"resolution": [56], "device": ["cpu"]}, "metrics": ["params"], "baseline": "bra"}
    result = CliRunner().invoke(main, ["run", str(write_suite(data)), "--dry-run"])
    assert result.exit_code == 2 and "topk=100 is not allowed" in result.output, result.output
    assert "auto_pad" not in result.output
    assert result.output.splitlines()[-1].endswith("fix the config values named above or leave these cells out "
                                                   "with an exclude entry")


def test_validator_message_does_not_repeat_its_key_path(write_suite):
    data = {"name": "s", "attentions": [{"name": "mhsa"}], "axes": {"resolution": [14], "device": ["cpu"]},
            "metrics": ["latency"], "settings": {"latency": {"warmup": -1}}}
    msg = error_of(write_suite(yaml.safe_dump(data, sort_keys=False)))
    assert msg.count("settings.latency") == 1 and "settings.latency.warmup: expected greater than or equal to 0, got -1" in msg
