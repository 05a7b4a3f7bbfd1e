"""What a run ran on: device, driver, CUDA, torch, triton and cuDNN versions, the SMs and the thread-block
clusters they run at once, the CPU threads and how busy the machine was, git commit of the code, date."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from rnnbench.measure import cpu_clock
from rnnbench.results import now


def _command(args: list[str], cwd: Path | None = None) -> str:
    """First line of a command's output, or "" when it is missing or fails."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20, cwd=cwd, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def git_commit(where: Path) -> str:
    commit = _command(["git", "rev-parse", "HEAD"], where)
    if commit and _command(["git", "status", "--porcelain", "--untracked-files=no"], where):
        commit += " (with uncommitted changes)"
    return commit or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


CODE_DIR = Path(__file__).resolve().parent  # git_commit is the code's, wherever the scenario lies


def cpu_facts(device: torch.device, threads: int) -> dict:
    """The CPU threads the run uses (pinned on CPU, see measure.pinned_threads), the clock of CPU
    timings, the cores this process may use and the load average when it started: a loaded machine
    explains noisy rows."""
    return {"cpu_threads": threads if device.type == "cpu" else torch.get_num_threads(),
            "cpu_timing": cpu_clock(threads)[1] if device.type == "cpu" else "",
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else ""}


def cluster_counts(device: torch.device) -> str:
    """How many thread-block clusters of 2-16 CTAs, one per SM, the GPU runs at once, as "size: count" pairs (the
    split tier's cluster plans follow them: kernels/occupancy.py); "" before sm_90 and off CUDA. Asked of the driver in
    a child process, so that a driver failure cannot stop the run: "unknown" then."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 9:
        return ""
    from kernels.runtime import cuda_index
    script = f"from kernels.occupancy import counts_by_size; print(counts_by_size({cuda_index(device)}))"
    return _command([sys.executable, "-c", script]) or "unknown (the driver's count failed)"


def capture(device: torch.device, scenario, scenario_path: str) -> dict:
    """The environment record stored with every run (environment.json, results.json, report.md)."""
    import triton
    env = {
        "date": now(),
        "device": device.type,
        "device_name": device_name(device),
        "sweep": scenario.sweep,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or ""),
        "driver": "",
        "sm_count": "",
        "clusters_at_once": "",
        "allow_tf32": scenario.allow_tf32,
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") if device.type == "cuda" else "",
        **cpu_facts(device, scenario.timing.cpu_threads),
        "git_commit": git_commit(CODE_DIR),
        "host": platform.node(),
        "scenario_file": scenario_path,
    }
    if device.type == "cuda":
        env["driver"] = _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        env["sm_count"] = torch.cuda.get_device_properties(device).multi_processor_count
        env["clusters_at_once"] = cluster_counts(device)
    return env
