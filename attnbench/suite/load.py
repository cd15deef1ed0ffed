"""Loading a suite: read the YAML file as untrusted input, validate it against the schema
(:mod:`attnbench.suite.schema`), then run the checks (:mod:`attnbench.suite.checks`: structure, attention names
and configs against the registry, settings); every problem of a file is reported at once, one line each with its
key path and line number.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .checks import attention_errors, pydantic_errors, resolve_entries, structural_errors
from .schema import Suite, SuiteError

__all__ = ["load_suite", "suite_from_dict", "MAX_SUITE_BYTES", "MAX_SUITE_NODES", "MAX_SUITE_DEPTH"]


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
