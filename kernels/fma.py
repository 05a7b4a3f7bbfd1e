"""FMA persistent kernels: one program per batch row, U in registers in fp32, the product by FMA.

cuDNN's fp32 kernel for small H does this (RNN_blockPersist_fp_RNN: 8 CTAs for B = 8, U in
registers, FMA; ../shared/gpu-runs/2026-11-25-h100/cudnn_kernels_ncu.md): fp32 accuracy with no
tensor core, where the resident tier's 3xTF32 (resident.py) pays three MMAs, their waits and the
TF32 splits on every step's serial chain. Per step, for one batch row b (a vector of H)::

    forward:   a_t[n]  = xw_t[n] + b_hh[n] + sum_k U^T[k, n] h_{t-1}[k],   h_t = act(a_t)
    backward:  g_t[n]  = dy_t[n] + sum_k U[k, n] da_{t+1}[k],               da_t = g_t * act'(h_t)
               dh_0[n] = sum_k U[k, n] da_1[k]

with xw_t = x_t W_ih^T + b_ih from the input GEMM (b_hh too where dispatch.B_HH_IN_KERNEL is off: the kernel then
takes none), h_n = h_T stored from the registers after the last step, and dL/dh_n added to dy_T in fp32 (dy zeros,
none read, where the loss reads h_n alone).

Both are one product, sum_k M[k, n] v[k], with the [BLOCK_H, BLOCK_H] operand M (U^T forward, U
backward) held in registers for all T steps, one thread per column n of M (dispatch.FMA_CONFIGS; at
BLOCK_H = 16 a warp's 32 lanes take two per column). A thread sums over its column's k in its own
registers (one FFMA per element per step), so nothing is summed across lanes or warps. The sum runs in CHAINS
independent chains, joined at the end: one would be BLOCK_H dependent FFMAs, each waiting out the last's
latency. Chain c takes the k with k % CHAINS == c (INTERLEAVED_CHAINS), so that each 16-byte load of the state
(4 consecutive k) gives every chain its next FFMA and the chains' FFMAs alternate: compile audit (2026-11-29),
sm_90, fp32 at BLOCK_H = 128, 269/253 stall cycles per step forward/backward (the issue time of a warp when nothing
waits on memory, audit.stall_cycles) against 386/442 with each chain a run of consecutive k, whose 4 FFMAs per load
ptxas issues back to back, each waiting out the last (Nsight Compute on the H200 counted 470 such cycles per step
in the forward of 68fba7a, of its 746); at 256, 681/659 against 1023/1044; 17-43% fewer from BLOCK_H = 32 on. On
sm_80, whose ptxas schedules the runs better, it saves 18-20% at 256 and in the backward at 128, but costs 5-20% at
32 and 64 and 4% in the forward at 128. On an H200 (T = 4096, fp32 H = 64-256 and bf16 128, B = 8 and 64) runs took
0.99-1.20x the interleaved chains' time forward and 0.80-1.62x forward+backward: faster only in fp32 at H = 128,
B = 8's forward+backward (0.80 against 1.00 us per step; at B = 64 0.99 against 0.93), likely noise: the interleaved
backward took longer there at B = 8 than at B = 64, for the same work per program
(results/variants/20261127-h200-untimed/fma_chains.csv). The new state then reaches every
thread through shared memory: one store, one barrier, and BLOCK_H / 4 loads of 16 bytes, each at one address
for the whole warp (a broadcast); a second barrier lets the next step's store reuse the buffer. Each step's input
is loaded a step ahead, before those barriers, so the layer's forward stores the states over xw (xw_spare; the compile
audit checks that order in every configuration, audit.output_over_input): a forward call needs no [T, B, H] buffer
for them.

Triton picks a tensor's layout from how it is loaded, not from how it is used, so the launchers store
M by columns (by_columns: k = 4 j + e at [j, n, e]) and the kernels load it as one flat run. Triton
gives each thread 16-byte vectors, thread i the vectors i, i + BLOCK_H, i + 2 BLOCK_H, ..., which
hold column i's k four at a time; as_columns reshapes them into [k, n] without moving them.

Compile audit, sm_90, BLOCK_H = 128 on 4 warps, forward/backward: 124/125 FFMA and 201/192
instructions per step, 2 CTA barriers, 32 LDS.128, no shuffle, 170/168 registers, no spills, and
39/37 dependent float operations at the longest (32 FFMA a run). With Triton's own layout for M
(warps along k, 4 columns a thread), the warps' partial sums met through shared memory and shuffles:
211 instructions and 7 CTA barriers per step. The resident tier's 3xTF32 takes 414 instructions per
step on 8 warps (with 3 wgmma waits) for the same layer. Every lane reads all of h from shared
memory, 4x the bytes of the former layout's reads: on the H200 (Nsight Compute, fp32, H = 128, B = 8;
results/variants/20261127-h200/ncu/README.md) each such broadcast LDS.128 took about 2 wavefronts, with no
bank conflicts, and the step 746 cycles at ncu's locked clock, 3.7 per issued instruction on its one warp
per scheduler: fixed latencies (the FFMA chains, the exact tanh) the largest share, which the interleaved
chains above cut.

BLOCK_H = 256 (STREAM_HALF, beyond HELD_MAX_BLOCK_H): fp32 U is 256 KiB there, the whole register
file of an SM, and splitting it over CTAs would need the split tier's grid barrier (2.5 us per step
on the H200 on its own, against cuDNN fp32's 1.74 for the whole step at B = 8). So the program holds
the first half of the operand's rows in registers and reads the other half from global memory every
step, 128 KiB with evict_last, which the SM's L1 can keep: the program takes 1 KiB of shared memory,
which leaves the rest of the SM's 256 KiB of L1 and shared memory to the cache (on the H200 L1 served
98.4% of those loads: Nsight Compute, results/variants/20261127-h200/ncu/README.md). Both halves are
stored by columns, the streamed half in its own flat run, and their runs' sums add before the one
sum over the runs. Compile audit, sm_90, 8 warps, forward/backward: 178/186 registers, no spills,
407/399 instructions and 2 CTA barriers per step, 32 16-byte loads of U per thread per step (before
this layout: 254 registers, 500 instructions, 9 CTA barriers). The split tier served this size
before: on the H200 at B = 8 it took 2.52 us per step forward against this one's 1.46 (below). On
sm_90 a cluster's barrier, in hardware, avoids the grid barrier: with dispatch.SPLIT_CLUSTERS the
dispatcher splits U over clusters of 4 programs of the split tier instead, each holding 64 of its
columns in registers and multiplying them by FMA for 2 batch rows (dispatch.SPLIT_CLUSTER_CONFIGS;
not yet timed).

Timed on an H200 (T = 4096, us per step forward / forward+backward; results/variants/20261127-h200/
fp32_products.csv): fp32 at B = 8, 0.315/0.736 (H = 64), 0.353/0.827 (128), 1.462/2.961 (256); at
B = 64, 0.467/1.026, 0.524/1.201, 1.660/3.644: 1.4-3.8x faster than the resident tier's 3xTF32, and
against cuDNN fp32's own FMA kernel 1.27-1.55x forward+backward, 0.89-1.26x forward
(results/race/20261127-h200). At H = 128
that beat even the resident tier's bf16 kernel on tensor cores (0.401/0.888 at B = 8, 0.632/1.369
at B = 64), so 16-bit I/O at BLOCK_H = 128 comes here too (dispatch.FMA_CONFIGS): the kernels load
and store 16-bit tiles, carry the state and hold U in fp32 (U's 16-bit values are exact there), and
the forward takes the hardware's tanh. Timed since in bf16 and fp16 alike: 0.30/0.87 us per step at B = 8,
0.39/0.75 at B = 64, where the resident tier took 0.40/0.90 and 0.54/1.05
(results/variants/20261127-h200-untimed/fma_16bit.csv).

Where a launch's streams outgrow L2, each program asks L2 for its row of the input 4 steps ahead, as the
resident tier does (prefetch.py; there timed 6-21% faster at B = 64, and in this tier fp32's step at
H = 128 took 0.52 us at B = 64 against 0.35 at B = 8); not yet timed in this tier.

Tried and dropped (compile audit, 2026-11-28): two lanes sharing each column, each thread then holding two columns
for half of their k (every other run of 4 k, so that the two lanes' reads of the state fall in different banks) and
reading half the state per step, the pair's sums joined by one shuffle. At BLOCK_H = 128 that halves the state's
shared-memory wavefronts (68 against 132 a step, sm_90) but leaves the issue and latency cycles as they are (274/263
stall cycles forward/backward against 275/253), the shuffle joining the chain; at 256, whose step may be bound by
the SM's L1 bandwidth (arithmetic on Nsight Compute's figures: 1042 shared-memory wavefronts and 128 KiB of streamed
U a step, in 2800 cycles), ptxas issues the streamed loads far ahead and needs all 255 registers, spilling 8-24
bytes in most forms; with each state value feeding a held and a streamed column, 104-216 bytes. Holding three
quarters of U's rows instead of half spills 144-168 bytes.
Also tried and dropped (compile audit, 2026-11-28, sm_90 fp32 forward without the L2 prefetch): two lanes per column
on twice the warps (thread pair 2n, 2n + 1 holding every other run of 4 k of column n, stored [k // 8, n, pair, 4],
the pair's sums joined by one SHFL.BFLY), so that each warp issues half the FFMAs and two warps share a scheduler.
Each warp's loop went from 194 to 118 instructions at BLOCK_H = 128 (115 to 78 at 64; the interpreter matched
float64), but its stall cycles rose from 275 to 342 (190 to 213 at 64): ptxas issued the 61 FFMAs with 194 stall
cycles where the 125 of one lane a column take 134, its chains no longer alternating (written as chains over k % 4 of
the stored [k // 8, n, pair, 4] with no permute, the same code). And the [BLOCK_H] result, held
by both lanes of a pair, is stored through a layout of one lane per element that Triton converts through shared
memory: 4 CTA barriers a step instead of 2, 152 wavefronts instead of 132. A warp's own path, issue and stalls
(460 cycles against 469), would bound the step however its warps overlap: nothing to time.

Where a backward may follow (the layer's autograd passes dispatch.empty_backward_operand's buffer and keeps it for the
backward), the forward kernel writes the backward's operand, U by columns, which a launch of its own made before the
backward kernel (a torch copy): program 0 stores the U^T it holds after its last step, at BLOCK_H = 256 the half it
holds and the half it streams (store_u_by_columns; a forward+backward call in fp32 with hx given launches 7 kernels
instead of 8 at H = 64, 8 instead of 9 at 256, counted on a CPU by `rnnbench profile`). Compile audit against the
launch without it, BLOCK_H <= 128: no spills, and in fp32 on sm_90 the same time loop (instructions, registers within
2) with stall cycles 6% fewer to 6% more; in 16-bit where the forward reads U itself (BLOCK_H = 128) 74-77 more
registers (one program an SM: no occupancy lost), 1-3 more instructions a step and stall cycles 5% fewer to 11% more on
sm_90, 17-23% fewer on sm_80 (ptxas's schedules, which vary as much between bf16 and fp16 for the same code). Loaded
again after the loop instead of held, every BLOCK_H = 128 form took 192-212 registers and up to 19% more stall cycles.
At BLOCK_H = 256: no spills, the loop within 2 instructions, stall cycles 3% fewer to 7% more. Not under checkpointed
BPTT (its backward makes its own, once; the forward's buffer would be memory its checkpoints do not need); the
backward's dL/dh_0 and weight gradients are the same bits either way. Not yet timed.

Each program runs one batch row, so a batch of B takes B programs, and each holds its own copy of U.
The dispatcher sends a layer here while B fits the SMs one program each (dispatch.py). The launchers
pass the operand zero-padded to [BLOCK_H, BLOCK_H], so that the kernels load it without masks.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import prefetch
from .activations import ACTIVATION_CODES, activation_grad_from_output, apply_activation
from .frames import copy_state, empty_states, slot
from .launch import Blocks, LaunchConfig, accumulator_dtype, tanh_form
from .prefetch import prefetch_distance, prefetch_l2
from .runtime import interpreting

# What each program holds U in and carries the state in, whatever the I/O dtype (16-bit values are exact in it).
HELD_DTYPE = torch.float32
# The largest BLOCK_H whose operand a program holds whole in registers; beyond it, half (module docstring).
HELD_MAX_BLOCK_H = 128
# Independent partial sums per thread in the product (chained_sums): 4 FFMAs in flight cover the FFMA's 4-cycle
# latency on one warp per scheduler.
CHAINS = tl.constexpr(4)
# Whether the forward kernel reads U where it lies, not a by_columns copy of U^T, where U is held whole and H is a
# multiple of U_ITSELF_MULTIPLE (reads_u_itself). Where the JIT specialises H as a multiple of 16, the 4 consecutive k
# of a column that each thread loads are 4 consecutive elements of a row of U, one 16-byte (fp32) or 8-byte (16-bit)
# load, and the held operand takes the copy's layout: compile audit, tanh forward without the L2 prefetch, time-loop
# instructions and stall cycles per step against the copy's, sm_90: fp32 40/100 and 40/100 at BLOCK_H = 16, 115/186
# and 116/188 at 64, 194/295 and 195/273 at 128; bf16 at 128 189/246 and 190/265; with the prefetch fp32 at 128
# 209/341 and 210/295, fp16 204/328 and 205/275; the same registers and CTA barriers, no spills: one instruction fewer,
# the stall cycles ptxas's schedule, 7% fewer to 19% more. At other H its loads are scalar and its layout another: 105
# instructions and no barrier a step at BLOCK_H = 16, 4 barriers instead of 2 from 32 on. A forward call saves the
# copy's launch (checkpointed BPTT's recomputation too); the backward's operand, U by columns, is a column of U
# (stride H) per 4 k, so the backward cannot read U so: the forward writes it (store_u_by_columns, module docstring).
# Not yet timed (.ci/gpu_variants.py fma-u-copied).
READ_U_ITSELF = True
U_ITSELF_MULTIPLE = 16
# Whether chain c sums the k with k % CHAINS == c (each load of 4 consecutive k feeds every chain), or a run of
# consecutive k (each load feeds one chain 4 dependent FFMAs): module docstring. Only from BLOCK_H = 32
# (launch_keywords): at 16, 4 k a chain, it took 13-18% more stall cycles per step on sm_80 and sm_90 (compile audit).
INTERLEAVED_CHAINS = True
INTERLEAVED_MIN_BLOCK_H = 32


@dataclass(frozen=True)
class FmaBlocks(Blocks):
    """Compile-time configuration of one FMA kernel."""
    BLOCK_H: int    # H padded to a power of two, >= 16: the operand is BLOCK_H x BLOCK_H in every program
    num_warps: int  # the operand's BLOCK_H^2 floats spread over 32 * num_warps threads


def launch_keywords(config: FmaBlocks, nonlinearity: str, dtype: torch.dtype, interpreted: bool,
                    backward: bool, hidden_size: int | None = None) -> dict:
    """Everything an FMA kernel takes besides tensors and sizes (16-bit I/O's forward: the hardware tanh on a GPU, and
    whether it reads U itself, for hidden_size, by default a typical one: reads_u_itself; the L2 prefetch, inline PTX,
    on a GPU only: the launchers keep it where a launch outgrows L2)."""
    return config.keywords() | {"ACTIVATION": ACTIVATION_CODES[nonlinearity],
                                "STREAM_HALF": config.BLOCK_H > HELD_MAX_BLOCK_H,
                                "INTERLEAVED_CHAINS": INTERLEAVED_CHAINS and config.BLOCK_H >= INTERLEAVED_MIN_BLOCK_H,
                                "L2_PREFETCH_STEPS": 0 if interpreted else prefetch.L2_PREFETCH_STEPS} | (
        {} if backward else {"TANH_FORM": tanh_form(dtype, interpreted),
                             "U_ITSELF": reads_u_itself(hidden_size, config, backward)})


def reads_u_itself(hidden_size: int | None, config: FmaBlocks, backward: bool) -> bool:
    """Whether the kernel reads U itself ([H, H] in the I/O dtype, as the layer holds it) rather than operand's copy:
    with READ_U_ITSELF, the forward, where U is held whole and H is a multiple of U_ITSELF_MULTIPLE (None: a typical
    H, which is)."""
    return (READ_U_ITSELF and not backward and config.BLOCK_H <= HELD_MAX_BLOCK_H
            and (hidden_size is None or hidden_size % U_ITSELF_MULTIPLE == 0))


@triton.jit
def column_chunk(m_ptr, FIRST: tl.constexpr, ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    """Pointers to rows FIRST .. FIRST + ROWS - 1 of the operand stored by columns (by_columns) at m_ptr: one
    contiguous run, flat."""
    return m_ptr + FIRST * BLOCK_H + tl.arange(0, ROWS * BLOCK_H)


@triton.jit
def as_columns(flat, ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    """The [ROWS, BLOCK_H] rows of the operand (element [k, n]) loaded flat from column_chunk, in the layout
    the flat load gave them: each thread's 16-byte vectors are 4 consecutive k of its column n."""
    return tl.reshape(tl.permute(tl.reshape(flat, (ROWS // 4, BLOCK_H, 4)), (0, 2, 1)), (ROWS, BLOCK_H))


@triton.jit
def load_held(m_ptr, BLOCK_H: tl.constexpr, STREAM_HALF: tl.constexpr):
    """The operand's rows the program holds in registers: all of them, or with STREAM_HALF the first half."""
    ROWS: tl.constexpr = BLOCK_H // 2 if STREAM_HALF else BLOCK_H
    # Named resident_u: the compile audit finds U's loads by that name.
    resident_u = tl.load(column_chunk(m_ptr, 0, ROWS, BLOCK_H))
    return as_columns(resident_u, ROWS, BLOCK_H)


@triton.jit
def load_streamed(m_ptr, BLOCK_H: tl.constexpr):
    """The operand's second half of rows, which a STREAM_HALF program reads from memory every step (evict_last: the
    SM's L1 keeps them)."""
    HALF: tl.constexpr = BLOCK_H // 2
    # Named streamed_u: the compile audit finds these loads by that name.
    streamed_u = tl.load(column_chunk(m_ptr, HALF, HALF, BLOCK_H), eviction_policy="evict_last")
    return as_columns(streamed_u, HALF, BLOCK_H)


@triton.jit
def load_u_transposed(u_ptr, H, BLOCK_H: tl.constexpr):
    """U^T ([k, n] = U[n, k], zero-padded to [BLOCK_H, BLOCK_H]) in fp32, read from U itself ([H, H], row-major) in
    by_columns' flat order, so that it takes load_held's layout (U_ITSELF_MULTIPLE says where it does)."""
    flat = tl.arange(0, BLOCK_H * BLOCK_H)
    k = (flat // (4 * BLOCK_H)) * 4 + flat % 4  # by_columns' element [k // 4, n, k % 4]
    n = (flat // 4) % BLOCK_H
    resident_u = tl.load(u_ptr + n * H + k, mask=(k < H) & (n < H), other=0.0).to(tl.float32)
    return as_columns(resident_u, BLOCK_H, BLOCK_H)


@triton.jit
def store_u_by_columns(u_columns_ptr, rows, FIRST: tl.constexpr, ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    """Into by_columns(U), the backward kernel's operand, rows FIRST .. FIRST + ROWS - 1 of the U^T a forward program
    holds or streams (element [k, n] = U[n, k], zero-padded): U[n, k] is element [k' = n, n' = k] of U, at
    [k' // 4, n', k' % 4]. Thread n stores its column's values 16 bytes apart, a warp's 32 lanes 8 runs of 16
    contiguous bytes a store."""
    k = FIRST + tl.arange(0, ROWS)[:, None]
    n = tl.arange(0, BLOCK_H)[None, :]
    tl.store(u_columns_ptr + (n // 4) * (4 * BLOCK_H) + k * 4 + n % 4, rows)


@triton.jit
def chained_sums(m, v, ROWS: tl.constexpr, BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr):
    """[CHAINS, BLOCK_H]: sum_k m[k, n] v[k] over each of CHAINS sets of k: those with k % CHAINS == c
    (INTERLEAVED), or runs of consecutive k. A thread's k sit in its registers, and a sum over them is one
    dependent FFMA after another: CHAINS independent chains hide the FFMA's latency."""
    RUN: tl.constexpr = ROWS // CHAINS
    if INTERLEAVED:
        return tl.sum(tl.reshape(m, (RUN, CHAINS, BLOCK_H)) * tl.reshape(v, (RUN, CHAINS))[:, :, None], axis=0)
    else:
        return tl.sum(tl.reshape(m, (CHAINS, RUN, BLOCK_H)) * tl.reshape(v, (CHAINS, RUN))[:, :, None], axis=1)


@triton.jit
def vector_product(held, m_ptr, v, BLOCK_H: tl.constexpr, STREAM_HALF: tl.constexpr, INTERLEAVED: tl.constexpr):
    """[BLOCK_H]: sum_k m[k, n] v[k] by FMA, m the operand at m_ptr of which the program holds held (load_held);
    with STREAM_HALF its second half of rows is read from memory here."""
    if STREAM_HALF:
        HALF: tl.constexpr = BLOCK_H // 2
        v_held, v_streamed = tl.split(tl.permute(tl.reshape(v, (2, HALF)), (1, 0)))
        sums = chained_sums(held, v_held, HALF, BLOCK_H, INTERLEAVED)
        sums += chained_sums(load_streamed(m_ptr, BLOCK_H), v_streamed, HALF, BLOCK_H, INTERLEAVED)
        return tl.sum(sums, axis=0)
    else:
        return tl.sum(chained_sums(held, v, BLOCK_H, BLOCK_H, INTERLEAVED), axis=0)


@triton.jit
def load_row(ptr, offsets, mask, BLOCK_H: tl.constexpr):
    """tl.load(ptr + offsets, mask, other=0) of a [BLOCK_H] row; zeros in fp32 where ptr is None (nothing loaded)."""
    if ptr is None:  # an else, not an early return: Triton 3.6 compiles what follows a constexpr if that returns
        row = tl.zeros((BLOCK_H,), tl.float32)
    else:
        row = tl.load(ptr + offsets, mask=mask, other=0.0)
    return row


@triton.jit
def fma_forward_kernel(
    xw_ptr,         # [T, B, H] input projection x_t W_ih^T + b_ih, I/O dtype (fp32, bf16, fp16), contiguous
    h0_ptr,         # [B, H] initial hidden state, I/O dtype, contiguous; None: zeros (hx=None)
    ut_ptr,         # U^T (element [k, n] is U[n, k]) in fp32, zero-padded to [BLOCK_H, BLOCK_H], stored by_columns;
                    # with U_ITSELF, U [H, H] in the I/O dtype, read as U^T (load_u_transposed)
    b_hh_ptr,       # [H] recurrent bias b_hh, I/O dtype, added to every step's input; None: xw holds every bias
    y_ptr,          # [T, B, H] out: h_t for every t, I/O dtype; may be xw_ptr (each step's input is loaded a
                    # step ahead, before a CTA barrier that precedes the store over it: audit.output_over_input)
    hn_ptr,         # [B, H] out: h_n, the state after the last step, I/O dtype, contiguous
    h0_copy_ptr,    # [B, H] out: h_0 as loaded, into the step of y's frame before its first (frames.py); None: none
    u_columns_ptr,  # out: U by_columns in fp32, the backward kernel's operand, written by program 0 from the U^T it
                    # holds (and streams), after its last step (empty_backward_operand); None: none
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first step: 0, or T - 1 for the reverse direction
    t_step,         # +1 or -1
    ACTIVATION: tl.constexpr,   # 0 tanh, 1 relu
    BLOCK_H: tl.constexpr,      # H padded to a power of two
    STREAM_HALF: tl.constexpr,  # half of U^T held, half read every step (BLOCK_H > HELD_MAX_BLOCK_H)
    TANH_FORM: tl.constexpr,    # activations.py: approx (16-bit I/O on a GPU), ftz (fp32 on a GPU), portable
    L2_PREFETCH_STEPS: tl.constexpr,  # xw's row this many steps ahead prefetched into L2 (0: none; prefetch.py)
    INTERLEAVED_CHAINS: tl.constexpr,  # chain c of the product sums the k with k % CHAINS == c (chained_sums)
    U_ITSELF: tl.constexpr,     # ut_ptr is U itself (reads_u_itself; never with STREAM_HALF)
):
    offs = tl.arange(0, BLOCK_H)
    mask = offs < H
    row = tl.program_id(0) * H + offs  # this program's batch row of a [B, H] matrix
    if U_ITSELF:
        held = load_u_transposed(ut_ptr, H, BLOCK_H)
    else:
        held = load_held(ut_ptr, BLOCK_H, STREAM_HALF)
    stride = B * H
    t = tl.cast(t_first, tl.int64)  # 64-bit: t * B * H can pass 2^31
    if h0_ptr is None:
        h = tl.zeros((BLOCK_H,), tl.float32)
    else:
        h0 = tl.load(h0_ptr + row, mask=mask, other=0.0)
        if h0_copy_ptr is not None:
            copy_state(h0_copy_ptr + row, h0, mask)
        h = h0.to(tl.float32)  # the state is carried in fp32
    if b_hh_ptr is not None:  # loaded once, added to every step's input (not on the step's serial chain)
        bias = tl.load(b_hh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xw = tl.load(xw_ptr + t * stride + row, mask=mask, other=0.0)
    for s in range(0, T):
        # The next step's input, loaded while this step computes.
        xw_next = tl.load(xw_ptr + (t + t_step) * stride + row, mask=mask & (s + 1 < T), other=0.0)
        if L2_PREFETCH_STEPS:
            prefetch_l2(xw_ptr + (t + L2_PREFETCH_STEPS * t_step) * stride, s + L2_PREFETCH_STEPS < T, B, H, 1)
        a = xw.to(tl.float32)
        if b_hh_ptr is not None:
            a += bias
        h = apply_activation(a + vector_product(held, ut_ptr, h, BLOCK_H, STREAM_HALF, INTERLEAVED_CHAINS),
                             ACTIVATION, TANH_FORM)
        tl.store(y_ptr + t * stride + row, h.to(y_ptr.dtype.element_ty), mask=mask)
        t += t_step
        xw = xw_next
    # h_n from the registers: no copy of y's last step. Its own buffer, but the compile audit checks every store of a
    # kernel that writes over its input for a barrier after the loads before it (audit.first_step_ordered), and where
    # the loop runs no step the path reaches this store from the first loads: one barrier a launch orders it.
    tl.debug_barrier()
    tl.store(hn_ptr + row, h.to(hn_ptr.dtype.element_ty), mask=mask)
    if u_columns_ptr is not None:  # after the time loop: the loop's registers and schedule are nearly those of a
        if tl.program_id(0) == 0:  # launch without it (audit); one program's, holding back no other
            store_u_by_columns(u_columns_ptr, held, 0, held.shape[0], BLOCK_H)
            if STREAM_HALF:  # and the rows it streams
                store_u_by_columns(u_columns_ptr, load_streamed(ut_ptr, BLOCK_H), held.shape[0], held.shape[0],
                                   BLOCK_H)


@triton.jit
def fma_backward_kernel(
    y_ptr,          # [T, B, H] forward hidden states h_t, I/O dtype, contiguous
    dy_ptr,         # [T, B, H] dL/dh_t from the layer's output, I/O dtype, contiguous; None: zeros (the loss reads h_n
                    # alone)
    u_fp32_ptr,     # recurrent weight U in fp32, zero-padded to [BLOCK_H, BLOCK_H], stored by_columns
    dhn_ptr,        # [B, H] dL/dh_n (or a later segment's dL/dh), any float dtype, added to the first reverse step's
                    # dy in fp32; None: none
    da_ptr,         # [T, B, H] out: dL/da_t, I/O dtype
    dh0_ptr,        # [B, H] out: dL/dh_0, fp32 or rounded to its dtype once
    T, B, H,        # sequence length, batch, hidden size
    t_first,        # time index of the first reverse step: T - 1, or 0 for the reverse direction
    t_step,         # -1 or +1
    ACTIVATION: tl.constexpr, BLOCK_H: tl.constexpr, STREAM_HALF: tl.constexpr,  # as in fma_forward_kernel
    L2_PREFETCH_STEPS: tl.constexpr,  # h's and dy's rows this many steps ahead prefetched into L2 (0: none)
    INTERLEAVED_CHAINS: tl.constexpr,  # as in fma_forward_kernel
):
    offs = tl.arange(0, BLOCK_H)
    mask = offs < H
    row = tl.program_id(0) * H + offs
    held = load_held(u_fp32_ptr, BLOCK_H, STREAM_HALF)
    stride = B * H
    t = tl.cast(t_first, tl.int64)
    da = tl.zeros((BLOCK_H,), tl.float32)  # nothing flows into the first reverse step but dy
    h = tl.load(y_ptr + t * stride + row, mask=mask, other=0.0)
    dy = load_row(dy_ptr, t * stride + row, mask, BLOCK_H).to(tl.float32)  # carried in fp32
    if dhn_ptr is not None:
        dy += tl.load(dhn_ptr + row, mask=mask, other=0.0).to(tl.float32)
    for s in range(0, T):
        # The next reverse step's inputs, loaded while this step computes.
        h_next = tl.load(y_ptr + (t + t_step) * stride + row, mask=mask & (s + 1 < T), other=0.0)
        dy_next = load_row(dy_ptr, (t + t_step) * stride + row, mask & (s + 1 < T), BLOCK_H)
        if L2_PREFETCH_STEPS:
            ahead = (t + L2_PREFETCH_STEPS * t_step) * stride
            prefetch_l2(y_ptr + ahead, s + L2_PREFETCH_STEPS < T, B, H, 1)
            if dy_ptr is not None:
                prefetch_l2(dy_ptr + ahead, s + L2_PREFETCH_STEPS < T, B, H, 1)
        g = dy + vector_product(held, u_fp32_ptr, da, BLOCK_H, STREAM_HALF, INTERLEAVED_CHAINS)
        da = g * activation_grad_from_output(h.to(tl.float32), ACTIVATION)
        tl.store(da_ptr + t * stride + row, da.to(da_ptr.dtype.element_ty), mask=mask)
        t += t_step
        h, dy = h_next, dy_next.to(tl.float32)
    tl.store(dh0_ptr + row, vector_product(held, u_fp32_ptr, da, BLOCK_H, STREAM_HALF, INTERLEAVED_CHAINS), mask=mask)


def empty_backward_operand(config: LaunchConfig[FmaBlocks], device: torch.device) -> torch.Tensor | None:
    """An uninitialised buffer of by_columns' shape and dtype, for the backward's operand that the forward kernel writes
    from the U^T it holds (and, with STREAM_HALF, streams): where the backward's BLOCK_H is the forward's; else None.
    It saves the backward the copy's launch (on a GPU every launch costs host time on every call)."""
    block_h = config.backward.BLOCK_H
    if config.forward.BLOCK_H != block_h:
        return None
    return torch.empty((block_h // 4, block_h, 4), dtype=HELD_DTYPE, device=device)


def by_columns(m: torch.Tensor, block_h: int) -> torch.Tensor:
    """m ([H, H], element [k, n]) in HELD_DTYPE, zero-padded to [block_h, block_h] and stored by columns, as the
    kernels load it: a contiguous [block_h / 4, block_h, 4] whose element [j, n, e] is m[4 j + e, n]. One copy
    converts and reorders it (a pad first where H < block_h): launches cost host time on every call."""
    rows, cols = m.shape
    padded = m if rows == cols == block_h else torch.nn.functional.pad(m, (0, block_h - cols, 0, block_h - rows))
    out = torch.empty((block_h // 4, block_h, 4), dtype=HELD_DTYPE, device=m.device)
    return out.copy_(padded.view(block_h // 4, 4, block_h).permute(0, 2, 1))


def operand(u: torch.Tensor, config: FmaBlocks, backward: bool) -> torch.Tensor:
    """What the launchers take for U: U itself where the kernel reads it so (reads_u_itself), else U^T (forward) or U
    (backward) by_columns. A copy: a caller that launches several times with one U (checkpointed BPTT's segments)
    makes it once."""
    if reads_u_itself(u.shape[0], config, backward):
        return u.contiguous()
    return by_columns(u if backward else u.t(), config.BLOCK_H)


def fma_forward(xw: torch.Tensor, h0: torch.Tensor, u_operand: torch.Tensor, reverse: bool, config: FmaBlocks,
                nonlinearity: str, xw_spare: bool = False, b_hh: torch.Tensor | None = None,
                framed: bool = False,
                backward_operand: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(all hidden states [T, B, H], h_n [B, H]) of one layer-direction in xw's dtype from h0 (None: zeros), b_hh (if
    given) added to every step's xw; xw, h0, b_hh contiguous on one device, u_operand operand(u, config,
    backward=False). With xw_spare the states are written over xw; framed: in a frame holding h0 (frames.py), xw's
    own where spared (made by frames.framed_empty); backward_operand (empty_backward_operand's): filled with the
    backward launcher's operand, by_columns(U), by the kernel."""
    T, B, H = xw.shape
    y = xw if xw_spare else empty_states(xw, framed, reverse)
    h_n = xw.new_empty((B, H))
    keywords = launch_keywords(config, nonlinearity, xw.dtype, interpreting(), backward=False, hidden_size=H)
    keywords["L2_PREFETCH_STEPS"] = prefetch_distance(keywords, (xw, y))
    fma_forward_kernel[(B,)](xw, h0, u_operand, b_hh, y, h_n, slot(y, reverse) if framed and h0 is not None else None,
                             backward_operand, T, B, H, T - 1 if reverse else 0, -1 if reverse else 1, **keywords)
    return y, h_n


def fma_backward(y: torch.Tensor, dy: torch.Tensor | None, u_columns: torch.Tensor, reverse: bool, config: FmaBlocks,
                 nonlinearity: str, dh_n: torch.Tensor | None = None,
                 dh0_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(da [T, B, H] in y's dtype, dh0 [B, H] in fp32, or rounded once to dh0_dtype if given) for one layer-direction
    from dy (None: zeros, none read), dh_n (if given) added to the first reverse step's dy; y, dy, dh_n contiguous,
    u_columns operand(u, config, backward=True)."""
    T, B, H = y.shape
    da = torch.empty_like(y)
    dh0 = torch.empty((B, H), dtype=dh0_dtype or accumulator_dtype(y.dtype), device=y.device)
    keywords = launch_keywords(config, nonlinearity, y.dtype, interpreting(), backward=True)
    keywords["L2_PREFETCH_STEPS"] = prefetch_distance(keywords, (y, dy, da), cold=dy)
    fma_backward_kernel[(B,)](y, dy, u_columns, dh_n, da, dh0, T, B, H, 0 if reverse else T - 1,
                              1 if reverse else -1, **keywords)
    return da, dh0
