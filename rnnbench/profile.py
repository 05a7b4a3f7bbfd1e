"""`rnnbench profile`: where the time of one case goes, per backend.

For one case, dtype and mode of a scenario, every backend is prepared exactly as `rnnbench run`
prepares it (measure.prepare_call: same weights, inputs and closure), called WARMUP_CALLS times to warm up, then called
once under torch.profiler with Triton launches marked (launches.triton_launch_ranges). From that one
call:

- trace_<backend>.json: the Chrome/Perfetto trace (open it in ui.perfetto.dev or chrome://tracing),
  from which everything below is read (launches.launches);
- the kernel table (launches.kernel_table) and the launch accounting (launches.accounting): launches
  per time step, by group (input projection, recurrence, backward GEMMs, other);
- host time (the CPU returns from the call) vs wall time (the device is done), from separate
  unprofiled calls, and device time (the time the GPU was busy with the call's kernels, CUDA only);
- for the Triton backends, the compile facts of the plans the dispatcher chose (registers, spills,
  shared memory, warps from kernels.audit, compiled in a subprocess without the interpreter for the
  GPU's arch, or for sm_80 and sm_90 without one, so they exist on CPU too) and the occupancy they
  allow (hardware.occupancy);
- CUDA only: latency (triton.testing.do_bench), achieved TFLOP/s and bandwidth against the
  device's datasheet peak (hardware.GPU_PEAKS), and time per step against a floor: the part of the
  triton backend's latency spent in its persistent recurrence kernels (step_floor).

Everything goes to PROFILE_DIR = <run folder>/profile/: the traces, kernels.csv, profile.json and
profile.md (plus where_time_goes.png); `rnnbench report` then adds a "Where the time goes" section.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rnnbench import hardware, launches, measure
from rnnbench.backends import BACKENDS, first_line
from rnnbench.environment import device_name
from rnnbench.schema import Case, Scenario

PROFILE_DIR, PROFILE_JSON, KERNELS_CSV, PROFILE_MD, PLOT_NAME = (
    "profile", "profile.json", "kernels.csv", "profile.md", "where_time_goes.png")
TRITON_BACKENDS = ("triton", "triton-checkpoint", "triton-stepwise")
AUDIT_ARCHS = (80, 90)
# Calls before the profiled one: the first compiles and first-touches (its tensors may sit elsewhere
# than later calls'); the stepwise kernel's T launches are captured into a CUDA graph the second time
# the same tensors come and replayed from then on (kernels/stepwise.py), so the profiled call replays.
WARMUP_CALLS = 3


@dataclass
class Request:
    """What to profile: one case, dtype and mode of a scenario, on these backends."""
    scenario: Scenario
    case: Case
    dtype: str
    mode: str
    backends: list[str]
    device: torch.device
    out: Path                     # the profile folder
    nvtx: bool = False
    compile_facts: bool = True
    command: str = ""             # the command line that made it, for the record
    notes: list[str] = field(default_factory=list)


# ---- one backend -----------------------------------------------------------------------------

def profile_call(call, device: torch.device, trace: Path, nvtx: bool, label: str) -> None:
    """One call under torch.profiler (CPU, plus CUDA where present), written as a Chrome trace."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    ranged_nvtx = nvtx and device.type == "cuda"
    with launches.triton_launch_ranges(nvtx=ranged_nvtx), \
            torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        with torch.profiler.record_function(f"rnnbench::{label}"), launches.nvtx_range(
                f"rnnbench/{label}" if ranged_nvtx else None):
            call()
        measure.sync(device)
    prof.export_chrome_trace(str(trace))


def inductor_kernel_events(backend: str, device: torch.device):
    """For torch.compile on CPU, Inductor's `cpp.enable_kernel_profile` while it compiles, so that its
    fused C++ kernels appear as profiler events (a record_function each; on CUDA its Triton kernels
    are recorded anyway); else None. Only the code compiled for this profile is affected."""
    if backend != "compile" or device.type != "cpu":
        return None
    try:
        from torch._inductor import config
        return config.patch({"cpp.enable_kernel_profile": True})
    except (ImportError, AttributeError, KeyError, RuntimeError):  # an Inductor without it
        return None


def cudnn_algorithm(backend: str, case: Case, dtype: str, mode: str, device: torch.device, nonlinearity: str,
                    seed: int) -> str:
    """Which algorithm cuDNN runs for this job (launches.cudnn_algorithm), read from the kernels of
    one profiled call, in this process (rnnbench.cudnn_probe runs it in a child for `rnnbench run`)."""
    measured = measure.prepare_call(backend, case, dtype, mode, device, nonlinearity, seed)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        profile_call(measured.call, device, trace, nvtx=False, label=backend)
        return launches.cudnn_algorithm(launches.gpu_kernel_names(launches.load_trace(trace)))


def profile_backend(name: str, req: Request) -> dict:
    """The profile record of one backend (see the module docstring); a backend that cannot run
    here, is skipped for this case or fails gives a record with status and reason instead."""
    backend = BACKENDS[name]
    record = {"backend": name, "label": backend.label(req.device), "status": "ok", "error": ""}
    for status, reason in (("unavailable", backend.unavailable(req.device)),
                           ("skipped", backend.skip(req.case, req.device))):
        if reason:
            return record | {"status": status, "error": reason}
    try:
        record.update(_measure(name, req))
    except Exception as err:  # one failing backend must not stop the others
        record.update(status="failed", error=f"{type(err).__name__}: {first_line(err)}")
    fault = measure.barrier_fault()  # a split call's barrier that gave up, read only now (kernels/barrier_status.py)
    return record | {"status": "failed", "error": fault} if fault else record


def _measure(name: str, req: Request) -> dict:
    sc, case = req.scenario, req.case
    measured = measure.prepare_call(name, case, req.dtype, req.mode, req.device, sc.nonlinearity, sc.seed,
                                    WARMUP_CALLS, inductor_kernel_events(name, req.device))
    prepared, call = measured.prepared, measured.call
    on_cuda = req.device.type == "cuda"
    trace = req.out / f"trace_{name}.json"
    profile_call(call, req.device, trace, req.nvtx, name)
    found = launches.launches(launches.load_trace(trace), on_cuda, case.seq_len)
    host, wall = measure.host_and_wall_ms(call, req.device)
    record = {"note": prepared.note(), "trace": trace.name, "time_source": "cuda" if on_cuda else "cpu",
              "host_ms": statistics.median(host), "wall_ms": statistics.median(wall),
              "device_ms": launches.busy_us(found) / 1e3 if on_cuda else None,
              "kernels": launches.kernel_table(found), **launches.accounting(found, case.seq_len)}
    if on_cuda:
        latency, _ = measure.time_call(call, req.device, sc.timing)
        record["efficiency"] = efficiency(case, req.mode, req.dtype, latency[1], req.device, sc.allow_tf32)
    if name in TRITON_BACKENDS and req.compile_facts:
        plans = [p for p in record["note"].split("; ") if p]
        record["compile_facts"] = compile_facts(plans, req.dtype, sc.nonlinearity, req.device)
    return record


# ---- GPU efficiency --------------------------------------------------------------------------

def efficiency(case: Case, mode: str, dtype: str, latency_ms: float, device: torch.device, allow_tf32: bool) -> dict:
    """Achieved TFLOP/s and bandwidth (compulsory bytes) at the p50 latency, against the datasheet peaks."""
    seconds = latency_ms / 1e3
    tflops = measure.flops(case, mode) / seconds / 1e12
    gbs = hardware.compulsory_bytes(case, mode, getattr(torch, dtype).itemsize) / seconds / 1e9
    gpu = hardware.known_gpu(device_name(device))
    out = {"latency_ms": latency_ms, "time_per_step_us": latency_ms * 1e3 / case.seq_len, "tflops": tflops,
           "bandwidth_gbs": gbs, "gpu": gpu}
    if gpu:
        peak = hardware.peak_tflops(gpu, dtype, allow_tf32)
        out.update(peak_tflops=peak, tflops_share=tflops / peak,
                   peak_bandwidth_gbs=hardware.GPU_PEAKS[gpu]["bandwidth_gbs"],
                   bandwidth_share=gbs / hardware.GPU_PEAKS[gpu]["bandwidth_gbs"])
    return out


def step_floor(records: list[dict], seq_len: int) -> dict | None:
    """The floor of time per step: the part of the triton backend's latency (p50, do_bench) spent in
    its persistent recurrence kernels, i.e. that latency times their share of its GPU busy time in
    the profiled call. Both come from the same backend, so the floor never exceeds its latency.
    The kernels' own profiled time is kept beside it but is not the floor: one profiled call can run
    slower than do_bench's steady state (H100, T=4096 B=8 H=256 bf16: 5.72 vs 5.51 us per step for
    the whole call). None without CUDA or when the triton backend ran no persistent plan."""
    ours = launches.recurrence_kernel_names()
    for record in records:
        if record["backend"] != "triton" or record.get("time_source") != "cuda" or "stepwise" in record["note"]:
            continue
        persistent_us = sum(k["total_us"] for k in record["kernels"] if k["kernel"] in ours)
        if persistent_us:
            share = min(1.0, persistent_us / (record["device_ms"] * 1e3))  # one stream: min only absorbs rounding
            return {"us_per_step": record["efficiency"]["time_per_step_us"] * share, "share": share,
                    "profiled_us_per_step": persistent_us / seq_len,
                    "what": f"the triton backend's p50 time per step x the share of its GPU busy time spent in its "
                            f"persistent recurrence kernels ({100 * share:.1f}%; {record['note']}; their profiled GPU "
                            f"time alone: {persistent_us / seq_len:.4g} us per step). No input projection, backward "
                            f"GEMMs or host gaps; another backend below 1x is faster than these kernels alone"}
    return None


# ---- compile facts ---------------------------------------------------------------------------

def _device_archs(device: torch.device) -> tuple[int, ...]:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major * 10 + minor in AUDIT_ARCHS:
            return (major * 10 + minor,)
    return AUDIT_ARCHS


def compile_facts(plans: list[str], dtype: str, nonlinearity: str, device: torch.device) -> list[dict]:
    """The compile audit's rows for these plans (every kernel, each target arch), with occupancy."""
    return [_with_occupancy(row, plan) for plan in plans
            for row in _audit(plan, dtype, nonlinearity, _device_archs(device))]


def _audit(plan: str, dtype: str, nonlinearity: str, archs: tuple[int, ...]) -> list[dict]:
    """`python -m kernels.audit --plan ... --json` in a subprocess: kernels cannot be compiled in a
    process whose Triton was imported in interpreter mode, so TRITON_INTERPRET is removed there. The
    subprocess compiles with this process's kernel switches (another fp32 product, say)."""
    from kernels.audit import switch_arguments
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        arch = ["--arch", str(archs[0])] if len(archs) == 1 else []
        proc = subprocess.run([sys.executable, "-m", "kernels.audit", "--plan", plan, "--dtype", dtype,
                               "--nonlinearity", nonlinearity, *arch, *switch_arguments(), "--jobs", "2",
                               "--json", str(out)],
                              env=env, capture_output=True, text=True, timeout=600)
        if not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            error = f"audit failed: {tail[-1] if tail else proc.returncode}"
            return [{"plan": plan, "arch": a, "kernel": "", "error": error} for a in archs]
        return json.loads(out.read_text())


def kernel_pass(kernel: str, config: str) -> str:
    """'forward' or 'backward': told by the kernel's name, or (step_kernel serves both) by its BACKWARD flag."""
    return "backward" if "backward" in kernel or "BACKWARD=True" in config.split(",") else "forward"


def _with_occupancy(row: dict, plan: str) -> dict:
    keep = ("kernel", "arch", "registers", "spill_bytes", "shared", "num_warps", "loop_instructions", "stall_cycles",
            "bar_per_step", "smem_wavefronts", "bank_conflicts", "status", "config", "error")
    out = {k: row.get(k) for k in keep} | {"plan": plan, "tier": plan.split("(")[0],
                                             "pass": kernel_pass(row.get("kernel", ""), row.get("config", ""))}
    if not row.get("error") and row.get("registers", -1) > 0:
        out.update(hardware.occupancy(row["registers"], row["shared"], row["num_warps"], row["arch"]))
    return out


# ---- the whole profile -----------------------------------------------------------------------

def ncu_command(req: Request, records: list[dict], scenario_path: str, case_spec: str) -> str | None:
    """The Nsight Compute command line for the forward recurrence kernel the triton backend ran."""
    ours = launches.recurrence_kernel_names()
    ran = [k["kernel"] for r in records if r["backend"] == "triton" for k in r.get("kernels", [])
           if k["kernel"] in ours]
    kernel = next((k for k in ran if "forward" in k), ran[0] if ran else None)
    if kernel is None:
        return None
    return (f"ncu --set full --nvtx --kernel-name regex:{kernel} --launch-count 1 "
            f"-o {req.out / 'ncu_triton'} {sys.executable} -m rnnbench profile {scenario_path} "
            f"--case {case_spec} --backend triton --dtype {req.dtype} --mode {req.mode} --nvtx "
            f"--no-compile-facts --out {req.out / 'ncu-run'}")


def run(req: Request, scenario_path: str, case_spec: str, progress: bool = True) -> dict:
    """Profiles every requested backend and writes the profile folder; returns profile.json's data."""
    req.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.allow_tf32 = req.scenario.allow_tf32  # as `rnnbench run` does
    torch.backends.cuda.matmul.allow_tf32 = req.scenario.allow_tf32
    records = []
    for i, name in enumerate(req.backends, 1):
        if progress:
            print(f"[{i}/{len(req.backends)}] {name}: profiling {req.mode} {req.dtype} {req.case.label} ...",
                  flush=True)
        started = time.perf_counter()
        records.append(profile_backend(name, req))
        if progress:
            r = records[-1]
            what = (f"{r['launches']} launches ({r['launches_per_step']:.3g} per step)" if r["status"] == "ok"
                    else f"{r['status']}: {r['error']}")
            print(f"      {what} [{time.perf_counter() - started:.1f} s]", flush=True)
    data = {"scenario": req.scenario.name, "sweep": req.scenario.sweep, "case": asdict(req.case),
            "mode": req.mode, "dtype": req.dtype, "nonlinearity": req.scenario.nonlinearity,
            "device": req.device.type, "device_name": device_name(req.device),
            "gpu": hardware.known_gpu(device_name(req.device)) if req.device.type == "cuda" else None,
            "floor": step_floor(records, req.case.seq_len),
            "ncu_command": ncu_command(req, records, scenario_path, case_spec),
            "nvtx": req.nvtx and req.device.type == "cuda", "command": req.command, "notes": req.notes,
            "backends": records}
    (req.out / PROFILE_JSON).write_text(json.dumps(data, indent=1))
    write_kernels_csv(req.out / KERNELS_CSV, records)
    return data


KERNEL_COLUMNS = ["backend", "kernel", "group", "calls", "total_us", "mean_us", "share", "time_source"]


def write_kernels_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, KERNEL_COLUMNS)
        writer.writeheader()
        for record in records:
            for row in record.get("kernels", []):
                writer.writerow(row | {"backend": record["backend"], "time_source": record["time_source"]})


def load(run_dir: str | Path) -> dict | None:
    """profile/profile.json of a run folder, or None when it has none."""
    path = Path(run_dir) / PROFILE_DIR / PROFILE_JSON
    return json.loads(path.read_text()) if path.exists() else None
