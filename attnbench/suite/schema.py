"""Benchmark suites: the YAML schema, loading and validation.

A suite names the attentions to measure (registry names or ``package.module:Class`` paths, each with config
overrides) -- or, in a *model suite*, whole backbones (``models:``, names of ``attentions.models``) --, the sweep
axes (token grid or image side, batch, dtype, device, pass, mode), how the axes combine (a product, with ``zip``
groups and ``exclude`` entries), the metrics and their settings, and the baseline attention. The format is
documented key by key in ``docs/engine.md``; :mod:`attnbench.suite.cells` expands a suite into cells.

Every error names the file, the key path and what was expected, e.g.
``suites/x.yaml: attentions[2].config.topk: expected an integer, got 'four' (line 12)``; all errors of a file are
reported at once. The structure is checked by pydantic (strict: YAML ``"4"`` is not an integer); the attention
names and config keys are then checked against the ``attentions`` registry, which is imported lazily, so importing
this module does not import torch.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError

from ..core.errors import UserError
from ..core.hints import did_you_mean  # re-exported: the suite checks and cells import it from here
from .executor_config import ExecutorSection

__all__ = ["AXES", "CELL_KEYS", "Suite", "AttentionEntry", "ModelEntry", "Axes", "BatchByDevice",
           "SuiteError", "did_you_mean", "load_suite", "suite_from_dict", "parse_resolution"]

#: sweep axes in expansion order (YAML spelling)
AXES = ("resolution", "batch", "dtype", "device", "pass", "mode")
#: keys an ``exclude`` entry (and ``--only``) may name; ``model`` matches a model suite's model names
CELL_KEYS = ("attention", "label", "model", "resolution", "height", "width", "tokens", "batch", "dtype", "device",
             "pass", "mode", "seed")
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "cuda_if_available")
PASSES = ("forward", "forward_backward")
MODES = ("eager", "compile")


class SuiteError(UserError):
    """A suite file is broken; the message has one line per problem, each naming file, key path and expectation."""


def parse_resolution(value: Any) -> tuple[int, int]:
    """``56`` -> (56, 56); ``[56, 28]`` or ``"56x28"`` -> (56, 28); anything else raises ValueError."""
    if isinstance(value, str) and re.fullmatch(r"\d+x\d+", value.strip()):
        value = [int(v) for v in value.strip().split("x")]
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"expected a positive integer N (an N×N grid), a pair [H, W] or 'HxW', got {value!r}")


Resolution = Annotated[tuple[int, int], BeforeValidator(parse_resolution)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


#: the characters of a label (``=`` for the variants of a factor, ``dbra-topk=8``)
LABEL_PATTERN = r"^[A-Za-z0-9_.:+\-=]+$"
#: config key -> the values a factor takes (:mod:`attnbench.suite.factors`)
FactorValues = Optional[dict[str, Annotated[list[Any], Field(min_length=1)]]]


class AttentionEntry(_Model):
    """One attention of the sweep: what to build and how to call it in tables; ``vary``/``vary_product`` make it
    the reference of an ablation (its variants: :func:`attnbench.suite.factors.expand_entries`)."""

    name: str = Field(min_length=1)
    label: Optional[str] = Field(default=None, pattern=LABEL_PATTERN)
    config: dict[str, Any] = {}
    vary: FactorValues = None
    vary_product: FactorValues = None

    @property
    def display(self) -> str:
        return self.label or self.name


class ModelEntry(AttentionEntry):
    """One backbone of a model suite: a name of ``attentions.models.list_models()``, its label, and keyword
    arguments of ``attentions.models.create_model(name, **config)`` (e.g. ``num_classes``, ``drop_path_rate``)."""


Batches = Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)]
#: the pydantic tag of each form of ``axes.batch``; a tag holding "[" is left out of error key paths
BATCH_LIST_TAG, BATCH_MAP_TAG = "list[int]", "dict[device]"


class BatchByDevice(_Model):
    """``axes.batch`` per concrete device, ``{cpu: [8], cuda: [64]}``: one suite file sized for both machines (a
    cell runs at the batches of the device it resolved to). Zipped, the i-th batch of each device goes with the
    i-th value of the other axes (a device whose list is shorter has no cell at the later positions)."""

    cpu: Batches
    cuda: Batches


def _batch_form(value: Any) -> str:
    return BATCH_MAP_TAG if isinstance(value, (dict, BatchByDevice)) else BATCH_LIST_TAG


class Axes(_Model):
    """The sweep axes; each a non-empty list. Only ``resolution`` is required. ``batch`` may instead be a mapping
    of device to list (:class:`BatchByDevice`)."""

    resolution: list[Resolution] = Field(min_length=1)
    batch: Annotated[Union[Annotated[Batches, Tag(BATCH_LIST_TAG)], Annotated[BatchByDevice, Tag(BATCH_MAP_TAG)]],
                     Discriminator(_batch_form)] = [1]
    dtype: list[Literal[DTYPES]] = Field(default=["float32"], min_length=1)  # type: ignore[valid-type]
    device: list[Literal[DEVICES]] = Field(default=["cuda_if_available"], min_length=1)  # type: ignore[valid-type]
    pass_: list[Literal[PASSES]] = Field(default=["forward"], min_length=1, alias="pass")  # type: ignore[valid-type]
    mode: list[Literal[MODES]] = Field(default=["eager"], min_length=1)  # type: ignore[valid-type]

    def values(self, axis: str) -> list[Any]:
        """The axis' values. A per-device batch gives one ``{"cpu": b or None, "cuda": b or None}`` per position
        (the longer list sets the count), so that it zips position by position; each cell takes its device's."""
        value = getattr(self, "pass_" if axis == "pass" else axis)
        if isinstance(value, BatchByDevice):
            n = max(len(value.cpu), len(value.cuda))
            return [{d: (getattr(value, d)[i] if i < len(getattr(value, d)) else None) for d in ("cpu", "cuda")}
                    for i in range(n)]
        return list(value)


class Suite(_Model):
    """A validated suite. After :func:`load_suite`, every entry has a label and its merged config.

    Exactly one of ``attentions`` (an attention suite: cells are (B, H, W, C) token maps, ``resolution`` is the
    token grid) and ``models`` (a model suite: cells are (B, 3, H, W) images, ``resolution`` is the image side, the
    output is (B, num_classes) logits) is given.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    attentions: Optional[list[AttentionEntry]] = Field(default=None, min_length=1)
    models: Optional[list[ModelEntry]] = Field(default=None, min_length=1)
    defaults: dict[str, Any] = {}
    axes: Axes
    zip: list[list[Literal[AXES]]] = []  # type: ignore[valid-type]
    exclude: list[dict[str, Any]] = []
    metrics: list[str] = Field(min_length=1)
    baseline: str = "mhsa"
    #: metric name -> its settings mapping; plus ``timeout_s`` (seconds per cell, null for none) and ``threads``
    #: (torch threads while a cell is measured, every stage; null: torch's default)
    settings: dict[str, Any] = {}
    seed: int = 0
    #: several training seeds: every entry's cells once per seed (the seed joins the cell's identity), so the
    #: report can give each attention's seed-to-seed spread; None: one seed, ``seed``
    seeds: Optional[list[int]] = Field(default=None, min_length=1)
    #: job grouping and resources for ``--executor local|slurm`` (docs/cluster.md); ignored when run in-process
    executor: Optional[ExecutorSection] = None

    @property
    def kind(self) -> str:
        """``"model"`` for a suite of backbones (``models:``), else ``"attention"``."""
        return "model" if self.models is not None else "attention"

    @property
    def entries(self) -> list[AttentionEntry]:
        """The suite's entries, attentions or models, in suite order, each ``vary``/``vary_product`` expanded into
        its reference and variants (:class:`attnbench.suite.factors.FactorEntry`)."""
        from .factors import expand_entries

        return expand_entries(list(self.models if self.models is not None else self.attentions or []), self.defaults)

    @property
    def entries_key(self) -> str:
        """The YAML key the entries are under (``attentions`` or ``models``), for error messages."""
        return "models" if self.models is not None else "attentions"

    def labels(self) -> list[str]:
        return [e.display for e in self.entries]

    def to_dict(self) -> dict[str, Any]:
        """The suite as plain YAML/JSON data (what the manifest stores and ``--resume`` reloads); the entry key
        the suite does not use is left out, so an attention suite's manifest is what it always was."""
        data = self.model_dump(by_alias=True, mode="json")
        for key in ("attentions", "models", "seeds"):
            if data.get(key) is None:
                data.pop(key, None)
        for key in ("attentions", "models"):
            for entry in data.get(key) or []:  # a suite without factors stores what it always stored
                for field in ("vary", "vary_product"):
                    if entry.get(field) is None:
                        entry.pop(field, None)
        return data


#: limits of a suite file, so that loading one is safe whatever it holds (a suite is a few kB of YAML)
MAX_SUITE_BYTES = 1 << 20
#: nodes after expanding aliases: a "billion laughs" file of a few hundred bytes expands to 10^9 nodes
MAX_SUITE_NODES = 100_000
#: nesting of lists and mappings (a suite needs about 5)
MAX_SUITE_DEPTH = 32


def _yaml_problem(path: Path, e: yaml.YAMLError) -> SuiteError:
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return SuiteError(f"{path}: invalid YAML{where}: {problem}")


def _read_text(path: Path) -> str:
    """The file as text: bounded in size, UTF-8, not binary; each failure one line naming the file."""
    try:
        size = path.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise SuiteError(f"{path}: {size:,} bytes is too large for a suite file (limit {MAX_SUITE_BYTES:,} bytes)")
        with open(path, "rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)  # a file that grows (a pipe, /dev/zero) is cut here
    except OSError as e:
        raise SuiteError(f"{path}: cannot read suite file: {e.strerror or e}") from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: more than {MAX_SUITE_BYTES:,} bytes is too large for a suite file")
    if b"\0" in data:
        raise SuiteError(f"{path}: a binary file (it holds NUL bytes), not a YAML suite")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SuiteError(f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} "
                         "(save the suite as UTF-8)") from None


def _check_tree(path: Path, root: Any) -> None:
    """Refuse alias bombs, deep nesting and duplicate keys, on the composed tree (before anything is built).

    The expanded size of each node is computed once (memoised by node identity), so a bomb that would expand to
    billions of nodes is measured in time linear in the file.
    """
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_SUITE_DEPTH:
            line = node.start_mark.line + 1
            raise SuiteError(f"{path}: nested deeper than {MAX_SUITE_DEPTH} levels (line {line}); a suite needs "
                             "a few (or an alias refers to itself)")
        if id(node) in sizes:
            return sizes[id(node)]
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise SuiteError(f"{path}: duplicate key {key.value!r} on lines {seen[key.value]} and "
                                         f"{key.start_mark.line + 1}; YAML would silently keep only the last")
                    seen[key.value] = key.start_mark.line + 1
                total += size(key, depth + 1) + size(value, depth + 1)
                if total > MAX_SUITE_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
                if total > MAX_SUITE_NODES:
                    break
        if total > MAX_SUITE_NODES:
            raise SuiteError(f"{path}: expands to more than {MAX_SUITE_NODES:,} YAML nodes (aliases included); "
                             "refusing it (a suite needs a few hundred)")
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root, 0)


def _read_yaml(path: Path) -> tuple[Any, Any]:
    """(data, node tree) of a YAML suite file, loaded as untrusted input: a size limit, UTF-8 only, an
    alias-expansion and nesting limit, duplicate keys refused; a syntax error names the file and the line."""
    text = _read_text(path)
    try:
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_tree(path, nodes)
        return yaml.safe_load(text), nodes
    except yaml.YAMLError as e:
        raise _yaml_problem(path, e) from None
    except RecursionError:
        raise SuiteError(f"{path}: nested too deeply to parse (limit {MAX_SUITE_DEPTH} levels)") from None


def load_suite(path: str | Path, *, check_attentions: bool = True) -> Suite:
    """Read, validate and resolve a suite file (see :func:`suite_from_dict`)."""
    path = Path(path)
    data, nodes = _read_yaml(path)
    return suite_from_dict(data, source=str(path), nodes=nodes, check_attentions=check_attentions)


def suite_from_dict(data: Any, *, source: str = "<suite>", nodes: Any = None,
                    check_attentions: bool = True) -> Suite:
    """Validate suite data; with ``check_attentions``, also resolve names, merge ``defaults`` and check configs
    (of the attentions, or of the models of a model suite).

    A model suite without a ``baseline`` key takes its first model as the baseline; an attention suite takes its
    first entry with ``vary``/``vary_product`` (an ablation's reference), else the default ``mhsa``.

    Raises:
        SuiteError: listing every problem found, one line each: ``source: key.path: what was expected``.
    """
    from .checks import attention_errors, pydantic_errors, resolve_entries, structural_errors

    if not isinstance(data, dict):
        raise SuiteError(f"{source}: expected a mapping of suite keys at the top level, got {type(data).__name__}")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        _raise(source, nodes, pydantic_errors(e))
    if suite.models and "baseline" not in data:
        suite = suite.model_copy(update={"baseline": suite.models[0].display})
    elif "baseline" not in data and (refs := [e for e in suite.attentions or [] if e.vary or e.vary_product]):
        suite = suite.model_copy(update={"baseline": refs[0].display})  # an ablation: its first reference
    errors = structural_errors(suite)
    if errors:
        _raise(source, nodes, errors)
    if not check_attentions:
        return suite
    errors = attention_errors(suite)
    if errors:
        _raise(source, nodes, errors)
    return resolve_entries(suite)


def _raise(source: str, nodes: Any, errors: list[tuple[str, str]]) -> None:
    lines = []
    for path, msg in errors:
        line = _line_of(nodes, path)
        where = "" if msg.startswith(path) else f"{path}: "  # a message that already names its key path
        lines.append(f"{source}: {where}{msg}" + (f" (line {line})" if line else ""))
    raise SuiteError("\n".join(lines))


def _line_of(node: Any, path: str) -> Optional[int]:
    """1-based line of key ``path`` (``a.b[2].c``) in a composed YAML tree; the nearest existing parent's line."""
    if node is None or not path or path == "(suite)":
        return None
    line = node.start_mark.line + 1
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("[") and isinstance(node, yaml.SequenceNode):
            i = int(part[1:-1])
            if i >= len(node.value):
                break
            node = node.value[i]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        else:
            break
    return line
