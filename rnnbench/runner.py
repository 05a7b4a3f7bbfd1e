"""Runs a scenario: plans the units of work, runs each one guarded, appends its rows as it finishes.

Order follows tritonbench: for every case, dtype and mode the baseline runs first, so each other
backend's speedup is written with its own rows. A backend that is unavailable, skipped for a case,
out of CUDA memory or failing yields a row with the reason in `error`, and the run goes on.
"""
from __future__ import annotations

import gc
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from rnnbench import measure, stability, training
from rnnbench.backends import BACKENDS, Prepared, first_line
from rnnbench.results import RunFolder, Unit, now, unit_key_strings
from rnnbench.schema import Case, Scenario

REFERENCE = "reference"  # the float64 loop: rows of its own in the ||dL/dh_t|| curve only


@dataclass
class Context:
    scenario: Scenario
    device: torch.device
    folder: RunFolder
    baseline_ms: dict[tuple, float] = field(default_factory=dict)


def plan(scenario: Scenario) -> list[Unit]:
    """Every unit of the scenario, in the order they run."""
    units = []
    if {"speed", "memory"} & set(scenario.metrics):
        units += [Unit("bench", backend, mode, dtype, case)
                  for case in scenario.cases for dtype in scenario.dtypes for mode in scenario.modes
                  for backend in scenario.ordered_backends()]
    if "stability" in scenario.metrics:
        st = scenario.stability
        for radius in st.spectral_radii:
            units.append(Unit("stability", REFERENCE, "forward+backward", "float64", _study_case(st, st.curve_len), radius))
            units += [Unit("stability", backend, "forward+backward", dtype, _study_case(st, seq_len), radius)
                      for seq_len in st.seq_lens for backend in scenario.ordered_backends() for dtype in scenario.dtypes]
    if "training" in scenario.metrics:
        units += training.plan(scenario)
    return units


def _study_case(st, seq_len: int) -> Case:
    return Case(seq_len, st.batch, st.hidden, st.hidden, 1)


def seeded_rnn(case: Case, nonlinearity: str, seed: int) -> torch.nn.RNN:
    """The float32 CPU nn.RNN whose weights every backend copies for this case."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.RNN(case.input_size, case.hidden, case.layers, nonlinearity=nonlinearity)


# ---- rows -----------------------------------------------------------------------------------

def make_row(unit: Unit, ctx: Context, metric: str, unit_name: str, values=(None, None, None), *,
             error: str = "", note: str = "", step: int | None = None) -> dict:
    case = unit.case
    label = "float64 reference loop" if unit.backend == REFERENCE else BACKENDS[unit.backend].label(ctx.device)
    p20, p50, p80 = values
    return {"scenario": ctx.scenario.name, "kind": unit.kind, "backend": unit.backend, "label": label,
            "mode": unit.mode, "dtype": unit.dtype, "seq_len": case.seq_len, "batch": case.batch,
            "hidden": case.hidden, "input_size": case.input_size, "layers": case.layers,
            "radius": "" if unit.radius is None else f"{unit.radius:g}", "step": "" if step is None else step,
            "metric": metric, "unit": unit_name, "p20": p20, "p50": p50, "p80": p80, "error": error,
            "note": note, "device": ctx.device.type, "timestamp": now()}


def single(value: float) -> tuple:
    return (None, value, None)


def error_row(unit: Unit, ctx: Context, error: str) -> dict:
    if unit.kind == "stability":
        metric = "grad_norm" if unit.backend == REFERENCE else "rel_err_output"
    elif unit.kind == "training":
        metric = "eval_loss"
    else:
        metric = "latency" if "speed" in ctx.scenario.metrics else "peak_memory"
    return make_row(unit, ctx, metric, "", error=error)


# ---- the work of one unit -------------------------------------------------------------------

def bench_rows(unit: Unit, ctx: Context) -> list[dict]:
    sc, case = ctx.scenario, unit.case
    dtype = getattr(torch, unit.dtype)
    prepared = BACKENDS[unit.backend].prepare(seeded_rnn(case, sc.nonlinearity, sc.seed), ctx.device, dtype)
    inputs = measure.make_inputs(case, ctx.device, dtype, sc.seed)
    call = measure.make_call(prepared, inputs, unit.mode)
    call()  # compile / autotune / first-touch before anything is measured
    measured: list[tuple] = []  # (metric, unit, values, error)
    if "memory" in sc.metrics:
        measured += memory_values(unit, ctx, prepared, inputs, call)
    noise = ""
    if "speed" in sc.metrics:
        latency = measure.time_call(call, ctx.device, sc.timing.warmup_ms, sc.timing.rep_ms, sc.timing.min_reps)
        measured += [(m, u, v, "") for m, (u, v) in measure.speed_metrics(case, unit.mode, latency).items()]
        measured.append(speedup_value(unit, ctx, latency[1]))
        noise = measure.noise_note(latency[0], latency[2])
    if not measured:  # memory only, forward, no CUDA: say why the unit has nothing
        measured.append(("peak_memory", "MiB", (None, None, None), "not measured: peak memory needs CUDA"))
    note = prepared.note()
    return [make_row(unit, ctx, m, u, v, error=e, note=join_notes(note, noise if v[0] is not None else ""))
            for m, u, v, e in measured]


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)  # report.backends_section splits them again


def memory_values(unit: Unit, ctx: Context, prepared: Prepared, inputs: measure.Inputs, call) -> list[tuple]:
    """Peak memory (CUDA only: it needs the CUDA allocator's statistics) and, for forward+backward,
    the activation memory saved for backward (any device)."""
    values = []
    if ctx.device.type == "cuda":
        values.append(("peak_memory", "MiB", single(measure.peak_memory_mib(call, ctx.device)), ""))
    if unit.mode == "forward+backward":
        values.append(("activation_memory", "MiB", single(measure.saved_activation_mib(prepared, inputs)), ""))
    return values


def speedup_value(unit: Unit, ctx: Context, p50_ms: float) -> tuple:
    """Baseline p50 latency / this backend's p50 latency, for the same case, dtype and mode."""
    key = (unit.mode, unit.dtype, unit.case)
    if unit.backend == ctx.scenario.baseline:
        ctx.baseline_ms[key] = p50_ms
    if key not in ctx.baseline_ms:
        return ("speedup", "x", (None, None, None), f"not measured: no latency of the baseline ({ctx.scenario.baseline})")
    return ("speedup", "x", single(ctx.baseline_ms[key] / p50_ms), "")


def stability_rows(unit: Unit, ctx: Context) -> list[dict]:
    sc, case, st = ctx.scenario, unit.case, ctx.scenario.stability
    with_curve = case.seq_len == st.curve_len
    ref = stability.reference(case.hidden, case.batch, case.seq_len, unit.radius, sc.nonlinearity, sc.seed,
                              st.input_scale, with_curve)
    if unit.backend == REFERENCE:
        return curve_rows(unit, ctx, ref.curve, note="")
    source = stability.stability_rnn(case.hidden, unit.radius, sc.nonlinearity, sc.seed)
    prepared = BACKENDS[unit.backend].prepare(source, ctx.device, getattr(torch, unit.dtype))
    x, gy = stability.study_inputs(case.seq_len, case.batch, case.hidden, sc.seed, st.input_scale)
    result = stability.run_study(prepared, x, gy, ctx.device, getattr(torch, unit.dtype), with_curve)
    note = prepared.note()
    rows = [make_row(unit, ctx, m, "relative", single(v), note=note)
            for m, v in stability.error_metrics(result, ref).items()]
    rows.append(make_row(unit, ctx, "nonfinite", "count", single(stability.nonfinite(result)), note=note))
    if with_curve:
        rows += curve_rows(unit, ctx, result.curve, note)
    return rows


def curve_rows(unit: Unit, ctx: Context, curve: torch.Tensor, note: str) -> list[dict]:
    return [make_row(unit, ctx, "grad_norm", "norm", single(v), step=t, note=note)
            for t, v in stability.curve_points(curve)]


def training_rows(unit: Unit, ctx: Context) -> list[dict]:
    source = seeded_rnn(unit.case, ctx.scenario.nonlinearity, ctx.scenario.seed)
    return [make_row(unit, ctx, m.metric, m.unit, m.values, step=m.step, note=m.note)
            for m in training.run(unit, ctx.scenario, ctx.device, source)]


WORK: dict[str, Callable[[Unit, Context], list[dict]]] = {"bench": bench_rows, "stability": stability_rows,
                                                          "training": training_rows}


def guarded(unit: Unit, ctx: Context) -> list[dict]:
    """The unit's rows; any way it cannot run or fails becomes one row with the reason."""
    if unit.backend != REFERENCE:
        backend = BACKENDS[unit.backend]
        reason = backend.unavailable(ctx.device)
        if reason:
            return [error_row(unit, ctx, f"unavailable: {reason}")]
        reason = backend.skip(unit.case, ctx.device)
        if reason:
            return [error_row(unit, ctx, f"skipped: {reason}")]
    try:
        return WORK[unit.kind](unit, ctx)
    except torch.cuda.OutOfMemoryError:
        return [error_row(unit, ctx, "CUDA out of memory")]
    except Exception as err:  # one failing unit must never stop the run
        return [error_row(unit, ctx, f"{type(err).__name__}: {first_line(err)}")]
    finally:
        gc.collect()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def restore_baselines(ctx: Context, rows: list[dict]) -> None:
    """Baseline latencies of a resumed run, so later units still get their speedup."""
    for row in rows:
        if row["kind"] == "bench" and row["backend"] == ctx.scenario.baseline and row["metric"] == "latency" \
                and row["p50"]:
            case = Case(*(int(row[c]) for c in ("seq_len", "batch", "hidden", "input_size", "layers")))
            ctx.baseline_ms[(row["mode"], row["dtype"], case)] = float(row["p50"])


def run(ctx: Context, progress: bool = True) -> int:
    """Runs every unit not yet in the folder's CSV; returns how many ran now."""
    torch.backends.cudnn.allow_tf32 = ctx.scenario.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = ctx.scenario.allow_tf32
    with measure.pinned_threads(ctx.device, ctx.scenario.timing.cpu_threads):
        return _run_units(ctx, progress)


def _run_units(ctx: Context, progress: bool) -> int:
    units = plan(ctx.scenario)
    restore_baselines(ctx, ctx.folder.rows())
    record_crashed_unit(ctx, units)
    done = ctx.folder.done()
    todo = [u for u in units if unit_key_strings(u) not in done]
    interactive = sys.stderr.isatty()  # in a log file, a line every 30 s instead of a live bar
    bar = tqdm(total=len(units), initial=len(units) - len(todo), unit="unit", desc=ctx.scenario.name,
               disable=not progress, mininterval=0.1 if interactive else 30, dynamic_ncols=interactive)
    with bar, interruptible():
        for unit in todo:
            bar.set_postfix_str(unit.describe(), refresh=False)
            ctx.folder.mark_inflight(unit)
            try:
                ctx.folder.append(guarded(unit, ctx))
            finally:  # also on Ctrl-C or a signal: the unit did not crash the process, --resume runs it again
                ctx.folder.mark_inflight(None)
            bar.update()
    return len(todo)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a run, handled like Ctrl-C (a KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


INTERRUPTING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def interruptible():
    """SIGTERM (command time limits, `timeout`, `kill`) and SIGHUP (a closed terminal) raise
    Interrupted, so the unit in flight unwinds like on Ctrl-C instead of the process dying
    mid-unit, which a resumed run would take for a crash. Previous handlers are restored."""
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


def record_crashed_unit(ctx: Context, units: list[Unit]) -> None:
    """A unit that was running when the process died (no rows, marker left) is recorded as an
    error rather than run again, so one crashing case cannot stop every resumed run."""
    inflight = ctx.folder.inflight()
    if inflight is None:
        return
    for unit in units:
        if list(unit_key_strings(unit)) == inflight["key"] and unit_key_strings(unit) not in ctx.folder.done():
            ctx.folder.append([error_row(unit, ctx, "the process died while running this unit; not retried on resume")])
    ctx.folder.mark_inflight(None)
