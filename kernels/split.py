"""Split-H persistent kernels: U spread over the SMs for hidden sizes one SM cannot hold.

Program (p, q) of the grid (cdiv(H, BLOCK_N), cdiv(B, BLOCK_B)) owns columns
n in [p*BLOCK_N, (p+1)*BLOCK_N) of the state and batch rows of tile q. It keeps its slice of the
recurrent matrix on chip for all T steps and meets the other programs of its batch tile at a
grid barrier (barrier.py) after every step:

    forward:   h_t[:, n]     = act(xw_t[:, n] + h_{t-1} U^T[:, n])       slice U^T[:, n] = U[n, :]^T
    backward:  da_t[:, n]    = (dy_t[:, n] + dh_t[:, n]) * act'(h_t[:, n])
               dh_{t-1}[:, n] = da_t U[:, n]                              slice U[:, n]

The whole previous state (h_{t-1} forward, da_t backward) is read from global memory (L2) each
step, as written by all programs of the tile in the previous step. Its rounding to the I/O dtype is
the same one the resident kernel applies before its product, so both tiers give the same numbers.
The backward's dh stays in fp32 registers: each program only ever needs its own columns of it.

In the interpreter programs run one after another, so the barrier (USE_BARRIER) is compiled out
and the launcher runs one launch per step; the barrier itself is tested with a one-program grid.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .activations import activation_grad_from_output, apply_activation
from .barrier import grid_barrier
from .driver import time_order
from .launch import Blocks, accumulator_dtype, common_keywords
from .matmul import load_resident_operand, shared_state_product
from .runtime import interpreting


@dataclass(frozen=True)
class SplitBlocks(Blocks):
    """Compile-time configuration of one split kernel."""
    BLOCK_B: int     # batch rows per program (>= 16 for tl.dot)
    BLOCK_N: int     # state columns (slice of U) per program
    BLOCK_H: int     # H padded to a power of two (the K of the product)
    K_CHUNKS: int    # the slice is held and multiplied as 1, 2 or 4 row blocks
    num_warps: int
    num_stages: int = 1  # nothing prefetched across the grid barrier


def launch_keywords(config: SplitBlocks, nonlinearity: str, dtype: torch.dtype, interpreted: bool,
                    backward: bool) -> dict:
    """Everything a split kernel takes besides tensors and sizes. The interpreter runs programs one
    after another, so there the barrier is compiled out and the launcher runs one launch per step."""
    return config.keywords() | common_keywords(nonlinearity, dtype, interpreted) | {
        "DOT_PRECISION": "ieee", "USE_BARRIER": not interpreted}


@triton.jit
def slice_tile(first_tile, B, H, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch rows and row mask, and the offsets and mask of its [BLOCK_B, BLOCK_N] tile."""
    rows = (first_tile + tl.program_id(1)) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < B
    return rows, row_mask, rows[:, None] * H + cols[None, :], row_mask[:, None] & (cols[None, :] < H)


@triton.jit
def split_forward_kernel(
    xw_ptr,         # [T, B, H] input projection incl. both biases, I/O dtype, contiguous
    h0_ptr,         # [B, H] state before this launch's first step (h0, or h_{t-1} in one-step launches)
    u_ptr,          # [H, H] recurrent weight U = weight_hh, contiguous
    y_ptr,          # [T, B, H] out: h_t, I/O dtype; also where the next step reads h_{t-1}
    counter_ptr,    # [batch tiles in this launch] int32 barrier counters, zeroed by the launcher
    status_ptr,     # [1] int32, set to 1 if a barrier timed out
    first_tile,     # batch tile of program_id(1) == 0 (launches take as many tiles as the SMs hold)
    T, B, H,        # steps in this launch, batch, hidden size
    t_first,        # time index of the first step
    t_step,         # +1 or -1
    ACTIVATION: tl.constexpr,     # 0 tanh, 1 relu
    BLOCK_B: tl.constexpr,        # batch rows per program (>= 16 for tl.dot)
    BLOCK_N: tl.constexpr,        # state columns (slice of U) per program
    BLOCK_H: tl.constexpr,        # H padded to a power of two (the K of the product)
    K_CHUNKS: tl.constexpr,       # the slice is held and multiplied as 1, 2 or 4 row blocks
    USE_BARRIER: tl.constexpr,    # False only for one-step launches (interpreter)
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32"; only matters for fp32
    ACC_DTYPE: tl.constexpr,      # tl.float32 (tl.float64 for float64 I/O)
    UPCAST_DOT: tl.constexpr,     # interpreter workaround, see matmul.py
):
    rows, row_mask, tile, tile_mask = slice_tile(first_tile, B, H, BLOCK_B, BLOCK_N)
    m0, m1, m2, m3 = load_resident_operand(u_ptr, tl.program_id(0) * BLOCK_N, H, BLOCK_H, BLOCK_N, K_CHUNKS,
                                           True, UPCAST_DOT)
    groups = tl.num_programs(0)
    prev_ptr = h0_ptr
    for s in range(T):
        t = t_first + tl.cast(s, tl.int64) * t_step
        xw = tl.load(xw_ptr + t * B * H + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        a = shared_state_product(prev_ptr, rows, row_mask, H, m0, m1, m2, m3, xw, BLOCK_H, K_CHUNKS,
                                 y_ptr.dtype.element_ty, DOT_PRECISION, UPCAST_DOT)
        tl.store(y_ptr + t * B * H + tile, apply_activation(a, ACTIVATION).to(y_ptr.dtype.element_ty), mask=tile_mask)
        if USE_BARRIER:
            grid_barrier(counter_ptr + tl.program_id(1), status_ptr, (s + 1) * groups)
        prev_ptr = y_ptr + t * B * H


@triton.jit
def split_backward_kernel(
    y_ptr,          # [T, B, H] forward hidden states h_t, I/O dtype, contiguous
    dy_ptr,         # [T, B, H] dL/dh_t from the layer's outputs, contiguous
    u_ptr,          # [H, H] recurrent weight U, contiguous
    da_ptr,         # [T, B, H] out: dL/da_t, I/O dtype; the next step reads da_{t+1} from here
    da_in_ptr,      # [B, H] da of the step before this launch's first (zeros at the start), I/O dtype
    counter_ptr,    # [batch tiles in this launch] int32 barrier counters, zeroed by the launcher
    status_ptr,     # [1] int32, set to 1 if a barrier timed out
    first_tile,     # batch tile of program_id(1) == 0
    T, B, H,        # steps in this launch, batch, hidden size
    t_first,        # time index of the first (reverse) step
    t_step,         # -1 or +1
    ACTIVATION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    K_CHUNKS: tl.constexpr, USE_BARRIER: tl.constexpr, DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    UPCAST_DOT: tl.constexpr,     # as in split_forward_kernel
):
    rows, row_mask, tile, tile_mask = slice_tile(first_tile, B, H, BLOCK_B, BLOCK_N)
    m0, m1, m2, m3 = load_resident_operand(u_ptr, tl.program_id(0) * BLOCK_N, H, BLOCK_H, BLOCK_N, K_CHUNKS,
                                           False, UPCAST_DOT)
    groups = tl.num_programs(0)
    zeros = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
    last_ptr = da_in_ptr
    for s in range(T):
        t = t_first + tl.cast(s, tl.int64) * t_step
        dh = shared_state_product(last_ptr, rows, row_mask, H, m0, m1, m2, m3, zeros, BLOCK_H, K_CHUNKS,
                                  da_ptr.dtype.element_ty, DOT_PRECISION, UPCAST_DOT)
        h = tl.load(y_ptr + t * B * H + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        g = tl.load(dy_ptr + t * B * H + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE) + dh
        tl.store(da_ptr + t * B * H + tile, (g * activation_grad_from_output(h, ACTIVATION)).to(da_ptr.dtype.element_ty),
                 mask=tile_mask)
        if USE_BARRIER:
            grid_barrier(counter_ptr + tl.program_id(1), status_ptr, (s + 1) * groups)
        last_ptr = da_ptr + t * B * H


def split_grid(B: int, H: int, config: SplitBlocks) -> tuple[int, int]:
    """(column slices, batch tiles) over the whole batch; the slices of one tile meet at every barrier."""
    return triton.cdiv(H, config.BLOCK_N), triton.cdiv(B, config.BLOCK_B)


def launch_groups(B: int, H: int, config: SplitBlocks, sm_count: int) -> list[tuple[int, int]]:
    """(first batch tile, tiles) of each launch: every program of a launch must be resident at once,
    so a launch takes as many whole batch tiles as sm_count programs hold; more tiles run as
    further launches, one after another."""
    slices, tiles = split_grid(B, H, config)
    if slices > sm_count:
        raise RuntimeError(f"split-H needs {slices} co-resident programs per batch tile but the device has "
                           f"{sm_count} SMs: its barrier could never be met")
    per_launch = sm_count // slices
    return [(first, min(per_launch, tiles - first)) for first in range(0, tiles, per_launch)]


def _sm_count(device: torch.device) -> int:
    """Programs that can be resident at once: one per SM; one in the interpreter, which runs them in turn."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _launch_all_steps(kernel, args: tuple, T: int, t_first: int, t_step: int, config: SplitBlocks,
                      keywords: dict) -> None:
    """All T steps in one persistent launch per group of batch tiles, with the grid barrier; one host
    sync at the end reads whether any barrier timed out."""
    B, H = args[0].shape[1:]
    device = args[0].device
    status = torch.zeros(1, dtype=torch.int32, device=device)
    for first, tiles in launch_groups(B, H, config, _sm_count(device)):
        counters = torch.zeros(tiles, dtype=torch.int32, device=device)
        # The driver refuses a cooperative grid that cannot be co-resident, instead of hanging.
        cooperative = {"launch_cooperative_grid": True} if device.type == "cuda" else {}
        kernel[(split_grid(B, H, config)[0], tiles)](*args, counters, status, first, T, B, H, t_first, t_step,
                                                      **keywords, **cooperative)
    if status.item():
        raise RuntimeError("split-H grid barrier timed out: not all programs were resident at once")


def _launch_one_step(kernel, args: tuple, t: int, config: SplitBlocks, keywords: dict) -> None:
    """One step, no barrier: the launch boundary is the synchronisation (interpreter)."""
    B, H = args[0].shape[1:]
    unused = torch.zeros(1, dtype=torch.int32, device=args[0].device)
    kernel[split_grid(B, H, config)](*args, unused, unused, 0, 1, B, H, t, 1, **keywords)


def split_forward(xw: torch.Tensor, h0: torch.Tensor, u: torch.Tensor, reverse: bool, config: SplitBlocks,
                  nonlinearity: str, use_barrier: bool | None = None) -> torch.Tensor:
    """All hidden states [T, B, H] of one layer-direction; inputs contiguous. With the barrier (the
    default when compiled): one persistent launch for all steps; without it, one launch per step."""
    T = xw.shape[0]
    y = torch.empty_like(xw)
    order = time_order(T, reverse)
    keywords = _keywords(config, nonlinearity, xw.dtype, False, use_barrier)
    if keywords["USE_BARRIER"]:
        _launch_all_steps(split_forward_kernel, (xw, h0, u, y), T, order[0], -1 if reverse else 1, config, keywords)
        return y
    prev = h0
    for t in order:  # each launch reads the state the previous one wrote (h0 first)
        _launch_one_step(split_forward_kernel, (xw, prev, u, y), t, config, keywords)
        prev = y[t]
    return y


def split_backward(y: torch.Tensor, dy: torch.Tensor, u: torch.Tensor, reverse: bool, config: SplitBlocks,
                   nonlinearity: str, use_barrier: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(da [T, B, H] in the I/O dtype, dh0 [B, H] in the accumulator dtype); inputs contiguous.
    dh0 = da_first U is one small GEMM after the kernel: as a trailing product inside it, it made
    ptxas spill heavily at large H (compile audit)."""
    T = y.shape[0]
    da = torch.empty_like(y)
    da_in = torch.zeros_like(y[0])
    order = time_order(T, not reverse)  # backward walks the forward order in reverse
    keywords = _keywords(config, nonlinearity, y.dtype, True, use_barrier)
    if keywords["USE_BARRIER"]:
        _launch_all_steps(split_backward_kernel, (y, dy, u, da, da_in), T, order[0], 1 if reverse else -1, config,
                          keywords)
    else:
        for t in order:  # each launch reads the da its predecessor wrote (zeros first)
            _launch_one_step(split_backward_kernel, (y, dy, u, da, da_in), t, config, keywords)
            da_in = da[t]
    acc = accumulator_dtype(y.dtype)
    return da, da[order[-1]].to(acc) @ u.to(acc)


def _keywords(config: SplitBlocks, nonlinearity: str, dtype: torch.dtype, backward: bool,
              use_barrier: bool | None) -> dict:
    """launch_keywords here; use_barrier=True runs the barrier path in the interpreter (tests, one-program grids)."""
    keywords = launch_keywords(config, nonlinearity, dtype, interpreting(), backward)
    if use_barrier is not None:
        keywords["USE_BARRIER"] = use_barrier
    return keywords
