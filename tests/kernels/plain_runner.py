#!/usr/bin/env python3
"""Run the kernel tests without pytest: the GPU check's correctness stage on a machine that has only python3,
torch and triton (``scripts/gpu_check.sh`` uses pytest when it imports, else this).

    python3 tests/kernels/plain_runner.py tests/kernels/test_pixel_agent_kernel.py ... [--exclude flex]
    python3 tests/kernels/plain_runner.py --shim FILES    # use the stand-in even where pytest is installed

It imports each file and calls its ``test_*`` functions, the same functions pytest runs, expanding
``pytest.mark.parametrize`` and honouring ``skipif``/``slow`` (slow tests are skipped, as in pytest's default run)
and ``pytest.skip``. Without pytest, a small stand-in module named ``pytest`` provides what the kernel tests use
(``mark``, ``fixture``, ``skip``, ``importorskip``, ``raises``). Fixtures: ``tmp_path``, ``capsys`` and
``monkeypatch`` are provided; a test asking for another one is reported as skipped. Set-up as the conftest files
do: ``TRITON_INTERPRET=1`` without CUDA, TF32 off. Prints one line per test and ``N passed, M failed, K
skipped``; exits 1 if any test failed.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import itertools
import os
import pathlib
import re
import sys
import tempfile
import traceback
import types

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class Skipped(BaseException):
    """pytest.skip() of the stand-in (pytest's own is also a BaseException named Skipped)."""


class _Mark:
    def __init__(self, name, args=(), kwargs=None):
        self.name, self.args, self.kwargs = name, args, kwargs or {}

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs and not self.args:  # @pytest.mark.slow
            return _attach(args[0], self)
        mark = _Mark(self.name, args, kwargs)
        return lambda fn: _attach(fn, mark)


def _attach(fn, mark):
    fn.pytestmark = [*getattr(fn, "pytestmark", []), mark]
    return fn


class _Raises:
    def __init__(self, exc, match=None):
        self.exc, self.match = exc, match

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError(f"DID NOT RAISE {self.exc}")
        if not issubclass(typ, self.exc):
            return False
        if self.match and not re.search(self.match, str(value)):
            raise AssertionError(f"{str(value)!r} does not match {self.match!r}")
        return True


def _shim() -> types.ModuleType:
    """The stand-in ``pytest`` module: only what tests/kernels uses."""
    m = types.ModuleType("pytest")
    m.mark = type("MarkGenerator", (), {"__getattr__": lambda self, name: _Mark(name)})()
    m.fixture = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    m.raises = _Raises

    def skip(reason=""):
        raise Skipped(reason)

    def importorskip(name):
        try:
            return importlib.import_module(name)
        except ImportError as e:
            raise Skipped(f"{name}: {e}") from e

    m.skip, m.importorskip = skip, importorskip
    return m


class _MonkeyPatch:
    def __init__(self):
        self._undo = []

    def setattr(self, obj, name, value):
        old = getattr(obj, name)
        self._undo.append(lambda: setattr(obj, name, old))
        setattr(obj, name, value)

    def setenv(self, name, value):
        old = os.environ.get(name)
        self._undo.append(lambda: os.environ.pop(name, None) if old is None else os.environ.__setitem__(name, old))
        os.environ[name] = value

    def undo(self):
        for f in reversed(self._undo):
            f()


class _CapSys:
    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self):
        out, err = self.out.getvalue(), self.err.getvalue()
        self.out.seek(0), self.out.truncate(), self.err.seek(0), self.err.truncate()
        return types.SimpleNamespace(out=out, err=err)


def _marks(fn, module) -> list:
    own = getattr(fn, "pytestmark", [])
    mod = getattr(module, "pytestmark", [])
    return list(own) + (list(mod) if isinstance(mod, list) else [mod])


def _cases(fn, marks):
    """(id, kwargs) for every parametrize combination (stacked decorators multiply)."""
    axes = []
    for mk in marks:
        if mk.name != "parametrize":
            continue
        names, values = mk.args[0], mk.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        ids = mk.kwargs.get("ids")
        axis = []
        for i, val in enumerate(values):
            val = tuple(val) if len(names) > 1 else (val,)
            label = ids[i] if ids else "-".join(str(v) if isinstance(v, (int, float, str)) else f"{n}{i}"
                                                  for n, v in zip(names, val))
            axis.append((label, dict(zip(names, val))))
        axes.append(axis)
    for combo in itertools.product(*axes) if axes else [()]:
        kwargs = {}
        for _, kw in combo:
            kwargs.update(kw)
        yield "-".join(label for label, _ in combo), kwargs  # the decorator nearest the function first, as pytest


def _skip_reason(marks):
    for mk in marks:
        if mk.name == "slow":
            return "slow (pytest's default run skips it too)"
        if mk.name == "skipif" and mk.args and mk.args[0]:
            return mk.kwargs.get("reason", "skipif")
    return None


def run_file(path: pathlib.Path, exclude: list[str], counts: dict) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # noqa: BLE001 - an unimportable file is a failure (or a skip), not a crash
        kind = "SKIP" if type(e).__name__ == "Skipped" else "FAIL"
        counts[kind] += 1
        print(f"{kind} {path.name} (import): {type(e).__name__}: {e}", flush=True)
        return
    for name, fn in list(vars(module).items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        marks = _marks(fn, module)
        for case_id, kwargs in _cases(fn, marks):
            test_id = f"{path.name}::{name}" + (f"[{case_id}]" if case_id else "")
            if any(x in test_id for x in exclude):
                continue
            counts[_run_one(fn, test_id, kwargs, _skip_reason(marks))] += 1


def _run_one(fn, test_id, kwargs, skip_reason) -> str:
    import inspect

    if skip_reason:
        print(f"SKIP {test_id}: {skip_reason}", flush=True)
        return "SKIP"
    patch, cap = _MonkeyPatch(), _CapSys()
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = {"tmp_path": pathlib.Path(tmp), "monkeypatch": patch, "capsys": cap}
        for p in inspect.signature(fn).parameters:
            if p in kwargs:
                continue
            if p not in fixtures:
                print(f"SKIP {test_id}: needs the fixture {p!r}, which this runner lacks", flush=True)
                return "SKIP"
            kwargs[p] = fixtures[p]
        try:
            with contextlib.redirect_stdout(cap.out), contextlib.redirect_stderr(cap.err):
                fn(**kwargs)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            if type(e).__name__ == "Skipped":
                print(f"SKIP {test_id}: {e}", flush=True)
                return "SKIP"
            print(f"FAIL {test_id}: {type(e).__name__}: {e}".splitlines()[0][:300], flush=True)
            traceback.print_exc(limit=-3)
            return "FAIL"
        finally:
            patch.undo()
    print(f"PASS {test_id}", flush=True)
    return "PASS"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=pathlib.Path)
    p.add_argument("--exclude", action="append", default=[], help="skip tests whose id contains this (repeatable)")
    p.add_argument("--shim", action="store_true", help="use the stand-in pytest module even if pytest imports")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # as tests/conftest.py
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as tests/kernels/conftest
    shim = args.shim
    if not shim:
        try:
            import pytest  # noqa: F401
        except ImportError:
            shim = True
    if shim:
        sys.modules["pytest"] = _shim()
    sys.path[:0] = [str(ROOT), str(HERE)]
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    files = sorted(f for path in args.files for f in (path.glob("test_*.py") if path.is_dir() else [path]))
    for f in files:
        run_file(f.resolve(), args.exclude, counts)
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped (plain runner"
          f"{', pytest stand-in' if shim else ''})")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
