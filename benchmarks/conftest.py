"""pytest-benchmark set-up of the CI benchmarks (``pytest benchmarks``; not part of the default test run).

``--bench-device auto|cpu|cuda`` picks the device (auto: CUDA when available); the machine info of every saved
or ``--benchmark-json`` file gains torch's version, the device, the thread count and the GPU name, so
``--benchmark-compare`` warns when two files come from different set-ups. Method and options: docs/ci.md.
"""
from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="device of the attnbench benchmarks (auto: cuda when available)")


def _device(config: pytest.Config) -> str:
    choice = config.getoption("--bench-device")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


@pytest.fixture(scope="session")
def bench_device(request: pytest.FixtureRequest) -> str:
    device = _device(request.config)
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda: no CUDA device")
    return device


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    device = _device(config)
    machine_info.update(torch=torch.__version__, device=device, threads=torch.get_num_threads())
    if device == "cuda" and torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()
