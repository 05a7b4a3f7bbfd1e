"""FMA persistent kernels: fp32, one program per batch row, U in registers, the product by FMA.

cuDNN's fp32 kernel for small H does this (RNN_blockPersist_fp_RNN: 8 CTAs for B = 8, U in
registers, FMA; ../shared/gpu-runs/2026-11-25-h100/cudnn_kernels_ncu.md): fp32 accuracy with no
tensor core, where the resident tier's 3xTF32 (resident.py) pays three MMAs, their waits and the
TF32 splits on every step's serial chain. Per step, for one batch row b (a vector of H)::

    forward:   a_t[n]  = xw_t[n] + sum_k U^T[k, n] h_{t-1}[k],   h_t = act(a_t)
    backward:  g_t[n]  = dy_t[n] + sum_k U[k, n] da_{t+1}[k],     da_t = g_t * act'(h_t)
               dh_0[n] = sum_k U[k, n] da_1[k]

Both are one product, sum_k M[k, n] v[k], with the [BLOCK_H, BLOCK_H] operand M (U^T forward, U
backward) held in registers for all T steps. M is read from a contiguous matrix whose rows run along
n (the forward's launcher passes U^T as a contiguous copy), so Triton's layout for it puts
each thread's elements along n and the warps along k: each thread sums its k rows in registers (one
FFMA per element per step), the warps' partial sums meet in shared memory, and the new state reaches
every thread's k rows through shared memory. Compile audit, sm_90, BLOCK_H = 128 on 4 warps: 124
FFMA and 211 instructions per step, 7 CTA barriers, 167 registers, no spills; the resident tier's
3xTF32 takes 435 instructions per step on 8 warps (with 3 wgmma waits) for the same layer.

BLOCK_H = 256 (STREAM_HALF, beyond HELD_MAX_BLOCK_H): fp32 U is 256 KiB there, the whole register
file of an SM, and splitting it over CTAs would need the split tier's grid barrier (2.5 us per step
on the H200 on its own, against cuDNN fp32's 1.74 for the whole step at B = 8). So the program holds
the first half of the operand's rows in registers and reads the other half from global memory every
step, 128 KiB with evict_last, which the SM's L1 can keep: the program takes 4 KiB of shared memory,
which leaves the rest of the SM's 256 KiB of L1 and shared memory to the cache. The rows are cut into
quarters, k = c BLOCK_H/4 + j, and v into the matching quarters, so that all four quarters' products
add into one [BLOCK_H/4, BLOCK_H] tile of per-thread sums before the one reduction over the warps.
Compile audit, sm_90, 8 warps, forward: 254 registers, no spills, 500 instructions per step (256
FFMA/FMUL per thread), 9 CTA barriers, 32 16-byte loads of U per thread per step. The split tier
served this size before (2.75 us per step forward on the H200 at B = 8). Whether L1 keeps the
streamed half, and what the step then costs, is not yet timed (.ci/gpu_variants.py fp32-fma against
fp32-split-256). On sm_90 a cluster's barrier, in hardware, avoids the grid barrier: with
dispatch.SPLIT_CLUSTERS the dispatcher splits U over clusters of 4 programs of the split tier
instead, each holding 64 of its columns in registers and multiplying them by FMA for 2 batch rows
(dispatch.SPLIT_CLUSTER_CONFIGS; not yet timed).

Each program runs one batch row, so a batch of B takes B programs, and each holds its own copy of U.
The dispatcher sends a layer here while B fits the SMs one program each (dispatch.py). The launchers
pass the operand zero-padded to [BLOCK_H, BLOCK_H], so that the kernels load it without masks.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .activations import ACTIVATION_CODES, activation_grad_from_output, apply_activation
from .launch import Blocks
from .runtime import interpreting

# The largest BLOCK_H whose operand a program holds whole in registers; beyond it, half (module docstring).
HELD_MAX_BLOCK_H = 128


@dataclass(frozen=True)
class FmaBlocks(Blocks):
    """Compile-time configuration of one FMA kernel."""
    BLOCK_H: int    # H padded to a power of two, >= 16: the operand is BLOCK_H x BLOCK_H in every program
    num_warps: int  # the operand's BLOCK_H^2 floats spread over 32 * num_warps threads


def launch_keywords(config: FmaBlocks, nonlinearity: str, dtype: torch.dtype, interpreted: bool,
                    backward: bool) -> dict:
    """Everything an FMA kernel takes besides tensors and sizes (fp32 only; the same in the interpreter)."""
    return config.keywords() | {"ACTIVATION": ACTIVATION_CODES[nonlinearity],
                                "STREAM_HALF": config.BLOCK_H > HELD_MAX_BLOCK_H}


@triton.jit
def operand_rows(m_ptr, first, ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    """Pointers to rows first .. first + ROWS - 1 of the padded [BLOCK_H, BLOCK_H] operand at m_ptr."""
    offs_k = first + tl.arange(0, ROWS)
    offs_n = tl.arange(0, BLOCK_H)
    return m_ptr + offs_k[:, None] * BLOCK_H + offs_n[None, :]


@triton.jit
def load_held(m_ptr, BLOCK_H: tl.constexpr, STREAM_HALF: tl.constexpr):
    """The operand's rows the program holds in registers: all of them (returned twice), or with STREAM_HALF
    its first two quarters."""
    # Named resident_u*: the compile audit finds U's loads by that name.
    if STREAM_HALF:
        Q: tl.constexpr = BLOCK_H // 4
        resident_u_a = tl.load(operand_rows(m_ptr, 0, Q, BLOCK_H))
        resident_u_b = tl.load(operand_rows(m_ptr, Q, Q, BLOCK_H))
        return resident_u_a, resident_u_b
    else:
        resident_u = tl.load(operand_rows(m_ptr, 0, BLOCK_H, BLOCK_H))
        return resident_u, resident_u


@triton.jit
def quarters(v, Q: tl.constexpr):
    """v[c Q + j] for c = 0, 1, 2, 3: four [Q] vectors."""
    lower, upper = tl.split(tl.permute(tl.reshape(v, (2, 2, Q)), (2, 0, 1)))  # [j, c // 2] for c even, odd
    v0, v2 = tl.split(lower)
    v1, v3 = tl.split(upper)
    return v0, v1, v2, v3


@triton.jit
def vector_product(held_a, held_b, m_ptr, v, BLOCK_H: tl.constexpr, STREAM_HALF: tl.constexpr):
    """[BLOCK_H]: sum_k m[k, n] v[k] by FMA, m the operand at m_ptr of which the program holds held_a and
    held_b (load_held); with STREAM_HALF its last two quarters of rows are read from memory here."""
    if STREAM_HALF:
        Q: tl.constexpr = BLOCK_H // 4
        v0, v1, v2, v3 = quarters(v, Q)
        # Per-thread sums of all four quarters in one tile: one reduction over the warps, not four.
        sums = held_a * v0[:, None]
        sums += held_b * v1[:, None]
        streamed_u = tl.load(operand_rows(m_ptr, 2 * Q, Q, BLOCK_H), eviction_policy="evict_last")
        sums += streamed_u * v2[:, None]
        streamed_u = tl.load(operand_rows(m_ptr, 3 * Q, Q, BLOCK_H), eviction_policy="evict_last")
        sums += streamed_u * v3[:, None]
        return tl.sum(sums, axis=0)
    else:
        return tl.sum(held_a * v[:, None], axis=0)


@triton.jit
def fma_forward_kernel(
    xw_ptr,         # [T, B, H] input projection incl. both biases, fp32, contiguous
    h0_ptr,         # [B, H] initial hidden state, contiguous
    ut_ptr,         # [BLOCK_H, BLOCK_H] U^T zero-padded, contiguous: element [k, n] is U[n, k]
    y_ptr,          # [T, B, H] out: h_t for every t
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first step: 0, or T - 1 for the reverse direction
    t_step,         # +1 or -1
    ACTIVATION: tl.constexpr,   # 0 tanh, 1 relu
    BLOCK_H: tl.constexpr,      # H padded to a power of two
    STREAM_HALF: tl.constexpr,  # half of U^T held, half read every step (BLOCK_H > HELD_MAX_BLOCK_H)
):
    offs = tl.arange(0, BLOCK_H)
    mask = offs < H
    row = tl.program_id(0) * H + offs  # this program's batch row of a [B, H] matrix
    held_a, held_b = load_held(ut_ptr, BLOCK_H, STREAM_HALF)
    stride = B * H
    t = tl.cast(t_first, tl.int64)  # 64-bit: t * B * H can pass 2^31
    h = tl.load(h0_ptr + row, mask=mask, other=0.0)
    xw = tl.load(xw_ptr + t * stride + row, mask=mask, other=0.0)
    for s in range(0, T):
        # The next step's input, loaded while this step computes.
        xw_next = tl.load(xw_ptr + (t + t_step) * stride + row, mask=mask & (s + 1 < T), other=0.0)
        h = apply_activation(xw + vector_product(held_a, held_b, ut_ptr, h, BLOCK_H, STREAM_HALF),
                             ACTIVATION)
        tl.store(y_ptr + t * stride + row, h, mask=mask)
        t += t_step
        xw = xw_next


@triton.jit
def fma_backward_kernel(
    y_ptr,          # [T, B, H] forward hidden states h_t, fp32, contiguous
    dy_ptr,         # [T, B, H] dL/dh_t from the layer's outputs (h_n's gradient included), contiguous
    u_ptr,          # [BLOCK_H, BLOCK_H] recurrent weight U zero-padded, contiguous
    da_ptr,         # [T, B, H] out: dL/da_t
    dh0_ptr,        # [B, H] out: dL/dh_0
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first reverse step: T - 1, or 0 for the reverse direction
    t_step,         # -1 or +1
    ACTIVATION: tl.constexpr, BLOCK_H: tl.constexpr, STREAM_HALF: tl.constexpr,  # as in fma_forward_kernel
):
    offs = tl.arange(0, BLOCK_H)
    mask = offs < H
    row = tl.program_id(0) * H + offs
    held_a, held_b = load_held(u_ptr, BLOCK_H, STREAM_HALF)
    stride = B * H
    t = tl.cast(t_first, tl.int64)
    da = tl.zeros((BLOCK_H,), tl.float32)  # nothing flows into the first reverse step but dy
    h = tl.load(y_ptr + t * stride + row, mask=mask, other=0.0)
    dy = tl.load(dy_ptr + t * stride + row, mask=mask, other=0.0)
    for s in range(0, T):
        # The next reverse step's inputs, loaded while this step computes.
        h_next = tl.load(y_ptr + (t + t_step) * stride + row, mask=mask & (s + 1 < T), other=0.0)
        dy_next = tl.load(dy_ptr + (t + t_step) * stride + row, mask=mask & (s + 1 < T), other=0.0)
        g = dy + vector_product(held_a, held_b, u_ptr, da, BLOCK_H, STREAM_HALF)
        da = g * activation_grad_from_output(h, ACTIVATION)
        tl.store(da_ptr + t * stride + row, da, mask=mask)
        t += t_step
        h, dy = h_next, dy_next
    tl.store(dh0_ptr + row, vector_product(held_a, held_b, u_ptr, da, BLOCK_H, STREAM_HALF), mask=mask)


def padded(m: torch.Tensor, block_h: int) -> torch.Tensor:
    """m ([H, H]) zero-padded to a contiguous [block_h, block_h] (m itself, made contiguous, where H = block_h)."""
    if m.shape == (block_h, block_h):
        return m.contiguous()
    out = m.new_zeros((block_h, block_h))
    out[:m.shape[0], :m.shape[1]] = m
    return out


def fma_forward(xw: torch.Tensor, h0: torch.Tensor, u: torch.Tensor, reverse: bool, config: FmaBlocks,
                nonlinearity: str) -> torch.Tensor:
    """All hidden states [T, B, H] of one layer-direction; xw, h0, u contiguous fp32 on one device."""
    T, B, H = xw.shape
    y = torch.empty_like(xw)
    fma_forward_kernel[(B,)](xw, h0, padded(u.t(), config.BLOCK_H), y, T, B, H, T - 1 if reverse else 0,
                             -1 if reverse else 1,
                             **launch_keywords(config, nonlinearity, xw.dtype, interpreting(), backward=False))
    return y


def fma_backward(y: torch.Tensor, dy: torch.Tensor, u: torch.Tensor, reverse: bool, config: FmaBlocks,
                 nonlinearity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(da [T, B, H], dh0 [B, H]) for one layer-direction, fp32; inputs contiguous."""
    T, B, H = y.shape
    da = torch.empty_like(y)
    dh0 = torch.empty((B, H), dtype=y.dtype, device=y.device)
    fma_backward_kernel[(B,)](y, dy, padded(u, config.BLOCK_H), da, dh0, T, B, H, 0 if reverse else T - 1,
                              1 if reverse else -1,
                              **launch_keywords(config, nonlinearity, y.dtype, interpreting(), backward=True))
    return da, dh0
