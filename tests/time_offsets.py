"""Kernels that copy a [T, B, H] tensor one step per loop iteration, their step offset computed
four ways, for the test that the 64-bit offset check (kernels/offsets.py, the compile audit's t i64) tells them
apart."""
import triton
import triton.language as tl

from kernels.audit import compile_for, offsets_i64
from kernels.offsets import time_offset_problems


@triton.jit
def step_tile(B, H, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    return offs, offs < B * H


@triton.jit
def offset_i64(src_ptr, dst_ptr, T, B, H, BLOCK: tl.constexpr):
    offs, mask = step_tile(B, H, BLOCK)
    for s in range(T):
        step = tl.cast(s, tl.int64) * B * H  # right: multiplied in 64 bits
        tl.store(dst_ptr + step + offs, tl.load(src_ptr + step + offs, mask=mask), mask=mask)


@triton.jit
def offset_i32(src_ptr, dst_ptr, T, B, H, BLOCK: tl.constexpr):
    offs, mask = step_tile(B, H, BLOCK)
    for s in range(T):
        step = s * B * H  # wraps past 2^31
        tl.store(dst_ptr + step + offs, tl.load(src_ptr + step + offs, mask=mask), mask=mask)


@triton.jit
def offset_widened_late(src_ptr, dst_ptr, T, B, H, BLOCK: tl.constexpr):
    offs, mask = step_tile(B, H, BLOCK)
    for s in range(T):
        step = tl.cast(s * B * H, tl.int64)  # extended after the i32 product has wrapped
        tl.store(dst_ptr + step + offs, tl.load(src_ptr + step + offs, mask=mask), mask=mask)


@triton.jit
def offset_carried_i32(src_ptr, dst_ptr, T, B, H, BLOCK: tl.constexpr):
    offs, mask = step_tile(B, H, BLOCK)
    step = 0
    for s in range(T):
        tl.store(dst_ptr + step + offs, tl.load(src_ptr + step + offs, mask=mask), mask=mask)
        step += B * H  # an i32 running offset wraps too


VARIANTS = {"i64": offset_i64, "i32": offset_i32, "widened_late": offset_widened_late,
            "carried_i32": offset_carried_i32}


def variant_problems() -> dict:
    """Variant name -> (timed tt.addptr count, problems, the audit's t i64 verdict), compiled for sm_90 in bf16."""
    ttirs = {name: compile_for(fn, "torch.bfloat16", {"BLOCK": 64, "num_warps": 4}, 90).asm["ttir"]
             for name, fn in VARIANTS.items()}
    return {name: [*time_offset_problems(ttir), offsets_i64(ttir)] for name, ttir in ttirs.items()}
