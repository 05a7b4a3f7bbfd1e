"""Resident persistent kernels: one launch runs all T steps, and every program holds all of U in
registers for all of them.

Forward, for one layer and direction, written transposed so that U is the left operand of the
product, the one a tensor-core MMA can take from registers (a_t is the pre-activation)::

    a_t^T = xw_t^T + b_hh + U h_{t-1}^T,   h_t = act(a_t),   xw_t = x_t W_ih^T + b_ih (one GEMM, outside)

and h_n = h_T is stored from the registers after the last step (b_hh is added here where dispatch.B_HH_IN_KERNEL;
else the GEMM adds it with b_ih and the kernel takes none). Backward (BPTT) in one reverse launch, from the stored h_t
alone, with U^T as the left operand::

    g_t^T = dy_t^T + U^T da_{t+1}^T,   da_t = g_t * act'(h_t),   dh_0^T = U^T da_1^T

where dy_t is the gradient arriving from the layer's output (zeros, none read, where the loss reads h_n alone), plus
dL/dh_n at the first reverse step (t = T), added in the accumulator dtype. The weight gradients are large GEMMs over
all t, done afterwards by the caller (autograd.py).

Each program owns a BLOCK_B-row tile of the batch (the grid is cdiv(B, BLOCK_B), any B in one
launch) and keeps its own copy of U, padded to BLOCK_H x BLOCK_H. The carry (h, or da) stays in
fp32 registers; per step only its rounding to the I/O dtype passes through shared memory, as the
MMA's right operand.

Why U stays in registers (verified by the compile audit, kernels/audit.py, for sm_80 and sm_90):
without help, Triton 3.6 re-reads it from shared memory every step, because ReorderInstructions
sinks a single-use conversion of a loop-invariant operand into the loop, and on Hopper
AccelerateMatmul puts the wgmma's left operand in shared memory when nothing sits between its load
and the dot. So (1) the product is transposed, U on the left; (2) U is multiplied once by a runtime
float `pin` (1.0) before the loop; (3) the first step is peeled out of the loop (forward), or the
final dh_0 product follows it (backward), so U's register value has a user outside the loop.
Then sm_90 runs wgmma with U in registers and sm_80 mma.sync with U in registers.

What else is kept off each step's serial chain: the step's inputs (xw_{t+1}; h_{t-1} and dy_{t-1}
backward) are loaded during the previous step, h_t's store is not waited on, and tanh is one MUFU
instruction for 16-bit I/O (activations.py).

Per-step layouts. The MMA leaves the product in its accumulator's layout; tl.load and tl.store give
the step's tiles a coalesced one. FRAGMENT_IO (16-bit, where fragments.fits: BLOCK_H >= 64; off by
default until its GPU tests pass) keeps the per-step tensors in the accumulator's fragment order
(fragments.py): the launchers copy xw (h and dy) into it and the output back, and the step loads and
stores its tiles 16 bytes a thread with no conversion: 2 CTA barriers per step, h's as the MMA's right
operand, and half the forward's instructions at BLOCK_H = 64 and 128 (compile audit, sm_90). The
default converts the input tiles into the accumulator's layout and the output tile back: 6 CTA barriers
per step in the forward and 8 in the backward (the audit's bar/step), timed the fastest of three forms;
fp32 converts the product instead (below). The other two:
- layouts.PRODUCT_TO_IO_LAYOUT (fp32 only): the product is converted into the tiles' layout once
  (layouts.in_io_layout): 4 barriers in both passes, and in fp32 far fewer instructions (the backward
  at BLOCK_H = 16: 104 per step instead of 202). In 16-bit it was timed up to 13% slower on an H200
  (layouts.py): the conversion sits on the step's serial chain.
- ACC_LAYOUT_IO: load_tile and store_tile take the accumulator's layout by inline PTX (2 barriers),
  at the cost of per-element addressing. Timed on an H200, that paid in the 16-bit forward up to
  BLOCK_H = 128 only (ACC_LAYOUT_IO_MAX_BLOCK_H): 10% faster than the tiles converted, and at H = 128
  1% (B = 8) and 6% (B = 64) faster than the product converted (results/variants/20261127-h200/
  io_layout.csv, plain-io). It serves the forward at BLOCK_H = 16 and 32, where fragment order does not.
float64 (for gradcheck) multiplies by the plain product.

L2 prefetch (prefetch.py): where the tensors a launch streams outgrow L2, each program asks L2 for
its tiles of step t + prefetch.L2_PREFETCH_STEPS (xw; h and dy backward) during step t; 16-bit I/O only,
and not in the backward at BLOCK_H = 256 (launch_keywords: where it spills).

fp32 multiplies on tensor cores at fp32 accuracy by 3xTF32: with x_hi = x rounded to TF32 and
x_lo = x - x_hi (exact in fp32; the MMA reads its top TF32 bits)::

    U h = U_hi h_hi + U_lo h_hi + U_hi h_lo (+ U_lo h_lo, 2^-22 of it)

Triton's tf32x3 (FP32_PRODUCT's default; the compiler splits U once, before the loop) issues the
terms as three dots, each one wgmma group followed by a full wait: the step is latency-bound, and
its SASS holds 3 groups of 16 HGMMA per warpgroup at BLOCK_H = 128 against bf16's one of 8. The
one-dot products issue all four terms as ONE dot of doubled operands, split once before the loop on
U's side (left_operand) and every step on h's (two integer operations and a subtraction per element):

    one-dot-k (K and N doubled):  [U_lo | U_hi] @ [P; P] = [U h_hi, U h_lo],   P = [h_hi, h_lo]
    one-dot-m (M and N doubled):  [U_hi; U_lo] @ [h_hi | h_lo] = [[U_hi h_hi, U_hi h_lo], [U_lo h_hi, U_lo h_lo]]

then sum the result's blocks. Both do 4/3 of 3xTF32's MMA work in one group with one wait. one-dot-k
keeps P's two columns of each batch row side by side (h_hi, h_lo alternate) and its result's halves
too; one-dot-m interleaves U_hi's and U_lo's rows by 8, since an MMA accumulator gives each thread
rows r and r+8: every sum stays in the thread's registers. The products start from zero and the
carry-in (xw, dy) is added after, in fp32, as Triton's tf32x3 does: the pre-split 3xTF32 (reverted in
3e06d3b), which chained its products onto xw, had 4x tf32x3's error on the H200 (1.0e-6 against
2.5e-7, results/variants/20261126-h200). In one-dot-k, U_lo comes first in K, so that h_hi's small
terms are summed before its large ones, as in tf32x3.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import fragments, prefetch
from .activations import activation_grad_from_output, apply_activation
from .fragments import fragment_tile, from_fragment_order, from_fragments, to_fragment_order, to_fragments
from .frames import copy_state, empty_states, slot
from .launch import SIXTEEN_BIT, Blocks, accumulator_dtype, cdiv, common_keywords, tanh_form
from .layouts import converts_product, in_io_layout, side_by_side
from .prefetch import prefetch_distance, prefetch_l2
from .runtime import interpreting

PIN = 1.0  # the runtime float U is multiplied by before the time loop (see the module docstring)
# 16-bit per-step loads and stores in the accumulator's layout on a GPU (load_tile) up to this BLOCK_H,
# per pass. Timed against tl.load/tl.store on an H200 (.ci/gpu_variants.py, results/variants/): the
# forward 10% faster at H = 128 but 12-23% slower at H = 256, the backward 3-38% slower everywhere
# (more address arithmetic per element than barriers saved). 0 turns it off.
ACC_LAYOUT_IO_MAX_BLOCK_H = {"forward": 128, "backward": 0}
# 16-bit per-step tensors in the MMA accumulator's fragment order (fragments.py) where the configuration's accumulator
# has its pattern (fragments.fits) and the call's tensors pad to at most fragments.PADDING_MAX times their size: the
# step converts no tile, and ACC_LAYOUT_IO is not used: 2 CTA barriers per step instead of 6 forward and 8 backward
# (compile audit). Timed on an H200 (results/variants/20261128-h200-fragments/): layer calls up to 1.6x faster in bf16
# at H = 64-256, B = 8-256, T = 4096, but not one step of its GPU tests completed and reported (four failures unnamed
# in both tries, the step's time out before pytest's summary), and its backward was never checked against float64 on
# a GPU: off until .ci/gpu's `fragments` stage shows its tests passing.
FRAGMENT_IO = False
# fp32's product (module docstring): Triton's tf32x3, three dots each waited for, or the terms of 3xTF32
# in one dot (one-dot-k, one-dot-m), read at every launch. The one-dot products are not yet timed:
# tf32x3 stays until a GPU says otherwise (.ci/gpu_variants.py --variant fp32-tf32x3 fp32-one-dot-k ...).
ONE_DOT_K = tl.constexpr("one-dot-k")
ONE_DOT_M = tl.constexpr("one-dot-m")
FP32_PRODUCTS = ("tf32x3", ONE_DOT_K.value, ONE_DOT_M.value)
FP32_PRODUCT = "tf32x3"


@dataclass(frozen=True)
class ResidentBlocks(Blocks):
    """Compile-time configuration of one resident kernel."""
    BLOCK_B: int    # batch rows per program: the MMA's N (8 at least; 16 for Hopper's wgmma)
    BLOCK_H: int    # H padded to a power of two, >= 16: U is BLOCK_H x BLOCK_H in every program
    num_warps: int


def launch_keywords(config: ResidentBlocks, nonlinearity: str, dtype: torch.dtype, interpreted: bool,
                    backward: bool, fragment_order: bool = True) -> dict:
    """Everything a resident kernel takes besides tensors and sizes, as its launcher passes it; fragment_order False
    where the call's tensors would pad beyond fragments.PADDING_MAX."""
    keywords = config.keywords() | common_keywords(nonlinearity, dtype, interpreted)
    keywords["DOT_PRECISION"] = FP32_PRODUCT if dtype == torch.float32 else "ieee"
    keywords["FRAGMENTS"] = (FRAGMENT_IO and fragment_order and dtype in SIXTEEN_BIT
                             and fragments.fits(config.BLOCK_H, config.BLOCK_B, config.num_warps))
    limit = ACC_LAYOUT_IO_MAX_BLOCK_H["backward" if backward else "forward"]
    keywords["ACC_LAYOUT_IO"] = (config.BLOCK_H <= limit and not interpreted and dtype in SIXTEEN_BIT
                                 and not keywords["FRAGMENTS"])
    keywords["IN_IO_LAYOUT"] = (converts_product(dtype) and not (keywords["ACC_LAYOUT_IO"] or keywords["FRAGMENTS"])
                                and dtype != torch.float64)
    # Inline PTX, which the interpreter cannot run; 16-bit only, and not in the backward at BLOCK_H = 256 but in
    # fragment order: with it fp32's backward at BLOCK_H = 128 spills (sm_90), and fp16's at 256 with its tiles
    # converted (relu, sm_80: 8 bytes at 16 warps' limit; in fragment order 126 registers, no spill).
    prefetched = (not interpreted and dtype in SIXTEEN_BIT
                  and not (backward and config.BLOCK_H >= 256 and not keywords["FRAGMENTS"]))
    keywords["L2_PREFETCH_STEPS"] = prefetch.L2_PREFETCH_STEPS if prefetched else 0
    if not backward:  # the backward has no tanh: act' comes from h
        keywords["TANH_FORM"] = tanh_form(dtype, interpreted)
    return keywords


@triton.jit
def transposed_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets and mask of this program's tile of a contiguous [B, H] matrix, laid out transposed as
    [BLOCK_H, BLOCK_B]: element (j, b) is row b, column j."""
    offs_h = tl.arange(0, BLOCK_H)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    return offs_h[:, None] + offs_b[None, :] * H, (offs_h[:, None] < H) & (offs_b[None, :] < B)


@triton.jit
def step_matrix(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, FRAGMENTS: tl.constexpr):
    """(rows, columns) of one step of a per-step tensor as the kernel reads it: [B, H], or in fragment order
    [tiles * BLOCK_B, BLOCK_H] (fragments.py)."""
    if FRAGMENTS:
        return tl.cdiv(B, BLOCK_B) * BLOCK_B, BLOCK_H
    else:
        return B, H


@triton.jit
def step_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, FRAGMENTS: tl.constexpr):
    """Offsets and mask of this program's tile in one step of a per-step tensor: transposed_tile's, or
    fragments.fragment_tile's (which has no padding to mask)."""
    if FRAGMENTS:
        tile = fragment_tile(BLOCK_B, BLOCK_H)
        return tile, tl.full(tile.shape, True, tl.int1)  # one value: the loads stay 16 bytes wide
    else:
        return transposed_tile(B, H, BLOCK_B, BLOCK_H)


@triton.jit
def load_pinned_u(u_ptr, pin, H, BLOCK_H: tl.constexpr, TRANSPOSE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                  UPCAST_DOT: tl.constexpr):
    """U (or U^T) as the [BLOCK_H, BLOCK_H] left operand, zero-padded, multiplied by the runtime float
    pin so that the compiler keeps it in registers (module docstring)."""
    offs_r = tl.arange(0, BLOCK_H)
    offs_c = tl.arange(0, BLOCK_H)
    if TRANSPOSE:  # [j, i] = U[i, j]
        offsets = offs_r[:, None] + offs_c[None, :] * H
    else:
        offsets = offs_r[:, None] * H + offs_c[None, :]
    resident_u = tl.load(u_ptr + offsets, mask=(offs_r[:, None] < H) & (offs_c[None, :] < H), other=0.0)
    resident_u = (resident_u.to(ACC_DTYPE) * pin).to(u_ptr.dtype.element_ty)  # exact: pin is 1.0
    if UPCAST_DOT:
        resident_u = resident_u.to(tl.float32)
    return resident_u


@triton.jit
def load_tile(base, tile, mask, valid, ACC_LAYOUT_IO: tl.constexpr, FRAGMENTS: tl.constexpr):
    """tl.load(base + tile, mask & valid, other=0) of a tile at step_tile's offsets (valid: a scalar condition, a
    Python bool where the JIT made T = 1 a constant: tl.cast, not .to), as
    [BLOCK_H, BLOCK_B]. With FRAGMENTS the tile is in the accumulator's layout as loaded (fragments.py). With
    ACC_LAYOUT_IO (16-bit) by inline PTX, which the compiler lays out as it likes: the tile then arrives in the
    accumulator's layout too, at the cost of addressing each element (module docstring). The masked-off
    elements' offsets become -1, so that one i32 per element is all the load keeps in registers."""
    if FRAGMENTS:
        return from_fragments(tl.load(base + tile, mask=mask & valid, other=0.0))
    elif ACC_LAYOUT_IO:
        bits = tl.inline_asm_elementwise(
            "{ .reg .pred p, q; .reg .b64 a; setp.ne.s32 p, $2, -1; setp.ne.b32 q, $3, 0; and.pred p, p, q; "
            "cvt.u64.u32 a, $2; add.s64 a, a, $1; mov.b16 $0, 0; @p ld.global.b16 $0, [a]; }", "=h,l,r,r",
            [base.to(tl.int64, bitcast=True), tl.where(mask, tile * 2, -1), tl.cast(valid, tl.int32)], dtype=tl.int16,
            is_pure=False, pack=1)  # a load: not to be moved across a barrier, as a pure op may be
        return bits.to(base.dtype.element_ty, bitcast=True)
    else:
        return tl.load(base + tile, mask=mask & valid, other=0.0)


@triton.jit
def load_gradient(dy_ptr, offset, tile, mask, valid, ACC_LAYOUT_IO: tl.constexpr, FRAGMENTS: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """load_tile of dy's step at dy_ptr + offset, [BLOCK_H, BLOCK_B]; zeros in fp32 where dy_ptr is None (the loss
    reads h_n alone: nothing loaded)."""
    if dy_ptr is None:  # an else, not an early return (fma.load_row)
        dy = tl.zeros((BLOCK_H, BLOCK_B), tl.float32)
    else:
        dy = load_tile(dy_ptr + offset, tile, mask, valid, ACC_LAYOUT_IO, FRAGMENTS)
    return dy


@triton.jit
def store_tile(base, tile, value, mask, ACC_LAYOUT_IO: tl.constexpr, FRAGMENTS: tl.constexpr):
    """tl.store(base + tile, value, mask) of a [BLOCK_H, BLOCK_B] tile at step_tile's offsets; with FRAGMENTS or
    ACC_LAYOUT_IO in value's layout (load_tile)."""
    if FRAGMENTS:
        tl.store(base + tile, to_fragments(value), mask=mask)
    elif ACC_LAYOUT_IO:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; .reg .b64 a; setp.ne.s32 p, $2, -1; cvt.u64.u32 a, $2; add.s64 a, a, $1; "
            "@p st.global.b16 [a], $3; mov.b32 $0, 0; }", "=r,l,r,h",
            [base.to(tl.int64, bitcast=True), tl.where(mask, tile * 2, -1), value.to(tl.int16, bitcast=True)],
            dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.store(base + tile, value, mask=mask)


@triton.jit
def tf32_round(x):
    """fp32 x rounded to TF32 (10 mantissa bits, to nearest, ties away, as cvt.rna.tf32.f32 does), in
    integer operations so that the interpreter rounds too."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + 0x1000) & -0x2000).to(tl.float32, bitcast=True)


@triton.jit
def left_operand(u, DOT_PRECISION: tl.constexpr):
    """The product's left operand made of the pinned U (or U^T): itself, or for the one-dot products its
    TF32 parts, [U_lo | U_hi] (ONE_DOT_K) or U_hi's and U_lo's rows interleaved by 8 (ONE_DOT_M)."""
    if DOT_PRECISION == ONE_DOT_K:
        hi = tf32_round(u)
        return side_by_side(u - hi, hi)
    elif DOT_PRECISION == ONE_DOT_M:
        hi = tf32_round(u)
        M: tl.constexpr = u.shape[0]
        K: tl.constexpr = u.shape[1]
        parts = tl.join(tl.reshape(hi, (M // 8, 8, K)), tl.reshape(u - hi, (M // 8, 8, K)))  # [q, r, k, part]
        return tl.reshape(tl.permute(parts, (0, 3, 1, 2)), (2 * M, K))  # row 16q + 8part + r
    else:
        return u


@triton.jit
def one_dot_product(u, operand, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """u @ operand (fp32) by one of the one-dot products, u as left_operand makes it (module docstring)."""
    hi = tf32_round(operand)
    if DOT_PRECISION == ONE_DOT_K:
        # [U_lo | U_hi] @ [P; P], P = h_hi and h_lo in alternate columns (the layout with the fewest
        # barriers per step: none at BLOCK_H = 16): the result's columns 2b, 2b+1 are U h_hi, U h_lo.
        parts = tl.interleave(hi, operand - hi)
        stacked = tl.reshape(tl.permute(tl.join(parts, parts), (2, 0, 1)), (2 * parts.shape[0], parts.shape[1]))
        terms = tl.dot(u, stacked, input_precision="tf32", out_dtype=ACC_DTYPE)
        big, small = tl.split(tl.reshape(terms, (terms.shape[0], terms.shape[1] // 2, 2)))
    else:
        # Interleaved U_hi and U_lo rows @ [h_hi | h_lo] (alternate columns, as above, fail to compile in
        # Triton 3.6: "Illegal shared layout"); an element's two rows summed, then the two halves.
        terms = tl.dot(u, side_by_side(hi, operand - hi), input_precision="tf32", out_dtype=ACC_DTYPE)
        M: tl.constexpr = terms.shape[0] // 2
        C: tl.constexpr = terms.shape[1] // 2
        terms = tl.reshape(tl.sum(tl.reshape(terms, (M // 8, 2, 8, 2 * C)), axis=1), (M, 2, C))
        big, small = tl.split(tl.permute(terms, (0, 2, 1)))
    return big + small


@triton.jit
def product(u, carry, acc, IO_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
            IN_IO_LAYOUT: tl.constexpr):
    """acc + u @ round(carry, IO_DTYPE), accumulated in acc's dtype (fp32, as cuDNN does); u as
    left_operand makes it. The one-dot products start from zero and add acc after (module docstring); with
    IN_IO_LAYOUT every product does, in acc's layout (in_io_layout)."""
    operand = carry.to(IO_DTYPE)
    if UPCAST_DOT:
        operand = operand.to(tl.float32)
    ONE_DOT: tl.constexpr = DOT_PRECISION == ONE_DOT_K or DOT_PRECISION == ONE_DOT_M
    if ONE_DOT or IN_IO_LAYOUT:
        if ONE_DOT:
            terms = one_dot_product(u, operand, acc.dtype, DOT_PRECISION)
        else:
            terms = tl.dot(u, operand, input_precision=DOT_PRECISION, out_dtype=acc.dtype)
        if IN_IO_LAYOUT:
            terms = in_io_layout(terms)
        return acc + terms
    else:
        return tl.dot(u, operand, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def column_bias(b_ptr, H, BLOCK_H: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """The bias at b_ptr ([H]) as a [BLOCK_H, 1] column in ACC_DTYPE, to add to each step's [BLOCK_H, BLOCK_B] tile."""
    offs_h = tl.arange(0, BLOCK_H)
    return tl.load(b_ptr + offs_h, mask=offs_h < H, other=0.0).to(ACC_DTYPE)[:, None]


@triton.jit
def resident_forward_kernel(
    xw_ptr,         # [T, B, H] input projection x_t W_ih^T + b_ih, I/O dtype, contiguous (FRAGMENTS: fragment order)
    h0_ptr,         # [B, H] initial hidden state, I/O dtype, contiguous; None: zeros (hx=None)
    u_ptr,          # [H, H] recurrent weight U = weight_hh (row i feeds unit i), contiguous
    b_hh_ptr,       # [H] recurrent bias b_hh, I/O dtype, added to every step's input; None: xw holds every bias
    y_ptr,          # [T, B, H] out: h_t for every t, I/O dtype, xw's layout (FRAGMENTS: may be xw itself)
    hn_ptr,         # [B, H] out: h_n, the state after the last step, I/O dtype, contiguous
    h0_copy_ptr,    # [B, H] out: h_0 as loaded, into the step of y's frame before its first (frames.py); None: none
    pin,            # 1.0, as a runtime float: keeps U in registers (module docstring)
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first step: 0, or T - 1 for the reverse direction
    t_step,         # +1 or -1
    ACTIVATION: tl.constexpr,     # 0 tanh, 1 relu
    BLOCK_B: tl.constexpr,        # batch rows per program
    BLOCK_H: tl.constexpr,        # H padded to a power of two
    DOT_PRECISION: tl.constexpr,  # "ieee" (16-bit, float64) or fp32: FP32_PRODUCT
    TANH_FORM: tl.constexpr,      # activations.py: approx (16-bit on a GPU), ftz (fp32 on a GPU), portable
    ACC_DTYPE: tl.constexpr,      # carry and accumulation: tl.float32 (tl.float64 for float64 I/O)
    UPCAST_DOT: tl.constexpr,     # interpreter workaround for bf16 tl.dot (launch.py)
    ACC_LAYOUT_IO: tl.constexpr,  # per-step loads and stores by inline PTX, in the accumulator's layout
    FRAGMENTS: tl.constexpr,      # per-step tensors in the accumulator's fragment order (fragments.py)
    IN_IO_LAYOUT: tl.constexpr,   # the product converted into the loads' layout (layouts.converts_product)
    L2_PREFETCH_STEPS: tl.constexpr,  # xw's tile this many steps ahead prefetched into L2 (0: none)
):
    IO_DTYPE: tl.constexpr = y_ptr.dtype.element_ty
    tile, mask = step_tile(B, H, BLOCK_B, BLOCK_H, FRAGMENTS)
    u = left_operand(load_pinned_u(u_ptr, pin, H, BLOCK_H, False, ACC_DTYPE, UPCAST_DOT), DOT_PRECISION)
    rows, columns = step_matrix(B, H, BLOCK_B, BLOCK_H, FRAGMENTS)
    stride = rows * columns
    t = tl.cast(t_first, tl.int64)  # 64-bit: t * B * H can pass 2^31
    state_tile, state_mask = transposed_tile(B, H, BLOCK_B, BLOCK_H)  # h_0's and h_n's
    # Step 0's input and b_hh before h_0's copy, whose barrier then follows their loads (audit.first_step_ordered,
    # where y is stored over xw)
    xw = load_tile(xw_ptr + t * stride, tile, mask, True, False, FRAGMENTS).to(ACC_DTYPE)
    if b_hh_ptr is not None:  # loaded once, added to every step's input (not on the step's serial chain)
        bias = column_bias(b_hh_ptr, H, BLOCK_H, ACC_DTYPE)
        xw += bias
    if h0_ptr is None:
        h = tl.zeros((BLOCK_H, BLOCK_B), ACC_DTYPE)
    else:
        h0 = tl.load(h0_ptr + state_tile, mask=state_mask, other=0.0)
        if h0_copy_ptr is not None:
            copy_state(h0_copy_ptr + state_tile, h0, state_mask)
        h = h0.to(ACC_DTYPE)
    # Step 0, peeled: U's register value gets a user outside the loop.
    h = apply_activation(product(u, h, xw, IO_DTYPE, DOT_PRECISION, UPCAST_DOT, IN_IO_LAYOUT), ACTIVATION, TANH_FORM)
    store_tile(y_ptr + t * stride, tile, h.to(IO_DTYPE), mask, ACC_LAYOUT_IO, FRAGMENTS)
    xw = load_tile(xw_ptr + (t + t_step) * stride, tile, mask, T > 1, ACC_LAYOUT_IO, FRAGMENTS)
    for s in range(1, T):
        t += t_step
        xw_t = xw.to(ACC_DTYPE)
        if b_hh_ptr is not None:
            xw_t += bias
        # Step t+1's input, loaded while this step computes.
        xw = load_tile(xw_ptr + (t + t_step) * stride, tile, mask, s + 1 < T, ACC_LAYOUT_IO, FRAGMENTS)
        if L2_PREFETCH_STEPS:
            prefetch_l2(xw_ptr + (t + L2_PREFETCH_STEPS * t_step) * stride, s + L2_PREFETCH_STEPS < T, rows, columns,
                        BLOCK_B)
        a = product(u, h, xw_t, IO_DTYPE, DOT_PRECISION, UPCAST_DOT, IN_IO_LAYOUT)
        h = apply_activation(a, ACTIVATION, TANH_FORM)
        store_tile(y_ptr + t * stride, tile, h.to(IO_DTYPE), mask, ACC_LAYOUT_IO, FRAGMENTS)
    # h_n from the registers: no copy of y's last step. A barrier a launch, as in fma_forward_kernel, for the compile
    # audit's check of a kernel that writes over its input (audit.first_step_ordered).
    tl.debug_barrier()
    tl.store(hn_ptr + state_tile, h.to(IO_DTYPE), mask=state_mask)


@triton.jit
def resident_backward_kernel(
    y_ptr,          # [T, B, H] forward hidden states h_t, I/O dtype, contiguous (FRAGMENTS: fragment order)
    dy_ptr,         # [T, B, H] dL/dh_t from the layer's output, contiguous, y's layout; None: zeros (the loss reads
                    # h_n alone)
    u_ptr,          # [H, H] recurrent weight U, contiguous
    dhn_ptr,        # [B, H] dL/dh_n (or a later segment's dL/dh), any float dtype, added to the first reverse step's
                    # dy in the accumulator dtype; None: none
    da_ptr,         # [T, B, H] out: dL/da_t, I/O dtype, y's layout (FRAGMENTS: may be dy itself)
    dh0_ptr,        # [B, H] out: dL/dh_0, in the accumulator dtype
    pin,            # 1.0, as a runtime float: keeps U^T in registers
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first reverse step: T - 1, or 0 for the reverse direction
    t_step,         # -1 or +1
    ACTIVATION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr, ACC_LAYOUT_IO: tl.constexpr, FRAGMENTS: tl.constexpr,
    IN_IO_LAYOUT: tl.constexpr,  # as in resident_forward_kernel
    L2_PREFETCH_STEPS: tl.constexpr,  # h's and dy's tiles this many steps ahead prefetched into L2 (0: none)
):
    IO_DTYPE: tl.constexpr = da_ptr.dtype.element_ty
    tile, mask = step_tile(B, H, BLOCK_B, BLOCK_H, FRAGMENTS)
    u_t = left_operand(load_pinned_u(u_ptr, pin, H, BLOCK_H, True, ACC_DTYPE, UPCAST_DOT), DOT_PRECISION)
    rows, columns = step_matrix(B, H, BLOCK_B, BLOCK_H, FRAGMENTS)
    stride = rows * columns
    t = tl.cast(t_first, tl.int64)
    # The first reverse step has no carry: da = dy * act'(h).
    h = load_tile(y_ptr + t * stride, tile, mask, True, False, FRAGMENTS).to(ACC_DTYPE)
    g = load_gradient(dy_ptr, t * stride, tile, mask, True, False, FRAGMENTS, BLOCK_B, BLOCK_H).to(ACC_DTYPE)
    state_tile, state_mask = transposed_tile(B, H, BLOCK_B, BLOCK_H)  # dL/dh_n's and dL/dh_0's
    if dhn_ptr is not None:
        g += tl.load(dhn_ptr + state_tile, mask=state_mask, other=0.0).to(ACC_DTYPE)
    da = g * activation_grad_from_output(h, ACTIVATION)
    # da may be stored over dy (FRAGMENTS): once a launch, a barrier orders the store after every thread's loads, as
    # the loop's barriers do, so that the compile audit can check it (audit.first_step_ordered).
    tl.debug_barrier()
    store_tile(da_ptr + t * stride, tile, da.to(IO_DTYPE), mask, ACC_LAYOUT_IO, FRAGMENTS)
    h = load_tile(y_ptr + (t + t_step) * stride, tile, mask, T > 1, ACC_LAYOUT_IO, FRAGMENTS)
    dy = load_gradient(dy_ptr, (t + t_step) * stride, tile, mask, T > 1, ACC_LAYOUT_IO, FRAGMENTS, BLOCK_B,
                       BLOCK_H)
    for s in range(1, T):
        t += t_step
        h_t = h.to(ACC_DTYPE)
        dy_t = dy.to(ACC_DTYPE)
        # Step t-1's inputs, loaded while this step computes.
        h = load_tile(y_ptr + (t + t_step) * stride, tile, mask, s + 1 < T, ACC_LAYOUT_IO, FRAGMENTS)
        dy = load_gradient(dy_ptr, (t + t_step) * stride, tile, mask, s + 1 < T, ACC_LAYOUT_IO, FRAGMENTS, BLOCK_B,
                           BLOCK_H)
        if L2_PREFETCH_STEPS:
            ahead = (t + L2_PREFETCH_STEPS * t_step) * stride
            prefetch_l2(y_ptr + ahead, s + L2_PREFETCH_STEPS < T, rows, columns, BLOCK_B)
            if dy_ptr is not None:
                prefetch_l2(dy_ptr + ahead, s + L2_PREFETCH_STEPS < T, rows, columns, BLOCK_B)
        g = product(u_t, da, dy_t, IO_DTYPE, DOT_PRECISION, UPCAST_DOT, IN_IO_LAYOUT)
        da = g * activation_grad_from_output(h_t, ACTIVATION)
        store_tile(da_ptr + t * stride, tile, da.to(IO_DTYPE), mask, ACC_LAYOUT_IO, FRAGMENTS)
    # After the loop: U^T's register value has this second user, which keeps it out of shared memory.
    dh0 = product(u_t, da, tl.zeros((BLOCK_H, BLOCK_B), ACC_DTYPE), IO_DTYPE, DOT_PRECISION, UPCAST_DOT, IN_IO_LAYOUT)
    tl.store(dh0_ptr + state_tile, dh0, mask=state_mask)


def stores_over_input(keywords: dict, backward: bool) -> bool:
    """Whether a resident kernel launched with these keywords stores each step's output over that step's input (the
    compile audit checks its loop: audit.output_over_input): both kernels in fragment order (y over xw's copy, da
    over dy's), and the forward with the product converted into its tiles' layout (fp32's), y over xw where spared."""
    return keywords["FRAGMENTS"] or (not backward and keywords["IN_IO_LAYOUT"])


def resident_forward(xw: torch.Tensor, h0: torch.Tensor, u: torch.Tensor, reverse: bool, config: ResidentBlocks,
                     nonlinearity: str, xw_spare: bool = False, b_hh: torch.Tensor | None = None,
                     framed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(all hidden states [T, B, H], h_n [B, H]) of one layer-direction from h0 (None: zeros), b_hh (if given) added
    to every step's xw; xw, h0, u, b_hh contiguous, same dtype and device. With xw_spare the states are written over
    xw: in fragment order from the copy, which has read xw whole before the kernel runs; in fp32 by the kernel itself
    (stores_over_input). framed: in a frame holding h0 (frames.py), xw's own where spared (made by
    frames.framed_empty)."""
    T, B, H = xw.shape
    h_n = xw.new_empty((B, H))
    keywords = launch_keywords(config, nonlinearity, xw.dtype, interpreting(), backward=False,
                               fragment_order=fragments.within_padding_bound(B, H, config.BLOCK_B, config.BLOCK_H))
    y = xw if xw_spare and stores_over_input(keywords, backward=False) else empty_states(xw, framed, reverse)
    h0_copy = slot(y, reverse) if framed and h0 is not None else None

    def launch(steps: torch.Tensor, out: torch.Tensor):  # the L2 prefetch by what it streams: xw (or its copy) and y
        resident_forward_kernel[(cdiv(B, config.BLOCK_B),)](
            steps, h0, u, b_hh, out, h_n, h0_copy, PIN, T, B, H, T - 1 if reverse else 0, -1 if reverse else 1,
            **keywords | {"L2_PREFETCH_STEPS": prefetch_distance(keywords, (steps, out))})
    if keywords["FRAGMENTS"]:  # y written over xw's copy in fragment order (fragments.py), then copied back
        steps = to_fragment_order(xw, config.BLOCK_B, config.BLOCK_H)
        launch(steps, steps)
        return from_fragment_order(steps, B, H, config.BLOCK_B, config.BLOCK_H, out=y), h_n
    launch(xw, y)
    return y, h_n


def resident_backward(y: torch.Tensor, dy: torch.Tensor | None, u: torch.Tensor, reverse: bool,
                      config: ResidentBlocks, nonlinearity: str, dh_n: torch.Tensor | None = None,
                      dh0_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(da [T, B, H] in the I/O dtype, dh0 [B, H] in the accumulator dtype, or rounded once to dh0_dtype if given) for
    one layer-direction from dy (None: zeros, none read), dh_n (if given) added to the first reverse step's dy; inputs
    contiguous."""
    T, B, H = y.shape
    dh0 = torch.empty((B, H), dtype=dh0_dtype or accumulator_dtype(y.dtype), device=y.device)
    keywords = launch_keywords(config, nonlinearity, y.dtype, interpreting(), backward=True,
                               fragment_order=fragments.within_padding_bound(B, H, config.BLOCK_B, config.BLOCK_H))

    def launch(states: torch.Tensor, gradients: torch.Tensor | None, da: torch.Tensor):  # prefetch by y, dy and da
        cold = None if keywords["FRAGMENTS"] else gradients  # dy as given; its fragment-order copy is the call's
        resident_backward_kernel[(cdiv(B, config.BLOCK_B),)](
            states, gradients, u, dh_n, da, dh0, PIN, T, B, H, 0 if reverse else T - 1, 1 if reverse else -1,
            **keywords | {"L2_PREFETCH_STEPS": prefetch_distance(keywords, (states, gradients, da), cold)})
    if keywords["FRAGMENTS"]:  # da written over dy's copy in fragment order (without dy, a buffer of its own)
        if dy is None:
            da = fragments.empty_fragment_order(T, B, config.BLOCK_B, config.BLOCK_H, y.dtype, y.device)
        else:
            da = to_fragment_order(dy, config.BLOCK_B, config.BLOCK_H)
        launch(to_fragment_order(y, config.BLOCK_B, config.BLOCK_H), None if dy is None else da, da)
        return from_fragment_order(da, B, H, config.BLOCK_B, config.BLOCK_H), dh0
    da = torch.empty_like(y)
    launch(y, dy, da)
    return da, dh0
