"""The layout of a persistent step's elementwise work: the product converted once, or the tiles.

Triton gives a tensor the layout of the op that makes it: a coalesced blocked layout for tl.load, the
accumulator's layout for an MMA's tl.dot, a slice layout for a sum over warps. An elementwise op on two
layouts converts one of them, through shared memory (a store, a CTA barrier, a load, and a barrier
before the buffer is written again), and Triton prefers the MMA's layout for elementwise work. So a step

    a = xw + U h,   h = act(a),   store h          (backward: g = dy + U^T da, da = g * act'(h), store da)

converts its input tiles (xw; h and dy) into the product's layout and its output tile back: 2 CTA
barriers each, beside the 2 that h costs on its way to the next MMA as its right operand.

in_io_layout(product) makes the compiler convert the product instead, once, into the blocked layout the
step's loads and stores share: a tl.split needs its size-2 dimension within each thread, which an MMA's
accumulator does not give for rows r and r + 1. The input is added after the product (not fed to the
MMA as its accumulator), and the step's loads and stores keep their layout. The compile audit counts
what it saves (kernels/audit.py, bar/step):
- resident tier (16-bit and fp32), every kernel whose tiles are not loaded in the accumulator's layout:
  4 CTA barriers per step instead of 6 (forward) and 8 (backward);
- split tier with an MMA product: up to 2 fewer forward, 2-4 fewer backward (bf16 at H = 512, 8-row
  tiles: 13 -> 11 and 15 -> 11; H = 1024, 16-row tiles: 13 -> 11 and 15 -> 11), 5-20% fewer
  instructions, and the activation no longer computed by every warp for the whole tile (H = 1024,
  32 x 16 tiles: 2 tanh a thread instead of 16). No change where a 16 x 8 tile spreads over 8 warps
  (8-row tiles at H = 1024 and 2048, fp32 at 512 and 1024), whose tiles cost no barrier to convert:
  there +-2 to 11 instructions. The FMA product (fp32, H = 2048) keeps its own layout
  (split.launch_keywords leaves it out).

PRODUCT_TO_IO_LAYOUT says which dtypes' steps convert the product ("all", "fp32" or "none"; converts_product),
read by resident.launch_keywords and split.launch_keywords at every launch. Timed on an H200 (bf16,
T = 4096, us per step forward / forward+backward, the converted product against the converted tiles;
results/variants/20261127-h200/io_layout.csv), the converted product was slower wherever it changed the
step, by up to 18%: resident H = 256, B = 8: 0.93/1.92 against 0.90/1.81; B = 64: 1.07/2.27 against
1.02/2.01; H = 128, B = 64 (the backward only: the forward keeps ACC_LAYOUT_IO there): 1.37 against
1.28 forward+backward; split H = 512, B = 64 (16-row tiles): 2.82/6.20 against 2.38/5.25. At H = 64 and
at H = 1024 the two were within 3% either way, the run's noise (H = 1024 with 8-row tiles, where the
step does not change, differed by 3%). Fewer barriers did not pay: the product's conversion sits on
the step's serial chain, between the MMA's wait and the activation, where the tiles' conversions it
replaced did not depend on the product. So 16-bit kept the converted tiles; the resident tier's
16-bit steps from BLOCK_H = 64 now convert neither (their tensors in fragment order: fragments.py).
fp32 (the resident tier beyond the fma tier's batch, the split tier) keeps the converted product,
chosen from the compile audit (resident 3xTF32 at BLOCK_H = 16: 125 instructions per step forward
instead of 287): not timed.

sum_leading(parts) is the same trick for a sum: the split tier's product leaves K_SPLIT partial products
[K_SPLIT, BLOCK_N, BLOCK_B], one per warp, and Triton's tl.sum over them stores each warp's partial in
shared memory with the warps' index fastest, 8 words apart for a warp's consecutive elements, so its
stores and reads take 16 wavefronts where one would do (kernels/banks.py; Nsight Compute counted the
same on an H200). Splitting K in halves with tl.split makes the compiler convert the parts once into a
layout with all of K in each thread, through a conflict-free buffer, and the halves then add in
registers (split.IN_THREAD_SUM).
"""
import torch
import triton
import triton.language as tl

PRODUCT_TO_IO_LAYOUT_CHOICES = ("all", "fp32", "none")
PRODUCT_TO_IO_LAYOUT = "fp32"


def converts_product(dtype: torch.dtype) -> bool:
    """Whether a persistent step in dtype converts its product into its tiles' layout (PRODUCT_TO_IO_LAYOUT)."""
    return PRODUCT_TO_IO_LAYOUT == "all" or (PRODUCT_TO_IO_LAYOUT == "fp32" and dtype == torch.float32)


@triton.jit
def in_io_layout(x):
    """x itself, [R, C] with R even, in the blocked layout of the step's loads and stores (module docstring)."""
    R: tl.constexpr = x.shape[0]
    C: tl.constexpr = x.shape[1]
    even, odd = tl.split(tl.permute(tl.reshape(x, (R // 2, 2, C)), (0, 2, 1)))
    return tl.reshape(tl.permute(tl.join(even, odd), (0, 2, 1)), (R, C))


@triton.jit
def sum_leading(parts):
    """tl.sum(parts, axis=0) for parts [K, R, C], K a power of two: K moved into each thread by one layout
    conversion (the first tl.split needs its halves within each thread), then summed there in halves."""
    K: tl.constexpr = parts.shape[0]
    R: tl.constexpr = parts.shape[1]
    C: tl.constexpr = parts.shape[2]
    tl.static_assert(K <= 32)
    x = tl.permute(parts, (1, 2, 0))
    for level in tl.static_range(5):
        if (K >> level) > 1:  # K >> level parts left: add them in pairs
            first, second = tl.split(tl.reshape(x, (R, C, K >> (level + 1), 2)))
            x = first + second
    return tl.reshape(x, (R, C))


@triton.jit
def side_by_side(a, b):
    """[a | b]: two tensors of one 2-D or 3-D shape side by side along their last axis, a's first. tl.join puts each
    pair in one thread, so no data moves between threads."""
    if len(a.shape) == 2:
        return tl.reshape(tl.permute(tl.join(a, b), (0, 2, 1)), (a.shape[0], 2 * a.shape[1]))
    else:
        tl.static_assert(len(a.shape) == 3)
        return tl.reshape(tl.permute(tl.join(a, b), (0, 1, 3, 2)), (a.shape[0], a.shape[1], 2 * a.shape[2]))
