"""A benchmark worker process for the PR mode: ``python -m attnbench.ci.worker --device cpu --threads 1``.

It serves one JSON request per stdin line and answers one JSON line on stdout:

* ``{"op": "setup", "case": NAME}`` → ``{"ok": true, "call_s": …, "columns": {flops, mem_peak_bytes, …}}``: builds
  the case, warms it up and estimates one call;
* ``{"op": "time", "case": NAME, "n": N}`` → ``{"ok": true, "t": seconds per call}``: one block of N calls;
* ``{"op": "release", "case": NAME}``, ``{"op": "quit"}``.

A failing request answers ``{"ok": false, "error": "Type: message"}`` and the worker keeps serving. On start it
answers ``{"ok": true, "attentions": <path of the imported attentions package>}`` so the parent can check which
tree's code it runs. The harness (this package) comes from the head tree; ``attentions`` from whichever tree is
first on ``PYTHONPATH``. Anything else written to stdout (library prints) is redirected to stderr so the
protocol stays clean. While waiting for a request the worker blocks on stdin and uses no CPU, so the other
tree's worker times alone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _serve(device: str) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr
    sys.stdout = sys.stderr

    import attentions

    from .cases import get_case
    from .costs import deterministic_columns
    from .timing import estimate_call_s, time_block

    works: dict[str, Any] = {}

    def answer(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    answer({"ok": True, "attentions": os.path.dirname(os.path.realpath(attentions.__file__))})
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        if op == "quit":
            break
        try:
            if op == "setup":
                work = get_case(req["case"]).build(device)
                call_s = estimate_call_s(work)
                columns = deterministic_columns(work)
                works[req["case"]] = work
                answer({"ok": True, "call_s": call_s, "columns": columns})
            elif op == "time":
                answer({"ok": True, "t": time_block(works[req["case"]], int(req["n"]))})
            elif op == "release":
                works.pop(req["case"], None)
                answer({"ok": True})
            else:
                answer({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001 — reported to the parent, the worker keeps serving
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            answer({"ok": False, "error": f"{type(e).__name__}: {msg}"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _serve(args.device)


if __name__ == "__main__":
    main()
