"""PR versus base in one job (what asv's ``continuous`` does): ``attnbench ci --base REF``.

1. ``git worktree add --detach <tmp>/base REF``: the base revision in a temporary worktree (removed afterwards).
2. Two long-lived worker processes (:mod:`attnbench.ci.worker`), one per tree. Each imports the code under test,
   the ``attentions`` package, from its own tree (a temporary directory holding only an ``attentions`` link is put
   first on ``PYTHONPATH``), and the harness (``attnbench``, the cases) from the head. Two processes because one
   process cannot import two copies of ``attentions`` (its Triton ops register in torch's global op table). The
   benchmark definitions are the head's, as in asv: a case the base cannot run is reported ``failed`` on that side.
3. Per benchmark: both workers build the case and estimate one call; then ``rounds`` rounds, each timing one
   block of the same number of calls in the head worker and in the base worker, the order alternating. The worker
   that is not timing waits on its stdin (no CPU). The per-round ratio head/base is the paired statistic;
   ``stats.detect_change(base, head, threshold, paired=True)``: median ratio past the threshold and its
   bootstrap interval excluding 1. FLOPs and peak memory are compared exactly (same machine, same torch).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core import stats
from ..core.errors import UserError
from . import pbjson, verdicts
from .cases import Case
from .timing import BLOCK_S, ROUNDS, block_calls, paired_rounds

__all__ = ["DEFAULT_THRESHOLD", "Worker", "git_root", "base_worktree", "run_pr"]

#: paired head/base ratio that fails when clear (same job, paired rounds)
DEFAULT_THRESHOLD = 0.10
HARNESS_ROOT = Path(__file__).resolve().parents[2]


def _git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if res.returncode != 0:
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise UserError(f"git {' '.join(args)} failed in {repo}: {last}")
    return res.stdout.strip()


def git_root(path: Path) -> Path:
    """The top of the git working tree holding ``path``."""
    return Path(_git(path, "rev-parse", "--show-toplevel"))


class base_worktree:
    """Context manager: ``REF`` of ``repo`` checked out (detached) into a temporary worktree, removed on exit."""

    def __init__(self, repo: Path, ref: str, tmp: Path):
        self.repo, self.ref, self.path = repo, ref, tmp / "base"

    def __enter__(self) -> Path:
        res = subprocess.run(["git", "-C", str(self.repo), "rev-parse", "--verify", "--quiet",
                              f"{self.ref}^{{commit}}"], capture_output=True, text=True)
        commit = res.stdout.strip() if res.returncode == 0 else ""
        if not commit:
            raise UserError(f"--base {self.ref!r}: not a commit in {self.repo}")
        _git(self.repo, "worktree", "add", "--detach", str(self.path), commit)
        if not (self.path / "attentions").is_dir():
            self.__exit__()
            raise UserError(f"--base {self.ref!r}: that revision has no attentions/ package to benchmark")
        return self.path

    def __exit__(self, *exc: Any) -> None:
        subprocess.run(["git", "-C", str(self.repo), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)
        subprocess.run(["git", "-C", str(self.repo), "worktree", "prune"], capture_output=True)


class Worker:
    """One benchmark worker importing ``attentions`` from ``tree``; :meth:`request` sends one JSON request."""

    def __init__(self, label: str, tree: Path, tmp: Path, device: str, threads: int):
        shim = tmp / f"shim-{label}"
        shim.mkdir()
        (shim / "attentions").symlink_to(tree / "attentions", target_is_directory=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), str(HARNESS_ROOT)]))
        self.label, self.log = label, tmp / f"worker-{label}.log"
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "attnbench.ci.worker", "--device", device,
                                      "--threads", str(threads)], cwd=str(tmp), env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file)
        hello = self._read()
        self.attentions_path = Path(hello["attentions"])

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"{self.label} worker exited (code {self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def request(self, **req: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def time(self, case: str, n: int) -> float:
        res = self.request(op="time", case=case, n=n)
        if not res["ok"]:
            raise RuntimeError(f"{self.label}: {res['error']}")
        return res["t"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._log_file.close()


def _ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1e3:.3g} ms"


def compare_case(case: Case, head: Worker, base: Worker, rounds: int, block_s: float, threshold: float
                 ) -> tuple[list[verdicts.Row], dict[str, dict]]:
    """Rows of one case and its pytest-benchmark entries per side ({"head": entry, "base": entry})."""
    setups = {w.label: w.request(op="setup", case=case.name) for w in (head, base)}
    try:
        failed = [(lbl, s["error"]) for lbl, s in setups.items() if not s["ok"]]
        if failed:
            return ([verdicts.missing_row(case.name, "", f"{lbl}: {err}", fails=lbl == "head") for lbl, err in failed],
                    {})
        n = block_calls(max(setups["head"]["call_s"], setups["base"]["call_s"]), block_s)
        t_head, t_base = paired_rounds(lambda: head.time(case.name, n), lambda: base.time(case.name, n), rounds)
        change = stats.detect_change(t_base, t_head, threshold, paired=True)
        rows = [verdicts.time_row(case.name, change, _ms(t_base), _ms(t_head))]
        rows += verdicts.count_rows(case.name, setups["base"]["columns"], setups["head"]["columns"], exact=False)
        ratio = {"ratio": change.ratio.estimate, "ratio_low": change.ratio.low, "ratio_high": change.ratio.high,
                 "verdict": change.verdict}
        entries = {
            "head": pbjson.benchmark_entry(case.name, case.group, case.params, t_head, n,
                                           {**setups["head"]["columns"], **ratio, "tree": "head"}),
            "base": pbjson.benchmark_entry(case.name, case.group, case.params, t_base, n,
                                           {**setups["base"]["columns"], "tree": "base"}),
        }
        return rows, entries
    except RuntimeError as e:
        return [verdicts.missing_row(case.name, "", str(e).splitlines()[0], fails=True)], {}
    finally:
        for w in (head, base):
            if w.proc.poll() is None:
                w.request(op="release", case=case.name)


def run_pr(repo: Path, ref: str, cases: Sequence[Case], device: str, rounds: int = ROUNDS,
           block_s: float = BLOCK_S, threshold: float = DEFAULT_THRESHOLD, threads: int = 1,
           progress=None) -> tuple[list[verdicts.Row], list[dict], list[dict], dict[str, Any]]:
    """Run base (``ref``) and head (the working tree of ``repo``) interleaved.

    Returns:
        (rows, head entries, base entries, info) where info holds the trees, commits and worker import paths.
    """
    head_tree = git_root(repo)
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-ci-"))
    rows: list[verdicts.Row] = []
    head_entries, base_entries = [], []
    try:
        with base_worktree(head_tree, ref, tmp) as base_tree:
            head, base = None, None
            try:
                head = Worker("head", head_tree, tmp, device, threads)
                base = Worker("base", base_tree, tmp, device, threads)
                info = {"head_tree": str(head_tree), "base_ref": ref,
                        "base_commit": _git(head_tree, "rev-parse", f"{ref}^{{commit}}"),
                        "head_attentions": str(head.attentions_path), "base_attentions": str(base.attentions_path)}
                for case in cases:
                    case_rows, entries = compare_case(case, head, base, rounds, block_s, threshold)
                    rows += case_rows
                    if entries:
                        head_entries.append(entries["head"])
                        base_entries.append(entries["base"])
                    if progress:
                        progress(case, case_rows)
            finally:
                for w in (head, base):
                    if w is not None:
                        w.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows, head_entries, base_entries, info
