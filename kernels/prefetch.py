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
y; y, dy and da backward; in fragment order their copies, fragments.py) outgrow STREAMED_L2_SHARE of the
device's L2, by default all of it: the four timed cases fall on the side they were faster on. The threshold
itself is not timed; the audit compiles both forms of each kernel that takes the prefetch.

The same lease's figures hint that L2 runs short before the streams reach its size (each of the two L2 partitions
caches what the SMs attached to it read, NVIDIA's A100 and H100 whitepapers: data written by every SM and read
across the chip can take room in both), but they do not settle where. Streaming 32 MiB, under the H200's L2,
without the prefetch: the resident forward, bf16 H = 128, T = 4096, took 0.505 us per step at B = 16 against 0.400
at B = 8, one program doing the same work (resident_batch_t4096.csv); the fma forward, fp32 H = 128, T = 1024,
replayed from a CUDA graph, 0.462 at B = 64 against 0.332 at B = 8, where the cases that stream 16 MiB took
1.05-1.09x their B = 8 time (results/race/20261128-h200-graphs). Yet with 32 MiB streamed the resident forward at
H = 256, B = 8, T = 4096 ran 5% slower with the prefetch (0.974 against 0.928; its step is twice as long, so loading
a step ahead hides more). STREAMED_L2_SHARE = 0.5 (.ci/gpu_variants.py l2-prefetch-over-half) turns it on there:
the lease's `l2-prefetch` stage times both.

The fma tier's kernels take the prefetch too, by the same rule: its fp32 step at H = 128, T = 4096 took 0.52 us at
B = 64 against 0.35 at B = 8, the same gap (not yet timed with the prefetch).

The rule's premise, that the call itself left a launch's inputs in L2, does not hold for the backward's dy: the upstream
gradient is made before the call (rnnbench makes it once per case, and triton.testing.do_bench flushes L2 before every
call), so where it is read as given (the fma tier, the resident tier's converted tiles; fragment order's copy of it is
made in the call) every step's rows of it may come from HBM, however small the streams. On the H200 (T = 4096, before
the fma tier prefetched) the fma backward, forward+backward less forward, took 0.42 / 0.68 us a step at fp32 H = 64 /
128, B = 8, against its forward's 0.24 / 0.32 (whose xw the input GEMM had just written), and 0.34 / 0.49 at B = 64,
where each program does the same work (results/variants/20261127-h200-untimed/fma_chains.csv), which points at a step's
latency, not its work (read from these times, not measured). The resident tier shows the same where its step is as
short: bf16 at H = 64, T = 4096, B = 8-64, its backward took 0.46-0.50 us a step with the tiles converted (dy read as
given) against 0.26-0.33 in fragment order (dy's copy, made in the call), whose forward was 0.02-0.08 faster at B = 8
and 16 and 0.10 slower at 64 (results/variants/20261128-h200-fragments/variants.csv); at H = 256, whose step is about
three times as long, the backwards were within 3-7% at B = 8-64 (fragment order's 10% slower at 256). Not every dy is
cold: a lower layer's in a stack is the dX GEMM's output of the layer above, just written, and a bidirectional layer's
backward may get a contiguous copy. With COLD_GRADIENT (off, not yet timed: `bash .ci/gpu cold-dy`) a backward launch
that reads dy as given prefetches its step inputs (dy's rows and y's) whatever its streams' size, at the cost of the
prefetch's address arithmetic every step (the fma backward at fp32 H = 64: 141 time-loop instructions a step against
114, sm_90).

Tried and dropped (compile audit, 2026-11-29): loading dy two steps ahead into registers instead. It adds 2-5
instructions a step to the fma backward, but not the step of latency it is for: a loop-carried value loaded ahead is
handed from one iteration to the next by a register move, which waits for the load, and with two in flight ptxas moves
the newer into the older's register at the top of the next iteration (MOV R81, R90 before that iteration's own loads,
sm_90 fp32 H = 64; likewise with tl.range's loop_unroll_factor=2), where the one-step form moves it late in the same
iteration (MOV R90, R83, 96 instructions after its LDG, of 114). So either form waits for each load about a step after
issuing it; the prefetch, which holds no register, does not.
"""
import torch
import triton
import triton.language as tl

from .runtime import l2_cache_bytes

# Steps ahead whose input rows each program asks L2 to fetch, on a GPU, in launches whose streams outgrow L2
# (prefetch_distance); 0 turns it off. Read by resident.launch_keywords and fma.launch_keywords at every launch.
L2_PREFETCH_STEPS = 4
# The share of the device's L2 that a launch's streams must exceed for the prefetch (prefetch_distance; module
# docstring): 1.0, L2's size, the side of it each timed case was faster on.
STREAMED_L2_SHARE = 1.0
# Whether a backward launch that reads the upstream gradient dy as the caller gave it prefetches its step inputs (y's
# rows too), whatever its streams' size (module docstring): off, not yet timed
COLD_GRADIENT = False


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


def prefetch_distance(keywords: dict, streams: tuple[torch.Tensor | None, ...],
                      cold: torch.Tensor | None = None) -> int:
    """keywords' L2_PREFETCH_STEPS where the [T, B, H] tensors a launch reads or writes once (streams) outgrow
    STREAMED_L2_SHARE of the device's L2 cache, else 0: where they fit, the prefetch only adds instructions (module
    docstring). A tensor given twice, read and written over (fragment order's copies), counts once; None (a tensor the
    launch does not get, dy where the loss reads h_n alone) not at all. cold: a stream that the call did not write
    (the backward's dy as given): with COLD_GRADIENT, reason enough to prefetch."""
    if COLD_GRADIENT and cold is not None:
        return keywords["L2_PREFETCH_STEPS"]
    given = {id(t): t for t in streams if t is not None}.values()
    streamed = sum(t.numel() * t.element_size() for t in given)
    return keywords["L2_PREFETCH_STEPS"] if streamed > STREAMED_L2_SHARE * l2_cache_bytes(streams[0].device) else 0
