"""attnbench viz end to end (random init and a run's checkpoints), checkpoint location, and the report's links."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from attnbench.accuracy.job import build_model, make_job
from attnbench.cli import main
from attnbench.core.errors import UserError
from attnbench.report.viz_links import link_viz
from attnbench.viz import from_run

pytest.importorskip("skimage")

SETTINGS = {"synthetic": True, "img_size": 32, "model": "swap", "macro": "tiny", "recipe": {"epochs": 1}}


def test_viz_random_init_writes_png_svg_and_page(tmp_path):
    out = tmp_path / "viz"
    result = CliRunner().invoke(main, ["viz", "skimage:chelsea", "skimage:coffee", "--random", "--attention", "bra",
                                       "--attention", "agent", "--size", "64", "--stage", "2", "--erf-images", "2",
                                       "--query", "0.4,0.6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("side_by_side_stage2.png", "side_by_side_stage2.svg", "detail_bra.png", "detail_agent.svg",
                 "index.html", "viz.json"):
        assert (out / name).stat().st_size > 0, name
    meta = json.loads((out / "viz.json").read_text())
    assert [s["label"] for s in meta["sources"]] == ["bra", "agent"]
    assert all("random init" in s["weights"] for s in meta["sources"])  # the figure titles carry this line
    assert meta["stages"] == [2] and meta["images"] == ["skimage:chelsea", "skimage:coffee"]
    assert "side_by_side_stage2.svg" in (out / "index.html").read_text()


def _fake_run(tmp_path, attention="dat"):
    """A run directory as `attnbench run` writes it for one accuracy cell, and that cell's checkpoint."""
    run = tmp_path / "run-1"
    run.mkdir()
    suite = {"name": "s", "seed": 0, "settings": {"accuracy": SETTINGS}}
    (run / "manifest.json").write_text(json.dumps({"suite": suite}))
    row = {"attention": attention, "label": attention, "config": {}, "device": "cpu", "status": "ok",
           "acc_top1": 50.0, "acc_dataset": "synthetic8@32"}
    (run / "results.jsonl").write_text(json.dumps(row) + "\n")
    job = make_job(SETTINGS, attention, {}, "cpu", seed=0)
    torch.manual_seed(3)
    model = build_model(job, num_classes=8)
    folder = run / "accuracy" / "jobs" / job.key()
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "fingerprint": job.fingerprint()}, folder / "checkpoint.pt")
    return run, folder, model


def test_run_weights_are_found_even_when_moved_and_missing_ones_are_a_clear_error(tmp_path):
    run, folder, trained = _fake_run(tmp_path)
    (source,) = from_run(run)
    assert source.label == "dat" and "top-1 50.0%" in source.weights
    for key, value in trained.state_dict().items():
        assert torch.equal(source.model.state_dict()[key], value), key
    moved = run / "somewhere" / "else"
    moved.mkdir(parents=True)
    shutil.move(str(folder / "checkpoint.pt"), moved / "checkpoint.pt")  # found by its fingerprint
    (source,) = from_run(run)
    assert torch.equal(source.model.state_dict()["head.weight"], trained.state_dict()["head.weight"])
    (moved / "checkpoint.pt").unlink()
    with pytest.raises(UserError, match="no checkpoint of the accuracy cell 'dat'"):
        from_run(run)
    result = CliRunner().invoke(main, ["viz", "--run", str(run), "--size", "64"])
    assert result.exit_code == 2 and "no checkpoint" in result.output


def test_viz_from_a_run_and_the_report_links_it(tmp_path):
    run, _, _ = _fake_run(tmp_path)
    result = CliRunner().invoke(main, ["viz", "skimage:astronaut", "--run", str(run), "--size", "64", "--stage", "1",
                                       "--erf-images", "1"])
    assert result.exit_code == 0, result.output
    assert (run / "viz" / "side_by_side_stage1.png").is_file()
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.md").write_text("# report\n")
    (report / "index.html").write_text("<html><body><h1>r</h1></body></html>")
    assert link_viz([run], report) == [report / "viz" / "run-1"]
    assert (report / "viz" / "run-1" / "side_by_side_stage1.svg").is_file()
    assert "](viz/run-1/side_by_side_stage1.png)" in (report / "summary.md").read_text()
    assert "viz/run-1/side_by_side_stage1.svg" in (report / "index.html").read_text()
    assert link_viz([tmp_path], report) == []  # a run without pictures adds nothing


def test_viz_needs_exactly_one_weight_source():
    result = CliRunner().invoke(main, ["viz", "--random", "--run", "x"])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_an_official_checkpoint_that_does_not_fit_is_a_one_line_error(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"unrelated.weight": torch.zeros(1)}}, wrong)
    result = CliRunner().invoke(main, ["viz", "--official", f"biformer_t={wrong}", "--size", "64"])
    assert result.exit_code == 2 and "does not fit biformer_t" in result.output and "missing" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["viz", "--official", f"no_such_model={wrong}"])
    assert result.exit_code == 2 and "unknown model" in result.output


def test_viz_of_a_run_draws_at_the_size_it_was_trained_at(tmp_path):
    """Issue 19 #4: a run trained at 32 px is drawn at 32 px without --size (was: 224, DAT's panels a cloud of
    784 sampling points per group); the size comes from the rows, and recorded in viz.json."""
    run, _, _ = _fake_run(tmp_path)
    result = CliRunner().invoke(main, ["viz", "--run", str(run), "--stage", "1", "--erf-images", "0"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "viz" / "viz.json").read_text())
    assert meta["size"] == 32 and meta["sources"][0]["img_size"] == 32
    assert "warning" not in result.output


def test_viz_size_that_differs_from_the_run_warns_and_is_used(tmp_path):
    run, _, _ = _fake_run(tmp_path)
    out = tmp_path / "v"
    result = CliRunner().invoke(main, ["viz", "--run", str(run), "--size", "64", "--stage", "1", "--erf-images", "0",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "viz.json").read_text())["size"] == 64
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "--size 64" in warning[0] and "32 px" in warning[0], result.output


def test_viz_size_from_the_rows_must_agree_with_the_settings(tmp_path):
    """The rows record the size each model was trained at (acc_img_size, or the '@N' of acc_dataset); a row that
    disagrees with the run's settings (from which the model is rebuilt) is a one-line error, not a wrong picture."""
    run, _, _ = _fake_run(tmp_path)
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert from_run(run)[0].img_size == 32
    rows[0]["acc_dataset"] = "synthetic8@48"
    (run / "results.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(UserError, match="trained at 48 px.*img_size is 32"):
        from_run(run)
    rows[0]["acc_img_size"] = 32  # an explicit column wins over the dataset label
    (run / "results.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert from_run(run)[0].img_size == 32
