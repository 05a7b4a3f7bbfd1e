"""Per-step tensors in the MMA accumulator's fragment order: a resident step with no layout conversion of its tiles.

A resident step (resident.py) computes the transposed product a^T = xw^T + U h^T as an MMA whose accumulator, a
[BLOCK_H, BLOCK_B] tile, is spread over the program's threads in a fixed pattern. Read from a [T, B, H] tensor by
tl.load, a tile arrives in a coalesced layout instead, and each conversion between the two passes through shared
memory: a store, a CTA barrier, a load, and a barrier before the buffer is written again. In 16-bit that took 6 CTA
barriers per step forward (xw in, h out, h to the next MMA) and 8 backward (h and dy in, da out, da to the MMA).

Where every warp holds one band of 16 rows (BLOCK_H = 16 * num_warps: the resident tier's 16-bit configurations from
BLOCK_H = 64), the accumulator's pattern is the same for sm_80's mma.sync (m16n8) and sm_90's wgmma (a warpgroup's
m64 is its 4 warps' bands; PTX ISA, the accumulator fragments of both): with r = row % 8, c = (col % 8) // 2,

    warp w = row // 16,   lane = 4 r + c,   register k = 4 (col // 8) + 2 ((row % 16) // 8) + col % 2

so each thread holds R = BLOCK_B / 2 elements. In fragment order a tile is stored as its threads one after another,
each thread's R elements contiguous in register order:

    offset(row, col) = (32 w + lane) R + k

Loaded as a [threads, R] tensor (one 16-byte load a thread for 16-bit and BLOCK_B = 16), from_fragments reshapes and
permutes it into [BLOCK_H, BLOCK_B]: the compiler gives the result, element for element, the registers the MMA's
accumulator takes, so no data moves (compile audit, sm_80 and sm_90: no shared memory and no shuffle for it), and
to_fragments is the inverse for the stores. Per step only h's two CTA barriers are left, on its way to the MMA as its
right operand. The maths do not depend on the layout: in the interpreter, or should the compiler choose another
layout, the tiles are the same and only their cost changes.

The layer's tensors stay [T, B, H] (nn.RNN's); the resident launchers copy a kernel's inputs into fragment order and
its output back (to_fragment_order, from_fragment_order: one kernel each, which reads the tensor once, writes the
copy once and allocates nothing else), padded to whole tiles with zeros: one pass over each [T, B, H] tensor more,
two forward (xw, y) and three backward (y, dy, da). Each kernel writes its output over its own fragment-ordered input
(y over xw, da over dy): step t's output goes where step t's input was, which the program read a step before, so the
passes add one buffer of the copy's size forward and two backward, not two and three. The layer's forward then needs
no buffer for y either: the copy has read xw whole before the kernel runs, so y is copied back over xw, which the
layer made for the call alone (dispatch.recurrence_forward's xw_spare).

The tiles are whole, so a copy holds cdiv(B, BLOCK_B) BLOCK_B x BLOCK_H elements a step for B x H: at 8 batch rows
of a 16-row tile twice the tensor, at one row 16 times. A call's peak memory grows with it (forward, for T = 2^20,
B = 1, H = 256 in bf16: xw and y 0.5 GiB each, a copy 8 GiB). So the resident launchers take fragment order only where
a copy holds at most PADDING_MAX times the tensor (within_padding_bound), and convert the tiles in the kernel
elsewhere (resident.launch_keywords' fragment_order).
"""
import torch
import triton
import triton.language as tl

from .launch import cdiv, next_power_of_2
from .runtime import interpreting

BAND_ROWS = 16  # the rows of a tile each warp holds: the MMA's m16 (wgmma's m64 is 4 warps' bands)
# The conversions' programs on a GPU: this many elements on this many warps, 32 a thread (compile, sm_80 and sm_90,
# BLOCK_H = 64-256: 48 registers at most, no spills; with 16 K elements on 4 warps they spilled).
CONVERSION_ELEMENTS = 8192
CONVERSION_WARPS = 8
# Fragment order only where a tensor's fragment-ordered copy holds at most this many times its elements
# (within_padding_bound): its tiles are whole, so below 8 batch rows of a 16-row tile a copy would be 2-16 times the
# tensor, and a call's copies as many times the memory it needs without them. There the resident launchers convert
# the tiles in the kernel instead (resident.launch_keywords).
PADDING_MAX = 2


def fits(block_h: int, block_b: int, num_warps: int) -> bool:
    """Whether a [block_h, block_b] accumulator on num_warps warps has the pattern of the module docstring: one band
    of BAND_ROWS rows a warp, whole 8-column blocks."""
    return block_h == BAND_ROWS * num_warps and block_b % 8 == 0


def within_padding_bound(B: int, H: int, block_b: int, block_h: int) -> bool:
    """Whether a [T, B, H] tensor in fragment order, padded to whole [block_b, block_h] tiles, holds at most
    PADDING_MAX times its elements."""
    return cdiv(B, block_b) * block_b * block_h <= PADDING_MAX * B * H


def to_fragment_order(x: torch.Tensor, block_b: int, block_h: int) -> torch.Tensor:
    """x [T, B, H] (any strides) as [T, tiles * block_b * block_h]: each batch tile's transposed [block_h, block_b] tile
    in fragment order (module docstring), padded with zeros. One pass that allocates nothing but its result."""
    T, B, H = x.shape
    tiles, steps = cdiv(B, block_b), steps_per_program(T, block_b, block_h)
    f = empty_fragment_order(T, B, block_b, block_h, x.dtype, x.device)
    to_fragment_order_kernel[(cdiv(T, steps), tiles)](x, f, T, B, H, *x.stride(), STEPS=steps, BLOCK_B=block_b,
                                                       BLOCK_H=block_h, num_warps=CONVERSION_WARPS)
    return f


def empty_fragment_order(T: int, B: int, block_b: int, block_h: int, dtype: torch.dtype,
                         device: torch.device) -> torch.Tensor:
    """An uninitialised [T, tiles * block_b * block_h] tensor: a [T, B, H] tensor's place in fragment order."""
    return torch.empty((T, cdiv(B, block_b) * block_b * block_h), dtype=dtype, device=device)


def from_fragment_order(f: torch.Tensor, B: int, H: int, block_b: int, block_h: int,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """The [T, B, H] tensor that to_fragment_order(., block_b, block_h) made f [T, tiles * block_b * block_h] of, in
    out (contiguous, f's dtype) if given."""
    T = f.shape[0]
    steps = steps_per_program(T, block_b, block_h)
    x = torch.empty((T, B, H), dtype=f.dtype, device=f.device) if out is None else out
    from_fragment_order_kernel[(cdiv(T, steps), cdiv(B, block_b))](f, x, T, B, H, STEPS=steps, BLOCK_B=block_b,
                                                                    BLOCK_H=block_h, num_warps=CONVERSION_WARPS)
    return x


def steps_per_program(T: int, block_b: int, block_h: int) -> int:
    """Steps each program of the conversions takes: CONVERSION_ELEMENTS on a GPU; in the interpreter, which runs one
    program after another at a fixed cost each, up to 64 steps."""
    if interpreting():
        return min(64, next_power_of_2(T))
    return max(1, CONVERSION_ELEMENTS // (block_b * block_h))


@triton.jit
def step_tiles(t0, tile, T, B, H, stride_t, stride_b, stride_h, STEPS: tl.constexpr, BLOCK_B: tl.constexpr,
               BLOCK_H: tl.constexpr):
    """Offsets and mask of batch tile `tile` of steps t0 .. t0 + STEPS - 1 of a [T, B, H] tensor with these strides,
    each step's tile transposed: [STEPS, BLOCK_H, BLOCK_B]."""
    steps = t0 + tl.arange(0, STEPS)[:, None, None]
    rows = tl.arange(0, BLOCK_H)[None, :, None]
    columns = tile * BLOCK_B + tl.arange(0, BLOCK_B)[None, None, :]
    offsets = steps * stride_t + columns * stride_b + rows * stride_h
    return offsets, (steps < T) & (rows < H) & (columns < B)


@triton.jit
def fragment_steps(t0, tile, T, STEPS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets and mask of batch tile `tile` of steps t0 .. t0 + STEPS - 1 of a fragment-ordered
    [T, tiles * BLOCK_B * BLOCK_H] tensor: [STEPS, threads, R]."""
    steps = t0 + tl.arange(0, STEPS)[:, None, None]
    step_size = tl.num_programs(1) * BLOCK_B * BLOCK_H
    offsets = steps * step_size + tile * BLOCK_B * BLOCK_H + fragment_offsets(BLOCK_B, BLOCK_H)[None, :, :]
    return offsets, steps < T


@triton.jit
def to_fragment_order_kernel(
    x_ptr,          # [T, B, H] in, any strides
    f_ptr,          # [T, tiles * BLOCK_B * BLOCK_H] out: fragment order, contiguous
    T, B, H,        # sequence length, batch, hidden size
    stride_t, stride_b, stride_h,  # x's strides, in elements
    STEPS: tl.constexpr,    # steps a program converts (steps_per_program)
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,  # the tile, as the resident kernels'
):
    t0 = tl.cast(tl.program_id(0), tl.int64) * STEPS  # 64-bit: t * B * H can pass 2^31
    tile = tl.program_id(1)  # one program per batch tile and STEPS steps
    offsets, mask = step_tiles(t0, tile, T, B, H, stride_t, stride_b, stride_h, STEPS, BLOCK_B, BLOCK_H)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    offsets, mask = fragment_steps(t0, tile, T, STEPS, BLOCK_B, BLOCK_H)
    tl.store(f_ptr + offsets, steps_to_fragments(x), mask=mask)


@triton.jit
def from_fragment_order_kernel(
    f_ptr,          # [T, tiles * BLOCK_B * BLOCK_H] in: fragment order, contiguous
    x_ptr,          # [T, B, H] out, contiguous
    T, B, H,        # sequence length, batch, hidden size
    STEPS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,  # as in to_fragment_order_kernel
):
    t0 = tl.cast(tl.program_id(0), tl.int64) * STEPS
    tile = tl.program_id(1)
    offsets, mask = fragment_steps(t0, tile, T, STEPS, BLOCK_B, BLOCK_H)
    f = steps_from_fragments(tl.load(f_ptr + offsets, mask=mask, other=0.0))
    offsets, mask = step_tiles(t0, tile, T, B, H, B * H, H, 1, STEPS, BLOCK_B, BLOCK_H)
    tl.store(x_ptr + offsets, f, mask=mask)


@triton.jit
def fragment_offsets(BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets of a tile's elements in fragment order, [threads, R]: thread i's R elements at i R .. i R + R - 1."""
    R: tl.constexpr = BLOCK_B // 2
    return tl.arange(0, BLOCK_B * BLOCK_H // R)[:, None] * R + tl.arange(0, R)[None, :]


@triton.jit
def fragment_tile(BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets of this program's tile in a fragment-ordered [tiles * BLOCK_B * BLOCK_H] step: [threads, R]."""
    return tl.program_id(0) * BLOCK_B * BLOCK_H + fragment_offsets(BLOCK_B, BLOCK_H)


@triton.jit
def from_fragments(x):
    """A tile loaded at fragment_tile's offsets, [threads, R], as the transposed [BLOCK_H, BLOCK_B] tile."""
    steps = steps_from_fragments(tl.reshape(x, (1, x.shape[0], x.shape[1])))
    return tl.reshape(steps, (steps.shape[1], steps.shape[2]))


@triton.jit
def to_fragments(x):
    """A transposed [BLOCK_H, BLOCK_B] tile as [threads, R], to store at fragment_tile's offsets."""
    steps = steps_to_fragments(tl.reshape(x, (1, x.shape[0], x.shape[1])))
    return tl.reshape(steps, (steps.shape[1], steps.shape[2]))


@triton.jit
def steps_from_fragments(x):
    """[S, threads, R] tiles of S steps in fragment order as [S, BLOCK_H, BLOCK_B] transposed tiles."""
    S: tl.constexpr = x.shape[0]
    BLOCK_B: tl.constexpr = 2 * x.shape[2]
    BLOCK_H: tl.constexpr = x.shape[1] // 2
    x = tl.reshape(x, (S, BLOCK_H // 16, 8, 4, BLOCK_B // 8, 2, 2))  # (s, w, r, c, n, i, j)
    return tl.reshape(tl.permute(x, (0, 1, 5, 2, 4, 3, 6)), (S, BLOCK_H, BLOCK_B))  # (w, i, r) rows, (n, c, j) columns


@triton.jit
def steps_to_fragments(x):
    """[S, BLOCK_H, BLOCK_B] transposed tiles of S steps as [S, threads, R], in fragment order."""
    S: tl.constexpr = x.shape[0]
    BLOCK_H: tl.constexpr = x.shape[1]
    BLOCK_B: tl.constexpr = x.shape[2]
    x = tl.reshape(x, (S, BLOCK_H // 16, 2, 8, BLOCK_B // 8, 4, 2))  # (s, w, i, r, n, c, j)
    return tl.reshape(tl.permute(x, (0, 1, 3, 5, 4, 2, 6)), (S, 2 * BLOCK_H, BLOCK_B // 2))
