"""A suite expanded into cells: one attention (or, in a model suite, one backbone), one input shape, one setting
of every axis.

Pure functions, no torch: whether CUDA is present and whether an attention accepts a cell are passed in (the
runner's probe builds the module on the meta device and asks it for ``cost(H, W)``; see :mod:`attnbench.suite.probe`).

Expansion order: attentions (or models) in suite order, then the suite's ``seeds`` (when it lists several training
seeds; each cell then carries its seed), then the axes in :data:`attnbench.suite.schema.AXES` order,
the last axis varying fastest; a ``zip`` group varies its axes together, at the position of its first axis. Each
cell is then, in this order: given its concrete device (``cuda_if_available`` becomes ``cuda`` or ``cpu``) and,
when ``axes.batch`` is given per device, that device's batch (no cell where the device has none at this
position), dropped when an ``exclude`` entry matches it, skipped (with the reason) when its device is missing or
the probe rejects it, and dropped when an earlier cell has the same ``cell_id``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import itertools
import json
from typing import Any, Callable, Iterable, Optional

from ..core.errors import UserError
from .schema import AXES, CELL_KEYS, Suite, did_you_mean, parse_resolution

__all__ = ["Cell", "Expansion", "CellFilter", "expand", "parse_only", "cell_id_of", "count_cells"]

#: keys ``--only`` accepts: the cell keys plus ``cell_id``
ONLY_KEYS = CELL_KEYS + ("cell_id",)


def cell_id_of(identity: dict[str, Any]) -> str:
    """12 hex digits of the sha1 of the canonical JSON of a cell's identity columns."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One measurement: the identity columns of a results row (see ``/docs/engine.md``).

    ``kind`` is ``"attention"`` (a (B, H, W, C) token map through an attention) or ``"model"`` (a (B, 3, H, W) image
    through a backbone of ``attentions.models``, whose name is then in ``attention``). Only a model cell's
    identity holds ``kind``, so the ids of attention cells are what they were before model suites existed.
    """

    suite: str
    attention: str
    label: str
    config: dict[str, Any] = dataclasses.field(hash=False)
    height: int
    width: int
    batch: int
    dtype: str
    device: str
    pass_: str
    mode: str
    kind: str = "attention"
    #: the cell's seed when the suite lists ``seeds`` (else None: the suite's ``seed``, not part of the identity)
    seed: Optional[int] = None
    #: the factor columns of an ablation's cell (:data:`attnbench.suite.factors.FACTOR_COLUMNS`); not part of the
    #: identity, so ``cell_id`` is the same whether a variant was written by hand or by ``vary``
    factor: Optional[dict[str, Any]] = dataclasses.field(default=None, hash=False, compare=False)

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def identity(self) -> dict[str, Any]:
        """The identity columns, in the results contract's order and spelling."""
        ident = {"suite": self.suite}
        if self.kind != "attention":
            ident["kind"] = self.kind
        ident.update({
            "attention": self.attention, "label": self.label, "config": dict(self.config),
            "height": self.height, "width": self.width, "tokens": self.tokens, "batch": self.batch,
            "dtype": self.dtype, "device": self.device, "pass": self.pass_, "mode": self.mode,
        })
        if self.seed is not None:  # only then: the ids of cells without a seeds list are what they always were
            ident["seed"] = self.seed
        return ident

    @property
    def cell_id(self) -> str:
        return cell_id_of(self.identity())

    @classmethod
    def from_identity(cls, data: dict[str, Any]) -> "Cell":
        """The cell of its identity columns; the factor columns too when ``data`` has them (:meth:`record`)."""
        from .factors import FACTOR_COLUMNS

        keys = [f.name for f in dataclasses.fields(cls) if f.name not in ("kind", "seed", "factor")]
        factor = {k: data[k] for k in FACTOR_COLUMNS if k in data} or None
        return cls(**{k: data["pass" if k == "pass_" else k] for k in keys}, kind=data.get("kind") or "attention",
                   seed=data.get("seed"), factor=factor)

    def record(self) -> dict[str, Any]:
        """The identity columns and the factor columns: what a batch job needs to write this cell's row."""
        return {**self.identity(), **(self.factor or {})}

    def key_text(self, key: str) -> str:
        """The text a filter pattern is matched against for ``key``."""
        if key == "resolution":
            return f"{self.height}x{self.width}"
        if key == "cell_id":
            return self.cell_id
        if key == "model":
            return self.attention if self.kind == "model" else ""
        if key == "seed":
            return "" if self.seed is None else str(self.seed)
        return str(self.identity()[key])

    def describe(self) -> str:
        pass_ = "fwd" if self.pass_ == "forward" else "fwd+bwd"
        seed = "" if self.seed is None else f" seed {self.seed}"
        return (f"{self.label} {self.height}x{self.width} b{self.batch} {self.dtype} {self.device} {pass_} "
                f"{self.mode}{seed}")


class CellFilter:
    """Cell key -> shell-style patterns: a cell matches when, for every key, one of the key's patterns matches."""

    def __init__(self, terms: dict[str, list[str]]):
        self.terms = terms

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "CellFilter":
        """From an ``exclude`` entry (already checked by :func:`attnbench.suite.checks.exclude_spec_errors`)."""
        terms = {}
        for key, value in spec.items():
            values = [value] if key == "resolution" or not isinstance(value, list) else value
            terms[key] = [_pattern(key, v) for v in values]
        return cls(terms)

    def matches(self, cell: Cell) -> bool:
        return all(any(fnmatch.fnmatchcase(cell.key_text(k), p) for p in pats) for k, pats in self.terms.items())


def _pattern(key: str, value: Any) -> str:
    """A spec value as a pattern: a resolution becomes 'HxW' (unless it is a glob), anything else its text."""
    if key == "resolution" and not (isinstance(value, str) and any(c in value for c in "*?[")):
        h, w = parse_resolution(int(value) if isinstance(value, str) and value.isdigit() else value)
        return f"{h}x{w}"
    return str(value)


def parse_only(expr: str) -> CellFilter:
    """Parse ``--only``: comma-separated terms ``key=pattern[|pattern...]``; a term without ``=`` is a label glob.

    Terms on different keys must all match; patterns of one key (``|``-separated, or the key repeated) are
    alternatives. Example: ``attention=dbra|bra,pass=forward,resolution=56``.
    """
    terms: dict[str, list[str]] = {}
    for term in filter(None, (t.strip() for t in expr.split(","))):
        key, sep, value = term.partition("=")
        key, value = (key.strip(), value.strip()) if sep else ("label", term)
        if key not in ONLY_KEYS:
            raise UserError(f"--only: unknown key {key!r}{did_you_mean(key, ONLY_KEYS)} "
                            f"(keys: {', '.join(ONLY_KEYS)})")
        if not value:
            raise UserError(f"--only: term {term!r} has no pattern after '='")
        try:
            terms.setdefault(key, []).extend(_pattern(key, v.strip()) for v in value.split("|"))
        except ValueError as e:
            raise UserError(f"--only: {key}: {e}") from None
    if not terms:
        raise UserError(f"--only: expected terms like 'attention=dbra,pass=forward', got {expr!r}")
    return CellFilter(terms)


@dataclasses.dataclass
class Expansion:
    """What a suite expands to on this machine."""

    cells: list[Cell]
    skipped: list[tuple[Cell, str]]
    excluded: int = 0
    #: the cells ``exclude`` dropped, with the index of the first entry that matched
    excluded_cells: list[tuple[Cell, int]] = dataclasses.field(default_factory=list)
    #: indices of ``exclude`` entries that matched no cell (likely a mistake)
    unused_excludes: list[int] = dataclasses.field(default_factory=list)

    def select(self, keep: CellFilter) -> "Expansion":
        """Only the cells (and skipped cells) ``keep`` matches."""
        return Expansion([c for c in self.cells if keep.matches(c)],
                         [(c, r) for c, r in self.skipped if keep.matches(c)], self.excluded,
                         [(c, i) for c, i in self.excluded_cells if keep.matches(c)], self.unused_excludes)

    def baselines(self, label: str) -> dict[str, Cell]:
        """cell_id -> the cell of ``label`` at the same shape, batch, dtype, device, pass and mode, for every
        runnable cell that has one (the baseline's own cells excluded): what the paired latency is timed against.
        A factor's variant is timed against its reference instead (its ``factor_reference``)."""
        def key(c: Cell) -> tuple:
            return (c.height, c.width, c.batch, c.dtype, c.device, c.pass_, c.mode, c.seed)

        def against(c: Cell) -> str:
            ref = (c.factor or {}).get("factor_reference")
            return ref if ref and not c.factor.get("is_reference") else label

        cells = {(c.label, key(c)): c for c in self.cells}
        return {c.cell_id: cells[(against(c), key(c))] for c in self.cells
                if c.label != against(c) and (against(c), key(c)) in cells}


def _axis_blocks(suite: Suite) -> list[list[str]]:
    """The axes as independent blocks, in expansion order: a zip group is one block (its first axis' position)."""
    group_of = {axis: sorted(group, key=AXES.index) for group in suite.zip for axis in group}
    return [group_of.get(axis, [axis]) for axis in AXES if group_of.get(axis, [axis])[0] == axis]


def count_cells(suite: Suite) -> int:
    """How many cells the suite expands to before excludes and de-duplication: counted, not expanded, so a
    runaway grid is refused before it takes time or memory."""
    n = len(suite.entries) * len(suite.seeds or [None])
    for block in _axis_blocks(suite):
        n *= len(suite.axes.values(block[0]))
    return n


def _combos(suite: Suite) -> Iterable[dict[str, Any]]:
    """Axis name -> value for every combination of the axes, zip groups varying together."""
    blocks = [[dict(zip(columns, values)) for values in zip(*(suite.axes.values(a) for a in columns))]
              for columns in _axis_blocks(suite)]
    for parts in itertools.product(*blocks):
        yield {k: v for part in parts for k, v in part.items()}


def expand(suite: Suite, *, cuda_available: bool, device: Optional[str] = None,
           probe: Optional[Callable[[Cell], Optional[str]]] = None) -> Expansion:
    """Expand a loaded suite into cells.

    Args:
        suite: a suite from :func:`attnbench.suite.load.load_suite` (labels filled, configs merged).
        cuda_available: whether ``cuda`` cells can run here (``cuda_if_available`` resolves by it).
        device: replaces the suite's device axis (``--device``): ``cpu``, ``cuda`` or ``cuda_if_available``.
        probe: returns why a cell cannot run (e.g. the grid does not fit the attention's regions), or None.
    """
    excludes = [CellFilter.from_spec(spec) for spec in suite.exclude]
    hits = [0] * len(excludes)
    out = Expansion([], [])
    seen: set[str] = set()
    for entry, seed in itertools.product(suite.entries, suite.seeds or [None]):
        for combo in _combos(suite):
            raw = device or combo["device"]
            concrete = ("cuda" if cuda_available else "cpu") if raw == "cuda_if_available" else raw
            batch = combo["batch"]
            if isinstance(batch, dict):  # a per-device batch: this device's, if it has one at this position
                batch = batch.get(concrete)
                if batch is None:
                    continue
            (h, w) = combo["resolution"]
            factor = entry.factor_columns() if hasattr(entry, "factor_columns") else None
            cell = Cell(suite.name, entry.name, entry.display, dict(entry.config), h, w, batch,
                        combo["dtype"], concrete, combo["pass"], combo["mode"], kind=suite.kind, seed=seed, factor=factor)
            if cell.cell_id in seen:
                continue
            seen.add(cell.cell_id)
            matched = [i for i, f in enumerate(excludes) if f.matches(cell)]
            for i in matched:
                hits[i] += 1
            if matched:
                out.excluded += 1
                out.excluded_cells.append((cell, matched[0]))
            elif concrete == "cuda" and not cuda_available:
                out.skipped.append((cell, "device 'cuda' is not available here (torch.cuda.is_available() is False)"))
            elif probe is not None and (reason := probe(cell)) is not None:
                out.skipped.append((cell, reason))
            else:
                out.cells.append(cell)
    out.unused_excludes = [i for i, n in enumerate(hits) if n == 0]
    return out
