"""Measuring one cell: in this process (:class:`CellRunner`) or in a fresh child process (:class:`IsolatedRunner`).

A cell is measured in stages, and the first that raises decides the row: ``build`` (the module on the cell's
device and dtype), ``correctness`` (the gate: a NaN or Inf output fails the cell, so it gets no speed number),
then each metric in the suite's order. An out-of-memory error (``torch.OutOfMemoryError``, ``MemoryError``, or a
RuntimeError saying "out of memory" / "can't allocate memory") gives status ``oom``, any other exception
``failed``; ``error`` is ``"<ExceptionType>: <first line of the message>"`` and ``error_stage`` the stage. A row
that is not ``ok`` carries no metric columns, so a half-measured cell never looks measured.

A metric module (or its ``measure`` function, as an attribute) may declare
``DEPENDS_ON = ("attention", "config", "height", "width")``: the cell keys its result depends on. The runner then reuses its result for every cell that agrees on those keys (e.g. batch-1 FLOPs are the
same for every batch and pass), in one process.

The child process (``python -m attnbench.engine.runner --cell JSON --outcome PATH``) runs exactly the functions the
parent resolved (passed as ``module:qualname``) with the parent's ``sys.path``, and writes its outcome to a file;
when it dies instead (a segfault, the OOM killer), the parent records the cell as failed with the signal.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

import torch
from torch import nn

import attentions
from attentions.backends import ran as backends_ran

from .. import metrics
from ..suite.cells import Cell
from ..suite.effective_config import effective_config
from ..metrics.base import MetricContext
from .parent_watch import PARENT_ENV
from ..core.results import CELLS_DIR, ROW_HEAD, RUN_DIR_ENV
from ..core.deadline import time_limit
from ..core.torch_threads import use_threads

__all__ = ["Outcome", "CellRunner", "IsolatedRunner", "ContractError", "CellTimeout", "check_contract",
           "build_module", "classify", "error_text", "child_main"]

Measure = Callable[[MetricContext], dict]
#: ``measure(..., timeout_s=SUITE_LIMIT)``: the runner's own limit (the one it was made with)
SUITE_LIMIT: Any = object()


@dataclasses.dataclass
class Outcome:
    status: str
    error: Optional[str] = None
    error_stage: Optional[str] = None
    columns: dict[str, Any] = dataclasses.field(default_factory=dict)


class ContractError(RuntimeError):
    """The module's output breaks its contract: an attention maps (B, H, W, C) to the same shape, a model maps
    (B, C, H, W) images to (B, num_classes) logits; both keep the input's dtype and device."""


class CellTimeout(TimeoutError):
    """The cell ran past ``settings.timeout_s``."""


def check_contract(ctx: MetricContext, x: torch.Tensor, out: Any, module: Optional[nn.Module] = None) -> None:
    """Raise :class:`ContractError` unless ``out`` is one tensor of the expected shape on the cell's dtype and device.

    Every attention of the zoo maps (B, H, W, C) to (B, H, W, C) (``attentions.base.Attention``); a model cell's
    backbone maps (B, C, H, W) images to (B, num_classes) logits, ``num_classes`` read from the module (or its
    config) when it says. An output of another shape would still give timings, so the cell would look measured
    while measuring something else.
    """
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # modules that also return auxiliary outputs (e.g. routing indices): the first is the output
    if not isinstance(out, torch.Tensor):
        raise ContractError(f"expected the module to return a tensor, got {type(out).__name__}")
    problems = []
    if ctx.kind == "model":
        problems += _logits_problems(ctx, x, out, module)
    elif tuple(out.shape) != tuple(x.shape):
        problems.append(f"shape {tuple(out.shape)} (expected {tuple(x.shape)} = (B, H, W, C))")
    if out.dtype != ctx.dtype:
        problems.append(f"dtype {str(out.dtype).replace('torch.', '')} (expected {str(ctx.dtype).replace('torch.', '')})")
    if out.device.type != ctx.device.type:
        problems.append(f"device {out.device} (expected {ctx.device})")
    if problems:
        raise ContractError(f"output breaks the {ctx.kind} contract: " + ", ".join(problems))


def _num_classes(ctx: MetricContext, module: Optional[nn.Module]) -> Optional[int]:
    """The logits a model should give: its ``num_classes`` attribute, else the cell config's, else unknown."""
    value = getattr(module, "num_classes", None) if module is not None else None
    if value is None:
        value = ctx.config.get("num_classes")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _logits_problems(ctx: MetricContext, x: torch.Tensor, out: torch.Tensor,
                     module: Optional[nn.Module]) -> list[str]:
    classes = _num_classes(ctx, module)
    ok = out.dim() == 2 and out.shape[0] == x.shape[0] and (classes is None or classes <= 0 or out.shape[1] == classes)
    if ok:
        return []
    want = f"({x.shape[0]}, {classes if classes and classes > 0 else 'num_classes'})"
    return [f"shape {tuple(out.shape)} (expected {want} = (B, num_classes) logits)"]


def _contract_hook(ctx: MetricContext, module: nn.Module, seen: list) -> Any:
    """A forward hook checking the contract on the gate's own forward (so the gate's forward is the only one)."""

    def hook(mod: nn.Module, args: tuple, out: Any) -> None:
        if not seen and args and isinstance(args[0], torch.Tensor):
            seen.append(True)
            check_contract(ctx, args[0], out, mod)

    return module.register_forward_hook(hook)


def correctness_gate() -> Callable[[MetricContext, nn.Module], None]:
    """The gate every cell passes before it is measured: raises on a non-finite output."""
    from ..metrics.correctness import check_finite

    return check_finite


def build_module(attention: str, config: dict[str, Any], device: torch.device, dtype: torch.dtype,
                 seed: int, kind: str = "attention", label: Optional[str] = None) -> nn.Module:
    """The cell's module, seeded so that every build of a cell has the same weights: ``attentions.build(attention,
    **config)``, or for a model cell ``attentions.models.create_model(attention, **config)``; slowed down when the
    test hook ``ATTNBENCH_SLOWDOWN`` names its label (:mod:`attnbench.engine.slowdown`)."""
    from .slowdown import maybe_slowed

    torch.manual_seed(seed)
    if kind == "model":
        from attentions.models import create_model

        module = create_model(attention, **config).to(device=device, dtype=dtype)
    else:
        module = attentions.build(attention, **config).to(device=device, dtype=dtype)
    return maybe_slowed(module, label if label is not None else attention)


def classify(exc: BaseException) -> str:
    """'oom' for out-of-memory errors (CUDA or host), else 'failed'."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, (oom_type, MemoryError)):
        return "oom"
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"
    return "failed"


def error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _location(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _load(location: str) -> Callable:
    module, _, qualname = location.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class CellRunner:
    """Measures cells in this process. Metric modules are imported once, when the runner is made.

    Args:
        metric_names: the suite's metrics, in order.
        settings: metric name -> settings (the suite's ``settings``); its ``threads`` (when set) is the number of
            torch threads for the whole cell (build, gate, every metric), restored afterwards.
        seed: seeds the module weights and the input.
        functions: ``(name, measure)`` pairs to use instead of looking the names up (the child process).
        gate: the correctness gate to use instead of :func:`correctness_gate`.
        timeout_s: time limit of one cell (None: none). In this process it is best effort: ``SIGALRM`` raises
            :class:`CellTimeout` at the next Python bytecode, so a hang inside one C call (a kernel, a deadlock) is
            not interrupted; :class:`IsolatedRunner` enforces it by killing the child.
    """

    def __init__(self, metric_names: list[str], settings: dict[str, Any], seed: int = 0, *,
                 functions: Optional[list[tuple[str, Measure]]] = None, gate: Optional[Callable] = None,
                 timeout_s: Optional[float] = None):
        self.functions = functions if functions is not None else [(n, metrics.get_metric(n)) for n in metric_names]
        self.gate = gate if gate is not None else correctness_gate()
        self.settings, self.seed, self.timeout_s = settings, seed, timeout_s
        self._memo: dict[tuple[str, str], dict[str, Any]] = {}
        #: latency columns of cells measured in an earlier cell's shared-baseline group, by cell id
        self._group_rows: dict[str, dict[str, Any]] = {}

    def locations(self) -> dict[str, Any]:
        """What a child process needs to run the same functions."""
        return {"metrics": [[n, _location(f)] for n, f in self.functions], "gate": _location(self.gate),
                "settings": self.settings, "seed": self.seed, "timeout_s": self.timeout_s}

    @classmethod
    def from_locations(cls, spec: dict[str, Any]) -> "CellRunner":
        """The runner :meth:`locations` describes, in another process (an ``--isolate`` child, a batch job)."""
        return cls([n for n, _ in spec["metrics"]], spec["settings"], spec["seed"],
                   functions=[(n, _load(loc)) for n, loc in spec["metrics"]], gate=_load(spec["gate"]),
                   timeout_s=spec.get("timeout_s"))

    def context(self, cell: Cell, baseline: Optional[Cell] = None) -> tuple[MetricContext, nn.Module]:
        """The metrics' view of the cell, and a first module built for it.

        ``config['dim']`` is filled in from the module when the suite left it to the attention's default, because
        the context sizes the input by it (an attention cell; a model cell's input is an image). ``baseline``: the
        suite baseline's cell at the same shape, batch, dtype, device, pass and mode, which the context carries for
        the paired latency measurement.
        """
        device, dtype = torch.device(cell.device), getattr(torch, cell.dtype)
        seed = self.seed if cell.seed is None else cell.seed  # a cell of a ``seeds`` list carries its own
        make = functools.partial(build_module, cell.attention, dict(cell.config), device, dtype, seed, cell.kind)
        module = make()
        config = dict(cell.config)
        dim = getattr(getattr(module, "config", None), "dim", None) or getattr(module, "dim", None)
        if cell.kind == "attention" and "dim" not in config and isinstance(dim, int):
            config["dim"] = dim
        ctx = MetricContext(attention=cell.attention, config=config, make_module=make, batch=cell.batch,
                            height=cell.height, width=cell.width, dtype=dtype, device=device, pass_=cell.pass_,
                            mode=cell.mode, settings=self.settings, seed=seed, label=cell.label,
                            kind=cell.kind)
        if baseline is not None:
            ctx.baseline = self.context(baseline)[0]
        return ctx, module

    def measure(self, cell: Cell, baseline: Optional[Cell] = None, timeout_s: Any = SUITE_LIMIT,
                latency_budget_s: Optional[float] = None, group: Optional[list[Cell]] = None) -> Outcome:
        """The cell's outcome; ``timeout_s``: this cell's time limit (None: none), default the runner's;
        ``latency_budget_s``: its share of the suite's latency budget (the runner's
        :class:`~attnbench.engine.budget.SuiteBudget`), or None for ``settings.latency.max_time_s``; ``group``: other
        cells of the same shape and baseline whose latency is measured now, together with this cell's, against one
        shared series of baseline calls (:func:`attnbench.metrics.latency.measure_group`; their columns wait in
        this runner until their own cells are measured)."""
        if latency_budget_s is not None:
            saved = self.settings
            self.settings = with_latency_budget(saved, latency_budget_s)
            try:
                return self.measure(cell, baseline, timeout_s, group=group)
            finally:
                self.settings = saved
        stage, module = "build", None
        limit = self.timeout_s if timeout_s is SUITE_LIMIT else timeout_s
        try:
            with _deadline(limit), use_threads(self.settings.get("threads")):
                ctx, module = self.context(cell, baseline)
                stage = "correctness"
                self._pass_gate(ctx, module)
                # what the module really runs with (the suite's config holds only what it gave)
                columns: dict[str, Any] = ({"effective_config": effective_config(module, dict(cell.config))}
                                           if cell.kind == "attention" else {})
                columns.update(backends_ran(module))  # which backend each fast path ran with in that forward, why
                module = None  # metrics build their own; this one would only hold memory
                for name, fn in self.functions:
                    stage = name
                    if name == "latency" and cell.cell_id in self._group_rows:
                        new = self._group_rows.pop(cell.cell_id)
                    elif name == "latency" and group:
                        new = self._latency_group(ctx, cell, baseline, group)
                    else:
                        new = self._run_metric(name, fn, ctx, cell)
                    clash = sorted(set(new) & set(ROW_HEAD))
                    if clash:
                        raise ValueError(f"metric {name!r} returned identity column(s) {clash}; rename them")
                    columns.update(new)
                workers = latency_processes(self.settings)
                if workers > 1 and "latency_samples_ms" in columns:
                    stage = "latency"
                    columns.update(self._latency_in_workers(cell, baseline, workers, columns))
            outcome = Outcome("ok", columns=columns)
        except Exception as e:  # noqa: BLE001 - any failure of a cell is recorded in its row; the sweep goes on
            outcome = Outcome(classify(e), error_text(e), stage)
        module = None
        _release(cell.device, full=outcome.status != "ok")
        return outcome

    def _pass_gate(self, ctx: MetricContext, module: nn.Module) -> None:
        """The correctness gate and the output contract (raises when the module fails either)."""
        seen: list = []
        handle = _contract_hook(ctx, module, seen)
        try:
            self.gate(ctx, module)
        finally:
            handle.remove()
        if not seen:  # a gate that ran no forward: the contract is still checked, on one of our own
            with torch.no_grad():
                x = ctx.make_input(False)
                check_contract(ctx, x, module(x), module)

    def _latency_group(self, ctx: MetricContext, cell: Cell, baseline: Optional[Cell],
                       group: list[Cell]) -> dict[str, Any]:
        """This cell's latency columns, measured together with ``group``'s against one baseline series; the
        group's columns are kept for their own cells. A sibling that fails to build, fails the gate or fails to
        warm up is left out (its own cell measures it alone later and records the error there)."""
        from ..metrics.latency import measure_group

        base_ctx = ctx.baseline if baseline is not None else ctx  # without a baseline, this cell is the baseline
        ctxs, cells = [base_ctx], [baseline if baseline is not None else cell]
        if baseline is not None:
            ctxs.append(ctx)
            cells.append(cell)
        for other in group:
            if other.cell_id == cells[0].cell_id:  # the baseline's own cell, still to run: report it too
                continue
            try:
                other_ctx, module = self.context(other)
                self._pass_gate(other_ctx, module)
            except Exception:  # noqa: BLE001 - measured (and recorded as failed) in its own cell
                continue
            module = None
            ctxs.append(other_ctx)
            cells.append(other)
        pending = {cell.cell_id} | {c.cell_id for c in group}
        reported = [i for i, c in enumerate(cells) if c.cell_id in pending]
        own = cells.index(cell)
        rows = measure_group(ctxs, reported, droppable=[i for i in reported if i != own and i != 0])
        for c, row in zip(cells, rows):
            if row is not None and c.cell_id != cell.cell_id:
                self._group_rows[c.cell_id] = row
        return rows[own]

    def _latency_in_workers(self, cell: Cell, baseline: Optional[Cell], workers: int,
                            own: dict[str, Any]) -> dict[str, Any]:
        """``settings.latency.processes = N``: the latency of the cell measured again in N − 1 fresh processes
        (each with 1/N of the cell's budget, as this process had), pooled with this process's samples; each
        process's samples form their own epochs, so the interval carries the spread between processes
        (pyperf's workers, docs/metrics.md)."""
        from ..metrics.latency import merge_rows

        settings = dict(self.settings)
        settings["latency"] = {**(settings.get("latency") or {}), "processes": 1,
                               "budget_s": own.get("latency_budget_s")}
        child = IsolatedRunner(CellRunner(["latency"], settings, self.seed, timeout_s=self.timeout_s))
        rows = [own]
        for _ in range(workers - 1):
            outcome = child.measure(cell, baseline)
            if outcome.status != "ok":
                raise RuntimeError(f"latency worker process failed: {outcome.error}")
            rows.append(outcome.columns)
        return merge_rows(rows)

    def _run_metric(self, name: str, fn: Measure, ctx: MetricContext, cell: Cell) -> dict[str, Any]:
        keys = getattr(fn, "DEPENDS_ON", None) or getattr(sys.modules.get(fn.__module__), "DEPENDS_ON", None)
        if not keys:
            return dict(fn(ctx))
        identity = cell.identity()
        memo_key = (name, json.dumps([identity.get(k) for k in keys], sort_keys=True, default=str))
        if memo_key not in self._memo:
            self._memo[memo_key] = dict(fn(ctx))
        return dict(self._memo[memo_key])


def latency_processes(settings: dict[str, Any]) -> int:
    """``settings.latency.processes`` (1 when unset)."""
    value = (settings.get("latency") or {}).get("processes", 1)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def with_latency_budget(settings: dict[str, Any], seconds: float) -> dict[str, Any]:
    """``settings`` with ``latency.budget_s`` set to the cell's share of the suite budget."""
    return {**settings, "latency": {**(settings.get("latency") or {}), "budget_s": float(seconds)}}


def _deadline(seconds: Optional[float]) -> ContextManager[None]:
    """Raise :class:`CellTimeout` in this (main) thread after ``seconds``; a no-op off the main thread or for None
    (:func:`attnbench.core.deadline.time_limit`)."""
    return time_limit(seconds, lambda: CellTimeout(f"the cell ran longer than its time limit of {seconds:g} s"))


def _release(device: str, full: bool) -> None:
    """Free what the cell left behind, so the next cell starts clean.

    Modules and tensors go by reference counting; the garbage collector only finds cycles. A full collection
    costs ~0.2 s with torch loaded on a small CPU, so it runs only where it pays: on CUDA (before the cache is
    emptied) and after a failure (a traceback holds frames); otherwise the young generations suffice.
    """
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    gc.collect() if (full or cuda) else gc.collect(1)
    if cuda:
        torch.cuda.empty_cache()


class IsolatedRunner:
    """Measures each cell in a fresh ``python -m attnbench.engine.runner`` process running ``runner``'s functions."""

    #: seconds the child may take beyond ``timeout_s`` before it is killed: its start (importing torch, 2-3 s on a
    #: small CPU) and the clean timeout it reports itself when its own alarm can fire
    STARTUP_S = 30.0

    def __init__(self, runner: CellRunner):
        self.spec = runner.locations()
        self.timeout_s = runner.timeout_s

    def measure(self, cell: Cell, baseline: Optional[Cell] = None, timeout_s: Any = SUITE_LIMIT,
                latency_budget_s: Optional[float] = None) -> Outcome:
        limit_s = self.timeout_s if timeout_s is SUITE_LIMIT else timeout_s
        spec = self.spec
        if latency_budget_s is not None:
            spec = {**spec, "settings": with_latency_budget(spec["settings"], latency_budget_s)}
        payload = json.dumps({**spec, "timeout_s": limit_s, "cell": cell.identity(),
                              "baseline": baseline.identity() if baseline is not None else None}, default=str)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env[PARENT_ENV] = str(os.getpid())  # the child dies with this process (attnbench.engine.parent_watch)
        with tempfile.TemporaryDirectory(prefix="cell-", dir=_outcome_parent()) as tmp:
            out = Path(tmp) / "outcome.json"
            cmd = [sys.executable, "-m", "attnbench.engine.runner", "--cell", payload, "--outcome", str(out)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
            limit = None if limit_s is None else limit_s + self.STARTUP_S
            try:
                _, stderr = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return Outcome("failed", f"CellTimeout: the cell ran longer than its time limit of "
                                         f"{limit_s:g} s (+{self.STARTUP_S:g} s to start); its process was "
                                         "killed", "timeout")
            except BaseException:  # Ctrl-C: take the child down with us
                proc.kill()
                proc.wait()
                raise
            if out.exists():
                return Outcome(**json.loads(out.read_text()))
            return Outcome("failed", _crash_text(proc.returncode, stderr), "isolate")


def _outcome_parent() -> Optional[str]:
    """Where a child writes its outcome: ``RUN_DIR/.cells/`` of the run being measured (the runner and batch jobs
    set ``$ATTNBENCH_RUN_DIR``), so nothing is left in the system's temporary directory; else that directory."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir or not Path(run_dir).is_dir():
        return None
    folder = Path(run_dir) / CELLS_DIR
    folder.mkdir(exist_ok=True)
    return str(folder)


def _crash_text(code: int, stderr: str) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        how = f"died from {name} (exit code {code})"
        if -code == signal.SIGKILL:
            how += ", possibly killed by the OOM killer"
    else:
        how = f"exited with code {code} without a result"
    tail = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"ChildProcessError: the cell's process {how}" + (f"; last stderr line: {tail[-1].strip()}" if tail else "")


def child_main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the child: measure one cell, write the outcome as JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m attnbench.engine.runner",
                                     description="Measure one cell (--isolate).")
    parser.add_argument("--cell", required=True, help="JSON: cell identity, metric locations, gate, settings, seed")
    parser.add_argument("--outcome", required=True, help="file to write the outcome JSON to")
    args = parser.parse_args(argv)
    spec = json.loads(args.cell)
    runner = CellRunner.from_locations(spec)
    baseline = Cell.from_identity(spec["baseline"]) if spec.get("baseline") else None
    outcome = runner.measure(Cell.from_identity(spec["cell"]), baseline)
    from ..core.results import json_text

    Path(args.outcome).write_text(json_text(dataclasses.asdict(outcome)))
    return 0
