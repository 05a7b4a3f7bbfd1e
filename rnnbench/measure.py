"""Speed and memory of one prepared backend on one case.

Timing: on CUDA `triton.testing.do_bench` (CUDA events, L2 flushed before every call, warm-up
first); on CPU the same statistics from the calling thread's CPU time (wall clock with more than
one thread; see cpu_clock), with a fixed thread count, a warm-up that lasts until the calls agree
and enough calls for a stable median. Both give p20/p50/p80 in
milliseconds; a wide p20-p80 spread is flagged as noisy.
forward runs under torch.no_grad (inference); forward+backward runs the forward with autograd and
then `torch.autograd.grad` of the output with a fixed random upstream gradient, for the input and
every parameter. FLOPs follow the DeepBench convention: per layer 2*H*H*B*T recurrent plus
2*I*H*B*T input projection for the forward, three times that for forward+backward.
"""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
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
    return cpu_timing(call, warmup_ms, rep_ms, min_reps, cpu_clock(torch.get_num_threads())[0])


# CPU timing. A busy machine makes single calls slow at random, and the first calls after set-up are
# slower than the rest, so the warm-up runs until consecutive calls agree and the timed calls go on
# until the median stops moving; both are bounded by a multiple of the scenario's budget so a slow
# call (the Triton interpreter takes seconds) is not repeated for minutes.
SETTLE_CALLS = 3          # the warm-up is over when this many consecutive calls ...
SETTLE_SPREAD = 1.25      # ... agree within this ratio (slowest / fastest)
MEDIAN_AGREEMENT = 0.05   # the median is stable when those of the first and second half of the calls agree
BUDGET_CAP = 10           # neither phase runs past this many times its budget (warmup_ms, rep_ms)
NOISY_SPREAD = 1.5        # p80 / p20 above this marks a measurement as noisy


def cpu_clock(threads: int) -> tuple[Callable[[], float], str]:
    """The clock of CPU timings (seconds) and its name. With one thread every op of a call runs in
    the calling thread, so that thread's CPU time is the call's time on a core of its own: equal to
    the wall-clock time on an idle machine, and not stretched when other work shares the cores (with
    two busy processes on a 2-core machine an eager forward+backward took 6x longer by the wall
    clock, 1.4x by CPU time). With more threads the work is spread over threads: wall clock."""
    if threads == 1:
        return time.thread_time, "CPU time of the calling thread (1 thread)"
    return time.perf_counter, f"wall clock ({threads} threads)"


def cpu_timing(call: Callable[[], object], warmup_ms: float, rep_ms: float, min_reps: int,
               clock: Callable[[], float] = time.perf_counter) -> tuple[float, float, float]:
    """CPU timing: warm-up calls until SETTLE_CALLS in a row agree (at least warmup_ms), then timed
    calls, at least min_reps and rep_ms, until the median is stable; quantiles of the per-call times
    in milliseconds by `clock`. Python's garbage collector is off while timing (as in timeit): a
    collection would land in one call at random."""
    _repeat(call, warmup_ms, _settled, 1, clock)
    return quantiles(_repeat(call, rep_ms, _median_stable, min_reps, clock))


def _repeat(call: Callable[[], object], budget_ms: float, done: Callable[[list[float]], bool],
            min_calls: int, clock: Callable[[], float]) -> list[float]:
    """Per-call times (ms) of calls made until min_calls and budget_ms are reached and done(times)
    holds, or BUDGET_CAP * budget_ms has passed."""
    times: list[float] = []
    gc.collect()
    gc.disable()
    try:
        while True:
            t0 = clock()
            call()
            times.append((clock() - t0) * 1e3)
            spent = sum(times)
            if len(times) >= min_calls and (spent >= BUDGET_CAP * budget_ms or (spent >= budget_ms and done(times))):
                return times
    finally:
        gc.enable()


def _settled(times: list[float]) -> bool:
    last = times[-SETTLE_CALLS:]
    return len(last) == SETTLE_CALLS and max(last) <= SETTLE_SPREAD * min(last)


def _median_stable(times: list[float]) -> bool:
    half = len(times) // 2
    return half >= 2 and abs(statistics.median(times[:half]) / statistics.median(times[half:]) - 1) <= MEDIAN_AGREEMENT


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p20, p50, p80 with linear interpolation (numpy's default method)."""
    if len(values) == 1:
        return (values[0],) * 3
    cuts = statistics.quantiles(values, n=10, method="inclusive")
    return cuts[1], statistics.median(values), cuts[7]


NOISY_NOTE = "noisy: "


def noise_note(p20: float, p80: float) -> str:
    """"noisy: ..." when the p20-p80 spread of a timing is wide, else ""."""
    if p20 > 0 and p80 / p20 > NOISY_SPREAD:
        return f"{NOISY_NOTE}p80/p20 = {p80 / p20:.2f} (> {NOISY_SPREAD:g})"
    return ""


@contextmanager
def pinned_threads(device: torch.device, threads: int):
    """On CPU, PyTorch's intra-op threads and every OpenMP/BLAS pool (numpy's, used by the Triton
    interpreter) limited to `threads` for every backend alike. More threads than free cores make
    each parallel op wait for a descheduled thread: on a busy 2-core machine one call took 260 ms
    instead of 0.17. Restored afterwards."""
    if device.type != "cpu":
        yield
        return
    from threadpoolctl import threadpool_limits  # CPU runs only: GPU images installed with --no-deps may lack it
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


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
