"""What a run ran on: device, driver, CUDA, torch, triton and cuDNN versions, git commit, date."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

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


def capture(device: torch.device, profile: str, allow_tf32: bool, scenario_path: str) -> dict:
    """The environment record stored with every run (environment.json, results.json, report.md)."""
    import triton
    env = {
        "date": now(),
        "device": device.type,
        "device_name": device_name(device),
        "profile": profile,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or ""),
        "driver": "",
        "allow_tf32": allow_tf32,
        "git_commit": git_commit(Path(scenario_path).resolve().parent),
        "host": platform.node(),
        "scenario_file": scenario_path,
    }
    if device.type == "cuda":
        env["driver"] = _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return env
