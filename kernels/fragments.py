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
its output back (to_fragment_order, from_fragment_order), padded to whole tiles with zeros: one pass over each
[T, B, H] tensor more, two forward (xw, y) and three backward (y, dy, da). Each kernel writes its output over its
own fragment-ordered input (y over xw, da over dy): step t's output goes where step t's input was, which the program
read a step before, so the passes add one [T, B, H] buffer, not two.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .launch import cdiv

BAND_ROWS = 16  # the rows of a tile each warp holds: the MMA's m16 (wgmma's m64 is 4 warps' bands)


def fits(block_h: int, block_b: int, num_warps: int) -> bool:
    """Whether a [block_h, block_b] accumulator on num_warps warps has the pattern of the module docstring: one band
    of BAND_ROWS rows a warp, whole 8-column blocks."""
    return block_h == BAND_ROWS * num_warps and block_b % 8 == 0


def _padded(x: torch.Tensor, block_b: int, block_h: int) -> torch.Tensor:
    """x [T, B, H] zero-padded to whole tiles, [T, cdiv(B, block_b) * block_b, block_h]."""
    T, B, H = x.shape
    rows = cdiv(B, block_b) * block_b
    return x if (rows, block_h) == (B, H) else F.pad(x, (0, block_h - H, 0, rows - B))


def to_fragment_order(x: torch.Tensor, block_b: int, block_h: int) -> torch.Tensor:
    """x [T, B, H] as [T, tiles * block_b * block_h]: each batch tile's transposed [block_h, block_b] tile in fragment
    order (module docstring), padded with zeros."""
    T = x.shape[0]
    # b = block_b tile + 8 n + 2 c + j, row = 16 w + 8 i + r  ->  (tile, w, r, c, n, i, j)
    tiles = _padded(x, block_b, block_h).reshape(T, -1, block_b // 8, 4, 2, block_h // BAND_ROWS, 2, 8)
    return tiles.permute(0, 1, 5, 7, 3, 2, 6, 4).reshape(T, -1)


def from_fragment_order(f: torch.Tensor, B: int, H: int, block_b: int, block_h: int) -> torch.Tensor:
    """The [T, B, H] tensor that to_fragment_order(., block_b, block_h) made f [T, tiles * block_b * block_h] of."""
    T = f.shape[0]
    tiles = f.view(T, -1, block_h // BAND_ROWS, 8, 4, block_b // 8, 2, 2)  # (tile, w, r, c, n, i, j)
    rows = tiles.permute(0, 1, 5, 4, 7, 2, 6, 3).reshape(T, -1, block_h)
    return rows[:, :B, :H].contiguous()


@triton.jit
def fragment_tile(BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets of this program's tile in a fragment-ordered [tiles * BLOCK_B * BLOCK_H] step: [threads, R]."""
    R: tl.constexpr = BLOCK_B // 2
    threads = tl.arange(0, BLOCK_B * BLOCK_H // R)
    return tl.program_id(0) * BLOCK_B * BLOCK_H + threads[:, None] * R + tl.arange(0, R)[None, :]


@triton.jit
def from_fragments(x):
    """A tile loaded at fragment_tile's offsets, [threads, R], as the transposed [BLOCK_H, BLOCK_B] tile."""
    BLOCK_B: tl.constexpr = 2 * x.shape[1]
    BLOCK_H: tl.constexpr = x.shape[0] // 2
    x = tl.reshape(x, (BLOCK_H // 16, 8, 4, BLOCK_B // 8, 2, 2))  # (w, r, c, n, i, j)
    return tl.reshape(tl.permute(x, (0, 4, 1, 3, 2, 5)), (BLOCK_H, BLOCK_B))  # (w, i, r) rows, (n, c, j) columns


@triton.jit
def to_fragments(x):
    """A transposed [BLOCK_H, BLOCK_B] tile as [threads, R], to store at fragment_tile's offsets."""
    BLOCK_H: tl.constexpr = x.shape[0]
    BLOCK_B: tl.constexpr = x.shape[1]
    x = tl.reshape(x, (BLOCK_H // 16, 2, 8, BLOCK_B // 8, 4, 2))  # (w, i, r, n, c, j)
    return tl.reshape(tl.permute(x, (0, 2, 4, 3, 1, 5)), (2 * BLOCK_H, BLOCK_B // 2))
