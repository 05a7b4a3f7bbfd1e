"""Split-H persistent kernels: U spread over the SMs for hidden sizes one SM cannot hold.

Program (p, g) of the grid (slices, groups) owns state columns n in [p*BLOCK_N, (p+1)*BLOCK_N) and
holds the matching slice of the recurrent matrix in registers for all T steps; it runs batch tiles
g, g + groups, g + 2*groups, ... of BLOCK_B rows every step, so one launch serves any batch. Per
step, written transposed like the resident tier (kernels/resident.py) so the slice is the MMA's left
operand::

    forward:   a_t^T[n, :]    = xw_t^T[n, :] + U[n, :] h_{t-1}^T          h_t = act(a_t)
    backward:  g_t^T[n, :]    = dy_t^T[n, :] + U[:, n]^T da_{t+1}^T        da_t = g_t * act'(h_t)

The whole previous state (h_{t-1} forward, da_{t+1} backward) is read from global memory (L2) each
step, as the programs of the group wrote it in the I/O dtype: the same rounding the resident kernel
applies before its product, and the same activation (tanh.approx.f32 for 16-bit I/O, activations.py),
so both tiers give the same numbers. The programs of a group meet at a grid barrier (barrier.py)
before each step reads that state. dh_0 = da_1 U is one GEMM afterwards.

As in the fma and resident tiers (dispatch.Tier.fused_ends), the launchers do the layer's ends with fewer launches
ahead of the kernel's, which is what a call's host spends while the GPU waits (where it has no earlier call's work:
barrier_status.py): the forward kernel adds b_hh to each step's input (the input GEMM takes b_ih alone), the state
of zeros a first step starts from where h_0 is None comes out of the one zeroed allocation that holds the barrier's
words (zeroed), as does the backward's first da_{t+1}, and the backward kernel adds dL/dh_n into its first reverse
step in fp32 (no copy of dy; after the product: held across it, it spilled by FMA at H = 2048). h_n is a copy of the
last state, launched behind the kernel, whose time on the GPU hides it: written by the kernel after its last step,
the copy changed ptxas's registers and schedules of the time loop and spilled in two configurations (compile audit).
Where the loss reads h_n alone the backward kernel reads no dy (step_tile of None: zeros).

U's slice stays in registers by the resident tier's means (a runtime pin and a first step outside
the loop) and because the product's K is cut into K_SPLIT parts, one per warp: the left operand is
[K_SPLIT, BLOCK_N, BLOCK_H / K_SPLIT], a batched tl.dot whose K_SPLIT partial products are summed,
so each warp holds only its part of the slice::

    a_t^T[n, :] = xw_t^T[n, :] + sum_c U[n, K(c)] h_{t-1}^T[K(c), :]
    K(c) = c * KC + [0, KC),   KC = BLOCK_H / K_SPLIT

The state a tile reads is the product's right operand, BLOCK_H x BLOCK_B: loaded into registers,
then staged through shared memory for the MMA. The K_SPLIT partial products are summed in each thread after one
layout conversion (IN_THREAD_SUM, layouts.sum_leading), not by Triton's sum over the warps, whose shared-memory
rounds had 16-way bank conflicts (Nsight Compute, below at IN_THREAD_SUM). The step's tiles are converted into the
layout of that sum, or in fp32 the sum once into theirs (layouts.py: timed slower in 16-bit).
Each program runs its tiles one after another, or, where the batch leaves it one (ONE_TILE), runs
that tile without a tile loop, its input loaded a step ahead taken as it is: a quarter fewer
instructions per step at H = 1024 (compile audit). Tried
on an H200 and removed (results/variants/20261126-h200-switches; the code is in commit 210ebe4):
wider tiles with the state read in K chunks, where the SMs run out of batch groups (7-10% slower at
H = 2048), and slices of 64 or 128 rows without the K split at H = 512, whose product sm_90 issues as
wgmma (no faster than the K split).

fp32 at H = 2048 multiplies by FMA instead (FMA, fma_slice_product): its 128 slices of 16 rows hold 128 KiB
of U each, which takes 16 warps' 64 registers a thread, and 3xTF32's product at that size spills (its
operand's TF32 parts take more registers than 16 warps' limit of 128). The slice is held as
[BLOCK_H, BLOCK_N] from a row-major matrix along n (the forward's launcher passes U^T; the backward's U is
one already), as four loads of every fourth row joined (fma_slice): each thread holds 4 columns of 16 k rows in
4 runs of 4 consecutive k, the warps and 8 lanes run along k. (fma.py's kernels hold whole columns a thread
instead; with K = 2048 and 16 columns, that would have every warp read the whole state.) Each batch row of the
tile is then one FMA sum per thread; with IN_THREAD_SUM each pair of rows' sums are spread over the 8 lanes by one
layout conversion and the warps' parts of all the tile's rows summed once, in each thread; without it 3 shuffle
rounds and one sum over the warps through shared memory a pair of rows (exact fp32 either way, as cuDNN's fp32
kernels multiply)::

    a_t^T[n, b] = xw_t^T[n, b] + sum_k M[k, n] h_{t-1}[b, k],   M = U^T (forward), U (backward)

A tl.dot by FMA, or one [BLOCK_H, BLOCK_N, BLOCK_B] product, would take layouts whose lanes run along the
batch and hold U's slice once per lane (compile audit: 2 KiB of spills a thread). The state's rows are
loaded coalesced and converted into the product's layout through shared memory (1024 of a tile's 2530
shared-memory wavefronts at H = 2048, compile audit).

Tried and dropped (timed on an H200, 2026-11-27): each thread reading its runs of the state's rows straight from L2,
one 16-byte load a run (inline PTX, since Triton gives every tl.load a coalesced layout of its own), instead of the
coalesced load and its conversion. Compile audit, sm_90, fp32 H = 2048, forward/backward, one 8-row tile a step: 1506
shared-memory wavefronts instead of 2530, 14 CTA barriers instead of 30, 791/789 instructions instead of 838/848, no
spills; but a row took 16 registers in flight where the coalesced load took 4, so only the next pair's first row
could be loaded ahead (both spilled), and the second row's L2 latency fell in its pair's product. It took 0.99-1.05x
this form's time (fp32 H = 2048, B = 8 and 64, T = 1024; results/variants/20261127-h200-untimed/split_sum.csv), and
its GPU test at B = 64 had not ended when its step's time ran out.

The exchange is what a split step costs beyond the product: each program's stores, a fence to make
them visible at GPU scope (the barrier's release), the arrival on the group's counter, polling it
until every program has arrived, then one read of the whole state through L2: about four L2 round
trips per step. `rnnbench exchange` times it apart from the product: WORK = EXCHANGE_STEP compiles the
product out (the state is still read and summed, the new state written and the barrier met), and
BARRIER_STEP the state's read too, which leaves the stores and the barrier. State words that carry
their step (data and step in one 8-byte word, as NCCL's LL protocol does; branch ll-exchange) drop
the fence and turn the poll into the state read itself, but were 1.2-2.6x slower than this barrier
on an H200 (results/variants/20261126-h200). A step flag per program, every warp polling all of the
group's flags at once (3 fewer CTA barriers per step), was no faster at H = 512 and 1024 and 60%
slower at H = 2048 (results/variants/20261126-h200-switches; commit 210ebe4).
With CLUSTER > 1 (dispatch.SPLIT_CLUSTER_CONFIGS, sm_90: by default 16-bit H = 512, timed 18-24% faster
forward than the grid barrier on an H200; the others with dispatch.SPLIT_CLUSTERS) each batch
group is one thread-block cluster of CLUSTER programs, which meet at barrier.cluster_barrier, the
hardware's barrier with release and acquire at cluster scope, instead of the counter: no atomic arrival,
no polling, and no co-residency to check, since a cluster's CTAs are scheduled together. Triton 3.6
compiles num_ctas > 1 as one program spread over the cluster (its PlanCTA pass fails on these kernels'
3-D tensors), so _launch_clusters launches the ordinary kernel with the cluster dimension set.
Triton 3.6 has no distributed shared memory (DESIGN.md section 9), but inline PTX reaches it: with EXCHANGE
dsmem-pull or dsmem-push (dispatch.SPLIT_CLUSTER_EXCHANGE, 16-bit, off and not yet run on a GPU) a cluster's
programs exchange the state in slots past the end of Triton's shared memory (dsmem.py) instead of through L2.

With K_CLUSTER > 1 (dispatch.SPLIT_K_CLUSTER, off: compiled and audited, never run on a GPU) both kernels split
their product's K over clusters of K_CLUSTER programs, for the large batches at H = 2048 whose every program reads its
group's whole state every step (64 MiB through L2 a step at B = 256: likely what bounds them, dispatch.py). The
programs of a cluster share BLOCK_N * K_CLUSTER columns; each holds them over its BLOCK_H / K_CLUSTER of K (as much of
U as before) and reads only that range of the state, and the cluster sums their fp32 partial products through
distributed shared memory once a tile (dsmem.sum_partials), each program keeping its own BLOCK_N columns::

    a_t^T[n, :] = xw_t^T[n, :] + sum_r U[n, K(r)] h_{t-1}^T[K(r), :]
    g_t^T[n, :] = dy_t^T[n, :] + sum_r U[K(r), n]^T da_{t+1}^T[K(r), :]     (backward: U's columns n)
    K(r) = r * KR + [0, KR),   KR = BLOCK_H / K_CLUSTER

The batch groups still meet at the grid barrier; the clusters add one cluster barrier a tile, whose arrival releases
only the partial products' shared memory (barrier.cluster_arrive_shared). Compile audit, sm_90
bf16 at H = 2048, 16-row tiles, the tile loop pipelined over 2 stages as today's, forward / backward: K_CLUSTER = 2
236 / 236 registers, 539 / 564 time-loop instructions; 4 254 / 249 and 603 / 623; no spills; today's form 242 / 246
and 579 / 606.

In the interpreter programs run one after another, so the barrier (USE_BARRIER) is compiled out
and the launcher runs one launch per step; the barrier itself is tested with a one-program grid. A cluster's programs
cannot meet there either, so K_CLUSTER runs as 1.
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import barrier
from .activations import activation_grad_from_output, apply_activation
from .barrier import cluster_arrive, cluster_arrive_shared, cluster_barrier, cluster_wait, grid_arrive, grid_wait
from .barrier_status import check_barriers, read_status
from .driver import time_order
from .dsmem import (
    EXCHANGES,
    L2,
    PULL,
    PUSH,
    exchange_bytes,
    get_state,
    init_mbarriers,
    partials_bytes,
    put_state,
    send_state,
    sum_partials,
    wait_state,
)
from .launch import SIXTEEN_BIT, Blocks, cdiv, common_keywords, tanh_form
from .layouts import converts_product, in_io_layout, side_by_side, sum_leading
from .runtime import capturing, co_resident_clusters, co_resident_programs, interpreting

PIN = 1.0  # the runtime float U's slice is multiplied by before the time loop (as in resident.py)
# Whether each program loads its first batch tile's step input (xw forward; h and dy backward) one step ahead, before
# the barrier, so that its read (from HBM once the inputs outgrow L2) overlaps the barrier and the product instead of
# the state's read. 16-bit I/O only (launch_keywords): fp32's 3xTF32 backward spills with it, and so does a pass of the
# FMA product, whose long product hides the load in the step anyway. On an H200 (bf16, T = 4096, H = 512-2048, B = 8
# and 64) it took 1-13% off the forward's time per step and 0.7-7% off forward+backward's
# (results/variants/20261126-h200-switches), though it costs 12-45 instructions per step forward and 22-74 backward.
INPUTS_AHEAD = True
# Whether those inputs are loaded after the program's arrival at its group's barrier (group_arrive) rather than before
# it. The arrival is a release, which orders every earlier memory operation of the program before it, loads as well as
# stores (SASS: MEMBAR.ALL.GPU ahead of the grid barrier's add and the cluster barrier's arrival), so a load issued
# before it may hold the arrival back by its own latency, an L2 or HBM round trip, every step; issued after it, the
# load overlaps the wait and the product, and is still a step ahead. Compile audit, sm_90 bf16: the time loop's loads
# of xw (h and dy) follow the fence and the arrival, 3 fewer instructions per step in most split configurations, the
# same registers. Chosen from the SASS: not yet timed (bash .ci/gpu arrival times rnnbench exchange and the layer both
# ways).
INPUTS_AFTER_ARRIVAL = True
# Whether the K_SPLIT partial products (one per warp) are summed in each thread after one layout conversion
# (layouts.sum_leading), or by Triton's sum over the warps, whose shared-memory stores and reads have 16-way bank
# conflicts: Nsight Compute counted 480 + 480 conflict wavefronts per program and step at H = 1024, B = 16 (61% of
# the step's shared-memory wavefronts) and 3840 + 3840 at H = 2048, B = 64 on an H200
# (results/variants/20261127-h200/ncu/README.md). Compile audit, sm_90, every split configuration with an MMA
# product: no conflicts (kernels/banks.py), 8-10 CTA barriers per step instead of 10-16, 7-45% fewer instructions,
# no spills (on sm_80 fp32's pipelined tile loop keeps tl.sum: SplitBlocks.IN_THREAD_SUM). The FMA product likewise
# (fma_slice_product), fp32 at H = 2048, one tile, forward/backward: no conflicts where there were 3072 wavefronts a
# step (2530 wavefronts in all instead of 7074), 30 CTA barriers instead of 48/50, 838/848 instructions instead of
# 1289/1315, at 16 warps' limit of 128 registers, no spills. On an H200 (T = 1024, bf16 and fp32, H = 1024 and 2048,
# B = 8 and 64) tl.sum took 1.18-1.94x this form's time forward, 1.19-1.83x forward+backward
# (results/variants/20261127-h200-untimed/split_sum.csv).
IN_THREAD_SUM = True
# Consecutive k each thread holds in a run of the FMA product's slice (fma_slice joins that many loads)
FMA_RUN = tl.constexpr(4)
# What a step does (the kernels' WORK): all of it, or less, so that `rnnbench exchange` can time the rest alone
FULL_STEP = tl.constexpr("full")
EXCHANGE_STEP = tl.constexpr("exchange")  # the product compiled out: the state read and summed, written, the barrier
BARRIER_STEP = tl.constexpr("barrier")  # the state's read compiled out too: each step adds 0 to its input
STEP_WORKS = (FULL_STEP.value, EXCHANGE_STEP.value, BARRIER_STEP.value)


@dataclass(frozen=True)
class SplitBlocks(Blocks):
    """Compile-time configuration of one split kernel."""
    BLOCK_B: int     # batch rows per tile: the MMA's N
    BLOCK_N: int     # state columns per program: the rows of its slice of U (U^T backward)
    BLOCK_H: int     # H padded to a power of two: the product's K
    K_SPLIT: int     # K split over the warps, one part per warp (BLOCK_H / K_SPLIT >= 16; with FMA num_warps)
    num_warps: int
    num_stages: int = 1  # software-pipeline stages of the tile loop (within a step, after its barrier); 1: none
    ONE_TILE: bool = False  # every program runs one batch tile per step (the launcher checks): no tile loop in a step
    CLUSTER: int = 1  # > 1: each batch group's programs are one cluster of this many CTAs (sm_90), cluster_barrier
    # How a group's programs pass the state on: "l2" (global memory), or, with CLUSTER = BLOCK_H / BLOCK_N and
    # ONE_TILE, "dsmem-pull" or "dsmem-push" (distributed shared memory, dsmem.py)
    EXCHANGE: str = L2.value
    # The product by FMA, one batch row at a time, U's slice held as [BLOCK_H, BLOCK_N] (fp32 where 3xTF32's slice
    # does not fit the registers: fma_slice_product); K_SPLIT = num_warps (the slice's layout spreads K over the warps
    # itself), the state through L2 (dsmem.py's slots are 16-bit)
    FMA: bool = False
    # The K_SPLIT partial products summed in each thread (module switch IN_THREAD_SUM; with FMA, fma_slice_product's);
    # the dispatcher turns it off where ptxas spills with it
    IN_THREAD_SUM: bool = True
    # > 1 (sm_90, 16-bit, H = BLOCK_H): the product's K split over clusters of this many programs, which
    # share BLOCK_N * K_CLUSTER columns, each holding them over BLOCK_H / K_CLUSTER of K and reading only that range
    # of the state; their partial products meet in distributed shared memory (dsmem.sum_partials). The grid
    # barrier stays.
    K_CLUSTER: int = 1

    def __post_init__(self):
        if self.EXCHANGE not in EXCHANGES:  # the kernels would take an unknown name for no exchange at all
            raise ValueError(f"SplitBlocks.EXCHANGE must be one of {', '.join(EXCHANGES)}, not {self.EXCHANGE!r}")
        if self.FMA and (self.K_SPLIT != self.num_warps or self.EXCHANGE != L2.value):
            raise ValueError(f"SplitBlocks.FMA takes K_SPLIT = num_warps and the L2 exchange, not {self.K_SPLIT} and "
                             f"{self.EXCHANGE}")
        if self.K_CLUSTER > 1 and (self.CLUSTER > 1 or self.FMA or self.EXCHANGE != L2.value):
            raise ValueError("SplitBlocks.K_CLUSTER takes the grid barrier, the L2 exchange and the MMA product, not "
                             f"CLUSTER = {self.CLUSTER}, EXCHANGE = {self.EXCHANGE}, FMA = {self.FMA}")


def launch_keywords(config: SplitBlocks, nonlinearity: str, dtype: torch.dtype, interpreted: bool,
                    backward: bool) -> dict:
    """Everything a split kernel takes besides tensors and sizes. The interpreter runs programs one
    after another, so there the barrier is compiled out and the launcher runs one launch per step."""
    return config.keywords() | common_keywords(nonlinearity, dtype, interpreted) | {
        # fp32's tl.dot by 3xTF32 (fp32 accuracy); with FMA there is no tl.dot
        "DOT_PRECISION": "tf32x3" if dtype == torch.float32 and not config.FMA else "ieee",
        "USE_BARRIER": not interpreted,
        "WORK": FULL_STEP.value, "EXCHANGE": L2.value if interpreted else config.EXCHANGE,
        # the interpreter runs programs one after another: a cluster's cannot meet inside a step there
        "K_CLUSTER": 1 if interpreted else config.K_CLUSTER,
        # 16-bit I/O or the interpreter: with it, fp32's 3xTF32 backward spills at BLOCK_H = 128 and 1024 (sm_90), and
        # the FMA product's at H = 2048 by 8 bytes, whose tens of barriers and thousands of cycles a tile hide the
        # input's load in the step anyway
        "INPUTS_AHEAD": INPUTS_AHEAD and (interpreted or dtype in SIXTEEN_BIT),
        "INPUTS_AFTER_ARRIVAL": INPUTS_AFTER_ARRIVAL,
        # the MMA product only: the FMA product's sum over the warps would be converted twice (layouts.py)
        "IN_IO_LAYOUT": converts_product(dtype) and not config.FMA,
        "IN_THREAD_SUM": IN_THREAD_SUM and config.IN_THREAD_SUM,
        **({} if backward else {"TANH_FORM": tanh_form(dtype, interpreted)})}


@triton.jit
def load_pinned_slice(u_ptr, pin, cols, H, BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr, TRANSPOSE: tl.constexpr,
                      ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr, FMA: tl.constexpr):
    """This program's slice as the left operand [K_SPLIT, BLOCK_N, KC], KC = BLOCK_H / K_SPLIT, zero-padded:
    element [c, n, k] is U[cols[n], c*KC + k] (forward) or its transpose's (TRANSPOSE, backward); with FMA as
    [BLOCK_H, BLOCK_N], element [k, n] at u_ptr + k*H + cols[n] (the forward's launcher passes U^T). Multiplied by
    the runtime float pin so that the compiler keeps it in registers."""
    if FMA:  # n contiguous in memory; runs of 4 k in each thread (fma_slice)
        resident_u = fma_slice(u_ptr, cols, H, BLOCK_H)
    else:
        KC: tl.constexpr = BLOCK_H // K_SPLIT
        n = cols[None, :, None]
        offs_k = tl.arange(0, K_SPLIT)[:, None, None] * KC + tl.arange(0, KC)[None, None, :]
        offsets = offs_k * H + n if TRANSPOSE else n * H + offs_k
        resident_u = tl.load(u_ptr + offsets, mask=(n < H) & (offs_k < H), other=0.0)
    resident_u = (resident_u.to(ACC_DTYPE) * pin).to(u_ptr.dtype.element_ty)  # exact: pin is 1.0
    if UPCAST_DOT:
        resident_u = resident_u.to(tl.float32)
    return resident_u


@triton.jit
def fma_slice(u_ptr, cols, H, BLOCK_H: tl.constexpr):
    """[BLOCK_H, BLOCK_N]: element [k, n] at u_ptr + k*H + cols[n] (zero past H), laid out with runs of FMA_RUN = 4
    consecutive k in each thread: four loads of every fourth row (each thread 4 columns of its rows, as Triton
    coalesces a load along n) joined in registers. The state's rows then reach the product 16 bytes a read: 2530
    shared-memory wavefronts a tile at H = 2048 against 4066 in the load's own layout (compile audit, sm_90)."""
    tl.static_assert(FMA_RUN == 4)
    # joined so that each run's 4 k lie in consecutive registers, in order
    kb = tl.arange(0, BLOCK_H // 4)[:, None] * 4
    n = cols[None, :]
    resident_u0 = tl.load(u_ptr + kb * H + n, mask=(n < H) & (kb < H), other=0.0)
    resident_u1 = tl.load(u_ptr + (kb + 1) * H + n, mask=(n < H) & (kb + 1 < H), other=0.0)
    resident_u2 = tl.load(u_ptr + (kb + 2) * H + n, mask=(n < H) & (kb + 2 < H), other=0.0)
    resident_u3 = tl.load(u_ptr + (kb + 3) * H + n, mask=(n < H) & (kb + 3 < H), other=0.0)
    runs = tl.join(tl.join(resident_u0, resident_u2), tl.join(resident_u1, resident_u3))  # [.., n, k // 2 % 2, k % 2]
    return tl.reshape(tl.permute(runs, (0, 2, 3, 1)), (BLOCK_H, cols.shape[0]))


@triton.jit
def slice_product(u3, state_ptr, tile, B, H, slot, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
                  ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr, WORK: tl.constexpr,
                  READ: tl.constexpr, FMA: tl.constexpr, IN_IO_LAYOUT: tl.constexpr,
                  IN_THREAD_SUM: tl.constexpr):
    """[BLOCK_N, BLOCK_B]: the slice times the tile's rows of a [B, H] state in global memory, which
    other programs wrote this launch (.cg: read through L2, never a stale L1 line); with READ another exchange
    than L2, of the state in the cluster's slots `slot` instead (dsmem.py); with FMA by fma_slice_product;
    with IN_IO_LAYOUT in the layout of the step's loads and stores (layouts.py). Less where WORK says so: the
    state's sum over the hidden units (EXCHANGE_STEP), or zeros (BARRIER_STEP)."""
    if WORK == BARRIER_STEP:
        acc = tl.zeros((BLOCK_N, BLOCK_B), ACC_DTYPE)
    elif FMA and WORK == FULL_STEP:
        acc = fma_slice_product(u3, state_ptr, tile, B, H, BLOCK_N, BLOCK_B, BLOCK_H, K_SPLIT, ACC_DTYPE,
                                IN_THREAD_SUM)
    else:
        rows, row_mask = tile_rows(tile, B, BLOCK_B)
        KC: tl.constexpr = BLOCK_H // K_SPLIT
        offs_k = tl.arange(0, K_SPLIT)[:, None, None] * KC + tl.arange(0, KC)[None, :, None]
        if READ != L2:
            state = get_state(offs_k, tl.arange(0, BLOCK_B)[None, None, :], slot, state_ptr.dtype.element_ty,
                              BLOCK_N, BLOCK_B, BLOCK_H, READ)
        else:
            state = tl.load(state_ptr + rows[None, None, :] * H + offs_k,
                            mask=row_mask[None, None, :] & (offs_k < H), other=0.0, cache_modifier=".cg")
        if WORK == EXCHANGE_STEP:  # keep the state's load and a use of it, drop the product
            summed = tl.sum(tl.sum(state.to(ACC_DTYPE), axis=1), axis=0)
            acc = tl.zeros((BLOCK_N, 1), ACC_DTYPE) + summed[None, :]
        else:
            if UPCAST_DOT:
                state = state.to(tl.float32)
            parts = tl.dot(u3, state, tl.zeros((K_SPLIT, BLOCK_N, BLOCK_B), ACC_DTYPE),
                           input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
            acc = sum_leading(parts) if IN_THREAD_SUM else tl.sum(parts, axis=0)
    if IN_IO_LAYOUT:
        acc = in_io_layout(acc)
    return acc


@triton.jit
def fma_slice_product(m, state_ptr, tile, B, H, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                      BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr, ACC_DTYPE: tl.constexpr,
                      IN_THREAD_SUM: tl.constexpr):
    """slice_product by FMA, for the slice m held as [BLOCK_H, BLOCK_N] (load_pinned_slice with FMA): a pair of batch
    rows at a time, sum_k m[k, n] v[k] for each, each thread summing its k rows in registers before the lanes' and
    warps' sums meet. Each pair's rows are loaded while the pair before is summed: the barriers keep the compiler from
    moving the loads up itself, and each load waits on L2. With IN_THREAD_SUM each pair's lanes' sums are spread over
    those lanes and the warps' parts of every row summed once a tile, in each thread (rows_by_warp; compile audit,
    sm_90, forward at H = 2048: no bank conflicts where there were 3072 wavefronts a step, 30 CTA barriers instead of
    48, 838 instructions instead of 1289; at 128 registers, the form whose pairs are joined one after another: joined at
    once, or a row at a time, a pass spilled); else the pair's products side by side share one tl.sum over the lanes and
    warps (48 CTA barriers per step of one 8-row tile, not 60 a row at a time). A tl.dot by FMA would hold U once per
    lane along the batch, and a [BLOCK_H, BLOCK_N, BLOCK_B] product takes a layout with the lanes along n and b: both
    hold U many times over."""
    tl.static_assert(BLOCK_B % 2 == 0)  # rows in pairs
    row = tile * BLOCK_B
    if IN_THREAD_SUM:
        tl.static_assert(BLOCK_B <= 8 or BLOCK_B == 16)
        if BLOCK_B <= 8:
            parts = rows_by_warp(m, state_ptr, row, B, H, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, ACC_DTYPE)
        else:
            parts = side_by_side(
                rows_by_warp(m, state_ptr, row, B, H, 8, BLOCK_N, BLOCK_H, K_SPLIT, ACC_DTYPE),
                rows_by_warp(m, state_ptr, row + 8, B, H, 8, BLOCK_N, BLOCK_H, K_SPLIT, ACC_DTYPE))
        return sum_leading(parts)
    acc = tl.zeros((BLOCK_N, BLOCK_B), ACC_DTYPE)
    ahead = state_pair(state_ptr, row, B, H, BLOCK_H, ACC_DTYPE)
    for b in tl.static_range(0, BLOCK_B, 2):
        v0, v1 = ahead
        if b + 2 < BLOCK_B:  # the next pair's rows, loaded before this pair's barriers
            ahead = state_pair(state_ptr, row + b + 2, B, H, BLOCK_H, ACC_DTYPE)
        first, second = tl.split(tl.sum(tl.join(m * v0[:, None], m * v1[:, None]), axis=0))
        acc = tl.where(tl.arange(0, BLOCK_B)[None, :] == b, first[:, None], acc)
        acc = tl.where(tl.arange(0, BLOCK_B)[None, :] == b + 1, second[:, None], acc)
    return acc


@triton.jit
def rows_by_warp(m, state_ptr, row, B, H, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
                 WARPS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """[WARPS, BLOCK_N, ROWS] (ROWS 2, 4 or 8): each warp's part of the products of rows row ... row + ROWS - 1 (its
    k summed), a pair at a time, each pair's rows loaded while the pair before is summed."""
    a0, a1 = state_pair(state_ptr, row, B, H, BLOCK_H, ACC_DTYPE)
    parts, a0, a1 = pair_then_ahead(m, state_ptr, row, a0, a1, B, H, ROWS > 2, BLOCK_N, BLOCK_H, WARPS, ACC_DTYPE)
    if ROWS > 2:
        second, a0, a1 = pair_then_ahead(m, state_ptr, row + 2, a0, a1, B, H, ROWS > 4, BLOCK_N, BLOCK_H, WARPS,
                                         ACC_DTYPE)
        parts = side_by_side(parts, second)
    if ROWS > 4:
        later, a0, a1 = pair_then_ahead(m, state_ptr, row + 4, a0, a1, B, H, True, BLOCK_N, BLOCK_H, WARPS,
                                        ACC_DTYPE)
        last, a0, a1 = pair_then_ahead(m, state_ptr, row + 6, a0, a1, B, H, False, BLOCK_N, BLOCK_H, WARPS,
                                       ACC_DTYPE)
        parts = side_by_side(parts, side_by_side(later, last))
    return parts


@triton.jit
def pair_then_ahead(m, state_ptr, row, v0, v1, B, H, MORE: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_H: tl.constexpr, WARPS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """(pair_by_warp of the pair at `row`, whose rows are v0 and v1, then the rows of the pair after it (state_pair)
    if MORE, loaded before this pair's product; else v0 and v1 again)."""
    a0, a1 = v0, v1
    if MORE:
        a0, a1 = state_pair(state_ptr, row + 2, B, H, BLOCK_H, ACC_DTYPE)
    return pair_by_warp(m, v0, v1, BLOCK_N, BLOCK_H, WARPS), a0, a1


@triton.jit
def pair_by_warp(m, v0, v1, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, WARPS: tl.constexpr):
    """[WARPS, BLOCK_N, 2]: each warp's part of m^T v0 and m^T v1. The slice's layout (fma_slice) puts k =
    ((rep * WARPS + warp) * LANES + lane) * FMA_RUN + i, LANES = 128 / BLOCK_N lanes along k (4 columns a thread):
    the reshape below names those axes without moving data, the reps and runs are summed in each thread, and the
    LANES lanes' sums are spread over them by one layout conversion (sum_leading), where tl.sum would leave every
    lane all of them."""
    RUN: tl.constexpr = FMA_RUN
    LANES: tl.constexpr = 128 // BLOCK_N if 128 // BLOCK_N * WARPS * RUN <= BLOCK_H else BLOCK_H // (WARPS * RUN)
    REPS: tl.constexpr = BLOCK_H // (WARPS * LANES * RUN)
    parts = tl.reshape(tl.join(m * v0[:, None], m * v1[:, None]), (REPS, WARPS, LANES, RUN, BLOCK_N, 2))
    parts = tl.reshape(tl.permute(parts, (0, 3, 1, 2, 4, 5)), (REPS * RUN, WARPS, LANES, BLOCK_N, 2))
    by_lane = tl.permute(tl.sum(parts, axis=0), (1, 0, 2, 3))  # [LANES, WARPS, BLOCK_N, 2]
    return tl.reshape(sum_leading(tl.reshape(by_lane, (LANES, WARPS, BLOCK_N * 2))), (WARPS, BLOCK_N, 2))


@triton.jit
def state_pair(state_ptr, row, B, H, BLOCK_H: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """([BLOCK_H], [BLOCK_H]): rows `row` and `row + 1` of a [B, H] state other programs wrote this launch (.cg, as
    slice_product), zeros past B and H."""
    offs_k = tl.arange(0, BLOCK_H)
    first = tl.load(state_ptr + row * H + offs_k, mask=(offs_k < H) & (row < B), other=0.0, cache_modifier=".cg")
    second = tl.load(state_ptr + (row + 1) * H + offs_k, mask=(offs_k < H) & (row + 1 < B), other=0.0,
                     cache_modifier=".cg")
    return first.to(ACC_DTYPE), second.to(ACC_DTYPE)


@triton.jit
def tile_rows(tile, B, BLOCK_B: tl.constexpr):
    """The batch rows of a tile and their mask."""
    rows = tile * BLOCK_B + tl.arange(0, BLOCK_B)
    return rows, rows < B


@triton.jit
def column_tile(tile, cols, B, H, BLOCK_B: tl.constexpr):
    """The offsets and mask of a tile's [BLOCK_N, BLOCK_B] block of a [B, H] matrix, transposed: element (n, b) is
    row tile * BLOCK_B + b, column cols[n]."""
    rows, row_mask = tile_rows(tile, B, BLOCK_B)
    return cols[:, None] + rows[None, :] * H, (cols[:, None] < H) & row_mask[None, :]


@triton.jit
def group_arrive(counter_ptr, CLUSTER: tl.constexpr, EXCHANGE: tl.constexpr):
    """This program's arrival at its batch group's barrier after writing a step, which releases the step's stores:
    at the cluster's barrier where the group is one cluster, else at the grid barrier on the group's counter
    (barrier.py); nothing for the dsmem exchanges, whose programs arrive as they write (publish_state). Separate from
    group_wait so that loads for a later step can go between the two: the release orders every earlier memory
    operation before the arrival, loads included (barrier.grid_arrive, INPUTS_AFTER_ARRIVAL)."""
    if EXCHANGE == L2:
        if CLUSTER > 1:
            cluster_arrive()
        else:
            grid_arrive(counter_ptr)


@triton.jit
def group_wait(counter_ptr, status_ptr, s, slices, CLUSTER: tl.constexpr, EXCHANGE: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """After group_arrive: every program of the batch group (its `slices` programs) has written step s - 1: the
    cluster's barrier where the group is one cluster (dsmem-pull too), the arrival of step s - 1's state (dsmem-push),
    else the grid barrier on the group's counter, which each program has reached s times once all have."""
    if EXCHANGE == PUSH:
        wait_state((s - 1) % 2, ((s - 1) // 2) % 2, status_ptr, BLOCK_N, BLOCK_B, CLUSTER)
    elif CLUSTER > 1:
        cluster_wait()
    else:
        grid_wait(counter_ptr, status_ptr, s * slices)


@triton.jit
def publish_state(value, cols, slot, send, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                  CLUSTER: tl.constexpr, WRITE: tl.constexpr):
    """With WRITE a dsmem exchange, this program's columns of the new state into its slot `slot`, then (pull) its
    arrival at the cluster's barrier, or (push, where send: a later step reads it) their copies to the other
    programs; before the state's store to global memory, which the arrival's fence then does not wait for."""
    if WRITE == PULL:
        put_state(value, cols, slot, BLOCK_B, BLOCK_H)
        cluster_arrive_shared()
    elif WRITE == PUSH:
        put_state(value, cols, slot, BLOCK_B, BLOCK_H)
        if send:
            send_state(slot, BLOCK_N, BLOCK_B, BLOCK_H, CLUSTER)


@triton.jit
def meet_cluster(EXCHANGE: tl.constexpr, START: tl.constexpr):
    """A dsmem exchange's set-up before the first step (START; push: the mbarriers, initialised before any program
    sends) or its end after the last: no program exits while another may still reach its shared memory."""
    if START and EXCHANGE == PUSH:
        init_mbarriers()
        cluster_barrier()
    if not START and EXCHANGE == PULL:
        cluster_wait()  # the last step's arrival
    if not START and EXCHANGE == PUSH:
        cluster_barrier()


@triton.jit
def program_end(EXCHANGE: tl.constexpr, K_CLUSTER: tl.constexpr):
    """After a program's last step: no program exits while another may still reach its shared memory (the dsmem
    exchange's slots: meet_cluster; a K split's partial slots: one more cluster barrier)."""
    meet_cluster(EXCHANGE, False)
    if K_CLUSTER > 1:
        cluster_barrier()


@triton.jit
def program_start(u_ptr, pin, t_first, B, H, BACKWARD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr, CLUSTER: tl.constexpr, ONE_TILE: tl.constexpr,
                  ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr, EXCHANGE: tl.constexpr, FMA: tl.constexpr,
                  K_CLUSTER: tl.constexpr):
    """What a program of either kernel sets up before its first step: its state columns, its slice of U (the
    backward's transposed) pinned in registers, the first step's time index t (64-bit: t * B * H can pass 2^31),
    the slices per group, its batch group, the groups and the batch tiles; and the cluster's exchange (meet_cluster).
    With K_CLUSTER, the slice is its cluster's BLOCK_N * K_CLUSTER columns over this program's range of K, which
    starts at k0 (returned last; else 0)."""
    # The slots hold one tile, and each column's owner is its cluster rank.
    tl.static_assert(EXCHANGE == L2 or (ONE_TILE and CLUSTER * BLOCK_N == BLOCK_H))
    meet_cluster(EXCHANGE, True)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    if K_CLUSTER > 1:  # the cluster's columns (its programs are consecutive along x), over this program's K range
        KR: tl.constexpr = BLOCK_H // K_CLUSTER
        k0 = (tl.program_id(0) % K_CLUSTER) * KR
        u_cols = tl.program_id(0) // K_CLUSTER * (BLOCK_N * K_CLUSTER) + tl.arange(0, BLOCK_N * K_CLUSTER)
        k_range = u_ptr + k0 * H if BACKWARD else u_ptr + k0  # U's rows k0.. (backward), or its columns
        u3 = load_pinned_slice(k_range, pin, u_cols, H, KR, K_SPLIT, BACKWARD, ACC_DTYPE, UPCAST_DOT, FMA)
    else:
        k0 = tl.program_id(0) * 0
        u3 = load_pinned_slice(u_ptr, pin, cols, H, BLOCK_H, K_SPLIT, BACKWARD, ACC_DTYPE, UPCAST_DOT, FMA)
    t = tl.cast(t_first, tl.int64)
    return cols, u3, t, tl.num_programs(0), tl.program_id(1), tl.num_programs(1), tl.cdiv(B, BLOCK_B), k0


@triton.jit
def step_tile(ptr, t, tile, cols, B, H, BLOCK_B: tl.constexpr, valid):
    """[BLOCK_N, BLOCK_B]: a tile of step t of a [T, B, H] tensor, transposed as column_tile lays it out,
    in its dtype; zeros where masked, or everywhere when valid is false (no memory read), or in fp32 where ptr is None
    (a dy the loss does not give: it reads h_n alone)."""
    out, out_mask = column_tile(tile, cols, B, H, BLOCK_B)
    if ptr is None:  # an else, not an early return (fma.load_row)
        values = tl.zeros(out.shape, tl.float32)
    else:
        values = tl.load(ptr + t * B * H + out, mask=out_mask & valid, other=0.0)
    return values


@triton.jit
def tile_input(ptr, first, t, tile, group, cols, B, H, BLOCK_B: tl.constexpr, INPUTS_AHEAD: tl.constexpr,
               ONE_TILE: tl.constexpr):
    """A tile's step-t input (xw; h and dy backward): for the group's first tile, first, as loaded a step ahead
    (INPUTS_AHEAD; else first is None and unused); for the others, read now."""
    if INPUTS_AHEAD:
        if ONE_TILE:  # the group's only tile: no choice to make
            return first
        else:
            return tl.where(tile == group, first, step_tile(ptr, t, tile, cols, B, H, BLOCK_B, tile != group))
    else:
        return step_tile(ptr, t, tile, cols, B, H, BLOCK_B, True)


@triton.jit
def tile_product(u3, state_ptr, tile, B, H, slot, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                 BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
                 UPCAST_DOT: tl.constexpr, WORK: tl.constexpr, READ: tl.constexpr, FMA: tl.constexpr,
                 IN_IO_LAYOUT: tl.constexpr, IN_THREAD_SUM: tl.constexpr, K_CLUSTER: tl.constexpr, k0):
    """[BLOCK_N, BLOCK_B]: this program's columns of the step's product for one batch tile, the state read at
    state_ptr (a dsmem READ's from slot 1 - slot: slice_product). With K_CLUSTER, the product over this program's
    range of K (from k0) of its cluster's columns, summed over the cluster in partial slot `slot`
    (dsmem.sum_partials), whose layout-free loads leave no layout to convert into (IN_IO_LAYOUT)."""
    if K_CLUSTER > 1:
        partial = slice_product(u3, state_ptr + k0, tile, B, H, 1 - slot, BLOCK_N * K_CLUSTER, BLOCK_B,
                                BLOCK_H // K_CLUSTER, K_SPLIT, DOT_PRECISION, ACC_DTYPE, UPCAST_DOT, WORK, READ, FMA,
                                False, IN_THREAD_SUM)
        return sum_partials(partial, slot, BLOCK_N, BLOCK_B, K_CLUSTER)
    else:
        return slice_product(u3, state_ptr, tile, B, H, 1 - slot, BLOCK_N, BLOCK_B, BLOCK_H, K_SPLIT, DOT_PRECISION,
                             ACC_DTYPE, UPCAST_DOT, WORK, READ, FMA, IN_IO_LAYOUT, IN_THREAD_SUM)


@triton.jit
def forward_tile(u3, prev_ptr, xw, bias, y_ptr, t, tile, cols, B, H, slot, send, CLUSTER: tl.constexpr,
                 ACTIVATION: tl.constexpr, BLOCK_B: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr,
                 WORK: tl.constexpr, TANH_FORM: tl.constexpr, READ: tl.constexpr, WRITE: tl.constexpr,
                 FMA: tl.constexpr, IN_IO_LAYOUT: tl.constexpr, IN_THREAD_SUM: tl.constexpr,
                 K_CLUSTER: tl.constexpr, k0):
    """Step t of one batch tile: y_t[:, cols] = act(xw_t[:, cols] + b_hh[cols] + prev U[cols, :]^T), xw_t's tile and
    b_hh[cols] (bias, [BLOCK_N]; None: none) given; prev read through the exchange READ (slot 1 - slot of a dsmem
    one), the result passed on through WRITE (slot `slot`; send: a later step reads it). With K_CLUSTER, the product
    over this program's K range (from k0) of its cluster's columns, summed over the cluster in partial slot `slot`
    (dsmem.sum_partials)."""
    step = t * B * H
    out, out_mask = column_tile(tile, cols, B, H, BLOCK_B)
    a = xw.to(ACC_DTYPE)
    if bias is not None:  # not on the step's serial chain: it needs xw alone
        a += bias[:, None]
    a += tile_product(u3, prev_ptr, tile, B, H, slot, BLOCK_N, BLOCK_B, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE,
                      UPCAST_DOT, WORK, READ, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
    # Without IN_IO_LAYOUT, tl.sum over the warps left every warp holding all of a (Triton's slice layout), so every
    # warp computed the whole tile's activation (at H = 1024 with 32 x 16 tiles, 16 tanh a thread against 2): the
    # approx TANH_FORM makes each one instruction, not about ten.
    h = apply_activation(a, ACTIVATION, TANH_FORM).to(y_ptr.dtype.element_ty)
    publish_state(h, cols, slot, send, BLOCK_N, BLOCK_B, BLOCK_H, CLUSTER, WRITE)
    tl.store(y_ptr + step + out, h, mask=out_mask)


@triton.jit
def backward_tile(u3, next_ptr, h, dy, dhn_ptr, da_ptr, t, tile, cols, B, H, slot, send, CLUSTER: tl.constexpr,
                  ACTIVATION: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, K_SPLIT: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr,
                  WORK: tl.constexpr, READ: tl.constexpr, WRITE: tl.constexpr, FMA: tl.constexpr,
                  IN_IO_LAYOUT: tl.constexpr, IN_THREAD_SUM: tl.constexpr, K_CLUSTER: tl.constexpr, k0):
    """Reverse step t of one batch tile, h_t's and dy_t's tiles given:
    da_t[:, cols] = (dy_t[:, cols] + dh_n[:, cols] + da_{t+1} U[:, cols]) * act'(h_t[:, cols]), da_{t+1} read at
    next_ptr (slots and K_CLUSTER as in forward_tile), dL/dh_n at dhn_ptr ([B, H]; None: none, as at every step but a
    launch's first)."""
    step = t * B * H
    out, out_mask = column_tile(tile, cols, B, H, BLOCK_B)
    h = h.to(ACC_DTYPE)
    g = dy.to(ACC_DTYPE) + tile_product(u3, next_ptr, tile, B, H, slot, BLOCK_N, BLOCK_B, BLOCK_H, K_SPLIT,
                                        DOT_PRECISION, ACC_DTYPE, UPCAST_DOT, WORK, READ, FMA, IN_IO_LAYOUT,
                                        IN_THREAD_SUM, K_CLUSTER, k0)
    if dhn_ptr is not None:  # loaded after the product, not held across it (fp32 at H = 2048 spilled so)
        g += tl.load(dhn_ptr + out, mask=out_mask, other=0.0).to(ACC_DTYPE)
    da = (g * activation_grad_from_output(h, ACTIVATION)).to(da_ptr.dtype.element_ty)
    publish_state(da, cols, slot, send, BLOCK_N, BLOCK_B, BLOCK_H, CLUSTER, WRITE)
    tl.store(da_ptr + step + out, da, mask=out_mask)


@triton.jit
def split_forward_kernel(
    xw_ptr,         # [T, B, H] input projection x_t W_ih^T + b_ih, I/O dtype, contiguous
    h0_ptr,         # [B, H] state before this launch's first step (h0, or the last the launch before wrote)
    u_ptr,          # [H, H] recurrent weight U = weight_hh (with FMA its transpose), contiguous
    b_hh_ptr,       # [H] recurrent bias b_hh, I/O dtype, added to every step's input; None: xw holds every bias
    y_ptr,          # [T, B, H] out: h_t, I/O dtype; also where the next step reads h_{t-1}
    counter_ptr,    # [groups] int32 barrier counters, zeroed by the launcher
    status_ptr,     # [1] int32, set to 1 if a barrier timed out
    pin,            # 1.0, as a runtime float: keeps U's slice in registers
    T, B, H,        # steps in this launch, batch, hidden size
    t_first,        # time index of the first step
    t_step,         # +1 or -1
    ACTIVATION: tl.constexpr,     # 0 tanh, 1 relu
    BLOCK_B: tl.constexpr,        # batch rows per tile
    BLOCK_N: tl.constexpr,        # state columns (slice of U) per program
    BLOCK_H: tl.constexpr,        # H padded to a power of two (the K of the product)
    K_SPLIT: tl.constexpr,        # K split over the warps, one part per warp
    USE_BARRIER: tl.constexpr,    # False only for one-step launches (interpreter)
    CLUSTER: tl.constexpr,        # > 1: the group is one cluster of CLUSTER programs, met at cluster_barrier
    INPUTS_AHEAD: tl.constexpr,   # the group's first tile of each step's input loaded a step ahead
    INPUTS_AFTER_ARRIVAL: tl.constexpr,  # those loads issued after the program's arrival at the group barrier
    ONE_TILE: tl.constexpr,       # the group's first tile is its only one (launcher-checked): no tile loop
    DOT_PRECISION: tl.constexpr,  # "ieee" (16-bit) or "tf32x3" (fp32)
    ACC_DTYPE: tl.constexpr,      # tl.float32
    UPCAST_DOT: tl.constexpr,     # interpreter workaround for bf16 tl.dot (launch.py)
    WORK: tl.constexpr,           # what a step does: FULL_STEP, or less to time the rest (`rnnbench exchange`)
    EXCHANGE: tl.constexpr,       # "l2", "dsmem-pull" or "dsmem-push": how the state reaches the group's programs
    TANH_FORM: tl.constexpr,      # activations.py: approx (16-bit on a GPU), ftz (fp32 on a GPU), portable
    FMA: tl.constexpr,            # the product by FMA (fma_slice_product), not tl.dot
    IN_IO_LAYOUT: tl.constexpr,   # the product converted into the loads' layout (layouts.converts_product)
    IN_THREAD_SUM: tl.constexpr,  # the K_SPLIT partial products summed in each thread (layouts.sum_leading)
    K_CLUSTER: tl.constexpr,      # > 1: the product's K split over clusters of this many programs (SplitBlocks)
):
    cols, u3, t, slices, group, groups, tiles, k0 = program_start(u_ptr, pin, t_first, B, H, False, BLOCK_B, BLOCK_N,
                                                                  BLOCK_H, K_SPLIT, CLUSTER, ONE_TILE, ACC_DTYPE,
                                                                  UPCAST_DOT, EXCHANGE, FMA, K_CLUSTER)
    bias = None
    if b_hh_ptr is not None:  # b_hh's values of the program's columns, loaded once
        bias = tl.load(b_hh_ptr + cols, mask=cols < H, other=0.0).to(ACC_DTYPE)
    # Step 0 of the group's first tile, outside any loop: U's register value gets a user there, which
    # keeps its load out of the loops.
    forward_tile(u3, h0_ptr, step_tile(xw_ptr, t, group, cols, B, H, BLOCK_B, True), bias, y_ptr, t, group, cols, B,
                 H, 0, T > 1, CLUSTER, ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE,
                 UPCAST_DOT, WORK, TANH_FORM, L2, EXCHANGE, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER,
                 k0)
    uses = 1  # tiles run so far: where programs run several, they take K_CLUSTER's partial slots in turn
    if not ONE_TILE:  # the group's other tiles (with ONE_TILE there are none: launcher-checked)
        for tile in range(group + groups, tiles, groups):
            forward_tile(u3, h0_ptr, step_tile(xw_ptr, t, tile, cols, B, H, BLOCK_B, True), bias, y_ptr, t, tile,
                         cols, B, H, uses % 2, False, CLUSTER, ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT,
                         DOT_PRECISION, ACC_DTYPE, UPCAST_DOT, WORK, TANH_FORM, L2, L2, FMA, IN_IO_LAYOUT,
                         IN_THREAD_SUM, K_CLUSTER, k0)
            uses += 1
    if INPUTS_AHEAD:  # the group's first tile of the next step's xw
        xw_ahead = step_tile(xw_ptr, t + t_step, group, cols, B, H, BLOCK_B, T > 1)
    for s in range(1, T):
        if USE_BARRIER and INPUTS_AFTER_ARRIVAL:  # this program has written step s-1: its arrival, then the load ahead
            group_arrive(counter_ptr + group, CLUSTER, EXCHANGE)
        xw_first = None  # the group's first tile's xw, with INPUTS_AHEAD loaded a step ago
        if INPUTS_AHEAD:
            xw_first = xw_ahead
            xw_ahead = step_tile(xw_ptr, t + 2 * t_step, group, cols, B, H, BLOCK_B, s + 1 < T)
        if USE_BARRIER:  # every program of the group has written step s-1
            if not INPUTS_AFTER_ARRIVAL:
                group_arrive(counter_ptr + group, CLUSTER, EXCHANGE)
            group_wait(counter_ptr + group, status_ptr, s, slices, CLUSTER, EXCHANGE, BLOCK_N, BLOCK_B)
        prev_ptr = y_ptr + t * B * H
        t += t_step
        if ONE_TILE:  # the group's only tile: no loop (one tile a step: slot s % 2 is its turn)
            xw = tile_input(xw_ptr, xw_first, t, group, group, cols, B, H, BLOCK_B, INPUTS_AHEAD, ONE_TILE)
            forward_tile(u3, prev_ptr, xw, bias, y_ptr, t, group, cols, B, H, s % 2, s + 1 < T, CLUSTER,
                         ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE, UPCAST_DOT, WORK,
                         TANH_FORM, EXCHANGE, EXCHANGE, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
        else:
            for tile in range(group, tiles, groups):
                xw = tile_input(xw_ptr, xw_first, t, tile, group, cols, B, H, BLOCK_B, INPUTS_AHEAD, ONE_TILE)
                forward_tile(u3, prev_ptr, xw, bias, y_ptr, t, tile, cols, B, H, uses % 2, False, CLUSTER,
                             ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE, UPCAST_DOT, WORK,
                             TANH_FORM, L2, L2, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
                uses += 1
    program_end(EXCHANGE, K_CLUSTER)


@triton.jit
def split_backward_kernel(
    y_ptr,          # [T, B, H] forward hidden states h_t, I/O dtype, contiguous
    dy_ptr,         # [T, B, H] dL/dh_t from the layer's outputs, contiguous; None: zeros (the loss reads h_n alone)
    u_ptr,          # [H, H] recurrent weight U, contiguous
    dhn_ptr,        # [B, H] dL/dh_n (or a later segment's dL/dh), any float dtype, added to this launch's first
                    # step's dy in the accumulator dtype; None: none
    da_ptr,         # [T, B, H] out: dL/da_t, I/O dtype; the next step reads da_{t+1} from here
    da_in_ptr,      # [B, H] da of the step before this launch's first (zeros at the start), I/O dtype
    counter_ptr,    # [groups] int32 barrier counters, zeroed by the launcher
    status_ptr,     # [1] int32, set to 1 if a barrier timed out
    pin,            # 1.0, as a runtime float: keeps U's slice in registers
    T, B, H,        # steps in this launch, batch, hidden size
    t_first,        # time index of the first (reverse) step
    t_step,         # -1 or +1
    ACTIVATION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    K_SPLIT: tl.constexpr, USE_BARRIER: tl.constexpr, CLUSTER: tl.constexpr, INPUTS_AHEAD: tl.constexpr,
    INPUTS_AFTER_ARRIVAL: tl.constexpr,
    ONE_TILE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr,
    WORK: tl.constexpr, EXCHANGE: tl.constexpr, FMA: tl.constexpr, IN_IO_LAYOUT: tl.constexpr,
    IN_THREAD_SUM: tl.constexpr,
    K_CLUSTER: tl.constexpr,
    # as in split_forward_kernel
):
    cols, u3, t, slices, group, groups, tiles, k0 = program_start(u_ptr, pin, t_first, B, H, True, BLOCK_B, BLOCK_N,
                                                                 BLOCK_H, K_SPLIT, CLUSTER, ONE_TILE, ACC_DTYPE,
                                                                 UPCAST_DOT, EXCHANGE, FMA, K_CLUSTER)
    # The first reverse step of the group's first tile, outside any loop (as in split_forward_kernel).
    backward_tile(u3, da_in_ptr, step_tile(y_ptr, t, group, cols, B, H, BLOCK_B, True),
                  step_tile(dy_ptr, t, group, cols, B, H, BLOCK_B, True), dhn_ptr, da_ptr, t, group, cols, B, H, 0,
                  T > 1, CLUSTER, ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE,
                  UPCAST_DOT, WORK, L2, EXCHANGE, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
    uses = 1  # as in split_forward_kernel
    if not ONE_TILE:  # the group's other tiles, as in split_forward_kernel
        for tile in range(group + groups, tiles, groups):
            backward_tile(u3, da_in_ptr, step_tile(y_ptr, t, tile, cols, B, H, BLOCK_B, True),
                          step_tile(dy_ptr, t, tile, cols, B, H, BLOCK_B, True), dhn_ptr, da_ptr, t, tile, cols, B,
                          H, uses % 2, False, CLUSTER, ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION,
                          ACC_DTYPE, UPCAST_DOT, WORK, L2, L2, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
            uses += 1
    if INPUTS_AHEAD:  # the group's first tile of the next reverse step's h and dy
        h_ahead = step_tile(y_ptr, t + t_step, group, cols, B, H, BLOCK_B, T > 1)
        dy_ahead = step_tile(dy_ptr, t + t_step, group, cols, B, H, BLOCK_B, T > 1)
    for s in range(1, T):
        if USE_BARRIER and INPUTS_AFTER_ARRIVAL:  # as in split_forward_kernel
            group_arrive(counter_ptr + group, CLUSTER, EXCHANGE)
        h_first, dy_first = None, None  # the group's first tile's h and dy, with INPUTS_AHEAD loaded a step ago
        if INPUTS_AHEAD:
            h_first, dy_first = h_ahead, dy_ahead
            h_ahead = step_tile(y_ptr, t + 2 * t_step, group, cols, B, H, BLOCK_B, s + 1 < T)
            dy_ahead = step_tile(dy_ptr, t + 2 * t_step, group, cols, B, H, BLOCK_B, s + 1 < T)
        if USE_BARRIER:
            if not INPUTS_AFTER_ARRIVAL:
                group_arrive(counter_ptr + group, CLUSTER, EXCHANGE)
            group_wait(counter_ptr + group, status_ptr, s, slices, CLUSTER, EXCHANGE, BLOCK_N, BLOCK_B)
        next_ptr = da_ptr + t * B * H
        t += t_step
        if ONE_TILE:  # the group's only tile (as in split_forward_kernel)
            h = tile_input(y_ptr, h_first, t, group, group, cols, B, H, BLOCK_B, INPUTS_AHEAD, ONE_TILE)
            dy = tile_input(dy_ptr, dy_first, t, group, group, cols, B, H, BLOCK_B, INPUTS_AHEAD, ONE_TILE)
            backward_tile(u3, next_ptr, h, dy, None, da_ptr, t, group, cols, B, H, s % 2, s + 1 < T, CLUSTER,
                          ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE, UPCAST_DOT, WORK,
                          EXCHANGE, EXCHANGE, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
        else:
            for tile in range(group, tiles, groups):
                h = tile_input(y_ptr, h_first, t, tile, group, cols, B, H, BLOCK_B, INPUTS_AHEAD, ONE_TILE)
                dy = tile_input(dy_ptr, dy_first, t, tile, group, cols, B, H, BLOCK_B, INPUTS_AHEAD, ONE_TILE)
                backward_tile(u3, next_ptr, h, dy, None, da_ptr, t, tile, cols, B, H, uses % 2, False, CLUSTER,
                              ACTIVATION, BLOCK_B, BLOCK_N, BLOCK_H, K_SPLIT, DOT_PRECISION, ACC_DTYPE, UPCAST_DOT,
                              WORK, L2, L2, FMA, IN_IO_LAYOUT, IN_THREAD_SUM, K_CLUSTER, k0)
                uses += 1
    program_end(EXCHANGE, K_CLUSTER)


def split_slices(H: int, config: SplitBlocks) -> int:
    """Programs in each batch group: one per BLOCK_N columns of H; a group that is a cluster has CLUSTER of them,
    those past H with nothing to do."""
    return max(cdiv(H, config.BLOCK_N), config.CLUSTER)


def co_resident_groups(H: int, config: SplitBlocks, sm_count: int, device: torch.device | str | None = None) -> int:
    """Batch groups of config's programs that can run at once on device (None: a plan's, sm_count SMs all alike): as
    many as the SMs beside the slices hold, one program per SM, or where groups are clusters, as many as the device
    runs at once (runtime.co_resident_clusters); 0 where not even one does."""
    slices = split_slices(H, config)
    if slices > sm_count:
        return 0
    if config.K_CLUSTER > 1:  # each group is slices / K_CLUSTER clusters
        return co_resident_clusters(device, config.K_CLUSTER, sm_count) * config.K_CLUSTER // slices
    return sm_count // slices if config.CLUSTER == 1 else co_resident_clusters(device, config.CLUSTER, sm_count)


def split_grid(B: int, H: int, config: SplitBlocks, sm_count: int,
               device: torch.device | str | None = None) -> tuple[int, int]:
    """(column slices, batch groups) of the one launch on device: every program must be resident at once, so the
    slices take what they need (split_slices) and the batch tiles are spread over as many groups as run at once
    (co_resident_groups; each group runs its tiles one after another every step)."""
    slices, tiles = split_slices(H, config), cdiv(B, config.BLOCK_B)
    if slices > sm_count:
        raise RuntimeError(f"split-H needs {slices} co-resident programs but the device has {sm_count} SMs: "
                           f"its barrier could never be met")
    groups = co_resident_groups(H, config, sm_count, device)
    if groups == 0:
        raise RuntimeError(f"clusters of {config.CLUSTER} programs, one per SM, do not fit in any GPC of this GPU")
    return slices, max(1, min(tiles, groups))


def launch_steps(slices: int) -> int:
    """The most steps one persistent launch of `slices` programs per group runs: its grid barrier's targets (step x
    slices) stay below barrier.LOST, so a counter past them means a barrier gave up (and stays in int32)."""
    return max(1, barrier.LOST.value // slices)


def _launch_all_steps(kernel, tensors: Callable[[torch.Tensor, bool], tuple], start: torch.Tensor | None,
                      out: torch.Tensor, t_first: int, t_step: int, config: SplitBlocks, keywords: dict) -> None:
    """All steps of out [T, B, H], each launch's tensors tensors(the state entering its first step, whether it is the
    first launch): the first's state is start (None: zeros), the others' the state their predecessor wrote last
    (out[t - t_step]). With the group barrier, persistent launches of up to launch_steps steps (one for
    any real T); without it (interpreter), one launch per step, whose boundary is the synchronisation. Whether any
    barrier timed out is read at the end, or later (barrier_status.py); earlier calls' statuses that the GPU is done
    with first."""
    T, B, H = out.shape
    device = out.device
    tiles = cdiv(B, config.BLOCK_B)
    if keywords["USE_BARRIER"]:
        if not capturing(device):  # querying earlier calls' events would end a capture
            check_barriers(wait=False)
        grid = split_grid(B, H, config, co_resident_programs(device), device)
        if config.ONE_TILE and tiles > grid[1]:
            raise ValueError(f"a ONE_TILE split configuration runs one batch tile per program, but B = {B} makes "
                             f"{tiles} tiles of {config.BLOCK_B} for {grid[1]} batch group(s)")
        per_launch = launch_steps(grid[0])
    else:  # one batch group, whose launches' first step runs every tile; with ONE_TILE one group per tile
        grid, per_launch = (cdiv(H, config.BLOCK_N), tiles if config.ONE_TILE else 1), 1
    stride = cdiv(grid[1], 4) * 4  # each launch's counters 16-byte aligned, as a tensor of their own would be
    words, zeros = zeroed(4 + cdiv(T, per_launch) * stride, (B, H) if start is None else None, out.dtype, device)
    status, state = words[:1], zeros if start is None else start
    for launch, done in enumerate(range(0, T, per_launch)):
        t = t_first + done * t_step
        if done:
            state = out[t - t_step]
        counters = words[4 + launch * stride:4 + launch * stride + grid[1]]
        _launch(kernel, grid, (*tensors(state, done == 0), counters, status, PIN, min(per_launch, T - done), B, H, t,
                               t_step), config, keywords)
    read_status(status)  # set by the grid barrier, or dsmem-push's wait for the state


def zeroed(words: int, state: tuple[int, int] | None, dtype: torch.dtype,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(`words` int32 zeros: a call's barrier status, then its launches' counters; zeros of shape `state` in dtype, for
    a first step with no state given, else None) from one zeroed allocation: on a GPU each launch costs host time on
    every call. The state comes first, the words from a 16-byte boundary: each part aligned as a tensor of its own
    would be (Triton specialises a kernel on its pointers' alignment)."""
    state_bytes = 0 if state is None else state[0] * state[1] * dtype.itemsize
    start = cdiv(state_bytes, 16) * 16
    block = torch.zeros(start + 4 * words, dtype=torch.uint8, device=device)
    zeros = None if state is None else block[:state_bytes].view(dtype).view(state)
    return block[start:].view(torch.int32), zeros


def _launch(kernel, grid: tuple[int, int], args: tuple, config: SplitBlocks, keywords: dict) -> None:
    """One launch: without the barrier, plain; else in clusters where config has them (with the DSMEM exchange's
    extra shared memory), or cooperative on a GPU, so that the driver refuses a grid that cannot be co-resident
    instead of hanging."""
    if not keywords["USE_BARRIER"]:
        kernel[grid](*args, **keywords)
    elif keywords["K_CLUSTER"] > 1:  # the grid barrier's co-residency by split_grid's count of clusters
        _launch_clusters(kernel, grid, config.K_CLUSTER, partials_bytes(config.BLOCK_N, config.BLOCK_B,
                                                                         config.K_CLUSTER), args, keywords)
    elif config.CLUSTER > 1:
        extra = exchange_bytes(config.BLOCK_B, config.BLOCK_H) if keywords["EXCHANGE"] != L2.value else 0
        _launch_clusters(kernel, grid, config.CLUSTER, extra, args, keywords)
    else:
        cooperative = {"launch_cooperative_grid": True} if args[0].device.type == "cuda" else {}
        kernel[grid](*args, **keywords, **cooperative)


def _launch_clusters(kernel, grid: tuple[int, int], cluster: int, extra_shared: int, args: tuple,
                     keywords: dict) -> None:
    """kernel over grid, its programs along x in clusters of `cluster` CTAs, each with extra_shared bytes of shared
    memory past what the compiled kernel uses, from a 128-byte boundary (dsmem.py). Triton 3.6 compiles clusters
    only as one program spread over the cluster's CTAs (num_ctas), which these kernels are not: so the kernel is
    compiled as usual and the CTA count of its launch metadata, which Triton's launcher makes the cluster dimension
    (and multiplies the grid's x by), set to the cluster size. Each program still sees its own program_id. The shared
    memory size is set in the metadata the module is loaded with too, which opts in to more than 48 KiB where the
    sum needs it."""
    compiled = kernel.warmup(*args, grid=grid, **keywords)  # compiled (or found in the cache), not launched
    num_warps, ctas, shared = compiled.packed_metadata
    if ctas == 1:  # this kernel (CLUSTER is a constexpr) runs clustered only: set once, before its first launch
        if extra_shared:  # the extra bytes start 128-byte aligned (bulk copies need 16)
            shared = cdiv(shared, 128) * 128 + extra_shared
        compiled.metadata = compiled.metadata._replace(shared=shared)
        compiled.packed_metadata = (num_warps, cluster, shared)
    kernel[(grid[0] // cluster, grid[1])](*args, **keywords)


def split_forward(xw: torch.Tensor, h0: torch.Tensor | None, u: torch.Tensor, reverse: bool, config: SplitBlocks,
                  nonlinearity: str, use_barrier: bool | None = None, work: str = FULL_STEP.value,
                  b_hh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(all hidden states [T, B, H], h_n [B, H]) of one layer-direction from h0 (None: zeros, made with the barrier's
    words), b_hh (if given) added to every step's xw; inputs contiguous. With the barrier (the default when
    compiled): one persistent launch for all steps; without it, one launch per step. work: one of STEP_WORKS; less
    than the full step leaves outputs that are not the layer's (for timing the exchange or the barrier alone)."""
    if work not in STEP_WORKS:
        raise ValueError(f"work must be one of {', '.join(STEP_WORKS)}, got {work!r}")
    y = torch.empty_like(xw)
    order = time_order(xw.shape[0], reverse)
    keywords = _keywords(config, nonlinearity, xw.dtype, False, use_barrier, work)
    u = u.t().contiguous() if config.FMA else u  # the FMA product's forward reads U^T row-major, as its backward U
    _launch_all_steps(split_forward_kernel, lambda h, first: (xw, h, u, b_hh, y), h0, y, order[0],
                      -1 if reverse else 1, config, keywords)
    # h_n with storage of its own: a copy launched behind the kernel, whose time on the GPU hides the host's share
    return y, y[order[-1]].clone()


def split_backward(y: torch.Tensor, dy: torch.Tensor | None, u: torch.Tensor, reverse: bool, config: SplitBlocks,
                   nonlinearity: str, use_barrier: bool | None = None,
                   dh_n: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
    """(da [T, B, H] in the I/O dtype, None: dh0 is the dispatcher's GEMM, dispatch.recurrence_backward) from dy (None:
    zeros, none read), dh_n (if given) added to the first reverse step's dy in the accumulator dtype; inputs
    contiguous."""
    da = torch.empty_like(y)
    order = time_order(y.shape[0], not reverse)  # backward walks the forward order in reverse
    keywords = _keywords(config, nonlinearity, y.dtype, True, use_barrier, FULL_STEP.value)
    # nothing flows back into the first reverse step but dy (and dh_n): its da_{t+1} is zeros
    _launch_all_steps(split_backward_kernel, lambda da_in, first: (y, dy, u, dh_n if first else None, da, da_in),
                      None, da, order[0], 1 if reverse else -1, config, keywords)
    return da, None


def _keywords(config: SplitBlocks, nonlinearity: str, dtype: torch.dtype, backward: bool,
              use_barrier: bool | None, work: str) -> dict:
    """launch_keywords here; use_barrier=True runs the barrier path in the interpreter (tests, one-program
    grids); work: what a step does (STEP_WORKS)."""
    keywords = launch_keywords(config, nonlinearity, dtype, interpreting(), backward)
    if use_barrier is not None:
        keywords["USE_BARRIER"] = use_barrier
    keywords["WORK"] = work
    if not keywords["USE_BARRIER"]:  # one-step launches read the state the last one wrote, in programs that never meet
        keywords["EXCHANGE"] = L2.value
        keywords["K_CLUSTER"] = 1
    return keywords
