"""A split batch group's state exchanged through distributed shared memory (sm_90), instead of through L2.

Where a batch group is one thread-block cluster with one batch tile (split.py: CLUSTER > 1, ONE_TILE), its CLUSTER
programs can read each other's shared memory. Each keeps two slots for the tile's state, [BLOCK_B, BLOCK_H] in the
16-bit I/O dtype, k fastest (slot_bytes); program p owns columns [p*BLOCK_N, (p+1)*BLOCK_N)::

    step s:    p writes its columns of h_s into its own slot s % 2 (st.shared), arrives at the cluster barrier
               (release), and only then stores them to y (global memory), so the arrival's fence does not wait
               for that store;
    step s+1:  p waits at the barrier (acquire), then reads each column k of h_s from slot s % 2 of program
               k // BLOCK_N (mapa, ld.shared::cluster).

Two slots make one barrier per step enough: p rewrites slot s % 2 at step s + 2, after the barrier of step s + 1,
which no program passes before every program has arrived there, after its reads of step s + 1. After its last step
each program waits once more, so none exits while another may still read its slots. The first step reads h_0 (da_in
backward) from global memory as before.

Triton allocates and lays out shared memory itself, so the slots lie past the end of its allocation: the launcher
asks for exchange_bytes more than the compiled kernel declares (split._launch_clusters), and the kernel finds them
from the launch's dynamic shared memory size (%dynamic_smem_size) and Triton's symbol for its base (global_smem,
declared by every kernel that stages an MMA operand through shared memory). Each element's address is computed on its
own, so the exchange does not depend on the layouts Triton gives h: a value held by several warps is written
several times, identically.

What it still pays: the arrival's release is a GPU-scope fence (MEMBAR.ALL.GPU: sm_90 has no fence between CTA and
GPU scope), and each element read is one 2-byte remote load. Verified by compiling only (kernels.audit
--split-dsmem); not yet run on a GPU.
"""
import triton
import triton.language as tl

# The buffer's address from its end: Triton's base, plus the launch's dynamic size, plus a negative offset ($1).
_ADDRESS = tl.constexpr("mov.u32 a, global_smem; mov.u32 e, %dynamic_smem_size; add.u32 a, a, e; add.u32 a, a, $1; ")


@triton.constexpr_function
def slot_bytes(BLOCK_B, BLOCK_H):
    """Bytes of one slot: a [BLOCK_B, BLOCK_H] tile of 16-bit elements."""
    return BLOCK_B * BLOCK_H * 2


def exchange_bytes(config) -> int:
    """Shared memory the exchange adds to a split kernel's own (config: a SplitBlocks): its two slots."""
    return 2 * slot_bytes(config.BLOCK_B, config.BLOCK_H)


@triton.jit
def _from_end(slot, k, b, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Byte offset of element (k, b) of slot `slot` (0 or 1), counted from the end of the two slots: negative."""
    SLOT: tl.constexpr = slot_bytes(BLOCK_B, BLOCK_H)
    return slot * SLOT + (b * BLOCK_H + k) * 2 - 2 * SLOT


@triton.jit
def put_state(value, cols, slot, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's columns of the state into its own slot: value is [BLOCK_N, BLOCK_B], 16-bit, element (n, b)
    being batch row b of the tile, column cols[n]."""
    offsets = _from_end(slot, cols[:, None], tl.arange(0, BLOCK_B)[None, :], BLOCK_B, BLOCK_H)
    tl.inline_asm_elementwise(
        "{ .reg .u32 a, e; " + _ADDRESS + "st.shared.b16 [a], $2; mov.b32 $0, 0; }", "=r,r,h",
        [offsets, value.to(tl.int16, bitcast=True)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def get_state(k, b, mask, slot, dtype: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
              BLOCK_H: tl.constexpr):
    """Elements (k, b) of the state, from slot `slot` of the cluster's program k // BLOCK_N, as dtype (16-bit),
    and zero where mask is false (nothing read). k, b and mask broadcast to the result's shape."""
    offsets = tl.where(mask, _from_end(slot, k, b, BLOCK_B, BLOCK_H), 1)  # 1: masked (real offsets are negative)
    rank = (k // BLOCK_N) + b * 0  # broadcast to offsets' shape
    bits = tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .u32 a, e; setp.lt.s32 p, $1, 0; mov.b16 $0, 0; " + _ADDRESS +
        "mapa.shared::cluster.u32 a, a, $2; @p ld.shared::cluster.b16 $0, [a]; }", "=h,r,r",
        [offsets, rank], dtype=tl.int16, is_pure=False, pack=1)
    return bits.to(dtype, bitcast=True)
