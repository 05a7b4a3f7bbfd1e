"""Tile helpers for the recurrent product shared by the persistent kernels.

Every step multiplies the fp32 carry c (h_{t-1} forward, da_t backward; [BLOCK_B, BLOCK_H]) by the
resident [k, n] operand M (U^T forward, U backward), both padded to BLOCK_H:

    acc += round(c, IO_DTYPE) @ M,   accumulated in fp32 (as cuDNN does)

M is held as K_CHUNKS row blocks of BLOCK_H / K_CHUNKS rows, loaded once before the time loop, and
the product is a sum of one tl.dot per block. Splitting K lets the compiler stream one block of M
from shared memory into registers at a time instead of the whole matrix, which is what keeps
bf16 H=256 and fp32 H=128 free of register spills (see kernels/audit.py).

Interpreter workaround: its tl.dot multiplies raw bf16 bit patterns (triton issue 11584), so under the
interpreter (UPCAST_DOT) both operands are upcast to fp32 after the same rounding, which gives the
same numbers as the GPU's bf16 x bf16 -> fp32 product.
"""
import triton
import triton.language as tl


@triton.jit
def load_k_chunk(u_ptr, chunk, n_start, H, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, TRANSPOSE: tl.constexpr,
                 UPCAST_DOT: tl.constexpr):
    """Rows [chunk*CHUNK, (chunk+1)*CHUNK) and columns [n_start, n_start+BLOCK_N) of the [k, n]
    operand U^T (TRANSPOSE) or U; zero outside the H x H matrix."""
    offs_k = chunk * CHUNK + tl.arange(0, CHUNK)
    offs_n = n_start + tl.arange(0, BLOCK_N)
    if TRANSPOSE:  # U^T[k, n] = U[n, k]: load U's [n, k] block row-major, then transpose in registers
        mask = (offs_n[:, None] < H) & (offs_k[None, :] < H)
        resident_u = tl.load(u_ptr + offs_n[:, None] * H + offs_k[None, :], mask=mask, other=0.0)
        resident_u = tl.trans(resident_u)
    else:
        mask = (offs_k[:, None] < H) & (offs_n[None, :] < H)
        resident_u = tl.load(u_ptr + offs_k[:, None] * H + offs_n[None, :], mask=mask, other=0.0)
    if UPCAST_DOT:
        resident_u = resident_u.to(tl.float32)
    return resident_u


@triton.jit
def load_resident_operand(u_ptr, n_start, H, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, K_CHUNKS: tl.constexpr,
                          TRANSPOSE: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Columns [n_start, n_start+BLOCK_N) of the operand (all of it in the resident tier, a slice in
    the split tier) as K_CHUNKS (1, 2 or 4) row blocks of BLOCK_H / K_CHUNKS rows; unused slots repeat block 0."""
    CHUNK: tl.constexpr = BLOCK_H // K_CHUNKS
    m0 = load_k_chunk(u_ptr, 0, n_start, H, BLOCK_N, CHUNK, TRANSPOSE, UPCAST_DOT)
    m1 = m0
    m2 = m0
    m3 = m0
    if K_CHUNKS > 1:
        m1 = load_k_chunk(u_ptr, 1, n_start, H, BLOCK_N, CHUNK, TRANSPOSE, UPCAST_DOT)
    if K_CHUNKS > 2:
        m2 = load_k_chunk(u_ptr, 2, n_start, H, BLOCK_N, CHUNK, TRANSPOSE, UPCAST_DOT)
        m3 = load_k_chunk(u_ptr, 3, n_start, H, BLOCK_N, CHUNK, TRANSPOSE, UPCAST_DOT)
    return m0, m1, m2, m3


@triton.jit
def split_columns(x, ROWS: tl.constexpr, WIDTH: tl.constexpr):
    """[ROWS, WIDTH] -> its left and right [ROWS, WIDTH/2] halves."""
    return tl.split(tl.reshape(x, (ROWS, 2, WIDTH // 2)).permute(0, 2, 1))


@triton.jit
def rounded_dot(carry, block, acc, IO_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """acc + round(carry, IO_DTYPE) @ block, accumulated in fp32."""
    operand = carry.to(IO_DTYPE)
    if UPCAST_DOT:
        operand = operand.to(tl.float32)
    return tl.dot(operand, block, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def recurrent_product(carry, m0, m1, m2, m3, acc, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                      K_CHUNKS: tl.constexpr, IO_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                      UPCAST_DOT: tl.constexpr):
    """acc + carry @ M with M given as K_CHUNKS row blocks (see load_resident_operand)."""
    if K_CHUNKS == 1:
        acc = rounded_dot(carry, m0, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
    elif K_CHUNKS == 2:
        c0, c1 = split_columns(carry, BLOCK_B, BLOCK_H)
        acc = rounded_dot(c0, m0, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
        acc = rounded_dot(c1, m1, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
    else:
        left, right = split_columns(carry, BLOCK_B, BLOCK_H)
        c0, c1 = split_columns(left, BLOCK_B, BLOCK_H // 2)
        c2, c3 = split_columns(right, BLOCK_B, BLOCK_H // 2)
        acc = rounded_dot(c0, m0, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
        acc = rounded_dot(c1, m1, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
        acc = rounded_dot(c2, m2, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
        acc = rounded_dot(c3, m3, acc, IO_DTYPE, DOT_PRECISION, UPCAST_DOT)
    return acc


@triton.jit
def load_state_chunk(state_ptr, rows, row_mask, chunk, H, CHUNK: tl.constexpr):
    """Columns [chunk*CHUNK, (chunk+1)*CHUNK) of a [B, H] state written by other programs this launch
    (.cg: read through L2, never a stale L1 line)."""
    offs_k = chunk * CHUNK + tl.arange(0, CHUNK)
    mask = row_mask[:, None] & (offs_k[None, :] < H)
    return tl.load(state_ptr + rows[:, None] * H + offs_k[None, :], mask=mask, other=0.0, cache_modifier=".cg")


@triton.jit
def shared_state_product(state_ptr, rows, row_mask, H, m0, m1, m2, m3, acc, BLOCK_H: tl.constexpr,
                         K_CHUNKS: tl.constexpr, IO_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                         UPCAST_DOT: tl.constexpr):
    """acc + state @ M for a state in global memory, read one K block at a time (split tier)."""
    CHUNK: tl.constexpr = BLOCK_H // K_CHUNKS
    acc = rounded_dot(load_state_chunk(state_ptr, rows, row_mask, 0, H, CHUNK), m0, acc, IO_DTYPE, DOT_PRECISION,
                      UPCAST_DOT)
    if K_CHUNKS > 1:
        acc = rounded_dot(load_state_chunk(state_ptr, rows, row_mask, 1, H, CHUNK), m1, acc, IO_DTYPE,
                          DOT_PRECISION, UPCAST_DOT)
    if K_CHUNKS > 2:
        acc = rounded_dot(load_state_chunk(state_ptr, rows, row_mask, 2, H, CHUNK), m2, acc, IO_DTYPE,
                          DOT_PRECISION, UPCAST_DOT)
        acc = rounded_dot(load_state_chunk(state_ptr, rows, row_mask, 3, H, CHUNK), m3, acc, IO_DTYPE,
                          DOT_PRECISION, UPCAST_DOT)
    return acc
