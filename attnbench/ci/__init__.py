"""CI regression benchmarks: the benchmark cases, a same-job ratio gate against a committed baseline, and
PR-versus-base comparison (``attnbench ci``). The method and its reasons are in ``docs/ci.md``.

* :mod:`.cases`: what is benchmarked (each built-in attention, the routed-attention and pixel-to-agent ops, one
  backbone training step), shared by the pytest-benchmark suite in ``benchmarks/`` and by the gate.
* :mod:`.timing`: the reference workload and paired, interleaved timing rounds.
* :mod:`.costs`: the deterministic columns of a case (FLOPs, peak memory).
* :mod:`.gate`: normalised times against ``benchmarks/baseline.json``; :mod:`.pr`: base and head in one job.
* :mod:`.verdicts`: comparison rows and the Markdown table; :mod:`.pbjson`: pytest-benchmark JSON output.
"""
