"""How long a run will take on an H100 or H200: the estimate printed when it starts.

It counts the jobs, the calls each one makes and what those calls cost:

- a bench job on CUDA makes a warm-up call (in a forward job the step check's forward), a
  peak-memory call (plus, with forward+backward, a forward for the step check and one for the
  activation memory) and its timing: do_bench (six calls,
  then warmup_ms and rep_ms of calls) or, for a call of measure.LONG_CALL_MS or more, one untimed
  call and LONG_CALL_REPS timed ones, then measure.HOST_REPS calls for the host's time per call;
  with timing.cuda_graphs a warm-up call and the capture, and with "both" the replays' timing too;
  cuDNN adds one short profiled call per shape to tell its algorithm, in a child process started once;
- a stability job makes one forward+backward (two at the curve's T), and each (radius, T) once the
  float64 reference on the CPU;
- a training job makes `steps` training steps (a forward+backward of its case and the optimizer's
  work) and one held-out forward.

A call costs T times the backend's time per step. cuDNN's and Triton's times per step were measured on an H200,
an H100's chip with faster memory, in the race of 2026-11-27 (results/race/20261127-h200, T = 4096, B = 64: the
larger batch of the two measured); eager's on an H100 on 2026-11-25 (gpu-runs/2026-11-25-h100:
headline_results.csv and its README); where none was measured (marked GUESS) the figure is a guess. The estimate
assumes that GPU whatever the GPU, and none is made on CPU.
"""
from __future__ import annotations

import torch

from rnnbench.backends import BACKENDS, CUDNN_BACKENDS
from rnnbench.measure import HOST_REPS, LONG_CALL_MS, LONG_CALL_REPS

# Time per step in us (forward, forward+backward) by the largest hidden size of a bucket (128, 256,
# 512, any larger: the larger of H = 1024's and 2048's), per backend and dtype ("half" is float16 and bfloat16 for
# Triton): cuDNN's and Triton's from the H200 race of 2026-11-27 at B = 64, eager's from the H100 (module docstring).
US_PER_STEP = {
    ("cudnn", "float16"): {128: (0.70, 1.85), 256: (1.10, 2.56), 512: (4.55, 10.11), None: (15.12, 37.20)},
    ("cudnn", "bfloat16"): {None: (18.53, 39.18)},  # STANDARD algorithm at every H
    ("cudnn", "float32"): {128: (0.52, 1.61), 256: (1.90, 4.61), 512: (19.51, 35.46), None: (50.56, 116.56)},
    ("triton", "half"): {128: (0.63, 1.36), 256: (1.07, 2.26), 512: (2.81, 6.10), None: (12.27, 26.46)},
    ("triton", "float32"): {128: (0.52, 1.20), 256: (1.66, 3.64), 512: (5.12, 11.60), None: (64.48, 151.19)},
    ("triton-stepwise", None): {None: (4.0, 10.0)},  # GUESS: launches replayed from a CUDA graph
    ("eager", None): {None: (70.0, 250.0)},          # H100: the upper ends of 35-70 and 200-250
    ("compile", None): {None: (20.0, 80.0)},         # GUESS: chunks of 16 steps, still host-bound
}
CHECKPOINT_OVERHEAD = 1.35  # GUESS (the target): triton-checkpoint's forward+backward over triton's
TRAIN_STEP_S = 0.003       # GUESS: a training step's head, loss, gradient norm and optimizer update
PYTHON_LAUNCH_US = 10.0    # a Python-side Triton launch (6-13 us): the stepwise loop before its graph
STEPWISE_HOST_CALLS = 2    # the calls that launch step by step (the first, and the one captured)
COMPILE_S = 10.0           # GUESS: torch.compile of one chunk function, per job (compiled afresh)
FIRST_JIT_S = 5.0          # GUESS: Triton compiling a backend's kernels for a dtype and H the first time
JOB_OVERHEAD_S = 0.1       # preparing, checking, writing rows, freeing memory
ALGORITHM_PROBE_S = 0.5    # one short profiled cuDNN call (rnnbench/cudnn_probe.py)
PROBE_PROCESS_S = 15.0     # GUESS: starting the probes' child process (imports, CUDA, the profiler)
REFERENCE_US_PER_STEP = 80.0  # GUESS: the float64 forward+backward loop on the CPU (stability study)
START_AND_REPORT_S = 30.0  # imports, CUDA start-up, report and plots


def us_per_step(backend: str, dtype: str, hidden: int, mode: str) -> float:
    """The backend's time per step (see US_PER_STEP)."""
    if backend in CUDNN_BACKENDS:
        backend, dtype = "cudnn", BACKENDS[backend].dtype_for(dtype)
    checkpoint = backend == "triton-checkpoint"
    if backend in ("triton", "triton-checkpoint"):
        backend, dtype = "triton", "float32" if dtype in ("float32", "float64") else "half"
    table = US_PER_STEP.get((backend, dtype)) or US_PER_STEP.get((backend, None))
    if table is None:  # float64 cuDNN: as float32
        table = US_PER_STEP[(backend, "float32")]
    bucket = next((h for h in (128, 256, 512) if hidden <= h and h in table), None)
    forward, both = table[bucket]
    return forward if mode == "forward" else both * (CHECKPOINT_OVERHEAD if checkpoint else 1)


def call_seconds(backend: str, dtype: str, case, mode: str) -> float:
    return case.seq_len * case.layers * us_per_step(backend, dtype, case.hidden, mode) / 1e6


def timing_seconds(call_s: float, timing) -> float:
    """What measure.time_call, then the host's time per call (runner.host_time), spend on a call of call_s seconds
    on CUDA."""
    host = HOST_REPS * call_s
    if call_s * 1e3 >= LONG_CALL_MS:
        return (1 + LONG_CALL_REPS) * call_s + host  # one untimed call first
    return 6 * call_s + max(timing.warmup_ms / 1e3, call_s) + max(timing.rep_ms / 1e3, call_s) + host


def graph_seconds(call_s: float, timing) -> float:
    """What timing.cuda_graphs adds: a warm-up call and the capture; with "both" the replays are timed as well as
    the calls (runner.speed_values), without a host time of their own."""
    if not timing.cuda_graphs:
        return 0.0
    replays = timing_seconds(call_s, timing) - HOST_REPS * call_s if timing.cuda_graphs == "both" else 0.0
    return 2 * call_s + replays


def bench_seconds(job, scenario) -> float:
    call = call_seconds(job.backend, job.dtype, job.case, job.mode)
    forward = call_seconds(job.backend, job.dtype, job.case, "forward")
    seconds = JOB_OVERHEAD_S + 2 * call  # warm-up (the step check's forward in a forward job), peak memory
    if job.mode == "forward+backward":
        seconds += 2 * forward  # the step check, the activation memory
    if "speed" in scenario.metrics:
        seconds += timing_seconds(call, scenario.timing) + graph_seconds(call, scenario.timing)
    if job.backend == "compile":
        seconds += COMPILE_S
    if job.backend == "triton-stepwise":
        launches = job.case.seq_len * job.case.layers * (1 if job.mode == "forward" else 2)
        seconds += STEPWISE_HOST_CALLS * launches * PYTHON_LAUNCH_US / 1e6
    return seconds


def stability_seconds(job, scenario) -> float:
    if job.backend == "reference":
        return 0.0
    steps = job.case.seq_len
    seconds = JOB_OVERHEAD_S + call_seconds(job.backend, job.dtype, job.case, "forward+backward")
    if steps == scenario.stability.curve_len:
        seconds *= 2
    if job.backend == "triton-stepwise":  # each call launches step by step: it is never replayed
        seconds += 2 * steps * PYTHON_LAUNCH_US / 1e6
    return seconds


def training_seconds(job, scenario) -> float:
    step = call_seconds(job.backend, job.dtype, job.case, "forward+backward") + TRAIN_STEP_S
    return JOB_OVERHEAD_S + scenario.training.steps * step + call_seconds(job.backend, job.dtype, job.case, "forward")


def run_seconds(scenario, jobs: list) -> float:
    """The estimated seconds of these jobs of the scenario on an H100 or H200 (see the module docstring)."""
    cuda = torch.device("cuda")  # the skips as they apply on a GPU
    runnable = [j for j in jobs if j.backend == "reference" or BACKENDS[j.backend].skip(j.case, cuda) is None]
    seconds = START_AND_REPORT_S
    if any(j.kind == "bench" and j.backend in CUDNN_BACKENDS for j in runnable):
        seconds += PROBE_PROCESS_S
    first_jit, probed, references = set(), set(), set()
    for job in runnable:
        if job.kind == "stability":
            seconds += stability_seconds(job, scenario)
            if (job.radius, job.case.seq_len) not in references:
                references.add((job.radius, job.case.seq_len))
                seconds += REFERENCE_US_PER_STEP * job.case.seq_len / 1e6
            continue
        seconds += training_seconds(job, scenario) if job.kind == "training" else bench_seconds(job, scenario)
        shape = (job.backend, job.dtype, job.mode, job.case.batch, job.case.hidden)
        if job.backend in CUDNN_BACKENDS and shape not in probed:
            probed.add(shape)
            seconds += ALGORITHM_PROBE_S
        if job.backend.startswith("triton") and (job.backend, job.dtype, job.case.hidden) not in first_jit:
            first_jit.add((job.backend, job.dtype, job.case.hidden))
            seconds += FIRST_JIT_S
    return seconds


def eta_line(scenario, jobs: list, device) -> str:
    """The line printed when a run starts."""
    if device.type != "cuda":
        return (f"{len(jobs)} jobs to run; no time estimate on CPU (the Triton interpreter's speed and the "
                f"machine's load vary); the bar shows the rate as it goes")
    minutes = run_seconds(scenario, jobs) / 60
    return (f"{len(jobs)} jobs to run; estimated {minutes:.1f} min on an H100 or H200 (per-step costs measured on an "
            f"H200 on 2026-11-27, compile and launch costs guessed: rnnbench/estimate.py)")
