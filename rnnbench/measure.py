"""Speed and memory of one prepared backend on one case.

A measured call is prepared in one place (prepare_call: seeded weights, the backend's own copy,
seeded inputs, the timed closure, warm-up calls), used by `rnnbench run`, `rnnbench profile` and the
pytest-benchmark benchmarks alike.

Timing: on CUDA `triton.testing.do_bench` (CUDA events, L2 flushed before every call, warm-up
first), except for calls of LONG_CALL_MS or more: do_bench would make 8 or more of them, so they are
timed LONG_CALL_REPS times with CUDA events instead; on CPU the same statistics from the calling
thread's CPU time (wall clock with more than one thread; see cpu_clock), with a fixed thread count,
a warm-up that lasts until the calls agree, enough calls for a stable median, made only while a
canary finds the machine quiet (Canary). All give p20/p50/p80 in milliseconds; a wide p20-p80
spread is flagged as noisy.
forward runs under torch.no_grad (inference); forward+backward runs the forward with autograd and
then `torch.autograd.grad` of the output with a fixed random upstream gradient, for the input and
every parameter. FLOPs follow the DeepBench convention: per layer 2*H*H*B*T recurrent plus
2*I*H*B*T input projection for the forward, three times that for forward+backward.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rnnbench.backends import BACKENDS, Prepared, seeded_rnn

QUANTILES = (0.2, 0.5, 0.8)
MiB = 2 ** 20


@dataclass
class Inputs:
    """The tensors of one case: x [T, B, I], h0 [L, B, H] and, for forward+backward only, the
    upstream gradient gy [T, B, H]."""
    x: torch.Tensor
    h0: torch.Tensor
    gy: torch.Tensor | None = None


def make_inputs(case, device: torch.device, dtype: torch.dtype, seed: int, mode: str = "forward+backward") -> Inputs:
    """Seeded inputs drawn on the device itself (a T=64k case holds gigabytes: no host round trip);
    every backend on that device gets the same numbers. A forward call needs no gy (at T=64k, B=64,
    H=512 in float32 that saves 8 GiB)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(case.seq_len, case.batch, case.input_size, generator=gen, device=device, dtype=dtype)
    gy = None
    if mode != "forward":
        gy = torch.randn(case.seq_len, case.batch, case.hidden, generator=gen, device=device, dtype=dtype)
    h0 = torch.zeros(case.layers, case.batch, case.hidden, device=device, dtype=dtype)
    return Inputs(x, h0, gy)


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


@dataclass
class MeasuredCall:
    """A backend ready to be measured on one case: what prepare returned, the inputs, and the
    zero-argument closure that is timed (already called warmup_calls times)."""
    prepared: Prepared
    inputs: Inputs
    call: Callable[[], object]


def prepare_call(backend: str, case, dtype: str, mode: str, device: torch.device, nonlinearity: str, seed: int,
                 warmup_calls: int = 1, context=None) -> MeasuredCall:
    """The one way a measured call is made: the seeded float32 nn.RNN, the backend's copy of it in
    the dtype the backend runs this job in, seeded inputs in that dtype, the closure, and warm-up
    calls (compile, autotune, first touch, graph capture) before anything is measured. context, if
    given, is entered around all of it (the profiler asks Inductor to record its CPU kernels)."""
    run_dtype = getattr(torch, BACKENDS[backend].dtype_for(dtype))
    with context or contextlib.nullcontext():
        prepared = BACKENDS[backend].prepare(seeded_rnn(case, nonlinearity, seed), device, run_dtype)
        inputs = make_inputs(case, device, run_dtype, seed, mode)
        call = make_call(prepared, inputs, mode)
        for _ in range(warmup_calls):
            call()
    return MeasuredCall(prepared, inputs, call)


# CUDA timing of long calls: do_bench makes one call, five more to estimate, then at least one warm-up
# and one timed call, so a 2 s call costs 16 s there; from this length on, one untimed call (whatever
# the calls before it left to do: the stepwise kernel captures its CUDA graph on the second sight of
# its tensors) and LONG_CALL_REPS event-timed calls measure it (do_bench's L2 flush matters nothing here).
LONG_CALL_MS = 50.0
LONG_CALL_REPS = 3
LONG_CALL_NOTE = "long call: "


def time_call(call: Callable[[], object], device: torch.device, timing, probe_ms: float | None = None
              ) -> tuple[tuple[float, float, float], str]:
    """((p20, p50, p80) latency in milliseconds, a note on how it was timed or ""). timing: the
    scenario's Timing; probe_ms: how long one call took until the device was done, if known (a
    call is made to find out otherwise)."""
    if device.type != "cuda":
        clock = cpu_clock(torch.get_num_threads())[0]
        return cpu_timing(call, timing.warmup_ms, timing.rep_ms, timing.min_reps, clock, canary(clock))
    if probe_ms is None:
        probe_ms = wall_ms(call, device)
    if probe_ms >= LONG_CALL_MS:
        call()
        return event_timing(call, LONG_CALL_REPS), (f"{LONG_CALL_NOTE}{LONG_CALL_REPS} calls timed with CUDA events "
                                                    f"(one takes {probe_ms / 1e3:.2g} s), not do_bench")
    import triton.testing
    return tuple(triton.testing.do_bench(call, warmup=timing.warmup_ms, rep=timing.rep_ms,
                                         quantiles=list(QUANTILES))), ""


GRAPH_NOTE = "replayed from a CUDA graph"


def graph_replay(call: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """call captured into a CUDA graph, after a warm-up call on a side stream (as torch's docs ask): the graph's
    replay, whose timing is the GPU's work without the host's (Python, launches). Raises what the capture raises.
    Once its replays are timed, release_graphs()."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        call()
    torch.cuda.current_stream(device).wait_stream(side)
    from kernels import barrier_status
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.current_stream(device)
    try:
        with barrier_status.capture(), torch.cuda.graph(graph):
            call()
    finally:  # where ending a failed capture raises, torch.cuda.graph's exit leaves its capture stream current
        torch.cuda.set_stream(stream)
    return graph.replay


def release_graphs() -> None:
    """After a graph's replays: the barrier statuses of the split calls captured in it read (a barrier that gave up in
    a replay raises: kernels.barrier_status.check_barriers) and let go, so that they keep none of its memory."""
    from kernels import barrier_status
    try:
        barrier_status.check_barriers()
    finally:
        barrier_status.forget_captured()


def barrier_fault() -> str:
    """Whether a split call since the last look had a barrier give up: its error, or "". Each call returns without
    reading its barriers' status (kernels/barrier_status.py), so a job looks once it is done; all are read, and
    forgotten, either way."""
    from kernels import barrier_status
    try:
        barrier_status.check_barriers()
    except RuntimeError as err:
        return str(err)
    return ""


HOST_REPS = 3  # calls whose host and wall time are taken (host_and_wall_ms)


def host_and_wall_ms(call: Callable[[], object], device: torch.device,
                     reps: int = HOST_REPS) -> tuple[list[float], list[float]]:
    """For reps calls, each made with the device idle: (milliseconds until the call returned on the host, until the
    device was done). Equal on CPU; on CUDA the gap is work still queued on the GPU. A host time near the call's
    latency means the GPU waited for the host (short sequences: Python and launches), or that the call waits for
    its kernels (split calls that read their barriers' status: kernels.barrier_status.WAIT_FOR_STATUS)."""
    host, wall = [], []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        call()
        returned = time.perf_counter()
        sync(device)
        host.append((returned - start) * 1e3)
        wall.append((time.perf_counter() - start) * 1e3)
    return host, wall


def wall_ms(call: Callable[[], object], device: torch.device) -> float:
    """Milliseconds from the call until the device is done with it."""
    return host_and_wall_ms(call, device, reps=1)[1][0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def event_timing(call: Callable[[], object], reps: int) -> tuple[float, float, float]:
    """Quantiles of reps calls, each timed by CUDA events around it (ms)."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return quantiles(times)


# CPU timing. A busy machine makes single calls slow at random, and the first calls after set-up are
# slower than the rest, so the warm-up runs until consecutive calls agree and the timed calls go on
# until the median stops moving; both are bounded by a multiple of the scenario's budget so a slow
# call (the Triton interpreter takes seconds) is not repeated for minutes.
SETTLE_CALLS = 3          # the warm-up is over when this many consecutive calls ...
SETTLE_SPREAD = 1.25      # ... agree within this ratio (slowest / fastest)
MEDIAN_AGREEMENT = 0.05   # the median is stable when those of the first and second half of the calls agree
BUDGET_CAP = 10           # neither phase runs past this many times its budget (warmup_ms, rep_ms)
NOISY_SPREAD = 1.5        # p80 / p20 above this marks a measurement as noisy
# A shared host also slows this machine's cores as a whole, 1.5-2x for stretches of 1-4 s (other
# virtual machines on the same physical cores: nothing inside this one shows them, and CPU time
# counts them). A median taken inside such a stretch flips between two runs. So the timed calls are
# made in rounds, each kept only when a canary (Canary) finds the machine quiet before and after it.
ROUND_MS = 10.0           # a round: calls for about this long (one call at least)
QUIET_RATIO = 1.25        # quiet: the canary takes at most this times its best time so far
QUIET_WAIT_S = 10.0       # at most this long per timing spent waiting or in rounds dropped; then all are kept
BUSY_NOTE = "busy machine: "


def cpu_clock(threads: int) -> tuple[Callable[[], float], str]:
    """The clock of CPU timings (seconds) and its name. With one thread every op of a call runs in
    the calling thread, so that thread's CPU time is the call's time on a core of its own: equal to
    the wall-clock time on an idle machine, and not stretched when other work shares the cores (with
    two busy processes on a 2-core machine an eager forward+backward took 6x longer by the wall
    clock, 1.4x by CPU time). With more threads the work is spread over threads: wall clock."""
    if threads == 1:
        return time.thread_time, "CPU time of the calling thread (1 thread)"
    return time.perf_counter, f"wall clock ({threads} threads)"


class Canary:
    """A fixed small piece of CPU work (16 small matmuls with tanh, like a step of the eager loop;
    about 0.07 ms) timed by the timing clock: when it takes QUIET_RATIO times its best time or more,
    the host is slowing this machine down. Measured on a 2-core VM, calls timed while it was quiet
    had a median 1.09x their best; while it was not, 2.0x."""
    CALIBRATION_CALLS = 20
    POLL_S = 0.05  # how often a wait looks again

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.x, self.w = torch.ones(4, 32), torch.full((32, 32), 0.01)
        self.best_ms = min(self._time_ms() for _ in range(self.CALIBRATION_CALLS))

    def _time_ms(self) -> float:
        start, x = self.clock(), self.x
        for _ in range(16):
            x = torch.tanh(x @ self.w)
        return (self.clock() - start) * 1e3

    def _now_ms(self) -> float:
        return min(self._time_ms(), self._time_ms())

    def quiet(self) -> bool:
        """Whether the machine is quiet now (the faster of two canary calls against the best so far,
        which it may lower: a run that starts in a busy stretch learns the quiet speed later)."""
        ms = self._now_ms()
        self.best_ms = min(self.best_ms, ms)
        return ms <= QUIET_RATIO * self.best_ms

    def settle_for_now(self) -> None:
        """The machine stayed busy for QUIET_WAIT_S: its present speed becomes the best, so that a
        lasting load (a build on the other cores) costs one wait, not one per timing."""
        self.best_ms = self._now_ms()

    def wait_until_quiet(self, limit_s: float) -> float:
        """Seconds waited (sleeping between looks) until quiet, or limit_s."""
        start = time.perf_counter()
        while not self.quiet() and time.perf_counter() - start < limit_s:
            time.sleep(self.POLL_S)
        return time.perf_counter() - start


@functools.cache
def canary(clock: Callable[[], float]) -> Canary:
    """The process's canary for this clock: its best time is learnt across every timing of a run."""
    return Canary(clock)


def cpu_timing(call: Callable[[], object], warmup_ms: float, rep_ms: float, min_reps: int,
               clock: Callable[[], float] = time.perf_counter, quiet: Canary | None = None
               ) -> tuple[tuple[float, float, float], str]:
    """CPU timing: warm-up calls until SETTLE_CALLS in a row agree (at least warmup_ms), then timed
    calls in rounds kept while `quiet` finds the machine quiet (all kept without one), at least
    min_reps and rep_ms, until the median is stable. Returns the quantiles of the per-call times in
    milliseconds by `clock`, and a note if the machine stayed busy past QUIET_WAIT_S. Python's
    garbage collector is off while timing (as in timeit): a collection would land in one call at random."""
    gc.collect()
    gc.disable()
    try:
        _calls(call, clock, lambda times: sum(times) >= warmup_ms and _settled(times), warmup_ms)
        times, busy_s = _quiet_rounds(call, clock, rep_ms, min_reps, quiet)
    finally:
        gc.enable()
    note = f"{BUSY_NOTE}no quiet stretch within {QUIET_WAIT_S:g} s, timed anyway" if busy_s >= QUIET_WAIT_S else ""
    return quantiles(times), note


def _quiet_rounds(call: Callable[[], object], clock: Callable[[], float], rep_ms: float, min_reps: int,
                  quiet: Canary | None) -> tuple[list[float], float]:
    """Per-call times (ms) of the rounds kept, until min_reps calls and rep_ms are reached and the
    median is stable, or BUDGET_CAP * rep_ms; and the seconds spent busy (waiting, or in rounds
    dropped), which stop at QUIET_WAIT_S: then the canary settles for the machine's present speed
    and every round is kept. A check after a round that finds the machine quiet is also the next
    round's check before it."""
    times: list[float] = []
    busy_s, quiet_now = 0.0, False
    while True:
        gated = quiet is not None and busy_s < QUIET_WAIT_S
        if gated and not quiet_now:
            busy_s += quiet.wait_until_quiet(QUIET_WAIT_S - busy_s)
        calls = _calls(call, clock, lambda round_: sum(round_) >= ROUND_MS, rep_ms)
        quiet_now = gated and busy_s < QUIET_WAIT_S and quiet.quiet()
        if quiet_now or not gated or busy_s >= QUIET_WAIT_S:
            times += calls
        else:
            busy_s += sum(calls) / 1e3
        if gated and busy_s >= QUIET_WAIT_S:  # reached in this round, by waiting or by rounds dropped
            quiet.settle_for_now()
        spent = sum(times)
        if len(times) >= min_reps and (spent >= BUDGET_CAP * rep_ms or (spent >= rep_ms and _median_stable(times))):
            return times, busy_s


def _calls(call: Callable[[], object], clock: Callable[[], float], done: Callable[[list[float]], bool],
           budget_ms: float) -> list[float]:
    """Per-call times (ms) of calls made until done(times) holds or BUDGET_CAP * budget_ms has passed."""
    times: list[float] = []
    while True:
        t0 = clock()
        call()
        times.append((clock() - t0) * 1e3)
        if done(times) or sum(times) >= BUDGET_CAP * budget_ms:
            return times


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


def peak_memory_mib(call: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(peak CUDA memory allocated during one call above what was allocated before it in MiB, the
    call's wall time in ms until the device was done)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    result = call()
    torch.cuda.synchronize(device)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    del result
    return (torch.cuda.max_memory_allocated(device) - before) / MiB, elapsed_ms


def cuda_memory(device: torch.device) -> dict[str, float]:
    """What holds the GPU's memory now, in MiB: allocated by PyTorch's tensors, reserved by its caching
    allocator (allocated plus cached), and the driver's free and total memory (what is neither
    reserved by PyTorch nor free is held outside PyTorch: cuDNN, cuBLAS, CUDA graphs, the context)."""
    free, total = torch.cuda.mem_get_info(device)
    return {"allocated_mib": torch.cuda.memory_allocated(device) / MiB,
            "reserved_mib": torch.cuda.memory_reserved(device) / MiB, "free_mib": free / MiB, "total_mib": total / MiB}


def memory_text(memory: dict[str, float]) -> str:
    """cuda_memory() in words."""
    gib = {k: v / 1024 for k, v in memory.items()}
    return (f"allocated {gib['allocated_mib']:.2f} GiB, reserved {gib['reserved_mib']:.2f} GiB, driver free "
            f"{gib['free_mib']:.2f} of {gib['total_mib']:.2f} GiB")


def saved_activation_mib(prepared: Prepared, inputs: Inputs) -> float:
    """Memory autograd keeps for the backward pass after one forward, in MiB: the distinct
    storages saved for backward, not counting the input, h0 and the parameters themselves."""
    own = {t.untyped_storage().data_ptr() for t in (inputs.x, inputs.h0, *prepared.params.values())}
    saved: dict[int, int] = {}

    # pack keeps no tensor: one kept here can be the output that holds this graph, a cycle through C++
    # that gc cannot free (8 GiB held after one T=64k job on the H200, 2026-11-26)
    def pack(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
    x = inputs.x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):  # the graph is never run backward
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
