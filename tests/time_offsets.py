"""Kernels that copy a [T, B, H] tensor one step per loop iteration, their step offset computed
four ways, for the test that the 64-bit offset check (kernels/offsets.py) tells them apart."""
import triton
import triton.language as tl

from kernels.audit import compile_for
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
    """Variant name -> (timed tt.addptr count, problems), compiled for sm_90 in bf16."""
    return {name: time_offset_problems(compile_for(fn, "torch.bfloat16", {"BLOCK": 64, "num_warps": 4}, 90).asm["ttir"])
            for name, fn in VARIANTS.items()}


def kernel_problems() -> list[dict]:
    """The check on every persistent kernel configuration the dispatcher can pick (compiled for sm_90;
    the TTIR, where offsets are typed, does not depend on the target)."""
    from kernels.audit import PERSISTENT_TIERS, _kernel, audit_jobs
    rows = []
    for job in audit_jobs(nonlinearity="tanh", arch=90):
        if job.tier in PERSISTENT_TIERS:
            ttir = compile_for(_kernel(job.tier, job.kernel), job.dtype, job.keywords, job.arch).asm["ttir"]
            checked, problems = time_offset_problems(ttir)
            rows.append({"kernel": job.kernel, "plan": job.plan, "dtype": job.dtype, "checked": checked,
                         "problems": problems})
    return rows
