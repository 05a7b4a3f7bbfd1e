"""Speed and memory of one prepared backend on one case.

Timing: on CUDA `triton.testing.do_bench` (CUDA events, L2 flushed before every call, warm-up
first); on CPU the same statistics from wall-clock time. Both give p20/p50/p80 in milliseconds.
forward runs under torch.no_grad (inference); forward+backward runs the forward with autograd and
then `torch.autograd.grad` of the output with a fixed random upstream gradient, for the input and
every parameter. FLOPs follow the DeepBench convention: per layer 2*H*H*B*T recurrent plus
2*I*H*B*T input projection for the forward, three times that for forward+backward.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rnnbench.backends import Prepared

QUANTILES = (0.2, 0.5, 0.8)
MiB = 2 ** 20


@dataclass
class Inputs:
    """The tensors of one case: x [T, B, I], h0 [L, B, H], upstream gradient gy [T, B, H]."""
    x: torch.Tensor
    h0: torch.Tensor
    gy: torch.Tensor


def make_inputs(case, device: torch.device, dtype: torch.dtype, seed: int) -> Inputs:
    """Seeded inputs drawn on the device itself (a T=64k case holds gigabytes: no host round trip);
    every backend on that device gets the same numbers."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(case.seq_len, case.batch, case.input_size, generator=gen, device=device, dtype=dtype)
    gy = torch.randn(case.seq_len, case.batch, case.hidden, generator=gen, device=device, dtype=dtype)
    h0 = torch.zeros(case.layers, case.batch, case.hidden, device=device, dtype=dtype)
    return Inputs(x, gy=gy, h0=h0)


def make_call(prepared: Prepared, inputs: Inputs, mode: str) -> Callable[[], object]:
    """The zero-argument closure that is timed: all setup is done before it is returned."""
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return prepared.fn(inputs.x, inputs.h0)
        return forward
    x = inputs.x.detach().requires_grad_(True)
    wrt = [x, *prepared.params.values()]

    def forward_backward():
        output, _ = prepared.fn(x, inputs.h0)
        return torch.autograd.grad(output, wrt, inputs.gy)
    return forward_backward


def time_call(call: Callable[[], object], device: torch.device, warmup_ms: float, rep_ms: float,
              min_reps: int) -> tuple[float, float, float]:
    """(p20, p50, p80) latency in milliseconds."""
    if device.type == "cuda":
        import triton.testing
        return tuple(triton.testing.do_bench(call, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES)))
    return wall_clock(call, warmup_ms, rep_ms, min_reps)


def wall_clock(call: Callable[[], object], warmup_ms: float, rep_ms: float, min_reps: int) -> tuple[float, float, float]:
    """CPU timing: calls for warmup_ms (at least once), then at least min_reps timed calls and
    until rep_ms have passed; quantiles of the per-call times in milliseconds."""
    start = time.perf_counter()
    call()
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        call()
    times: list[float] = []
    while len(times) < min_reps or sum(times) < rep_ms:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return quantiles(times)


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p20, p50, p80 with linear interpolation (numpy's default method)."""
    if len(values) == 1:
        return (values[0],) * 3
    cuts = statistics.quantiles(values, n=10, method="inclusive")
    return cuts[1], statistics.median(values), cuts[7]


def peak_memory_mib(call: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory allocated during one call, above what was allocated before it, in MiB."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = call()
    torch.cuda.synchronize(device)
    del result
    return (torch.cuda.max_memory_allocated(device) - before) / MiB


def saved_activation_mib(prepared: Prepared, inputs: Inputs) -> float:
    """Memory autograd keeps for the backward pass after one forward, in MiB: the distinct
    storages saved for backward, not counting the input, h0 and the parameters themselves."""
    own = {t.untyped_storage().data_ptr() for t in (inputs.x, inputs.h0, *prepared.params.values())}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return t
    x = inputs.x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output = prepared.fn(x, inputs.h0)
    del output
    return sum(saved.values()) / MiB


def flops(case, mode: str) -> int:
    """Floating-point operations of one call (DeepBench convention, see the module docstring)."""
    per_token = sum(2 * case.hidden * case.hidden + 2 * (case.input_size if layer == 0 else case.hidden) * case.hidden
                    for layer in range(case.layers))
    forward = per_token * case.batch * case.seq_len
    return forward if mode == "forward" else 3 * forward


def speed_metrics(case, mode: str, latency_ms: tuple[float, float, float]) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Metric name -> (unit, (p20, p50, p80)) derived from the latency quantiles. Throughputs come
    from the latencies in reverse order so that p20 <= p50 <= p80 holds for every metric."""
    seconds = [ms / 1e3 for ms in latency_ms]
    slow_first = list(reversed(seconds))
    return {
        "latency": ("ms", tuple(latency_ms)),
        "time_per_step": ("us", tuple(s * 1e6 / case.seq_len for s in seconds)),
        "tokens_per_s": ("tokens/s", tuple(case.batch * case.seq_len / s for s in slow_first)),
        "tflops": ("TFLOP/s", tuple(flops(case, mode) / s / 1e12 for s in slow_first)),
    }
