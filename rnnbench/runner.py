"""Runs a scenario: plans the jobs, runs each one guarded, appends its rows as it finishes.

A job is one backend on one case, dtype and mode (kind "bench"), or one point of the stability
study. Order follows tritonbench: for every case, dtype and mode the baselines (and the float16
cuDNN reference) run first, so each other backend's speedups are written with its own rows. A
backend that is unavailable, skipped for a case, out of CUDA memory or failing yields a row with
the reason in `error`, and the run goes on.

Every bench row is checked: the output of the timed call is recomputed step by step in float64
(rnnbench.check); a wrong output fails the job. Every job is logged in jobs.csv with its wall time
and, on CUDA, the memory PyTorch had allocated and reserved and the driver's free memory before it
started, so memory held across jobs shows in the log and in the error of a job out of memory.
"""
from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
from tqdm import tqdm

from rnnbench import check, cudnn_probe, estimate, measure, stability, training
from rnnbench.backends import BACKENDS, CUDNN_BACKENDS, FP16_REFERENCE, first_line, seeded_rnn
from rnnbench.results import Job, RunFolder, fallback_note, job_outcomes, now
from rnnbench.schema import Case, Scenario

REFERENCE = "reference"  # the float64 loop: rows of its own in the ||dL/dh_t|| curve only
NONE = (None, None, None)


@dataclass
class Context:
    """A run in progress: p50 latencies (ms) and the reasons a job did not run, by (mode, dtype,
    case) and backend, for the speedups of later jobs."""
    scenario: Scenario
    device: torch.device
    folder: RunFolder
    latency_ms: dict[tuple, dict[str, float]] = field(default_factory=dict)
    not_run: dict[tuple, dict[str, str]] = field(default_factory=dict)
    algorithms: dict[tuple, str] = field(default_factory=dict)  # cuDNN's, by cudnn_probe.shape_key


def plan(scenario: Scenario) -> list[Job]:
    """Every job of the scenario, in the order they run. A backend that runs in a dtype of its own
    (cudnn-fp16) is planned only for the job dtypes it serves, and not in the stability study."""
    jobs = []
    if {"speed", "memory"} & set(scenario.metrics):
        jobs += [Job("bench", backend, mode, dtype, case)
                 for case in scenario.cases for dtype in scenario.dtypes for mode in scenario.modes
                 for backend in scenario.ordered_backends() if BACKENDS[backend].serves(dtype)]
    if "stability" in scenario.metrics:
        st = scenario.stability
        for radius in st.spectral_radii:
            jobs.append(Job("stability", REFERENCE, "forward+backward", "float64", _study_case(st, st.curve_len),
                            radius))
            jobs += [Job("stability", backend, "forward+backward", dtype, _study_case(st, seq_len), radius)
                     for seq_len in st.seq_lens for backend in scenario.ordered_backends() for dtype in scenario.dtypes
                     if BACKENDS[backend].runs_in is None]
    if "training" in scenario.metrics:
        jobs += training.plan(scenario)
    return jobs


def _study_case(st, seq_len: int) -> Case:
    return Case(seq_len, st.batch, st.hidden, st.hidden, 1)


# ---- rows -----------------------------------------------------------------------------------

def make_row(job: Job, ctx: Context, metric: str, unit: str, values=NONE, *,
             error: str = "", note: str = "", step: int | None = None) -> dict:
    """A results row; unit is the measurement unit (ms, MiB, ...)."""
    case = job.case
    label = "float64 reference loop" if job.backend == REFERENCE else BACKENDS[job.backend].label(ctx.device)
    p20, p50, p80 = values
    return {"scenario": ctx.scenario.name, "kind": job.kind, "backend": job.backend, "label": label,
            "mode": job.mode, "dtype": job.dtype, "seq_len": case.seq_len, "batch": case.batch,
            "hidden": case.hidden, "input_size": case.input_size, "layers": case.layers,
            "radius": "" if job.radius is None else f"{job.radius:g}", "step": "" if step is None else step,
            "metric": metric, "unit": unit, "p20": p20, "p50": p50, "p80": p80, "error": error,
            "note": note, "device": ctx.device.type, "timestamp": now()}


def single(value: float) -> tuple:
    return (None, value, None)


def error_row(job: Job, ctx: Context, error: str) -> dict:
    if job.kind == "stability":
        metric = "grad_norm" if job.backend == REFERENCE else "rel_err_output"
    elif job.kind == "training":
        metric = "eval_loss"
    else:
        metric = "latency" if "speed" in ctx.scenario.metrics else "peak_memory"
    return make_row(job, ctx, metric, "", error=error)


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)  # report.backends_section splits them again


class Measured(NamedTuple):
    """One metric of a job: its measurement unit, (p20, p50, p80), why it is missing, and a note
    about this value alone (noisy, how it was timed, which baseline)."""
    metric: str
    unit: str
    values: tuple = NONE
    error: str = ""
    note: str = ""


# ---- the work of one bench job ----------------------------------------------------------------

def bench_rows(job: Job, ctx: Context) -> list[dict]:
    sc = ctx.scenario
    # a forward job's warm-up is the step check's forward call (it is the same call): one call fewer
    measured_call = measure.prepare_call(job.backend, job.case, job.dtype, job.mode, ctx.device, sc.nonlinearity,
                                         sc.seed, warmup_calls=0 if job.mode == "forward" else 1)
    checked = step_check(job, ctx, measured_call)
    measured, probe_ms = [], None
    if "memory" in sc.metrics:
        measured, probe_ms = memory_values(job, ctx, measured_call)
    if "speed" in sc.metrics:
        measured += speed_values(job, ctx, measured_call, probe_ms)
    if not measured:  # memory only, forward, no CUDA: say why the job has nothing
        measured.append(Measured("peak_memory", "MiB", error="not measured: peak memory needs CUDA"))
    measured.insert(0, checked)
    what_ran = join_notes(measured_call.prepared.note(), cudnn_algorithm(job, ctx))
    return [make_row(job, ctx, m.metric, m.unit, m.values, error=m.error, note=join_notes(what_ran, m.note))
            for m in measured]


def cudnn_algorithm(job: Job, ctx: Context) -> str:
    """The algorithm cuDNN ran for this job (probed at the start of the run), or ""."""
    return ctx.algorithms.get(cudnn_probe.shape_key(job.backend, job.dtype, job.mode, job.case), "")


def probe_cudnn(ctx: Context, jobs: list[Job]) -> None:
    """On CUDA, cuDNN's algorithm for every shape of the cuDNN jobs about to run, in a child process."""
    if ctx.device.type != "cuda":
        return
    shapes = [cudnn_probe.shape_key(j.backend, j.dtype, j.mode, j.case) for j in jobs if j.kind == "bench"
              and j.backend in CUDNN_BACKENDS and BACKENDS[j.backend].skip(j.case, ctx.device) is None]
    sc = ctx.scenario
    ctx.algorithms.update(cudnn_probe.algorithms(shapes, str(ctx.device), sc.nonlinearity, sc.seed))


def step_check(job: Job, ctx: Context, measured_call: measure.MeasuredCall) -> Measured:
    """rel_err_step (rnnbench.check) of the job's forward; above the dtype's tolerance the job fails."""
    if job.case.layers > 1:
        return Measured("rel_err_step", "relative", error="not measured: the step check needs each layer's input "
                                                          "(one layer only)")
    inputs = measured_call.inputs
    error = check.step_error(measured_call.prepared, inputs.x, inputs.h0, ctx.scenario.nonlinearity)
    limit = check.tolerance(BACKENDS[job.backend].dtype_for(job.dtype), ctx.scenario.allow_tf32)
    if not error <= limit:  # NaN fails too
        return Measured("rel_err_step", "relative", single(error),
                        f"wrong output: step error {error:.3g} above the tolerance {limit:g} (rnnbench/check.py)")
    return Measured("rel_err_step", "relative", single(error))


def memory_values(job: Job, ctx: Context, measured_call: measure.MeasuredCall) -> tuple[list[Measured], float | None]:
    """Peak memory (CUDA only: it needs the CUDA allocator's statistics) and, for forward+backward,
    the activation memory saved for backward (any device); with the peak call's wall time (ms)."""
    values, probe_ms = [], None
    if ctx.device.type == "cuda":
        peak, probe_ms = measure.peak_memory_mib(measured_call.call, ctx.device)
        values.append(Measured("peak_memory", "MiB", single(peak)))
    if job.mode == "forward+backward":
        values.append(Measured("activation_memory", "MiB",
                               single(measure.saved_activation_mib(measured_call.prepared, measured_call.inputs))))
    return values, probe_ms


def speed_values(job: Job, ctx: Context, measured_call: measure.MeasuredCall, probe_ms: float | None) -> list[Measured]:
    """The speed metrics of the job's call; with timing.cuda_graphs on CUDA those of its replays from a CUDA graph
    instead, or with "both" its graph_time_per_step beside them (a call that cannot be captured: not measured, the
    job's other metrics kept)."""
    call, graphs = measured_call.call, ctx.scenario.timing.cuda_graphs
    if not graphs or ctx.device.type != "cuda":
        return timed_values(job, ctx, call, probe_ms, "cuda_graphs: CUDA only, timed as usual" if graphs else "")
    if graphs == "both":
        plain = timed_values(job, ctx, call, probe_ms, "")
        return plain + replayed(call, ctx, "graph_time_per_step", "us", partial(graph_step_values, job, ctx))
    return replayed(call, ctx, "latency", "ms", lambda replay: timed_values(job, ctx, replay, None, measure.GRAPH_NOTE))


def replayed(call, ctx: Context, metric: str, unit: str, values: Callable[[Callable], list[Measured]]
             ) -> list[Measured]:
    """values(replay) of call captured into a CUDA graph, the graph let go after; where the capture fails, metric
    not measured."""
    try:
        replay = measure.graph_replay(call, ctx.device)
    except Exception as err:  # the backend cannot be captured (a host sync, a capture-unsafe call)
        return [Measured(metric, unit, error=f"not measured: CUDA graph capture failed: {capture_failure(err)}")]
    try:
        return values(replay)
    finally:
        measure.release_graphs()


CAPTURE_BROKEN = "previous error during capture"  # CUDA's error as it ends a capture that a call broke


def capture_failure(err: BaseException) -> str:
    """What broke a capture: where ending it raised CUDA's error, which names no cause, while the call's was being
    handled (torch.cuda.graph's exit), the call's first."""
    text = f"{type(err).__name__}: {first_line(err)}"
    before = err.__context__
    if before is None or err.__suppress_context__ or CAPTURE_BROKEN not in str(err):
        return text
    return f"{type(before).__name__}: {first_line(before)}; then {text}"


def graph_step_values(job: Job, ctx: Context, replay: Callable) -> list[Measured]:
    """graph_time_per_step: the time per step of the call's replays, beside the call's own (timing.cuda_graphs both)."""
    latency, how = measure.time_call(replay, ctx.device, ctx.scenario.timing, None)
    unit, per_step = measure.speed_metrics(job.case, job.mode, latency)["time_per_step"]
    note = join_notes(measure.GRAPH_NOTE, how, measure.noise_note(latency[0], latency[2]))
    return [Measured("graph_time_per_step", unit, per_step, note=note)]


def timed_values(job: Job, ctx: Context, call, probe_ms: float | None, note: str) -> list[Measured]:
    """Latency and what follows from it (measure.speed_metrics), the host's time per call and the speedups, of
    call; note says how it ran."""
    latency, how = measure.time_call(call, ctx.device, ctx.scenario.timing, probe_ms)
    note = join_notes(note, how, measure.noise_note(latency[0], latency[2]))
    values = [Measured(m, u, v, note=note) for m, (u, v) in measure.speed_metrics(job.case, job.mode, latency).items()]
    ctx.latency_ms.setdefault(speed_key(job), {})[job.backend] = latency[1]
    return values + host_time(call, ctx.device) + speedups(job, ctx, latency[1])


def host_time(call, device: torch.device) -> list[Measured]:
    """On CUDA, the host's time per call (measure.host_and_wall_ms): beside the latency, it shows a call the GPU
    waits for (nothing on CPU, where the two are the same time)."""
    if device.type != "cuda":
        return []
    host, _ = measure.host_and_wall_ms(call, device)
    return [Measured("host_time", "ms", measure.quantiles(host))]


def speed_key(job: Job) -> tuple:
    return (job.mode, job.dtype, job.case)


def speedups(job: Job, ctx: Context, p50_ms: float) -> list[Measured]:
    """speedup: the p50 latency of the first baseline that ran for this case, dtype and mode over
    this job's (a note names a fallback baseline and why the first did not run); for bfloat16 jobs
    also speedup_fp16, over cuDNN in float16, except for the first baseline, which runs before the
    float16 reference (that one's speedup over it says the same, inverted)."""
    sc = ctx.scenario
    times, why = ctx.latency_ms.get(speed_key(job), {}), ctx.not_run.get(speed_key(job), {})
    ran = [b for b in sc.baselines if b in times]
    if ran:
        fallback = "" if ran[0] == sc.baseline else fallback_note(ran[0], baseline_absence(sc.baseline, why))
        out = [Measured("speedup", "x", single(times[ran[0]] / p50_ms), note=fallback)]
    else:
        reasons = "; ".join(baseline_absence(b, why) for b in sc.baselines)
        out = [Measured("speedup", "x", error=f"not measured: no baseline ran ({reasons})")]
    if job.dtype == "bfloat16" and FP16_REFERENCE in sc.backends and job.backend != sc.baseline:
        if FP16_REFERENCE in times:
            out.append(Measured("speedup_fp16", "x", single(times[FP16_REFERENCE] / p50_ms)))
        else:
            out.append(Measured("speedup_fp16", "x", error=f"not measured: {baseline_absence(FP16_REFERENCE, why)}"))
    return out


def baseline_absence(backend: str, why: dict[str, str]) -> str:
    """Why a baseline has no latency for a case, in words."""
    return f"{backend} did not run ({why[backend]})" if backend in why else f"{backend} has no latency yet"


# ---- the work of one stability job ------------------------------------------------------------

def stability_rows(job: Job, ctx: Context) -> list[dict]:
    sc, case, st = ctx.scenario, job.case, ctx.scenario.stability
    with_curve = case.seq_len == st.curve_len
    ref = stability.reference(case.hidden, case.batch, case.seq_len, job.radius, sc.nonlinearity, sc.seed,
                              st.input_scale, with_curve)
    if job.backend == REFERENCE:
        return curve_rows(job, ctx, ref.curve, note="")
    source = stability.stability_rnn(case.hidden, job.radius, sc.nonlinearity, sc.seed)
    prepared = BACKENDS[job.backend].prepare(source, ctx.device, getattr(torch, job.dtype))
    x, gy = stability.study_inputs(case.seq_len, case.batch, case.hidden, sc.seed, st.input_scale)
    result = stability.run_study(prepared, x, gy, ctx.device, getattr(torch, job.dtype), with_curve)
    note = prepared.note()
    rows = [make_row(job, ctx, m, "relative", single(v), note=note)
            for m, v in stability.error_metrics(result, ref).items()]
    rows.append(make_row(job, ctx, "nonfinite", "count", single(stability.nonfinite(result)), note=note))
    if with_curve:
        rows += curve_rows(job, ctx, result.curve, note)
    return rows


def curve_rows(job: Job, ctx: Context, curve: torch.Tensor, note: str) -> list[dict]:
    return [make_row(job, ctx, "grad_norm", "norm", single(v), step=t, note=note)
            for t, v in stability.curve_points(curve)]


# ---- the work of one training job -------------------------------------------------------------

def training_rows(job: Job, ctx: Context) -> list[dict]:
    source = seeded_rnn(job.case, ctx.scenario.nonlinearity, ctx.scenario.seed)
    return [make_row(job, ctx, m.metric, m.unit, m.values, step=m.step, note=m.note)
            for m in training.run(job, ctx.scenario, ctx.device, source)]


WORK: dict[str, Callable[[Job, Context], list[dict]]] = {"bench": bench_rows, "stability": stability_rows,
                                                         "training": training_rows}


def guarded(job: Job, ctx: Context) -> list[dict]:
    """The job's rows; any way it cannot run or fails becomes one row with the reason, a split barrier that gave up
    in one of its calls too (read only now: kernels/barrier_status.py)."""
    rows = attempted(job, ctx)
    fault = measure.barrier_fault()
    return [error_row(job, ctx, fault)] if fault else rows


def attempted(job: Job, ctx: Context) -> list[dict]:
    """The job's rows, or one row saying why it did not run or how it failed."""
    if job.backend != REFERENCE:
        backend = BACKENDS[job.backend]
        reason = backend.unavailable(ctx.device)
        if reason:
            return [error_row(job, ctx, f"unavailable: {reason}")]
        reason = backend.skip(job.case, ctx.device)
        if reason:
            return [error_row(job, ctx, f"skipped: {reason}")]
    try:
        return WORK[job.kind](job, ctx)
    except torch.cuda.OutOfMemoryError as err:
        return [error_row(job, ctx, out_of_memory(err))]
    except Exception as err:  # one failing job must never stop the run
        return [error_row(job, ctx, f"{type(err).__name__}: {first_line(err)}")]


class DeviceFailed(RuntimeError):
    """The GPU can run nothing more in this process: releasing a job's memory raised a CUDA error, which stays for
    the life of the CUDA context (an illegal address, a device-side assert). The job's rows are kept; the run stops
    (cli: --resume runs the rest in a new process)."""


def release_memory(device: torch.device) -> None:
    """Frees what a job left: Python's cycles, then the CUDA allocator's cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def out_of_memory(err: BaseException) -> str:
    """"CUDA out of memory: " and PyTorch's account of it (what was asked for, what was free, what
    PyTorch held), without its advice."""
    text = " ".join(str(err).split())
    for advice in (" If reserved but unallocated", " See documentation"):
        text = text.split(advice)[0]
    text = text.removeprefix("CUDA out of memory.").strip()
    return "CUDA out of memory" + (f": {text}" if text else "")


def record_not_run(ctx: Context, rows: list[dict]) -> None:
    """Latencies and the reasons a job has none, for the speedups of the jobs after it."""
    for row in rows:
        if row["kind"] != "bench" or row["metric"] != "latency":
            continue
        key = (row["mode"], row["dtype"], Case.from_row(row))
        if row["p50"] not in ("", None):
            ctx.latency_ms.setdefault(key, {})[row["backend"]] = float(row["p50"])
        elif row["error"]:
            ctx.not_run.setdefault(key, {})[row["backend"]] = row["error"]


def run(ctx: Context, progress: bool = True) -> int:
    """Runs every job not yet in the folder's CSV; returns how many ran now."""
    torch.backends.cudnn.allow_tf32 = ctx.scenario.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = ctx.scenario.allow_tf32
    with measure.pinned_threads(ctx.device, ctx.scenario.timing.cpu_threads):
        return _run_jobs(ctx, progress)


def _run_jobs(ctx: Context, progress: bool) -> int:
    jobs = plan(ctx.scenario)
    record_not_run(ctx, ctx.folder.rows())
    record_crashed_job(ctx, jobs)
    done = ctx.folder.done()
    todo = [j for j in jobs if j.key() not in done]
    print(estimate.eta_line(ctx.scenario, todo, ctx.device), flush=True)
    probe_cudnn(ctx, todo)
    interactive = sys.stderr.isatty()  # in a log file, a line every 30 s instead of a live bar
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="job", desc=ctx.scenario.name,
               disable=not progress, mininterval=0.1 if interactive else 30, dynamic_ncols=interactive)
    with bar, interruptible():
        for job in todo:
            bar.set_postfix_str(job.describe(), refresh=False)
            ctx.folder.mark_inflight(job)
            try:
                run_job(job, ctx)
            finally:  # also on Ctrl-C or a signal: the job did not crash the process, --resume runs it again
                ctx.folder.mark_inflight(None)
            bar.update()
    return len(todo)


def run_job(job: Job, ctx: Context) -> None:
    """Runs one job, appends its rows, and logs it with its time and the memory before it."""
    memory = measure.cuda_memory(ctx.device) if ctx.device.type == "cuda" else {}
    started, clock = now(), time.perf_counter()
    rows = guarded(job, ctx)
    if memory:
        for row in rows:
            if row["error"].startswith("CUDA out of memory"):
                row["error"] += f"; before this job: {measure.memory_text(memory)}"
    ctx.folder.append(rows)
    record_not_run(ctx, rows)
    ctx.folder.log_job(job, started, time.perf_counter() - clock, job_outcomes(rows)[job.key()][0], memory)
    try:  # after the rows are kept: a CUDA error here would replace them, and every later job would fail on it
        release_memory(ctx.device)
    except RuntimeError as err:
        raise DeviceFailed(f"after {job.describe()}: {type(err).__name__}: {first_line(err)}") from err


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a run, handled like Ctrl-C (a KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


INTERRUPTING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def interruptible():
    """SIGTERM (command time limits, `timeout`, `kill`) and SIGHUP (a closed terminal) raise
    Interrupted, so the job in flight unwinds like on Ctrl-C instead of the process dying
    mid-job, which a resumed run would take for a crash. Previous handlers are restored."""
    if threading.current_thread() is not threading.main_thread():  # Python only lets the main thread set handlers
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)
    previous = {sig: signal.signal(sig, handler) for sig in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def record_crashed_job(ctx: Context, jobs: list[Job]) -> None:
    """A job that was running when the process died (no rows, marker left) is recorded as an
    error rather than run again, so one crashing case cannot stop every resumed run."""
    inflight = ctx.folder.inflight()
    if inflight is None:
        return
    done = ctx.folder.done()
    for job in jobs:
        if list(job.key()) == inflight["key"] and job.key() not in done:
            ctx.folder.append([error_row(job, ctx, "the process died while running this job; not retried on resume")])
    ctx.folder.mark_inflight(None)

