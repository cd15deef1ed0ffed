"""Benchmark suites: the YAML schema (loading a file and its checks: :mod:`attnbench.suite.load`).

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
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from ..core.errors import UserError
from ..core.hints import did_you_mean  # re-exported: the suite checks and cells import it from here
from .executor_config import ExecutorSection
from .factors import LABEL_PATTERN, expand_entries

__all__ = ["AXES", "CELL_KEYS", "Suite", "AttentionEntry", "ModelEntry", "Axes", "BatchByDevice",
           "SuiteError", "did_you_mean", "parse_resolution"]

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
