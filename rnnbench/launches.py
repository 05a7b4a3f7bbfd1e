"""Kernel launches read from a torch.profiler Chrome trace: which ones ran, in which group, and how many.

The trace (`trace_<backend>.json`, optionally gzipped) is the one `rnnbench profile` writes and a
user opens in Perfetto, so every number here can be checked against it. Its host side is a tree of
CPU ranges per thread (`cpu_op` events: dispatched ops, autograd nodes; `user_annotation` events:
`record_function` ranges such as the harness's `rnnbench::<backend>` and `triton::<kernel>`), nested
by time; runtime calls (`cuda_runtime`, `cuda_driver`: cudaLaunchKernel, cuLaunchKernelEx,
cudaGraphLaunch ...) sit inside them.

A *launch* is one piece of device work the call asked for:

- with CUDA: every GPU kernel of the trace (`kernel` events: their name and GPU time), attached to
  the innermost CPU range around the runtime call that launched it (matched by the correlation id).
  Not launches: a user range's span on the GPU timeline (`gpu_user_annotation`, which only
  repeats the time of the kernels inside it), memcpy and memset;
- without CUDA there are no kernels, so launches are *counted* from the CPU ops that would launch
  one on a GPU: every innermost dispatched `aten::` op that computes something (views, allocations
  and 0-dim scalar bookkeeping excluded; a GEMM or a reduction is one whatever it runs inside, as its one kernel
  would be: on CPU addmm copies its bias first, sum fills its output), every Triton kernel launch, which the
  harness marks with a `triton::<kernel>` profiler range (see `triton_launch_ranges`) because the interpreter
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
or inside a `...Backward` node. Device time is the time the GPU was busy with the launches (the
union of their intervals), so it never exceeds the span of the call on the GPU.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

GROUPS = ("input projection", "recurrence", "backward GEMMs", "other")
TRITON_PREFIX = "triton::"
# Ops that launch nothing on a GPU: views, metadata and allocations.
NO_KERNEL_OPS = frozenset(
    "empty empty_like empty_strided new_empty new_empty_strided set_ view _unsafe_view view_as as_strided reshape "
    "_reshape_alias t transpose permute expand expand_as select slice narrow split split_with_sizes unbind chunk "
    "squeeze unsqueeze flatten unflatten detach detach_ alias lift_fresh resolve_conj resolve_neg contiguous to "
    "cudnn_is_acceptable is_nonzero result_type size stride numel is_same_size _local_scalar_dense item "
    "_has_compatible_shallow_copy_type dropout is_leaf output_nr _version".split())
GEMM_OPS = frozenset("mm addmm addmm_ bmm baddbmm baddbmm_ addbmm addbmm_ addmv addmv_ mv dot matmul linear "
                     "_addmm_activation".split())  # in-place forms too: a GEMM that adds into its input
# Reductions: one kernel on a GPU; on CPU they fill their output first (aten::sum's aten::fill_)
REDUCTION_OPS = frozenset("sum mean prod amax amin max min norm linalg_vector_norm var std".split())
GEMM_KERNEL = re.compile(r"gemm|gemv|xmma|cutlass|cublas|wgmma|mma_|nvjet", re.I)  # nvjet: cuBLAS's sm90 GEMMs
CUDNN_RNN_KERNEL = re.compile(r"rnn|persist", re.I)  # cuDNN's RNN kernels (names vary by version)
BACKWARD_EVENT = re.compile(r"^autograd::engine::evaluate_function|Backward\d*$")
INDUCTOR_CPU_KERNEL = re.compile(r"cpp_fused_")
MIN_SEQ_LEN = 8  # below this the per-step rule may take per-layer work for per-step work
CPU_RANGES = ("cpu_op", "user_annotation")     # trace categories of the host-side tree
LAUNCH_CALLS = ("cuda_runtime", "cuda_driver")  # runtime calls; a kernel names the one that launched it


@dataclass
class Launch:
    """One launch: its name, phase (forward/backward), whether it is a GEMM or an RNN kernel, a
    signature (what must repeat for it to be per step), its time and, for a kernel, when it started."""
    name: str
    phase: str
    gemm: bool
    rnn_kernel: bool
    signature: tuple
    time_us: float
    start_us: float = 0.0  # on the trace's clock (GPU kernels only)
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


# ---- reading the trace -----------------------------------------------------------------------

def load_trace(path: str | Path) -> list[dict]:
    """The events of a Chrome trace file written by torch.profiler (.json, or .json.gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


@dataclass(eq=False)
class Range:
    """A CPU range of the trace (an op or a user range) with the ranges inside it."""
    name: str
    start: float
    end: float
    shapes: tuple                         # its tensor inputs' dims (each tensor of a list input too)
    has_shapes: bool                      # the op recorded its inputs' dims
    parent: Range | None = None
    children: list = field(default_factory=list)


def _shapes(dims) -> tuple:
    """"Input Dims" as a tuple of tensor shapes: [4, 8] is a tensor's, [[4, 8], [4, 8]] a tensor list's."""
    out = []
    for arg in dims or []:
        if isinstance(arg, list) and all(isinstance(x, int) for x in arg):
            out.append(tuple(arg))
        elif isinstance(arg, list):
            out += [tuple(t) for t in arg if isinstance(t, list)]
    return tuple(out)


def host_tree(events: list[dict]) -> tuple[list[Range], dict[int, Range]]:
    """(the root CPU ranges of every thread, correlation id of a runtime call -> the innermost range
    around it). Ranges nest by time on their thread: sorted by start, longest first (then by
    External id, which counts up as ops are entered), each lies in the last open one that ends after
    it starts."""
    by_thread = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in CPU_RANGES + LAUNCH_CALLS:
            by_thread[(e["pid"], e["tid"])].append(e)
    roots, launched_in = [], {}
    for items in by_thread.values():
        items.sort(key=lambda e: (e["ts"], -e["dur"], e.get("args", {}).get("External id", 0)))
        open_ranges: list[Range] = []
        for e in items:
            while open_ranges and open_ranges[-1].end <= e["ts"]:
                open_ranges.pop()
            parent = open_ranges[-1] if open_ranges else None
            args = e.get("args", {})
            if e["cat"] in LAUNCH_CALLS:
                if parent is not None and "correlation" in args:
                    launched_in[args["correlation"]] = parent
                continue
            node = Range(e["name"], e["ts"], e["ts"] + e["dur"], _shapes(args.get("Input Dims")),
                         "Input Dims" in args, parent)
            (parent.children if parent else roots).append(node)
            open_ranges.append(node)
    return roots, launched_in


# ---- launches from the tree ------------------------------------------------------------------

def _op(name: str) -> str:
    return name.split("::", 1)[1] if name.startswith("aten::") else name


def _in_backward(node: Range | None) -> bool:
    while node is not None:
        if BACKWARD_EVENT.search(node.name):
            return True
        node = node.parent
    return False


def _kernel_family(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _is_site(node: Range) -> bool:
    """An aten op that would launch a kernel: not a view/allocation, not only on 0-dim scalars.
    The innermost GEMM op is one launch whatever it calls inside (on CPU addmm copies the bias first), and so is a
    reduction (on CPU sum fills its output first)."""
    if INDUCTOR_CPU_KERNEL.search(node.name):
        return True
    if not node.name.startswith("aten::") or _op(node.name) in NO_KERNEL_OPS:
        return False
    return any(len(s) > 0 for s in node.shapes) or not node.has_shapes


def _gemm_below(node: Range) -> bool:
    return _op(node.name) in GEMM_OPS or any(_gemm_below(child) for child in node.children)


def _cpu_sites(node: Range, backward: bool) -> list[Launch]:
    """The innermost launch sites under node (itself if none is deeper)."""
    backward = backward or bool(BACKWARD_EVENT.search(node.name))
    phase = "backward" if backward else "forward"
    duration = node.end - node.start
    if node.name.startswith(TRITON_PREFIX):
        name = node.name[len(TRITON_PREFIX):]
        return [Launch(name, phase, False, name in recurrence_kernel_names(), (phase, name), duration)]
    gemm = _op(node.name) in GEMM_OPS
    whole = _op(node.name) in REDUCTION_OPS or (gemm and not any(_gemm_below(child) for child in node.children))
    sites = [] if whole else [s for child in node.children for s in _cpu_sites(child, backward)]
    if sites or not _is_site(node):
        return sites
    signature = (phase, _kernel_family(node.name), node.shapes)
    return [Launch(node.name, phase, gemm, False, signature, duration)]


def recurrence_kernel_names() -> set[str]:
    """The names of the tiers' recurrence kernels (kernels.dispatch.TIERS). The other Triton kernels of `kernels`
    (the resident tier's copies of its tensors into fragment order and back) count as other launches."""
    from kernels.dispatch import TIERS
    return {kernel.__name__ for tier in TIERS.values() for kernel in tier.kernels}


def gpu_kernel_names(events: list[dict]) -> list[str]:
    """The names of the GPU kernels of a trace, in the order they ran."""
    return [e["name"] for e in sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])]


# ---- which algorithm cuDNN ran ---------------------------------------------------------------
# Read from the kernel names of a profiled call (H100, cuDNN 9.19, gpu-runs/2026-11-25-h100):
# persistent kernels are RNN_blockPersist_* (U in one CTA's registers), RNN_persist_* (U over
# several CTAs) and their persistRNN_* helpers; the STANDARD algorithm launches a GEMM plus
# elemWiseRNNcell per step forward and RNN_elementWise_bp* / GENERIC_elementWise_bp* backward.
CUDNN_PERSISTENT_KERNEL = re.compile(r"persist", re.I)
CUDNN_STANDARD_KERNEL = re.compile(r"elemWiseRNNcell|RNN_elementWise|GENERIC_elementWise")
CUDNN_BACKWARD_KERNEL = re.compile(r"_bp|bp\d|backward|bwd", re.I)
ALGORITHM_NOTE = "cuDNN algorithm: "


def cudnn_algorithm(kernel_names: list[str]) -> str:
    """"cuDNN algorithm: <persistent|standard|persistent forward, standard backward|unknown> (kernels)"
    from the kernel names of one call of torch.nn.RNN on CUDA."""
    phases: dict[str, str] = {}
    seen: dict[str, None] = {}
    for name in kernel_names:
        kind = ("persistent" if CUDNN_PERSISTENT_KERNEL.search(name) else
                "standard" if CUDNN_STANDARD_KERNEL.search(name) else None)
        if kind is None:
            continue
        phase = "backward" if CUDNN_BACKWARD_KERNEL.search(name) else "forward"
        if phases.get(phase) != "persistent":
            phases[phase] = kind
        seen[short_kernel_name(name)] = None
    if not phases:
        return f"{ALGORITHM_NOTE}unknown (no cuDNN RNN kernel among {len(kernel_names)} kernels)"
    kinds = set(phases.values())
    algorithm = kinds.pop() if len(kinds) == 1 else ", ".join(f"{phases[p]} {p}" for p in ("forward", "backward"))
    per_step = " + a GEMM per step" if "standard" in phases.values() else ""
    return f"{ALGORITHM_NOTE}{algorithm} ({', '.join(seen)}{per_step})"


def algorithm_of(note: str) -> str | None:
    """The algorithm named in a row's note by cudnn_algorithm, or None."""
    for part in note.split("; "):
        if part.startswith(ALGORITHM_NOTE):
            return part[len(ALGORITHM_NOTE):].split(" (")[0]
    return None


def short_kernel_name(name: str) -> str:
    """A kernel's name without `void`, template arguments and parameters."""
    return re.sub(r"^void\s+", "", name).split("<")[0].split("(")[0]


def _gpu_kernels(events: list[dict], launched_in: dict[int, Range]) -> list[Launch]:
    """Every GPU kernel, attached to the range that launched it. A kernel whose launch call is not in
    the trace is classified by its name alone, its phase guessed from the name."""
    ours = recurrence_kernel_names()
    out = []
    for e in events:
        if e.get("cat") != "kernel":
            continue
        name = e["name"]
        site = launched_in.get(e.get("args", {}).get("correlation"))
        if site is None:
            phase = "backward" if "backward" in name.lower() else "forward"
            gemm, signature = bool(GEMM_KERNEL.search(name)), (phase, _kernel_family(name))
        else:
            phase = "backward" if _in_backward(site) else "forward"
            gemm = bool(GEMM_KERNEL.search(name)) or _op(site.name) in GEMM_OPS
            signature = (phase, _kernel_family(name), site.name, site.shapes)
        rnn = name in ours or bool(CUDNN_RNN_KERNEL.search(name))
        out.append(Launch(name, phase, gemm, rnn, signature, e["dur"], e["ts"]))
    return out


def launches(events: list[dict], on_cuda: bool, seq_len: int) -> list[Launch]:
    """The launches of one profiled call of seq_len steps (the events of its trace), each with its
    group (see the module docstring)."""
    roots, launched_in = host_tree(events)
    found = _gpu_kernels(events, launched_in) if on_cuda else [s for root in roots for s in _cpu_sites(root, False)]
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


def busy_us(found: list[Launch]) -> float:
    """Time the device was busy with these kernels: the union of their intervals (kernels on
    several streams may overlap, so this is at most the sum of their times)."""
    busy, end = 0.0, float("-inf")
    for launch in sorted(found, key=lambda la: la.start_us):
        stop = launch.start_us + launch.time_us
        covered = max(0.0, min(end, stop) - launch.start_us)  # by kernels that started earlier
        busy += max(0.0, launch.time_us - covered)  # durations, not differences of large timestamps
        end = max(end, stop)
    return busy


def accounting(found: list[Launch], seq_len: int) -> dict:
    """Launch counts (all, and per group) and time per group, with the per-step ratios."""
    per_group = Counter(launch.group for launch in found)
    time_us = {group: sum(la.time_us for la in found if la.group == group) for group in GROUPS}
    return {"launches": len(found), "launches_per_step": len(found) / seq_len,
            "recurrence_launches": per_group["recurrence"],
            "recurrence_launches_per_step": per_group["recurrence"] / seq_len,
            "launches_by_group": {group: per_group[group] for group in GROUPS},
            "time_us_by_group": time_us}
