"""The deterministic regression gate: params and the three FLOP counts of the built-in attentions, pinned.

``tests/data/expected_costs.json`` holds, for fixed configs and token grids (:func:`gate_cases`), the columns of
the ``params`` and ``flops`` metrics (``params``, ``params_trainable``, ``macs_fvcore``, ``flops_torch``,
``macs_analytic`` and its parts, ``keys_per_query``, ``flops_uncounted_ops``) and each module's resolved config.
``tests/test_regression_gate.py`` recomputes them and fails on any difference, improvements included, so that
every change of a cost is a reviewed change of this file.

Refresh (after an intended change)::

    python -m attnbench.metrics.expected_costs            # rewrites tests/data/expected_costs.json
    python -m attnbench.metrics.expected_costs --check    # prints the differences, exit 1 if any
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from . import flops, params
from .base import MetricContext

__all__ = ["REFRESH_COMMAND", "DEFAULT_PATH", "gate_cases", "compute", "diff", "load", "write", "main"]

REFRESH_COMMAND = "python -m attnbench.metrics.expected_costs"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "tests" / "data" / "expected_costs.json"
SCHEMA_VERSION = 1

#: every built-in attention is pinned with its default config at these grids
DEFAULT_GRIDS = (28, 56)
#: config added to the default one where the default does not fit a grid (DBRA's agent grid must tile n_win)
FIT_AT_GRID = {("dbra", 28): {"auto_pad": True}}
#: stage configs from the specs (BiFormer-T/S and DeBiFormer-T/S stages 2-3 at their 224² resolutions; DAT v1)
STAGE_CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("mhsa", "unfused", {"impl": "torch"}, 28),
    ("bra", "biformer-stage2", {"dim": 128, "num_heads": 4, "topk": 4}, 28),
    ("bra", "biformer-stage3", {"dim": 256, "num_heads": 8, "topk": 16}, 14),
    ("dbra", "debiformer-stage2",
     {"dim": 128, "num_heads": 4, "topk": 8, "n_groups": 2, "offset_kernel": 7, "offset_stride": 4,
      "rpe_size": 28}, 28),
    ("dbra", "debiformer-stage3",
     {"dim": 256, "num_heads": 8, "topk": 16, "n_groups": 4, "offset_kernel": 5, "offset_stride": 2,
      "rpe_size": 14}, 14),
    ("dat", "v1", {"variant": "v1", "stride": 1, "offset_range_factor": 2.0, "rpe_size": 28}, 28),
    ("agent", "stage3", {"dim": 384, "num_heads": 12, "agent_num": 49, "window_size": 14}, 14),
]


def _builtin_names() -> list[str]:
    """Registered names whose class lives in the ``attentions`` package (entry-point plugins are not pinned)."""
    import attentions

    return [n for n in attentions.available() if attentions.resolve(n).__module__.startswith("attentions.")]


def gate_cases() -> list[tuple[str, str, dict[str, Any], int]]:
    """(attention, label, config, grid) of every pinned case, for the built-in attentions that exist."""
    names = _builtin_names()
    cases = []
    for name in names:
        for grid in DEFAULT_GRIDS:
            cfg = FIT_AT_GRID.get((name, grid), {})
            cases.append((name, "default" if not cfg else "default+" + "+".join(cfg), dict(cfg), grid))
    cases += [c for c in STAGE_CASES if c[0] in names]
    return cases


def _case_key(attention: str, label: str, grid: int) -> str:
    return f"{attention}/{label}@{grid}x{grid}"


def _compute_case(attention: str, config: dict[str, Any], grid: int) -> dict[str, Any]:
    import attentions

    ctx = MetricContext(
        attention, config, lambda: attentions.build(attention, **config), 1, grid, grid,
        torch.float32, torch.device("cpu"),
    )
    module = ctx.make_module()
    resolved = module.config.as_dict() if hasattr(module, "config") else dict(config)
    row: dict[str, Any] = {"attention": attention, "config": config, "resolved_config": resolved, "grid": grid}
    row.update(params.measure(ctx))
    row.update(flops.measure(ctx))
    return json.loads(json.dumps(row))  # tuples -> lists, exactly as the file stores them


def compute() -> dict[str, Any]:
    """The expected-costs document for the current code: ``{"schema_version", "cases": {key: columns}}``."""
    cases = {}
    for attention, label, config, grid in gate_cases():
        cases[_case_key(attention, label, grid)] = _compute_case(attention, config, grid)
    return {"schema_version": SCHEMA_VERSION, "refresh_command": REFRESH_COMMAND, "cases": cases}


def diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """One line per difference between two documents (missing/new cases, changed columns); [] if identical."""
    lines = []
    exp, act = expected.get("cases", {}), actual.get("cases", {})
    for key in sorted(set(exp) - set(act)):
        lines.append(f"{key}: pinned but no longer computed")
    for key in sorted(set(act) - set(exp)):
        lines.append(f"{key}: new case, not pinned yet")
    for key in sorted(set(exp) & set(act)):
        for col in sorted(set(exp[key]) | set(act[key])):
            a, b = exp[key].get(col, "<absent>"), act[key].get(col, "<absent>")
            if a != b:
                ratio = f" ({b / a:.4f}x)" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else ""
                lines.append(f"{key}: {col}: expected {a!r}, got {b!r}{ratio}")
    if expected.get("schema_version") != actual.get("schema_version"):
        lines.append(f"schema_version: expected {expected.get('schema_version')}, got {actual.get('schema_version')}")
    return lines


def load(path: Path = DEFAULT_PATH) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def write(doc: dict[str, Any], path: Path = DEFAULT_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REFRESH_COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="expected file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the file instead of rewriting it")
    args = parser.parse_args(argv)
    actual = compute()
    if args.check:
        lines = diff(load(args.out), actual)
        print("\n".join(lines) if lines else f"{args.out}: up to date ({len(actual['cases'])} cases)")
        return 1 if lines else 0
    old = load(args.out) if args.out.exists() else {"schema_version": SCHEMA_VERSION, "cases": {}}
    write(actual, args.out)
    changes = diff(old, actual)
    print(f"wrote {args.out}: {len(actual['cases'])} cases, {len(changes)} change(s)")
    print("\n".join(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
