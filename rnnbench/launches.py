"""Kernel launches read from torch.profiler's events: which ones ran, in which group, and how many.

A *launch* is one piece of device work the call asked for:

- with CUDA: every GPU kernel the profiler recorded (its name and its GPU time), attached to the CPU
  op that launched it;
- without CUDA there are no kernels, so launches are *counted* from the CPU ops that would launch
  one on a GPU: every innermost dispatched `aten::` op that computes something (views, allocations
  and 0-dim scalar bookkeeping excluded), every Triton kernel launch, which the harness marks
  with a `triton::<kernel>` profiler range (see `triton_launch_ranges`) because the interpreter
  leaves no event of its own, and every fused C++ kernel of torch.compile (`..cpp_fused_..`, recorded
  when Inductor's `cpp.enable_kernel_profile` is on). Their time is CPU time, not GPU time.

Each launch goes into one group, by these rules in order:

1. recurrence: a Triton kernel of `kernels` or a cuDNN RNN kernel (by name), or any launch that repeats with
   the time loop: the same op or kernel (its name without a trailing `_<number>`, which torch.compile
   appends to each copy of a fused kernel) with the same shapes at least T - 1 times (at least
   twice); one less than T because the first or last step may skip an op (no gradient flows into h_0).
   This needs T well above the number of layers (an op done once per layer and pass must not reach
   T - 1 copies): `MIN_SEQ_LEN` and more;
2. input projection: a GEMM in the forward pass that is not per step (x W_ih^T over all T at once);
3. backward GEMMs: a GEMM in the backward pass that is not per step (dW_ih, dU, dX over all T);
4. other: the rest (bias adds, stacking the outputs, gradient accumulation, copies).

The backward pass is whatever runs under autograd's engine (`autograd::engine::evaluate_function`)
or inside a `...Backward` node.
"""
from __future__ import annotations

import contextlib
import re
import sys
from collections import Counter
from dataclasses import dataclass

import torch

GROUPS = ("input projection", "recurrence", "backward GEMMs", "other")
TRITON_PREFIX = "triton::"
# Ops that launch nothing on a GPU: views, metadata and allocations.
NO_KERNEL_OPS = frozenset(
    "empty empty_like empty_strided new_empty new_empty_strided set_ view _unsafe_view view_as as_strided reshape "
    "_reshape_alias t transpose permute expand expand_as select slice narrow split split_with_sizes unbind chunk "
    "squeeze unsqueeze flatten unflatten detach detach_ alias lift_fresh resolve_conj resolve_neg contiguous to "
    "cudnn_is_acceptable is_nonzero result_type size stride numel is_same_size _local_scalar_dense item "
    "_has_compatible_shallow_copy_type dropout".split())
GEMM_OPS = frozenset("mm addmm bmm baddbmm addmv mv dot matmul linear _addmm_activation".split())
GEMM_KERNEL = re.compile(r"gemm|xmma|cutlass|cublas|wgmma|mma_", re.I)
CUDNN_RNN_KERNEL = re.compile(r"rnn|persist", re.I)  # cuDNN's RNN kernels (names vary by version)
BACKWARD_EVENT = re.compile(r"^autograd::engine::evaluate_function|Backward\d*$")
INDUCTOR_CPU_KERNEL = re.compile(r"cpp_fused_")
MIN_SEQ_LEN = 8  # below this the per-step rule may take per-layer work for per-step work


@dataclass
class Launch:
    """One launch: its name, phase (forward/backward), whether it is a GEMM or an RNN kernel, a
    signature (what must repeat for it to be per step), its time and where the time was taken."""
    name: str
    phase: str
    gemm: bool
    rnn_kernel: bool
    signature: tuple
    time_us: float
    group: str = ""


# ---- instrumentation: Triton launches as profiler ranges -------------------------------------

def _triton_kernels() -> list:
    """Every Triton kernel object defined in the loaded `kernels` modules."""
    from triton.runtime.jit import KernelInterface
    found = {}
    for name, module in list(sys.modules.items()):
        if name == "kernels" or name.startswith("kernels."):
            for obj in vars(module).values():
                if isinstance(obj, KernelInterface):
                    found[id(obj)] = obj
    return list(found.values())


@contextlib.contextmanager
def triton_launch_ranges(nvtx: bool = False):
    """While active, every launch `kernel[grid](...)` of a Triton kernel in `kernels` runs inside a
    `triton::<kernel name>` torch.profiler range (and an NVTX range of the same name when nvtx is
    true, for Nsight). It works by giving each kernel object its own `run` for the duration, the
    method `kernel[grid]` calls in Triton 3.x; outside this context nothing is wrapped or paid."""
    kernels = _triton_kernels()
    saved = [vars(kernel).get("run") for kernel in kernels]
    for kernel in kernels:
        kernel.run = _ranged_run(kernel.run, TRITON_PREFIX + kernel.__name__, nvtx)
    try:
        yield
    finally:
        for kernel, run in zip(kernels, saved):
            if run is None:
                del kernel.run
            else:
                kernel.run = run


def _ranged_run(run, label: str, nvtx: bool):

    def ranged(*args, **kwargs):
        if kwargs.get("warmup"):
            return run(*args, **kwargs)
        with torch.profiler.record_function(label), nvtx_range(label if nvtx else None):
            return run(*args, **kwargs)
    return ranged


@contextlib.contextmanager
def nvtx_range(label: str | None):
    """An NVTX range (CUDA only) around the block; nothing when label is None."""
    if label is None:
        yield
        return
    torch.cuda.nvtx.range_push(label)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


# ---- reading the events ----------------------------------------------------------------------

def _op(name: str) -> str:
    return name.split("::", 1)[1] if name.startswith("aten::") else name


def _in_backward(event) -> bool:
    while event is not None:
        if BACKWARD_EVENT.search(event.name):
            return True
        event = event.cpu_parent
    return False


def _shapes(event) -> tuple:
    return tuple(tuple(s) for s in (event.input_shapes or []) if isinstance(s, (list, tuple)))


def _kernel_family(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _is_site(event) -> bool:
    """An aten op that would launch a kernel: not a view/allocation, not only on 0-dim scalars.
    The innermost GEMM op is one launch whatever it calls inside (on CPU addmm copies the bias first)."""
    if INDUCTOR_CPU_KERNEL.search(event.name):
        return True
    if not event.name.startswith("aten::") or _op(event.name) in NO_KERNEL_OPS:
        return False
    return any(len(s) > 0 for s in _shapes(event)) or not event.input_shapes


def _gemm_below(event) -> bool:
    return _op(event.name) in GEMM_OPS or any(_gemm_below(child) for child in event.cpu_children)


def _cpu_sites(event, backward: bool) -> list[Launch]:
    """The innermost launch sites under event (itself if none is deeper)."""
    backward = backward or bool(BACKWARD_EVENT.search(event.name))
    phase = "backward" if backward else "forward"
    if event.name.startswith(TRITON_PREFIX):
        name = event.name[len(TRITON_PREFIX):]
        return [Launch(name, phase, False, True, (phase, name), event.cpu_time_total)]
    gemm = _op(event.name) in GEMM_OPS
    leaf_gemm = gemm and not any(_gemm_below(child) for child in event.cpu_children)
    sites = [] if leaf_gemm else [s for child in event.cpu_children for s in _cpu_sites(child, backward)]
    if sites or not _is_site(event):
        return sites
    signature = (phase, _kernel_family(event.name), _shapes(event))
    return [Launch(event.name, phase, gemm, False, signature, event.cpu_time_total)]


def triton_kernel_names() -> set[str]:
    return {kernel.__name__ for kernel in _triton_kernels()}


def _cuda_sites(events) -> list[Launch]:
    """Every GPU kernel, attached to the CPU op that launched it."""
    ours = triton_kernel_names()
    out = []
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        for kernel in event.kernels:
            if kernel.name.startswith(("Memcpy", "Memset")):
                continue
            phase = "backward" if _in_backward(event) else "forward"
            gemm = bool(GEMM_KERNEL.search(kernel.name)) or _op(event.name) in GEMM_OPS
            rnn = kernel.name in ours or bool(CUDNN_RNN_KERNEL.search(kernel.name))
            out.append(Launch(kernel.name, phase, gemm, rnn,
                              (phase, _kernel_family(kernel.name), event.name, _shapes(event)), kernel.duration))
    return out + _unattached_kernels(events, out, ours)


def _unattached_kernels(events, attached: list[Launch], ours: set[str]) -> list[Launch]:
    """GPU kernels the profiler could not link to a CPU op (e.g. a launch through the driver API
    that CUPTI did not correlate): classified by their name alone, phase guessed from the name."""
    device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
              and not e.name.startswith(("Memcpy", "Memset"))]
    surplus = Counter(e.name for e in device) - Counter(launch.name for launch in attached)
    out = []
    for event in device:
        if surplus[event.name] > 0:
            surplus[event.name] -= 1
            phase = "backward" if "backward" in event.name.lower() else "forward"
            rnn = event.name in ours or bool(CUDNN_RNN_KERNEL.search(event.name))
            out.append(Launch(event.name, phase, bool(GEMM_KERNEL.search(event.name)), rnn,
                              (phase, _kernel_family(event.name)), event.time_range.elapsed_us()))
    return out


def launches(events, on_cuda: bool, seq_len: int) -> list[Launch]:
    """The launches of one profiled call of seq_len steps, each with its group (see the module docstring)."""
    if on_cuda:
        found = _cuda_sites(events)
    else:
        roots = [e for e in events if e.cpu_parent is None and e.device_type == torch.autograd.DeviceType.CPU]
        found = [s for root in roots for s in _cpu_sites(root, False)]
    counts = Counter(launch.signature for launch in found)
    threshold = max(2, seq_len - 1)  # the first or last step may skip an op (no gradient flows into h0)
    for launch in found:
        launch.group = _group(launch, seq_len > 1 and counts[launch.signature] >= threshold)
    return found


def _group(launch: Launch, per_step: bool) -> str:
    if launch.rnn_kernel or per_step:
        return "recurrence"
    if launch.gemm:
        return "input projection" if launch.phase == "forward" else "backward GEMMs"
    return "other"


# ---- summaries -------------------------------------------------------------------------------

def kernel_table(found: list[Launch]) -> list[dict]:
    """A row per (kernel or op name, group): calls, total and mean time (us), share of the total time;
    largest first."""
    total = sum(launch.time_us for launch in found) or 1.0
    rows: dict[tuple, dict] = {}
    for launch in found:
        row = rows.setdefault((launch.name, launch.group), {"kernel": launch.name, "group": launch.group,
                                                            "calls": 0, "total_us": 0.0})
        row["calls"] += 1
        row["total_us"] += launch.time_us
    for row in rows.values():
        row["mean_us"] = row["total_us"] / row["calls"]
        row["share"] = row["total_us"] / total
    return sorted(rows.values(), key=lambda r: -r["total_us"])


def accounting(found: list[Launch], seq_len: int) -> dict:
    """Launch counts (all, and per group) and time per group, with the per-step ratios."""
    per_group = Counter(launch.group for launch in found)
    time_us = {group: sum(la.time_us for la in found if la.group == group) for group in GROUPS}
    return {"launches": len(found), "launches_per_step": len(found) / seq_len,
            "recurrence_launches": per_group["recurrence"],
            "recurrence_launches_per_step": per_group["recurrence"] / seq_len,
            "launches_by_group": {group: per_group[group] for group in GROUPS},
            "time_us_by_group": time_us}
