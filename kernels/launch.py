"""Launch settings every tier shares, and the typed pair of a tier's forward and backward configurations.

Each tier module (resident.py, split.py, stepwise.py) defines a frozen dataclass of its kernels'
compile-time blocks and a `launch_keywords(config, nonlinearity, dtype, interpreted)` function: the
keywords its launcher passes to `kernel[grid](...)`. The compile audit (audit.py) compiles exactly
those keywords, so what is audited is what is launched.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
import triton
import triton.language as tl

from .activations import ACTIVATION_CODES

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
# fp32 products at fp32 accuracy on tensor cores: 3xTF32 (hi*hi + hi*lo + lo*hi) with the loop-invariant
# left operand (U, or its slice) split into TF32 parts once, before the time loop (recurrent_dot).
PRESPLIT = tl.constexpr("tf32x3-presplit")
# The persistent tiers' fp32 DOT_PRECISION: PRESPLIT, or a tl.dot input_precision. Read at every launch,
# so a script can time Triton's own 3xTF32 beside it: `kernels.launch.FP32_DOT_PRECISION = "tf32x3"`.
FP32_DOT_PRECISION = PRESPLIT.value
COMPILE_OPTIONS = ("num_warps", "num_stages")  # launch keywords that are compile options, not constexprs


def accumulator_dtype(io_dtype: torch.dtype) -> torch.dtype:
    """Carries and accumulations are fp32, except for float64 I/O (used by gradcheck)."""
    return torch.float64 if io_dtype == torch.float64 else torch.float32


def common_keywords(nonlinearity: str, dtype: torch.dtype, interpreted: bool) -> dict:
    """Constexprs every recurrence kernel takes: the activation, the accumulator dtype, and whether
    tl.dot's operands are upcast to fp32 (the interpreter multiplies raw bf16 bits: triton issue 11584)."""
    return {"ACTIVATION": ACTIVATION_CODES[nonlinearity],
            "ACC_DTYPE": tl.float64 if accumulator_dtype(dtype) == torch.float64 else tl.float32,
            "UPCAST_DOT": interpreted and dtype in SIXTEEN_BIT}


def dot_precision(dtype: torch.dtype) -> str:
    """The persistent kernels' DOT_PRECISION constexpr for I/O dtype: 'ieee' (exact products of 16-bit
    operands, float64), FP32_DOT_PRECISION for fp32."""
    return FP32_DOT_PRECISION if dtype == torch.float32 else "ieee"


@triton.jit
def tf32_round(x):
    """fp32 x rounded to TF32 (10 mantissa bits, to nearest, ties away, as cvt.rna.tf32.f32 does), in
    integer operations so that the interpreter rounds too."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + 0x1000) & -0x2000).to(tl.float32, bitcast=True)


@triton.jit
def split_left_operand(u, DOT_PRECISION: tl.constexpr):
    """(hi, lo) of a left operand held across the time loop: with PRESPLIT its TF32 part and the rest
    (which the MMA reads as TF32), split once here; otherwise (u, u), the second unused."""
    if DOT_PRECISION == PRESPLIT:
        hi = tf32_round(u)
        return hi, u - hi
    else:
        return u, u


@triton.jit
def recurrent_dot(u, u_lo, b, acc, DOT_PRECISION: tl.constexpr, OUT_DTYPE: tl.constexpr):
    """acc + u @ b (acc may be None); u and u_lo as split_left_operand returns them. PRESPLIT splits only
    b, the small per-step operand, and chains three plain TF32 products on one accumulator, small terms
    first. Triton's tf32x3 computes the same terms (the compiler already hoists U's split out of the
    loop) but filters NaN out of the small ones before adding the big one, so that an infinite input
    does not make the product NaN; without that filter (an infinite U or state gives NaN here) the
    compiled loops are 28 to 85 SASS instructions per step shorter, with the same MMAs."""
    if DOT_PRECISION == PRESPLIT:
        b_hi = tf32_round(b)
        acc = tl.dot(u_lo, b_hi, acc, input_precision="tf32", out_dtype=OUT_DTYPE)
        acc = tl.dot(u, b - b_hi, acc, input_precision="tf32", out_dtype=OUT_DTYPE)
        return tl.dot(u, b_hi, acc, input_precision="tf32", out_dtype=OUT_DTYPE)
    else:
        return tl.dot(u, b, acc, input_precision=DOT_PRECISION, out_dtype=OUT_DTYPE)


@dataclass(frozen=True)
class Blocks:
    """Base of a tier's kernel configuration. Field names are the kernel's constexpr names and
    compile options as written, so the fields are the launch keywords as they stand."""

    def keywords(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.keywords().items())


B = TypeVar("B", bound=Blocks)


@dataclass(frozen=True)
class LaunchConfig(Generic[B]):
    """The configurations of a tier's forward and backward kernels (they may differ: at H=256 one
    setting is not the best for both)."""
    forward: B
    backward: B

    def __str__(self) -> str:
        if self.forward == self.backward:
            return str(self.forward)
        return f"fwd:{self.forward} bwd:{self.backward}"
