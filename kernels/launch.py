"""Launch settings every tier shares, the typed pair of a tier's forward and backward configurations, and the
host's integer arithmetic for grids and blocks.

Each tier module (resident.py, split.py, stepwise.py) defines a frozen dataclass of its kernels'
compile-time blocks and a `launch_keywords(config, nonlinearity, dtype, interpreted)` function: the
keywords its launcher passes to `kernel[grid](...)`. The compile audit (audit.py) compiles exactly
those keywords, so what is audited is what is launched.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
import triton.language as tl

from . import activations
from .activations import ACTIVATION_CODES, APPROX_TANH, FTZ_TANH, PORTABLE_TANH

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
COMPILE_OPTIONS = ("num_warps", "num_stages")  # launch keywords that are compile options, not constexprs


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) on the host. triton.cdiv is a constexpr function: called from Python it costs about 3 us (its
    arguments unwrapped as constexprs), and a layer's call does this arithmetic a few dozen times."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (1 for n <= 1) on the host, for the same reason as cdiv."""
    return 1 << max(n - 1, 0).bit_length()


def accumulator_dtype(io_dtype: torch.dtype) -> torch.dtype:
    """Carries and accumulations are fp32, except for float64 I/O (used by gradcheck)."""
    return torch.float64 if io_dtype == torch.float64 else torch.float32


def common_keywords(nonlinearity: str, dtype: torch.dtype, interpreted: bool) -> dict:
    """Constexprs every recurrence kernel takes: the activation, the accumulator dtype, and whether
    tl.dot's operands are upcast to fp32 (the interpreter multiplies raw bf16 bits: triton issue 11584)."""
    return {"ACTIVATION": ACTIVATION_CODES[nonlinearity],
            "ACC_DTYPE": tl.float64 if accumulator_dtype(dtype) == torch.float64 else tl.float32,
            "UPCAST_DOT": interpreted and dtype in SIXTEEN_BIT}


def tanh_form(dtype: torch.dtype, interpreted: bool) -> str:
    """A persistent forward kernel's TANH_FORM (activations.py): on a GPU (the interpreter cannot run inline PTX)
    tanh.approx.f32 for 16-bit I/O, whose rounding is coarser than its error, and for fp32 the exact form without
    denormal range checks (activations.FTZ_TANH_ON); else the portable exact form."""
    if interpreted:
        return PORTABLE_TANH.value
    if dtype in SIXTEEN_BIT:
        return APPROX_TANH.value
    return FTZ_TANH.value if dtype == torch.float32 and activations.FTZ_TANH_ON else PORTABLE_TANH.value


@dataclass(frozen=True)
class Blocks:
    """Base of a tier's kernel configuration. Field names are the kernel's constexpr names and
    compile options as written, so the fields are the launch keywords as they stand."""

    def keywords(self) -> dict:
        return dict(vars(self))  # its fields, in order (dataclasses.asdict copies them deeply: ten times the time)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.keywords().items())


B = TypeVar("B", bound=Blocks)


@dataclass(frozen=True)
class LaunchConfig(Generic[B]):
    """The configurations of a tier's forward and backward kernels (they may differ: at H=256 one
    setting is not the best for both)."""
    forward: B
    backward: B

    def replace(self, **changes) -> LaunchConfig[B]:
        """This configuration with these fields changed in both passes."""
        changed = tuple(sorted(changes.items()))
        return LaunchConfig(*(_replaced(blocks, changed) for blocks in (self.forward, self.backward)))

    def __str__(self) -> str:
        if self.forward == self.backward:
            return str(self.forward)
        return f"fwd:{self.forward} bwd:{self.backward}"


@functools.cache
def _replaced(blocks: B, changes: tuple[tuple[str, object], ...]) -> B:
    """dataclasses.replace(blocks, **dict(changes)), kept: the dispatcher derives the same few configurations on every
    layer call, and each replace costs microseconds (blocks are frozen, so a kept one is as good as a new one)."""
    return dataclasses.replace(blocks, **dict(changes))
