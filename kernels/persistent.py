"""Resident persistent kernels: one launch runs all T steps, U stays on chip for all of them.

Forward, for one layer and direction (a_t is the pre-activation)::

    a_t = xw_t + h_{t-1} U^T,   h_t = act(a_t),   xw_t = x_t W_ih^T + b_ih + b_hh (one GEMM, outside)

Backward (BPTT) in one reverse launch, from the stored h_t alone::

    g_t = dy_t + dh_t,   da_t = g_t * act'(h_t),   dh_{t-1} = da_t U

where dy_t is the gradient arriving from the layer's outputs and dh_t the one carried from step t+1.
The weight gradients are large GEMMs over all t, done afterwards by the caller.

Each program owns a BLOCK_B-row tile of the batch and loads the whole of U (padded to
BLOCK_H x BLOCK_H) once, before its time loop; the compiler keeps it in registers / shared memory.
The carry (h or dh) stays in fp32 registers across steps; only h_t and da_t go to global memory.
Programs never talk to each other, so the grid is simply cdiv(B, BLOCK_B).
"""
import torch
import triton
import triton.language as tl

from .activations import activation_grad_from_output, apply_activation
from .matmul import accumulator_dtype, load_resident_operand, recurrent_product


@triton.jit
def batch_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets and mask of this program's [BLOCK_B, BLOCK_H] tile in a contiguous [B, H] matrix."""
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    return offs_b[:, None] * H + offs_h[None, :], (offs_b[:, None] < B) & (offs_h[None, :] < H)


@triton.jit
def resident_forward_kernel(
    xw_ptr,         # [T, B, H] input projection incl. both biases, I/O dtype, contiguous
    h0_ptr,         # [B, H] initial hidden state, I/O dtype, contiguous
    u_ptr,          # [H, H] recurrent weight U = weight_hh (row i feeds unit i), contiguous
    y_ptr,          # [T, B, H] out: h_t for every t, I/O dtype
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first step: 0, or T - 1 for the reverse direction
    t_step,         # +1 or -1
    ACTIVATION: tl.constexpr,     # 0 tanh, 1 relu
    BLOCK_B: tl.constexpr,        # batch rows per program (>= 16 for tl.dot)
    BLOCK_H: tl.constexpr,        # H padded to a power of two
    K_CHUNKS: tl.constexpr,       # U is held and multiplied as 1, 2 or 4 row blocks (see matmul.py)
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32"; only matters for fp32
    ACC_DTYPE: tl.constexpr,      # carry and accumulation: tl.float32 (tl.float64 for float64 I/O)
    UPCAST_DOT: tl.constexpr,     # interpreter workaround, see matmul.py
):
    tile, tile_mask = batch_tile(B, H, BLOCK_B, BLOCK_H)
    # U^T as the [k, n] operand: element [k, n] = U[n, k]. Loaded once, resident for all T steps.
    m0, m1, m2, m3 = load_resident_operand(u_ptr, 0, H, BLOCK_H, BLOCK_H, K_CHUNKS, True, UPCAST_DOT)
    h = tl.load(h0_ptr + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
    for s in range(T):
        step = (t_first + tl.cast(s, tl.int64) * t_step) * B * H
        xw = tl.load(xw_ptr + step + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        a = recurrent_product(h, m0, m1, m2, m3, xw, BLOCK_B, BLOCK_H, K_CHUNKS, y_ptr.dtype.element_ty,
                              DOT_PRECISION, UPCAST_DOT)
        h = apply_activation(a, ACTIVATION)
        tl.store(y_ptr + step + tile, h.to(y_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def resident_backward_kernel(
    y_ptr,          # [T, B, H] forward hidden states h_t, I/O dtype, contiguous
    dy_ptr,         # [T, B, H] dL/dh_t from the layer's outputs (h_n's gradient included), contiguous
    u_ptr,          # [H, H] recurrent weight U, contiguous
    da_ptr,         # [T, B, H] out: dL/da_t, I/O dtype
    dh0_ptr,        # [B, H] out: dL/dh_0, in the accumulator dtype
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first reverse step: T - 1, or 0 for the reverse direction
    t_step,         # -1 or +1
    ACTIVATION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, K_CHUNKS: tl.constexpr,
    DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    UPCAST_DOT: tl.constexpr,     # as in resident_forward_kernel
):
    tile, tile_mask = batch_tile(B, H, BLOCK_B, BLOCK_H)
    # U itself as the [k, n] operand: dh_{t-1}[b, j] = sum_i da_t[b, i] U[i, j]. Resident for all steps.
    m0, m1, m2, m3 = load_resident_operand(u_ptr, 0, H, BLOCK_H, BLOCK_H, K_CHUNKS, False, UPCAST_DOT)
    zeros = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
    dh = zeros
    for s in range(T):
        step = (t_first + tl.cast(s, tl.int64) * t_step) * B * H
        h = tl.load(y_ptr + step + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        g = tl.load(dy_ptr + step + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE) + dh
        da = g * activation_grad_from_output(h, ACTIVATION)
        tl.store(da_ptr + step + tile, da.to(da_ptr.dtype.element_ty), mask=tile_mask)
        dh = recurrent_product(da, m0, m1, m2, m3, zeros, BLOCK_B, BLOCK_H, K_CHUNKS, y_ptr.dtype.element_ty,
                               DOT_PRECISION, UPCAST_DOT)
    tl.store(dh0_ptr + tile, dh, mask=tile_mask)


def resident_forward(xw: torch.Tensor, h0: torch.Tensor, u: torch.Tensor, reverse: bool, config: dict) -> torch.Tensor:
    """All hidden states [T, B, H] of one layer-direction; xw, h0, u contiguous, same dtype and device."""
    T, B, H = xw.shape
    y = torch.empty_like(xw)
    grid = (triton.cdiv(B, config["BLOCK_B"]),)
    resident_forward_kernel[grid](
        xw, h0, u, y, T, B, H, T - 1 if reverse else 0, -1 if reverse else 1,
        ACTIVATION=config["ACTIVATION"], BLOCK_B=config["BLOCK_B"], BLOCK_H=config["BLOCK_H"],
        K_CHUNKS=config["K_CHUNKS"], DOT_PRECISION=config["DOT_PRECISION"], ACC_DTYPE=config["ACC_DTYPE"], UPCAST_DOT=config["UPCAST_DOT"], num_warps=config["num_warps"])
    return y


def resident_backward(y: torch.Tensor, dy: torch.Tensor, u: torch.Tensor, reverse: bool,
                      config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(da [T, B, H] in the I/O dtype, dh0 [B, H] in the accumulator dtype) for one layer-direction; inputs contiguous."""
    T, B, H = y.shape
    da = torch.empty_like(y)
    dh0 = torch.empty((B, H), dtype=accumulator_dtype(y.dtype), device=y.device)
    grid = (triton.cdiv(B, config["BLOCK_B"]),)
    resident_backward_kernel[grid](
        y, dy, u, da, dh0, T, B, H, 0 if reverse else T - 1, 1 if reverse else -1,
        ACTIVATION=config["ACTIVATION"], BLOCK_B=config["BLOCK_B"], BLOCK_H=config["BLOCK_H"],
        K_CHUNKS=config["K_CHUNKS"], DOT_PRECISION=config["DOT_PRECISION"], ACC_DTYPE=config["ACC_DTYPE"], UPCAST_DOT=config["UPCAST_DOT"], num_warps=config["num_warps"])
    return da, dh0
