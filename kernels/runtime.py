"""Where the Triton kernels can run: compiled on a CUDA GPU, or in Triton's CPU interpreter.

The interpreter is chosen by the environment variable TRITON_INTERPRET=1, which Triton reads when
the kernels are *defined* (at `import kernels`), so it must be set before that import.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .occupancy import max_active_clusters

PLANNING_SM_COUNT = 132  # an H100's, for plans made without a CUDA device
PLANNING_ARCH = 90       # and its compute capability

INTERPRET_HINT = ("set TRITON_INTERPRET=1 before importing kernels to run the Triton kernels in the CPU "
                  "interpreter (slow; meant for tests and small cases), or move the model to a CUDA GPU")


def interpreting() -> bool:
    """True when TRITON_INTERPRET is set to a true value (the kernels then run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_mode(device: torch.device | str | None = None) -> str | None:
    """'interpreter', 'cuda' or None (the kernels cannot run on this device here)."""
    if interpreting():
        return "interpreter"
    device = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        return "cuda"
    return None


def launching_on(device: torch.device):
    """The context in which Triton launches on device: it launches on the current device's stream, which need not be
    the device the tensors are on (a model on cuda:1 while torch.cuda.current_device() is 0)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def capturing(device: torch.device) -> bool:
    """Whether the current stream of a CUDA device is being captured into a CUDA graph: no host sync, and no launch
    that should not be recorded, may happen then."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def require_runtime(device: torch.device) -> str:
    """triton_mode(device), or a RuntimeError that says what to do."""
    mode = triton_mode(device)
    if mode is None:
        raise RuntimeError(f"the Triton RNN kernels cannot run on device '{device}' here: {INTERPRET_HINT}")
    return mode


def device_facts(device: torch.device | str | None) -> tuple[int, int]:
    """(SM count, compute capability as 80, 90, ...) of a CUDA device; an H100's for plans made without one."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.multi_processor_count, props.major * 10 + props.minor
    return PLANNING_SM_COUNT, PLANNING_ARCH


def l2_cache_bytes(device: torch.device | str) -> int:
    """The L2 cache's size of a CUDA device; 0 elsewhere."""
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).L2_cache_size if device.type == "cuda" else 0


def co_resident_programs(device: torch.device | str | None) -> int:
    """Programs that can run at the same time on device: one per SM on a GPU (the split tier's rule; an H100's
    for plans made without a device); one in the interpreter, which runs the programs of a grid one after another."""
    if device is not None and torch.device(device).type != "cuda":
        return 1
    return device_facts(device)[0]


def co_resident_clusters(device: torch.device | str | None, cluster: int, sm_count: int) -> int:
    """Clusters of `cluster` programs, one per SM, that can run at the same time on device: on a CUDA GPU the
    driver's count (occupancy.py: a cluster runs whole in one GPC, and GPCs differ in their SMs), at most
    sm_count // cluster; elsewhere (plans made without a device) that bound itself."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda":
        return sm_count // cluster
    return min(max_active_clusters(cuda_index(device), cluster), sm_count // cluster)


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA device; the current device's for plain "cuda"."""
    return device.index if device.index is not None else torch.cuda.current_device()
