"""The kernels and the baselines as pytest-benchmark benchmarks (skipped in the default test run).

Run them with:
    python3 -m pytest tests/benchmarks --benchmark-only --benchmark-json=benchmarks.json

They prepare the call as the harness does (rnnbench.measure.prepare_call), so a benchmark here
times exactly what `rnnbench run` times; on a GPU the device is synchronised inside
the timed call. Without a GPU the shapes are tiny and Triton runs in its interpreter.
"""
import pytest
import torch

from rnnbench import measure
from rnnbench.backends import BACKENDS
from rnnbench.schema import Case

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = ([Case(1024, 16, 128, 128), Case(16384, 16, 128, 128), Case(4096, 64, 512, 512)]
         if DEVICE.type == "cuda" else [Case(16, 4, 32, 32)])
DTYPE = "float32"


def synchronised(call):
    if DEVICE.type != "cuda":
        return call

    def timed():
        result = call()
        torch.cuda.synchronize(DEVICE)
        return result
    return timed


@pytest.mark.benchmark
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label.replace(" ", "_"))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_rnn(benchmark, backend, mode, case):
    reason = BACKENDS[backend].unavailable(DEVICE) or BACKENDS[backend].skip(case, DEVICE)
    if reason:
        pytest.skip(reason)
    measured = measure.prepare_call(backend, case, DTYPE, mode, DEVICE, "tanh", seed=0)  # warmed up
    benchmark.group = f"{mode} {case.label}"
    benchmark.extra_info.update(backend=backend, label=BACKENDS[backend].label(DEVICE), mode=mode, dtype=DTYPE,
                                device=DEVICE.type, note=measured.prepared.note(), **vars(case))
    benchmark.pedantic(synchronised(measured.call), rounds=5 if DEVICE.type == "cpu" else 20, warmup_rounds=1)
