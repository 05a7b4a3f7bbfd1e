"""L2 prefetch of a persistent kernel's step inputs, where a launch's streams outgrow L2.

A persistent kernel reads each step's input ([B, H] of xw forward; of h and dy backward) and writes
its output once per sequence. The input GEMM (or the forward) leaves them in L2 while the sequence
fits there; past that, each step's load goes to HBM, whose latency exceeds a step even though the
kernels load a step's input during the step before. With L2_PREFETCH_STEPS = D each program asks L2
for its rows of step t + D during step t, by prefetch.global.L2 (prefetch_l2): one instruction per
128-byte line, one line per thread, no register held across steps. It is a hint: the results do not
change. The audit (--l2-prefetch-steps) counts its CCTL prefetches in the time loop.

Measured on an H200 (the resident tier, bf16, T = 4096; results/variants/20261127-h200/):
- the resident forward at H = 128 took 0.40 us per step at B = 8 (one program) and 0.63 at B = 64 (four
  doing the same work each); at T = 512, where every B's inputs fit L2, every B's call took the host's
  0.27-0.28 ms, so that length says nothing of L2 (resident_batch_*.csv; .ci/gpu resident-batch now takes
  T = 1024); loading xw two steps ahead into registers had gained nothing (0.645 -> 0.663);
- prefetching 4 or 16 steps ahead (alike): at B = 64 15-21% faster at H = 128 (0.53/1.08 us per step
  forward / forward+backward against 0.63/1.36) and 6% at 256; at B = 8, where the inputs fit, 5-6%
  slower (l2_prefetch.csv).
So the launchers prefetch only where the [T, B, H] tensors a launch streams (prefetch_distance: xw and
y; y, dy and da backward; in fragment order their copies, fragments.py) outgrow the device's L2: the four
timed cases fall on the side they were faster on. The threshold itself, L2's size, is not timed; the audit
compiles both forms of each kernel that takes the prefetch. The fma tier's kernels take it too, by the same
rule: its fp32 step at H = 128 took 0.52 us at B = 64 against 0.35 at B = 8, the same gap (not yet timed with the
prefetch).
"""
import torch
import triton
import triton.language as tl

from .runtime import l2_cache_bytes

# Steps ahead whose input rows each program asks L2 to fetch, on a GPU, in launches whose streams outgrow L2
# (prefetch_distance); 0 turns it off. Read by resident.launch_keywords and fma.launch_keywords at every launch.
L2_PREFETCH_STEPS = 4


@triton.jit
def prefetch_l2(base, valid, B, H, BLOCK_B: tl.constexpr):
    """Ask L2 to fetch this program's BLOCK_B rows of base, a contiguous [B, H] matrix (valid: a scalar
    condition; nothing when false). The rows are one contiguous range of bytes [start, end): thread i
    prefetches the 128-byte line at (start rounded down to a line) + 128 i if that is below end, one
    prefetch.global.L2 and no register held after it. Every line is covered while the program has at
    least as many threads as the range has lines: 128 threads or more against 64 lines at most (16 rows
    of 256 16-bit elements); the fma tier's one row of fp32 takes BLOCK_H / 32 lines on BLOCK_H threads."""
    row = tl.program_id(0) * BLOCK_B
    start = (base + row * H).to(tl.int64, bitcast=True)
    size = tl.minimum(BLOCK_B, B - row) * H * (base.dtype.element_ty.primitive_bitwidth // 8)
    tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 i; .reg .b64 a, e; mov.u32 i, %tid.x; mul.wide.u32 a, i, 128; "
        "and.b64 e, $1, -128; add.s64 a, a, e; cvt.s64.s32 e, $2; add.s64 e, e, $1; setp.lt.u64 p, a, e; "
        "@p prefetch.global.L2 [a]; mov.b32 $0, 0; }", "=r,l,r",
        [tl.where(valid, start, 0), tl.where(valid, size, 0)], dtype=tl.int32, is_pure=False, pack=1)


def prefetch_distance(keywords: dict, streams: tuple[torch.Tensor | None, ...]) -> int:
    """keywords' L2_PREFETCH_STEPS where the [T, B, H] tensors a launch reads or writes once (streams) outgrow the
    device's L2 cache, else 0: where they fit, the prefetch only adds instructions (module docstring). A tensor given
    twice, read and written over (fragment order's copies), counts once; None (a tensor the launch does not get, dy
    where the loss reads h_n alone) not at all."""
    given = {id(t): t for t in streams if t is not None}.values()
    streamed = sum(t.numel() * t.element_size() for t in given)
    return keywords["L2_PREFETCH_STEPS"] if streamed > l2_cache_bytes(streams[0].device) else 0
