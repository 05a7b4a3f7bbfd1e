"""Measurements checked against independent references: numpy percentiles, PyTorch's FLOP counter,
a hand count of what the eager loop saves for backward, and the float64 BPTT of a hand-written loop."""
import dataclasses
import gc
import time

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rnnbench import measure, stability
from rnnbench.backends import BACKENDS, Prepared, seeded_rnn
from rnnbench.schema import Case

CPU = torch.device("cpu")


def test_quantiles_match_numpy():
    values = list(np.random.default_rng(0).exponential(size=37))
    assert measure.quantiles(values) == pytest.approx(tuple(np.percentile(values, [20, 50, 80])))


def test_cpu_timing_times_what_it_calls():
    calls = []

    def sleep():
        calls.append(1)
        time.sleep(0.002)
    (p20, p50, p80), note = measure.cpu_timing(sleep, warmup_ms=1, rep_ms=5, min_reps=4)  # wall clock by default
    assert 2.0 <= p20 <= p50 <= p80 < 50 and note == ""
    assert len(calls) >= 1 + 4


def burn(ms: float) -> None:
    """Keeps this thread busy for ms of its own CPU time."""
    end = time.thread_time() + ms / 1e3
    while time.thread_time() < end:
        pass


def test_thread_clock_counts_the_calls_own_work_not_time_off_the_cpu():
    # sleeping stands for being descheduled while other work uses the cores
    def work_then_wait():
        burn(2)
        time.sleep(0.006)
    clock, name = measure.cpu_clock(1)
    thread_p50 = measure.cpu_timing(work_then_wait, 1, 10, 3, clock)[0][1]
    wall_p50 = measure.cpu_timing(work_then_wait, 1, 10, 3, measure.cpu_clock(2)[0])[0][1]
    assert 1.9 <= thread_p50 < 4 and wall_p50 >= 8
    assert "CPU time" in name and "wall clock" in measure.cpu_clock(2)[1]


class ScriptedCall:
    """A call whose durations (ms) follow a script, read by its own clock: timing logic without noise."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 0.0, 0

    def __call__(self):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)] / 1e3
        self.calls += 1

    def clock(self) -> float:
        return self.now


def test_warm_up_lasts_until_consecutive_calls_agree():
    call = ScriptedCall([90, 60, 40, 30, 10, 10.5, 10] + [10] * 100)
    timed = measure.cpu_timing(call, warmup_ms=30, rep_ms=45, min_reps=5, clock=call.clock)[0]
    assert timed == pytest.approx((10, 10, 10))  # none of the slow first calls was timed
    assert call.calls == 7 + 5  # warm-up ended with the third agreeing call; then min_reps and rep_ms


def test_timed_calls_go_on_until_the_median_is_stable():
    call = ScriptedCall([1] * 6 + [2] * 1000)  # 3 warm-up calls; the machine slows down after 3 timed ones
    p20, p50, p80 = measure.cpu_timing(call, warmup_ms=1, rep_ms=5, min_reps=2, clock=call.clock)[0]
    # rounds of 10 ms: the first (1+1+1+2+2+2+2 ms) meets rep_ms and min_reps, but its halves' medians
    # are 1 and 2; so is the second's (1.5 and 2); after the third both halves agree on 2
    assert p50 == pytest.approx(2) and call.calls == 3 + 7 + 5 + 5


def test_timing_never_runs_past_ten_times_its_budget():
    durations = [1, 3] * 50 + list(range(4, 100))  # never settles (100 ms), then the median keeps growing
    call = ScriptedCall(durations)
    measure.cpu_timing(call, warmup_ms=10, rep_ms=20, min_reps=3, clock=call.clock)
    last = durations[call.calls - 1]
    assert call.now * 1e3 <= measure.BUDGET_CAP * (10 + 20) + last and call.calls < len(durations)


class BusyStretch:
    """A canary for a ScriptedCall: the machine is busy while the call's clock is in [start, end) ms,
    and calls made then take twice as long; waiting for quiet moves the clock to the stretch's end."""

    def __init__(self, call: ScriptedCall, start_ms: float, end_ms: float):
        self.call, self.start, self.end = call, start_ms / 1e3, end_ms / 1e3
        self.call_then = call.__call__

    def busy(self) -> bool:
        return self.start <= self.call.now < self.end

    def slowed_call(self):
        before = self.call.now
        self.call_then()
        if self.busy():
            self.call.now += self.call.now - before

    def quiet(self) -> bool:
        return not self.busy()

    def wait_until_quiet(self, limit_s: float) -> float:
        waited = min(self.end - self.call.now, limit_s) if self.busy() else 0.0
        self.call.now += waited
        return waited

    def settle_for_now(self):
        self.settled = True


def test_rounds_timed_while_the_machine_is_busy_are_dropped():
    call = ScriptedCall([1.0] * 10_000)
    stretch = BusyStretch(call, start_ms=20, end_ms=2000)  # it begins during the first timed rounds
    timed, note = measure.cpu_timing(stretch.slowed_call, warmup_ms=3, rep_ms=50, min_reps=5, clock=call.clock,
                                     quiet=stretch)
    assert timed == pytest.approx((1, 1, 1)) and note == ""  # without the canary the slow rounds make p50 2
    assert call.now > 2.0  # it waited the stretch out


def test_a_machine_busy_throughout_is_timed_anyway_and_says_so():
    call = ScriptedCall([1.0] * 100_000)
    stretch = BusyStretch(call, start_ms=0, end_ms=1e9)
    timed, note = measure.cpu_timing(stretch.slowed_call, warmup_ms=3, rep_ms=50, min_reps=5, clock=call.clock,
                                     quiet=stretch)
    assert timed == pytest.approx((2, 2, 2))
    assert note.startswith(measure.BUSY_NOTE) and f"{measure.QUIET_WAIT_S:g} s" in note
    assert stretch.settled  # the next timing takes this speed for quiet


class CountedWaits(BusyStretch):
    """A canary whose waits return at once (the machine looks quiet before every round) and are counted."""
    waits = 0

    def wait_until_quiet(self, limit_s: float) -> float:
        self.waits += 1
        return 0.0


def test_rounds_dropped_count_towards_the_limit_and_settle_the_canary():
    call = ScriptedCall([1.0] * 100_000)
    canary = CountedWaits(call, start_ms=0, end_ms=1e9)  # busy after every round: each one is dropped
    timed, note = measure.cpu_timing(canary.slowed_call, warmup_ms=3, rep_ms=50, min_reps=5, clock=call.clock,
                                     quiet=canary)
    assert timed == pytest.approx((2, 2, 2)) and note.startswith(measure.BUSY_NOTE)
    assert canary.settled  # the next timing takes this speed for quiet


def test_a_quiet_check_after_a_round_is_the_next_rounds_check_before_it():
    call = ScriptedCall([1.0] * 100_000)
    canary = CountedWaits(call, start_ms=0, end_ms=0)  # never busy
    measure.cpu_timing(canary.slowed_call, warmup_ms=3, rep_ms=50, min_reps=5, clock=call.clock, quiet=canary)
    assert call.calls > 3 + 10 and canary.waits == 1  # several rounds, one wait before the first


class SteppedClock:
    """A clock that moves by `step` seconds every time it is read."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_canary_flags_a_slower_machine_and_learns_a_faster_one():
    clock = SteppedClock(1e-4)
    canary = measure.Canary(clock)
    assert canary.best_ms == pytest.approx(0.1) and canary.quiet()
    clock.step = 1.3e-4  # 30% slower than its best
    assert not canary.quiet()
    clock.step = 0.5e-4  # faster than ever: the new best
    assert canary.quiet() and canary.best_ms == pytest.approx(0.05)
    clock.step = 1e-4
    assert not canary.quiet()
    canary.settle_for_now()  # a lasting load: its speed becomes the quiet one
    assert canary.quiet() and canary.best_ms == pytest.approx(0.1)


def test_waiting_for_quiet_polls_until_quiet_or_the_limit():
    class Scripted(measure.Canary):
        POLL_S = 0.001

        def __init__(self, answers):
            self.answers = iter(answers)

        def quiet(self):
            return next(self.answers)
    assert Scripted([True]).wait_until_quiet(1.0) < 0.5
    assert 0.002 <= Scripted([False, False, True]).wait_until_quiet(1.0) < 0.5
    assert 0.02 <= Scripted([False] * 10_000).wait_until_quiet(0.02) < 0.5


def test_time_call_on_cpu_shares_one_canary_per_clock():
    clock = measure.cpu_clock(1)[0]
    assert measure.canary(clock) is measure.canary(clock)
    assert measure.canary(clock).best_ms > 0


def test_noisy_when_p80_over_p20_is_wide():
    assert measure.noise_note(1.0, 1.2) == ""
    assert measure.noise_note(1.0, 1.6) == "noisy: p80/p20 = 1.60 (> 1.5)"


def test_pinned_threads_limit_torch_and_blas_for_every_backend_then_restore():
    from threadpoolctl import threadpool_info
    before = torch.get_num_threads()
    with measure.pinned_threads(CPU, 1):
        assert torch.get_num_threads() == 1
        assert {pool["num_threads"] for pool in threadpool_info()} == {1}
    assert torch.get_num_threads() == before
    with measure.pinned_threads(torch.device("cuda"), 1):  # GPU runs keep their CPU threads
        assert torch.get_num_threads() == before


def test_a_forward_needs_no_upstream_gradient_and_draws_the_same_input():
    case = Case(8, 2, 4, 3, 1)
    forward = measure.make_inputs(case, CPU, torch.float32, seed=1, mode="forward")
    both = measure.make_inputs(case, CPU, torch.float32, seed=1, mode="forward+backward")
    assert forward.gy is None and both.gy.shape == (8, 2, 4)
    assert torch.equal(forward.x, both.x) and torch.equal(forward.h0, both.h0)


def test_prepare_call_warms_up_the_call_it_returns(monkeypatch):
    calls = []
    real = BACKENDS["eager"]

    def counting(source, device, dtype):
        prepared = real.prepare(source, device, dtype)
        return Prepared(lambda x, h0: calls.append(dtype) or prepared.fn(x, h0), prepared.params)
    monkeypatch.setitem(BACKENDS, "eager", dataclasses.replace(real, prepare=counting))
    measured = measure.prepare_call("eager", Case(4, 2, 8, 8), "bfloat16", "forward", CPU, "tanh", 0, warmup_calls=2)
    assert calls == [torch.bfloat16] * 2 and measured.inputs.x.dtype == torch.bfloat16
    fp16 = measure.prepare_call("cudnn-fp16", Case(4, 2, 8, 8), "bfloat16", "forward", CPU, "tanh", 0)
    assert fp16.inputs.x.dtype == torch.float16  # the backend's own dtype, whatever the job's


class FakeTimers:
    """time_call's CUDA path without a GPU: which timer it chose, and with what."""

    def __init__(self, monkeypatch):
        import triton.testing
        self.used = []
        monkeypatch.setattr(measure, "event_timing", lambda call, reps: self.used.append(("events", reps)) or (1, 2, 3))
        monkeypatch.setattr(triton.testing, "do_bench", lambda call, warmup, rep, quantiles:
                            self.used.append(("do_bench", warmup, rep)) or [1, 2, 3])


def test_long_calls_are_timed_a_few_times_with_events_and_say_so(monkeypatch):
    from rnnbench.schema import Timing
    timers, cuda = FakeTimers(monkeypatch), torch.device("cuda")
    latency, note = measure.time_call(lambda: None, cuda, Timing(), probe_ms=measure.LONG_CALL_MS)
    assert timers.used == [("events", measure.LONG_CALL_REPS)] and latency == (1, 2, 3)
    assert note.startswith(measure.LONG_CALL_NOTE) and "0.05 s" in note
    latency, note = measure.time_call(lambda: None, cuda, Timing(warmup_ms=7, rep_ms=9),
                                      probe_ms=measure.LONG_CALL_MS / 2)
    assert timers.used[-1] == ("do_bench", 7, 9) and note == ""


def test_out_of_memory_keeps_pytorchs_account_without_its_advice():
    from rnnbench.runner import out_of_memory
    message = ("CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
               "1.50 GiB is free. Including non-PyTorch memory, this process has 77.68 GiB memory in use. Of the "
               "allocated memory 70.01 GiB is allocated by PyTorch, and 6.20 GiB is reserved by PyTorch but "
               "unallocated. If reserved but unallocated memory is large try setting "
               "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
               "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")
    text = out_of_memory(torch.cuda.OutOfMemoryError(message))
    assert text.startswith("CUDA out of memory: Tried to allocate 4.00 GiB. GPU 0 has a total capacity")
    assert text.endswith("6.20 GiB is reserved by PyTorch but unallocated.") and "expandable" not in text
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory.")) == "CUDA out of memory"


def test_memory_in_words():
    assert measure.memory_text({"allocated_mib": 512, "reserved_mib": 1024, "free_mib": 79 * 1024,
                                "total_mib": 80 * 1024}) == \
        "allocated 0.50 GiB, reserved 1.00 GiB, driver free 79.00 of 80.00 GiB"


@pytest.mark.parametrize("case", [Case(6, 3, 8, 5, 1), Case(4, 2, 6, 3, 2)], ids=str)
def test_forward_flops_match_pytorch_flop_counter(case):
    prepared = BACKENDS["eager"].prepare(seeded_rnn(case, "tanh", 0), CPU, torch.float32)
    inputs = measure.make_inputs(case, CPU, torch.float32, seed=0)
    with FlopCounterMode(display=False) as counter:
        measure.make_call(prepared, inputs, "forward")()
    assert measure.flops(case, "forward") == counter.get_total_flops()


def test_forward_backward_flops_are_three_forwards_as_counted():
    case = Case(32, 4, 16, 16, 1)
    prepared = BACKENDS["eager"].prepare(seeded_rnn(case, "tanh", 0), CPU, torch.float32)
    inputs = measure.make_inputs(case, CPU, torch.float32, seed=0)
    with FlopCounterMode(display=False) as counter:
        measure.make_call(prepared, inputs, "forward+backward")()
    # the counter skips one B x H x H product: no gradient is asked for h0
    assert measure.flops(case, "forward+backward") == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_speed_metrics_derive_from_latency():
    case = Case(1000, 8, 64, 32, 1)
    metrics = measure.speed_metrics(case, "forward", (1.0, 2.0, 4.0))
    assert metrics["time_per_step"] == ("us", (1.0, 2.0, 4.0))
    assert metrics["tokens_per_s"][1] == pytest.approx((8000 / 0.004, 8000 / 0.002, 8000 / 0.001))
    assert metrics["tflops"][1][1] == pytest.approx((2 * 64 * 64 + 2 * 32 * 64) * 8000 / 0.002 / 1e12)


def test_activation_memory_of_the_eager_loop_is_one_hidden_state_per_step():
    case = Case(16, 4, 32, 24, 1)
    prepared = BACKENDS["eager"].prepare(seeded_rnn(case, "tanh", 0), CPU, torch.float32)
    inputs = measure.make_inputs(case, CPU, torch.float32, seed=0)
    # tanh saves each h_t and each matmul saves h_{t-1}: T distinct [B, H] float32 tensors
    assert measure.saved_activation_mib(prepared, inputs) * measure.MiB == 16 * 4 * 32 * 4


@pytest.mark.parametrize("backend", ["cudnn", "eager"])
def test_measuring_activation_memory_keeps_no_tensor_alive(backend):
    """A pack hook that returned the saved tensor kept the graph alive through a cycle that gc
    cannot see: 8 GiB held after one T=64k job on the H200 (2026-11-26)."""
    case = Case(37, 3, 48, 48, 1)
    prepared = BACKENDS[backend].prepare(seeded_rnn(case, "tanh", 0), CPU, torch.float32)
    inputs = measure.make_inputs(case, CPU, torch.float32, seed=0)

    def big_tensors() -> int:
        gc.collect()
        # type(), not isinstance: the latter asks each object for its __class__, which torch.distributed's deprecated
        # reduce_op answers with a FutureWarning
        return sum(issubclass(type(o), torch.Tensor) and o.numel() >= 37 * 3 * 48 for o in gc.get_objects())
    before = big_tensors()
    assert measure.saved_activation_mib(prepared, inputs) > 0
    assert big_tensors() == before


def test_spectral_matrix_has_the_requested_radius():
    u = stability.spectral_matrix(24, 1.1, torch.Generator().manual_seed(3))
    assert np.abs(np.linalg.eigvals(u.numpy())).max() == pytest.approx(1.1, rel=1e-9)


def hidden_grads_by_retain_grad(rnn: torch.nn.RNN, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """||dL/dh_t|| of L = <h_{T-1}, g> straight from autograd on a hand-written float64 loop."""
    w = {n: p.detach().double() for n, p in rnn.named_parameters()}
    h, states = torch.zeros(x.shape[1], x.shape[2], dtype=torch.float64), []
    for t in range(x.shape[0]):
        h = torch.tanh(x[t] @ w["weight_ih_l0"].T + w["bias_ih_l0"] + h @ w["weight_hh_l0"].T + w["bias_hh_l0"])
        h.retain_grad()
        states.append(h)
    (h * g).sum().backward()
    return torch.stack([s.grad.flatten().norm() for s in states])


@pytest.mark.parametrize("radius", [0.5, 1.3])
def test_grad_norm_curve_matches_autograd_on_the_hidden_states(radius):
    rnn = stability.stability_rnn(12, radius, "tanh", seed=1)
    x, gy = stability.study_inputs(20, 3, 12, seed=1, scale=0.05)
    prepared = BACKENDS["eager"].prepare(rnn, CPU, torch.float64)
    result = stability.run_study(prepared, x, gy, CPU, torch.float64, with_curve=True)
    expected = hidden_grads_by_retain_grad(rnn, x, gy[-1])
    torch.testing.assert_close(result.curve, expected, rtol=1e-10, atol=0)


def test_curve_shows_vanishing_and_exploding_gradients():
    def ratio(radius):  # ||dL/dh_0|| / ||dL/dh_{T-1}||
        curve = stability.reference(64, 4, 200, radius, "tanh", 0, 0.01, True).curve
        return (curve[0] / curve[-1]).item()
    assert ratio(0.5) < 1e-20
    assert ratio(0.5) < ratio(0.9) < ratio(1.0) < 1 < ratio(1.5)
    assert ratio(1.5) > 100


def test_errors_are_zero_for_the_reference_itself_and_small_in_float32():
    ref = stability.reference(16, 2, 24, 0.9, "tanh", 0, 0.01, False)
    source = stability.stability_rnn(16, 0.9, "tanh", 0)
    x, gy = stability.study_inputs(24, 2, 16, 0, 0.01)
    for dtype, bound in ((torch.float64, 0.0), (torch.float32, 1e-5)):
        prepared = BACKENDS["cudnn"].prepare(source, CPU, dtype)  # nn.RNN, independent of the loop
        errors = stability.error_metrics(stability.run_study(prepared, x, gy, CPU, dtype, False), ref)
        assert set(errors) == {"rel_err_output", "rel_err_grad_input", "rel_err_grad_weight_ih_l0",
                               "rel_err_grad_weight_hh_l0", "rel_err_grad_bias_ih_l0", "rel_err_grad_bias_hh_l0"}
        assert all(e <= max(bound, 1e-12) for e in errors.values()), errors
        if dtype == torch.float32:
            assert max(errors.values()) > 1e-9  # really float32 arithmetic


def test_nonfinite_counts_nan_and_inf():
    prepared = Prepared(lambda x, h0: (x * torch.tensor([float("nan"), 1.0, float("inf")]), None),
                        {"w": torch.ones(3, requires_grad=True)})
    g = stability.Gradients(torch.tensor([1.0, float("nan")]), {"a": torch.tensor([float("inf"), -float("inf")])},
                            None)
    assert stability.nonfinite(g) == 3
    assert prepared.note() == ""


def test_curve_points_keep_both_ends_and_a_bounded_count():
    curve = torch.arange(5000, dtype=torch.float64)
    points = stability.curve_points(curve)
    assert points[0] == (0, 0.0) and points[-1] == (4999, 4999.0)
    assert len(points) <= stability.CURVE_MAX_POINTS
    assert stability.curve_points(curve[:10]) == [(t, float(t)) for t in range(10)]


def test_host_and_wall_time_each_call_from_an_idle_device(monkeypatch):
    """Every call starts after a device sync, and its wall time after a second one: host time is until the call
    returns, wall time until the sync after it (a fake clock: each call takes 2 ms, each sync 3 ms)."""
    clock, events = {"t": 0.0}, []

    def tick(ms: float, what: str):
        events.append(what)
        clock["t"] += ms / 1e3

    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(measure, "sync", lambda device: tick(3, "sync"))
    host, wall = measure.host_and_wall_ms(lambda: tick(2, "call"), torch.device("cuda"), reps=4)
    assert host == pytest.approx([2] * 4) and wall == pytest.approx([5] * 4)
    assert events == ["sync", "call", "sync"] * 4
    assert measure.wall_ms(lambda: tick(2, "call"), torch.device("cuda")) == pytest.approx(5)


def test_a_cuda_speed_job_records_the_hosts_time_per_call(monkeypatch):
    """On CUDA a speed job adds host_time, the quantiles of measure.host_and_wall_ms's host times; on the CPU, where
    host and call time are one, nothing."""
    from rnnbench.runner import host_time
    monkeypatch.setattr(measure, "host_and_wall_ms", lambda call, device: ([4.0, 1.0, 2.0], [9.0, 9.0, 9.0]))
    def call():
        return None
    (measured,) = host_time(call, torch.device("cuda"))
    assert (measured.metric, measured.unit, measured.values) == ("host_time", "ms", measure.quantiles([4, 1, 2]))
    assert host_time(call, CPU) == []


def graphs_scenario(on: bool | str):
    from rnnbench.schema import parse_scenario
    return parse_scenario({"name": "g", "backends": ["eager"], "modes": ["forward"], "metrics": ["speed"],
                           "sweep": {"seq_len": 4, "batch": 2, "hidden": 8},
                           "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2, "cuda_graphs": on}},
                          "test", "full")


def cuda_stand_ins(monkeypatch, capture):
    """A CUDA speed job without a GPU: the capture (capture(call) -> replay, or raising), the timing and the host
    times stood in; returns what happened, in order."""
    from rnnbench import runner
    events = []
    monkeypatch.setattr(measure, "graph_replay", lambda call, device: capture(call))
    monkeypatch.setattr(measure, "release_graphs", lambda: events.append("released"))
    monkeypatch.setattr(measure, "time_call", lambda call, device, timing, probe_ms: (
        events.append(("timed", call, probe_ms)) or ((1.0, 2.0, 3.0), "")))
    monkeypatch.setattr(measure, "host_and_wall_ms", lambda call, device: (
        events.append(("host", call)) or ([0.1], [2.0])))
    return runner, events


def test_with_cuda_graphs_a_cuda_speed_job_times_the_replays_then_lets_the_graph_go(monkeypatch):
    """timing.cuda_graphs: the job's call captured once, its replays timed (latency and host time, the eager call's
    probe left out), every speed row saying so, and the graph released after."""
    def replay():
        return None
    runner, events = cuda_stand_ins(monkeypatch, lambda call: replay)
    ctx = runner.Context(graphs_scenario(True), torch.device("cuda"), folder=None)
    job = runner.Job("bench", "eager", "forward", "float32", Case(4, 2, 8, 8))
    call = measure.MeasuredCall(None, None, lambda: None)
    values = runner.speed_values(job, ctx, call, probe_ms=5.0)
    assert events == [("timed", replay, None), ("host", replay), "released"]
    assert {v.metric for v in values} >= {"latency", "time_per_step", "host_time"}
    timed = [v for v in values if v.metric in measure.speed_metrics(job.case, job.mode, (1.0, 2.0, 3.0))]
    assert len(timed) >= 2 and all(measure.GRAPH_NOTE in v.note for v in timed)


def test_with_cuda_graphs_both_a_cuda_speed_job_times_its_call_then_the_replays_beside(monkeypatch):
    """timing.cuda_graphs: both: the call timed as usual (its probe kept, the host time, no graph note), then
    captured and its replays' time per step added as graph_time_per_step, the graph released after."""
    def replay():
        return None
    runner, events = cuda_stand_ins(monkeypatch, lambda call: replay)
    ctx = runner.Context(graphs_scenario("both"), torch.device("cuda"), folder=None)
    job = runner.Job("bench", "eager", "forward", "float32", Case(4, 2, 8, 8))
    call = measure.MeasuredCall(None, None, lambda: None)
    values = runner.speed_values(job, ctx, call, probe_ms=5.0)
    assert events == [("timed", call.call, 5.0), ("host", call.call), ("timed", replay, None), "released"]
    by_metric = {v.metric: v for v in values}
    assert measure.GRAPH_NOTE not in by_metric["latency"].note and "host_time" in by_metric
    graph = by_metric["graph_time_per_step"]
    assert graph.unit == "us" and graph.values == by_metric["time_per_step"].values  # the same times stood in
    assert measure.GRAPH_NOTE in graph.note


@pytest.mark.parametrize("graphs,metric", [(True, "latency"), ("both", "graph_time_per_step")])
def test_a_call_that_cannot_be_captured_is_not_measured_and_the_job_goes_on(monkeypatch, graphs, metric):
    def refuse(call):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")
    runner, events = cuda_stand_ins(monkeypatch, refuse)
    ctx = runner.Context(graphs_scenario(graphs), torch.device("cuda"), folder=None)
    job = runner.Job("bench", "eager", "forward", "float32", Case(4, 2, 8, 8))
    *plain, refused = runner.speed_values(job, ctx, measure.MeasuredCall(None, None, lambda: None), probe_ms=None)
    assert refused.metric == metric and refused.error == (
        "not measured: CUDA graph capture failed: RuntimeError: CUDA error: operation not permitted when stream is "
        "capturing")
    assert "released" not in events and {v.metric for v in plain} >= ({"latency"} if graphs == "both" else set())


class EndedCapture:
    """torch.cuda.graph's exit as it meets a call's error: ending the capture raises CUDA's own error while the
    call's is being handled."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")


def test_a_capture_the_call_broke_is_reported_by_the_calls_error_then_cudas(monkeypatch):
    """The row names both errors, the call's first; an error of the call's own that came while it handled another
    is the call's alone."""
    def broken(call):
        with EndedCapture():
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    def handled(call):
        try:
            {}["k"]
        except KeyError:
            raise ValueError("a call's own error, raised as it handled a KeyError")
    runner, _ = cuda_stand_ins(monkeypatch, broken)
    ctx = runner.Context(graphs_scenario(True), torch.device("cuda"), folder=None)
    job = runner.Job("bench", "eager", "forward", "float32", Case(4, 2, 8, 8))
    (refused,) = runner.speed_values(job, ctx, measure.MeasuredCall(None, None, lambda: None), probe_ms=None)
    assert refused.error == ("not measured: CUDA graph capture failed: RuntimeError: CUDA error: operation not "
                             "permitted when stream is capturing; then RuntimeError: CUDA error: operation failed due "
                             "to a previous error during capture")
    monkeypatch.setattr(measure, "graph_replay", lambda call, device: handled(call))
    (refused,) = runner.speed_values(job, ctx, measure.MeasuredCall(None, None, lambda: None), probe_ms=None)
    assert refused.error == ("not measured: CUDA graph capture failed: ValueError: a call's own error, raised as it "
                             "handled a KeyError")


def test_a_failed_capture_leaves_the_stream_it_found_current(monkeypatch):
    """torch.cuda.graph makes its capture stream current and, where ending a failed capture raises, leaves it so:
    every later job would run there. graph_replay restores the stream it found, and lets the error through. CUDA's
    calls stood in: a stream is a name."""
    import contextlib

    class Stream:
        def __init__(self, device=None, name="side"):
            self.name = name

        def wait_stream(self, other):
            pass
    main = Stream(name="main")
    current = [main]

    @contextlib.contextmanager
    def graph(cuda_graph):
        current[0] = Stream(name="capture")
        yield
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[0])
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: current.__setitem__(0, stream))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    with pytest.raises(RuntimeError, match="during capture"):
        measure.graph_replay(lambda: None, torch.device("cuda"))
    assert current == [main]


def test_cuda_graphs_on_a_cpu_run_time_the_calls_as_usual_and_say_so():
    from rnnbench import runner
    for on in (True, "both", False):
        ctx = runner.Context(graphs_scenario(on), CPU, folder=None)
        rows = runner.guarded(runner.Job("bench", "eager", "forward", "float32", Case(4, 2, 8, 8)), ctx)
        latency = next(r for r in rows if r["metric"] == "latency")
        assert latency["p50"] > 0 and ("cuda_graphs: CUDA only, timed as usual" in latency["note"]) == bool(on)
        assert not any(r["metric"] == "graph_time_per_step" for r in rows)
