"""The layer's host path on a CPU without Triton's interpreter: every Triton launch stubbed to the host work before it.

A plain call of the layer on a GPU is often decided by its host work (Python, torch's ops, each launch's binding of its
arguments), but on a CPU-only machine the kernels run in Triton's interpreter, whose time drowns the rest. stubbed()
replaces triton's JITFunction.run, for the calls made inside it, with what the JIT does on the host before each launch
of a compiled kernel: bind the arguments (the binder Triton generates per kernel), specialise them and compute the
kernel cache's key, for an sm_90 target. Nothing is compiled and no kernel runs: the layer's outputs are whatever its
buffers held. torch's ops run on the CPU as they are, GEMMs included (their time on a CPU is not a GPU's: keep the
shapes small). Left out: the driver's launch itself, Triton's launch metadata and its C launcher's packing of the
arguments, and CUDA's allocator and streams; so a time taken here is a lower bound of a GPU host's, for comparing host
paths, not a GPU measurement.

The kernels also ask the device for facts only a GPU has; inside stubbed() a CPU tensor is taken as a GPU's: the
layer's runtime check passes, and the split tier's grid spans an H100's 132 SMs, as planning without a device does.
"""
from __future__ import annotations

import contextlib
from collections import namedtuple
from unittest import mock

from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime import jit

from kernels import autograd, dispatch, split
from kernels.runtime import PLANNING_SM_COUNT

TARGET = GPUTarget("cuda", 90, 32)
Metadata = namedtuple("Metadata", "shared")


class Compiled:
    """What a stubbed launch returns: a compiled kernel's launch metadata as the split tier's cluster launcher reads and
    sets it (packed_metadata: warps, CTAs, shared memory)."""

    def __init__(self, num_warps: int):
        self.packed_metadata = (num_warps, 1, 0)
        self.metadata = Metadata(0)


class Launches:
    """The stubbed launches so far (warm-ups apart), and each kernel's binder and cache-key cache."""

    def __init__(self):
        self.count = 0
        self.binders: dict = {}
        self.backend = make_backend(TARGET)

    def run(self, kernel: jit.JITFunction, *args, grid, warmup, **kwargs) -> Compiled:
        """JITFunction.run's host work before a launch (module docstring)."""
        kwargs["debug"] = kwargs.get("debug", kernel.debug)
        if kernel not in self.binders:
            self.binders[kernel] = ({}, jit.create_function_from_signature(kernel.signature, kernel.params,
                                                                           self.backend))
        key_cache, binder = self.binders[kernel]
        bound_args, specialization, options = binder(*args, **kwargs)
        jit.compute_cache_key(key_cache, specialization, options)
        if not warmup:
            self.count += 1
            if callable(grid):
                grid(bound_args)
        return Compiled(kwargs.get("num_warps", 4))


@contextlib.contextmanager
def stubbed():
    """Inside it, Triton's launches are stubbed (module docstring); yields the Launches that counts them."""
    launches = Launches()

    def run(kernel, *args, grid, warmup, **kwargs):
        return launches.run(kernel, *args, grid=grid, warmup=warmup, **kwargs)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(jit.JITFunction, "run", run))
        stack.enter_context(mock.patch.object(autograd, "require_runtime", lambda device: "cuda"))
        for module in (split, dispatch):
            stack.enter_context(mock.patch.object(module, "co_resident_programs", lambda device: PLANNING_SM_COUNT))
        yield launches
