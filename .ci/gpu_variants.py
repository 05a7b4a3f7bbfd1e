"""Times kernel variants side by side in one process on a GPU: what a short device lease can afford.

    python .ci/gpu_variants.py --out DIR [--seq-len 4096] [--hidden 128 256] [--batch 8 64] [--dtype bfloat16]
                               [--variant current] [--bidirectional] [--device cpu]

For every (variant, dtype, H, B) it builds TritonRNN with nn.RNN's seeded weights, checks its
forward against the float64 reference loop (relative error of the outputs), and times forward and
forward+backward with triton.testing.do_bench, then takes each one's peak memory above what was allocated
before it (one call); cuDNN float16 is timed beside it as the control, so a
drift of the machine between leases shows. Beside each time per step, the host's time per call: until a
call returns, the GPU idle when it starts (median of HOST_CALLS). Where it nears the call's time (a short
--seq-len), the calls are host-bound; a split call that waits for its barriers' status (barrier_status.py,
split-status-waited) waits for its kernels, so its host time includes them. A variant is a name and a context
manager that switches a kernel default for the calls made inside it (VARIANTS). Writes DIR/variants.csv, and
DIR/summary.txt with each variant's time per step as a ratio to today's form's on the same case, beside both
errors. --bidirectional times bidirectional layers (both sides), whose directions may run at once on two streams
(kernels/streams.py). Cases run one after another, each with its variants back to back (planned_cases); beside other
variants today's form times only the cases they are compared on, and a filter value or variant that would time nothing
is refused (exit 2), so that a typo in a lease's step costs seconds, not its results. `--device cpu` (with
TRITON_INTERPRET=1, small --seq-len and --hidden) checks the script itself.

Before timing anything, the cases' Triton calls are made once in --compile-workers processes at once (on a GPU by
default), which leaves their kernels in Triton's on-disk cache: Triton compiles a kernel on one CPU core, and a
lease's timing steps would otherwise compile one kernel at a time (the device machine has 16 cores). Kernels of
different processes do not run at once on the GPU (.ci/gpu_pytest.py says why), and nothing is timed then.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
import triton.testing
from gpu_pytest import default_workers  # beside this script

from kernels import (
    TritonRNN,
    activations,
    barrier_status,
    dispatch,
    dsmem,
    fma,
    layouts,
    prefetch,
    resident,
    split,
    streams,
)
from kernels.reference import run_module
from rnnbench import measure


@contextlib.contextmanager
def switched(module, name: str, value):
    """module.name = value for the calls inside (the kernels read these defaults at every launch)."""
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


@contextlib.contextmanager
def resident_fp32(product: str):
    """fp32 layers on the resident tier with this product: the fma tier, which serves their sizes first, off."""
    with switched(dispatch, "FMA_CONFIGS", {}), switched(resident, "FP32_PRODUCT", product):
        yield


@contextlib.contextmanager
def resident_16bit(module=None, name: str | None = None, value=None):
    """16-bit layers at BLOCK_H = 128 on the resident tier, as before the fma tier took them (dispatch.FMA_CONFIGS),
    with module.name = value where a name is given: the resident tier's 16-bit variants are timed at that size."""
    fp32_only = {key: config for key, config in dispatch.FMA_CONFIGS.items() if key[0] == torch.float32}
    with switched(dispatch, "FMA_CONFIGS", fp32_only), \
            switched(module, name, value) if name else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def resident_tiles(acc_layout_io_max_block_h: dict):
    """The 16-bit resident tier (at H = 128 in place of the fma tier) with its tiles in their own layout, not in
    fragment order (resident.FRAGMENT_IO), and inline PTX's tiles up to these BLOCK_H
    (resident.ACC_LAYOUT_IO_MAX_BLOCK_H)."""
    with resident_16bit(resident, "ACC_LAYOUT_IO_MAX_BLOCK_H", acc_layout_io_max_block_h), \
            switched(resident, "FRAGMENT_IO", False):
        yield


@contextlib.contextmanager
def split_exchange(exchange: str):
    """The split tier's batch groups as clusters, exchanging the state this way where they can."""
    with switched(dispatch, "SPLIT_CLUSTERS", True), switched(dispatch, "SPLIT_CLUSTER_EXCHANGE", exchange):
        yield


@contextlib.contextmanager
def fp32_2048_stepwise(name: str | None = None, value=None):
    """fp32 at H = 2048 on the step kernel, as before the split tier took it by FMA (dispatch.SPLIT_CONFIGS), with
    dispatch.name = value where a name is given: the step kernel's variants are timed at that size."""
    configs = {key: config for key, config in dispatch.SPLIT_CONFIGS.items() if key != (torch.float32, 2048)}
    with switched(dispatch, "SPLIT_CONFIGS", configs), \
            switched(dispatch, name, value) if name else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def stepwise_tiles(block_b: int, block_n: int):
    """The step kernel with block_b x block_n output tiles at every size (today's: 16 rows, columns narrowed to fill
    the SMs)."""
    with fp32_2048_stepwise("STEPWISE_DEFAULT", dispatch.STEPWISE_DEFAULT.replace(BLOCK_B=block_b)), \
            switched(dispatch, "STEPWISE_BLOCK_N", (block_n,)):
        yield


DSMEM_EXCHANGES = [e for e in dsmem.EXCHANGES if e != dsmem.L2.value]  # the clusters' exchanges but L2's
VARIANTS = {  # name -> a context manager factory
    "current": contextlib.nullcontext,
    # 16-bit per-step loads and stores of the resident tier (at H = 128 in place of the fma tier): in the MMA
    # accumulator's fragment order (resident.FRAGMENT_IO, off until its GPU tests pass), all converted through shared
    # memory, or all by inline PTX (today's: converted into the product's layout through shared memory; up to H = 128
    # the forward's in the accumulator's layout by inline PTX)
    "resident-fragments": lambda: resident_16bit(resident, "FRAGMENT_IO", True),
    "plain-io": lambda: resident_tiles({"forward": 0, "backward": 0}),
    "acc-layout-io": lambda: resident_tiles({"forward": 256, "backward": 256}),
    # the resident and split kernels' product converted into the layout of the step's tiles in 16-bit too, not
    # those tiles into its layout and back (layouts.PRODUCT_TO_IO_LAYOUT: fp32 only, timed slower in 16-bit)
    "product-to-io-layout": lambda: resident_16bit(layouts, "PRODUCT_TO_IO_LAYOUT", "all"),
    # fp32 at H <= 256: today's fma tier (fma.py), up to 4 batch rows per SM (today's: 1, dispatch.FMA_MAX_ROWS_PER_SM),
    # and the resident tier's products: fp32-tf32x3 (Triton's), fp32-one-dot-k, fp32-one-dot-m (resident.py)
    "fp32-fma": contextlib.nullcontext,
    "fp32-fma-shared-sms": lambda: switched(dispatch, "FMA_MAX_ROWS_PER_SM", 4),
    # the fma tier with twice today's warps: half as many FFMA per thread and two warps per scheduler to hide latency,
    # but each column's two threads in different warps, whose sums meet through shared memory (compile audit, sm_90,
    # H = 128: 144 instructions and 5 CTA barriers per step against 201 and 2; at H = 256 it spills)
    "fp32-fma-2x-warps": lambda: switched(dispatch, "FMA_CONFIGS", {
        key: config.replace(num_warps=2 * config.forward.num_warps) for key, config in dispatch.FMA_CONFIGS.items()}),
    **{f"fp32-{p}": (lambda p=p: resident_fp32(p)) for p in resident.FP32_PRODUCTS},
    # the fma tier's product with each chain a run of consecutive k, whose FFMAs ptxas issues back to back (today's:
    # chain c sums the k with k % 4 == c, fma.INTERLEAVED_CHAINS)
    "fma-chains-in-runs": lambda: switched(fma, "INTERLEAVED_CHAINS", False),
    # fp32 forward kernels with tanh's portable form, its range checks for denormal operands on the step's serial
    # chain (today's: the same maths by inline PTX without them, activations.FTZ_TANH_ON)
    "portable-tanh": lambda: switched(activations, "FTZ_TANH_ON", False),
    # 16-bit at BLOCK_H = 128 on the resident tier's MMA kernels, as before the fma tier took it (dispatch.FMA_CONFIGS)
    "resident-128": resident_16bit,
    # fp32 at H = 256 on the split tier, as before the fma tier took it with half of U streamed (fma.STREAM_HALF)
    "fp32-split-256": lambda: switched(dispatch, "FMA_CONFIGS", {
        key: config for key, config in dispatch.FMA_CONFIGS.items() if key[1] <= fma.HELD_MAX_BLOCK_H}),
    # the split tier at H = 1024 in 32-row slices where today's takes 16-row ones (dispatch.SPLIT_FINE_CONFIGS)
    "split-32-row-slices": lambda: switched(dispatch, "SPLIT_FINE_CONFIGS", {}),
    # each program's step inputs read in the step, after the barrier (today's, in 16-bit: the first tile's a step
    # ahead, before the barrier: split.INPUTS_AHEAD; fp32's already read them in the step)
    "split-inputs-in-step": lambda: switched(split, "INPUTS_AHEAD", False),
    # the split kernels' inputs a step ahead loaded before the program's arrival at the group barrier, whose release
    # then orders them first (today's: after it; split.INPUTS_AFTER_ARRIVAL)
    "split-inputs-before-arrival": lambda: switched(split, "INPUTS_AFTER_ARRIVAL", False),
    # the split kernels' partial products (one per warp) summed by Triton's tl.sum over the warps, through shared
    # memory with 16-way bank conflicts (today's: in each thread after one layout conversion, split.IN_THREAD_SUM)
    "split-tl-sum": lambda: switched(split, "IN_THREAD_SUM", False),
    # the split tier at H = 512 and 2048 where programs run several tiles per step in 16-row slices with 16-row tiles
    # (today's: 32-row slices with 8-row tiles in twice the batch groups; dispatch.SPLIT_LOOPED_CONFIGS)
    "split-thin-looped": lambda: switched(dispatch, "SPLIT_LOOPED_CONFIGS", {}),
    # those 32-row slices with 8-row tiles, as before they took 16-row ones from sm_90 (dispatch.SPLIT_LOOPED_BLOCK_B):
    # twice the tiles per program where programs run several, two where the batch fits one 16-row tile (H = 2048,
    # B = 17..32)
    "split-looped-8-row-tiles": lambda: switched(dispatch, "SPLIT_LOOPED_BLOCK_B", 8),
    # where each program has one tile: at H = 2048, B = 9..16, one group of 128 16-row slices with a 16-row tile, not
    # today's two groups of 64 32-row slices with 8-row tiles (dispatch.SPLIT_WIDE_ONE_TILE_BLOCK_H); and at H = 512,
    # B = 33..64, today's 16-row slices with 16-row tiles against 32-row slices with 8-row tiles in twice the groups
    "split-thin-one-tile": lambda: switched(dispatch, "SPLIT_WIDE_ONE_TILE_BLOCK_H", ()),
    "split-wide-one-tile-512": lambda: switched(dispatch, "SPLIT_WIDE_ONE_TILE_BLOCK_H", (512, 2048)),
    # the split tier's batch tiles where a batch fits 8 rows: 16 rows, not 8 (today's: dispatch.SPLIT_NARROW_BLOCK_B)
    "split-16-row-tiles": lambda: switched(dispatch, "SPLIT_NARROW_BLOCK_B", 16),
    # the split kernels' tile loop kept where each program has one tile (today's drops it: dispatch.SPLIT_ONE_TILE)
    "split-tile-loop": lambda: switched(dispatch, "SPLIT_ONE_TILE", False),
    # the tile loop, where programs run several tiles, not pipelined (today's: over 3 stages,
    # dispatch.SPLIT_TILE_LOOP_STAGES; fp32 over 2, dispatch.SPLIT_FP32_MAX_TILE_LOOP_STAGES)
    "split-tile-stages-1": lambda: switched(dispatch, "SPLIT_TILE_LOOP_STAGES", 1),
    # the split tier's batch groups as thread-block clusters meeting at the cluster barrier at H = 1024 too (today's:
    # at 16-bit H = 512 only, dispatch.SPLIT_CLUSTERS_DEFAULT; dispatch.SPLIT_CLUSTERS), and U split over clusters of 4
    # at H = 256 (today's: the resident tier in 16-bit, the fma tier in fp32)
    "split-clusters": lambda: switched(dispatch, "SPLIT_CLUSTERS", True),
    # 16-bit H = 512 at the grid barrier, as before its clusters became the default (dispatch.SPLIT_CLUSTERS_DEFAULT)
    "split-grid-barrier-512": lambda: switched(dispatch, "SPLIT_CLUSTERS_DEFAULT", frozenset()),
    # each split call waiting for its barriers' status before it returns, a host sync a call (the default until
    # 2026-11-29; today's: read by a later call once the GPU is past it, barrier_status.WAIT_FOR_STATUS)
    "split-status-waited": lambda: switched(barrier_status, "WAIT_FOR_STATUS", True),
    # the split kernels' K split over clusters of 2 or 4 programs where programs run several tiles at H = 2048, each
    # reading only its range of K of the state, their partial products summed in distributed shared memory (today's:
    # every program reads its group's whole state; dispatch.SPLIT_K_CLUSTER)
    **{f"split-k-cluster-{c}": (lambda c=c: switched(dispatch, "SPLIT_K_CLUSTER", c)) for c in (2, 4)},
    # the 16-bit clusters with their state exchanged in distributed shared memory, not through L2: by remote
    # loads after the cluster barrier, or by bulk copies counted on mbarriers (dispatch.SPLIT_CLUSTER_EXCHANGE)
    **{f"split-{e}": (lambda e=e: split_exchange(e)) for e in DSMEM_EXCHANGES},
    # fp32 at H = 2048 on today's step kernel, as before the split tier's FMA product served it (SplitBlocks.FMA);
    # the step kernel's variants below run that size there too
    "fp32-2048-stepwise": fp32_2048_stepwise,
    # the step kernel's 64-column tiles at every size (today's narrow them until the grid fills the SMs:
    # dispatch.STEPWISE_BLOCK_N)
    "stepwise-64-columns": lambda: fp32_2048_stepwise("STEPWISE_BLOCK_N", (64,)),
    # the step kernel's K loop in 32-wide slices (today's: 128, stepwise.StepwiseBlocks.BLOCK_K)
    "stepwise-k32": lambda: fp32_2048_stepwise("STEPWISE_DEFAULT", dispatch.STEPWISE_DEFAULT.replace(BLOCK_K=32)),
    # 32 x 32 output tiles: each batch tile re-reads all of U every step, so at fp32, H = 2048, B = 64 these move about
    # 64 MiB through L2 per step against today's 96 (16 x 32 tiles; estimate): is the step bandwidth-bound?
    "stepwise-32x32-tiles": lambda: stepwise_tiles(32, 32),
    # the resident and fma kernels' step inputs never prefetched into L2 (today's: 4 steps ahead where the launch's
    # streams outgrow L2, prefetch.prefetch_distance), and 16 steps ahead there
    "no-l2-prefetch": lambda: switched(prefetch, "L2_PREFETCH_STEPS", 0),
    "l2-prefetch-16": lambda: switched(prefetch, "L2_PREFETCH_STEPS", 16),
    # the prefetch where a launch's streams outgrow half of L2, not all of it (prefetch.STREAMED_L2_SHARE)
    "l2-prefetch-over-half": lambda: switched(prefetch, "STREAMED_L2_SHARE", 0.5),
    # the prefetch in every launch of those kernels, whatever they stream (STREAMED_L2_SHARE 0), and in every backward
    # launch that reads dy as given (prefetch.COLD_GRADIENT): the upstream gradient comes from outside the call, cold
    # in L2 after do_bench's flush, however small (L2_COLD_DY)
    "l2-prefetch-always": lambda: switched(prefetch, "STREAMED_L2_SHARE", 0.0),
    "l2-prefetch-dy": lambda: switched(prefetch, "COLD_GRADIENT", True),
    # Everything in order on one stream: a bidirectional layer's directions one after the other (--bidirectional)
    "one-stream": lambda: switched(streams, "OVERLAP", False),
    # the fma, resident and split kernels without b_hh, which the input GEMM adds as b_ih + b_hh, summed at a launch of
    # its own (today's: each step's input plus b_hh in the kernel, dispatch.B_HH_IN_KERNEL)
    "b-hh-summed": lambda: switched(dispatch, "B_HH_IN_KERNEL", False),
    # the fma forward reading a copy of U^T made for it at a launch of its own (today's: U where it lies, where H is a
    # multiple of 16: fma.READ_U_ITSELF)
    "fma-u-copied": lambda: switched(fma, "READ_U_ITSELF", False),
}
SMALL = [(dt, h, b) for dt in ("bfloat16",) for h in (128, 256) for b in (8, 64)]
# bf16 at H = 128 by batch, at two --seq-len (1024: xw and y fit in L2 at every B; 4096: not from B = 32; .ci/gpu
# resident-batch): on the H200 the resident tier took 0.40 us per step at B = 8 and 0.63 at 64 with T = 4096 (at
# T = 512 every B's call took the host's 0.27-0.28 ms); the fma tier serves this size now
RESIDENT_BATCH = [("bfloat16", 128, b) for b in (8, 16, 32, 64)]
RESIDENT_16BIT = [("bfloat16", h, b) for h in (64, 128, 256) for b in (8, 64)]  # the resident tier's 16-bit sizes
# The resident tier's 16-bit step in fragment order (at H = 128 in place of the fma tier: resident-128): one to 16
# programs, the copies into fragment order and back growing with B (kernels/fragments.py), and fp16. From 8 rows:
# below, its copies would pad beyond fragments.PADDING_MAX and it converts the tiles, as today's form does
RESIDENT_FRAGMENTS = ([("bfloat16", h, b) for h in (64, 128, 256) for b in (8, 16, 64, 256)]
                      + [("float16", 256, b) for b in (8, 64)])
# Around the L2 prefetch's threshold (the forward's xw and y at T = 4096 against an H100's 50 MiB of L2, an H200's 60):
# H = 64 streams 8-64 MiB at B = 8-64, H = 256 32-256 MiB
RESIDENT_L2 = [("bfloat16", h, b) for h in (64, 256) for b in (8, 16, 32, 64)]
FMA_L2 = [(dt, 128, b) for dt in ("float32", "bfloat16") for b in (8, 64)]  # the fma tier's (bf16: 16 MiB at B = 8)
# Streaming between half of L2 and all of it, where STREAMED_L2_SHARE = 0.5 turns the prefetch on (prefetch.py): at
# T = 4096 the resident forward at bf16 H = 64, B = 32 and H = 256, B = 8 (32 MiB each), at T = 1024 the fma forward
# at fp32 H = 128, B = 64 (32 MiB); bf16 H = 64 and fp32 H = 128 at B = 8 beside them (4-16 MiB: the same either way,
# the timing's noise)
L2_WINDOW = [("bfloat16", 64, 32), ("bfloat16", 64, 8), ("bfloat16", 256, 8), ("float32", 128, 64),
             ("float32", 128, 8)]
# Where a backward's streams (y, dy, da at T = 4096) fit even an H100's 50 MiB of L2, so that no launch prefetches
# today, yet its dy is read cold (the upstream gradient, made before the call; do_bench flushes L2 before each call):
# on the H200 (T = 4096, no prefetch in the fma tier then) the fma backward (forward+backward less forward) took 0.42 /
# 0.68 us a step at fp32 H = 64 / 128, B = 8, against the forward's 0.24 / 0.32; bf16 at 128 0.57 against 0.30
# (results/variants/20261127-h200-untimed/fma_chains.csv, fma_16bit.csv); the resident tier's bf16 at H = 64 beside
# them. At B = 64 these streams outgrow L2 and the launches prefetch already
L2_COLD_DY = [("float32", 64, 8), ("float32", 64, 16), ("float32", 128, 8), ("bfloat16", 64, 8), ("bfloat16", 64, 16),
              ("bfloat16", 128, 8), ("bfloat16", 128, 16)]
SPLIT_16BIT = [("bfloat16", h, b) for h in (512, 1024) for b in (8, 64)]  # the split tier's, one tile per program
FP32 = [("float32", h, b) for h in (128, 256, 512) for b in (8, 64)]
FP32_RESIDENT = [("float32", h, b) for h in (64, 128) for b in (8, 64)]  # the fp32 fma and resident tiers' sizes
FP32_MANY_ROWS = [("float32", 128, b) for b in (256, 512)]  # two and four rows per SM of an H100 or H200
FMA_16BIT = [(dt, 128, b) for dt in ("bfloat16", "float16") for b in (8, 64)]  # the fma tier's 16-bit sizes
FP32_FMA_256 = [("float32", 256, b) for b in (8, 64)]  # the fma tier with half of U streamed, against the split tier
FMA_CHAINS = FP32_RESIDENT + FP32_FMA_256 + [("bfloat16", 128, b) for b in (8, 64)]  # every size the fma tier serves
# The split tier's sizes: one tile per program up to B = 64 at H <= 1024, several tiles per program beyond
SPLIT_BATCH = [("bfloat16", h, b) for h in (512, 1024, 2048) for b in (8, 64, 256)]
# Where each program of the split tier runs several batch tiles per step (on 132 SMs; fp32 at H = 1024, B = 64: 4)
SPLIT_MANY_TILES = [("bfloat16", 512, 256), ("bfloat16", 1024, 256), ("bfloat16", 2048, 64), ("bfloat16", 2048, 256),
                    ("float32", 1024, 64)]
# Where SPLIT_LOOPED_CONFIGS serve (on 132 SMs, H = 2048 from B = 17, H = 512 from 65): several tiles per program,
# or from sm_90 at H = 2048, B = 17..32, one 16-row tile (dispatch.SPLIT_LOOPED_BLOCK_B)
SPLIT_LOOPED = [("bfloat16", 2048, b) for b in (32, 64, 256)] + [("bfloat16", 512, 256)]
# One tile per program where the wide slices serve it (H = 2048, B = 16) or could (H = 512, B = 48 and 64)
SPLIT_WIDE_ONE_TILE = [("bfloat16", 2048, 16), ("bfloat16", 512, 48), ("bfloat16", 512, 64)]
# fp32 at H = 2048: the split tier by FMA today (one tile per program at B = 8, eight at 64), the stepwise tier
# before (16-column tiles at B = 8, 32 at B = 64 on 132 SMs)
FP32_2048 = [("float32", 2048, 8), ("float32", 2048, 64)]
STEPWISE_16BIT = [("bfloat16", 4096, 8)]  # beyond the split tier's 2048: 16-column tiles, the product by mma
# Where the split tier's 8-row tiles apply (B <= 8, or 8 per batch group: B = 16 spreads over two groups at H <= 1024)
SPLIT_NARROW = ([("bfloat16", h, b) for h in (512, 1024, 2048) for b in (1, 8, 16)]
                + [("float32", h, 8) for h in (256, 512)])
# Split-tier cases today's defaults are timed at beside the split variants of the same sizes
SPLIT_PROBES = [("bfloat16", 512, b) for b in (8, 64)] + [("bfloat16", 1024, b) for b in (8, 16)]
# The split tier's MMA product in every form: one tile per program (B = 8, 16, 64 up to H = 1024), several
# (H = 2048, B = 64 and 256), fp32 (3xTF32) at H = 512 and 1024, fp32 by FMA at H = 2048
SPLIT_SUM = ([("bfloat16", h, b) for h in (512, 1024, 2048) for b in (8, 64)] + [("bfloat16", 1024, 16),
             ("bfloat16", 2048, 256)] + [("float32", h, b) for h in (512, 1024, 2048) for b in (8, 64)]
             + [("float32", 512, 256)])  # fp32's pipelined tile loop at H = 512, whose stall count rose with it
# Where the cluster configurations apply (dispatch.SPLIT_CLUSTER_CONFIGS: up to 264 rows at H = 256, 128 at 512, 64 at
# 1024 and, fp32, 66 at 256 on 132 SMs, fewer where the GPU's GPCs hold fewer clusters: runtime.co_resident_clusters)
SPLIT_CLUSTER_CASES = [(dt, h, b) for dt, h in (("bfloat16", 256), ("bfloat16", 512), ("bfloat16", 1024),
                                               ("float32", 256)) for b in (1, 8, 64)]
# 16-bit H = 512, whose clusters of 8 are today's default (dispatch.SPLIT_CLUSTERS_DEFAULT), from one row to the 128
# that fill them, and fp16, the anchor's dtype
SPLIT_512_CLUSTERS = [("bfloat16", 512, b) for b in (1, 8, 64, 128)] + [("float16", 512, b) for b in (8, 64)]
# Where their state can be exchanged in distributed shared memory (16-bit, up to dispatch.SPLIT_DSMEM_MAX_BLOCK_H)
SPLIT_DSMEM_CASES = [c for c in SPLIT_CLUSTER_CASES if c[0] != "float32" and c[1] <= dispatch.SPLIT_DSMEM_MAX_BLOCK_H]
# Where two launches may share the GPU on two streams (the fma and resident tiers: streams.py)
OVERLAPPING = [(dt, h, b) for dt in ("bfloat16", "float32") for h in (64, 128, 256) for b in (8, 64)]
# Where the kernels add b_hh themselves (the fma, resident and split tiers: dispatch.B_HH_IN_KERNEL); the split tier
# at B = 8, where its plain calls waited for their host (results/race/20261128-h200-graphs)
FUSED_ENDS = OVERLAPPING + [("bfloat16", 512, 8), ("bfloat16", 1024, 8)]
# Where split programs run several tiles a step at H = 2048 (dispatch.SPLIT_K_CLUSTER's sizes)
SPLIT_K_CLUSTER_CASES = [("bfloat16", 2048, b) for b in (64, 256)]
# One batch row, the low end of issues 8 and 11's B = 1..64, never timed at H <= 128 (the race times B = 8 and 64)
ONE_ROW = [(dt, h, 1) for dt in ("bfloat16", "float32") for h in (64, 128, 256)]
COMPARED = {  # variant -> the cases it is timed on, each beside today's form ("current")
    "resident-fragments": RESIDENT_FRAGMENTS,
    "plain-io": SMALL,
    "acc-layout-io": SMALL,
    "product-to-io-layout": RESIDENT_16BIT + SPLIT_16BIT,
    "fp32-fma": FP32_RESIDENT + FP32_FMA_256,
    "fp32-split-256": FP32_FMA_256,
    "resident-128": list(dict.fromkeys(FMA_16BIT + [c for c in RESIDENT_FRAGMENTS if c[1] == 128])),
    "fp32-fma-shared-sms": FP32_MANY_ROWS,
    "fp32-fma-2x-warps": FP32_RESIDENT,
    "fma-chains-in-runs": FMA_CHAINS,
    "portable-tanh": FP32_RESIDENT + FP32_FMA_256 + [("float32", 512, 8), ("float32", 1024, 8)],
    **{f"fp32-{p}": FP32_RESIDENT + FP32_MANY_ROWS for p in resident.FP32_PRODUCTS},
    "split-32-row-slices": [c for c in SPLIT_PROBES if c[1] == 1024],
    "split-16-row-tiles": SPLIT_NARROW,
    "split-inputs-in-step": SPLIT_BATCH,
    "split-inputs-before-arrival": SPLIT_BATCH,
    "split-tile-loop": list(dict.fromkeys(SPLIT_BATCH + SPLIT_NARROW)),
    "split-tile-stages-1": SPLIT_MANY_TILES,
    "split-tl-sum": SPLIT_SUM,
    "split-thin-looped": SPLIT_LOOPED,
    "split-looped-8-row-tiles": SPLIT_LOOPED,
    "split-thin-one-tile": [c for c in SPLIT_WIDE_ONE_TILE if c[1] == 2048],
    "split-wide-one-tile-512": [c for c in SPLIT_WIDE_ONE_TILE if c[1] == 512],
    "split-clusters": SPLIT_CLUSTER_CASES,
    "split-grid-barrier-512": SPLIT_512_CLUSTERS,
    **{f"split-k-cluster-{c}": SPLIT_K_CLUSTER_CASES for c in (2, 4)},
    # and bf16 at H = 128, B = 8, where no split kernel runs: two runs of today's form, whose ratio is the timing's
    # noise (the untimed stage's call-cost step at T = 16)
    "split-status-waited": list(dict.fromkeys(SPLIT_16BIT + SPLIT_512_CLUSTERS + SPLIT_SUM + [("bfloat16", 128, 8)])),
    **{f"split-{e}": SPLIT_DSMEM_CASES for e in DSMEM_EXCHANGES},
    "fp32-2048-stepwise": FP32_2048,
    "stepwise-64-columns": FP32_2048,
    "stepwise-k32": FP32_2048 + STEPWISE_16BIT,
    "stepwise-32x32-tiles": [c for c in FP32_2048 if c[2] == 64],
    "no-l2-prefetch": RESIDENT_L2 + FMA_L2,
    "l2-prefetch-16": RESIDENT_L2,
    "l2-prefetch-over-half": L2_WINDOW,
    "l2-prefetch-always": L2_COLD_DY,
    "l2-prefetch-dy": L2_COLD_DY,
    "one-stream": OVERLAPPING,
    "b-hh-summed": FUSED_ENDS,
    "fma-u-copied": FMA_CHAINS,
}
# Today's form on every case a variant is compared on, and on the cases timed for their own sake: the step's cost by
# batch (resident-batch) and one batch row (one-row)
CASES = {"current": list(dict.fromkeys(RESIDENT_BATCH + ONE_ROW + [c for cases in COMPARED.values() for c in cases])),
         **COMPARED}


HOST_CALLS = 20  # calls whose host time is taken, each starting with the GPU idle (measure.host_and_wall_ms)


def time_case(variant: str, dtype: str, hidden: int, batch: int, seq_len: int, device: str,
              bidirectional: bool = False, timed: bool = True) -> dict:
    """The case's row: errors against float64 and, on a GPU where timed, the Triton layer's and cuDNN fp16's times.
    Untimed, only the Triton layer's calls are made, once each (compile_case)."""
    torch.manual_seed(0)
    source = torch.nn.RNN(hidden, hidden, device=device, bidirectional=bidirectional)
    x = torch.randn(seq_len, batch, hidden, device=device)
    gy = torch.randn(seq_len, batch, hidden * (2 if bidirectional else 1), device=device)
    ref = run_module(source, x[:256], dtype=torch.float64)[0]
    row = {"variant": variant, "dtype": dtype, "hidden": hidden, "batch": batch, "seq_len": seq_len,
           "bidirectional": bidirectional}
    for backend in ("triton", "cudnn-fp16") if timed else ("triton",):
        run_dtype = torch.float16 if backend == "cudnn-fp16" else getattr(torch, dtype)
        layer = (TritonRNN(hidden, hidden, device=device, bidirectional=bidirectional) if backend == "triton" else
                 torch.nn.RNN(hidden, hidden, device=device, bidirectional=bidirectional))
        layer.load_state_dict(source.state_dict())
        layer.to(run_dtype)
        xs, gys = x.to(run_dtype).requires_grad_(True), gy.to(run_dtype)
        with VARIANTS[variant]() if backend == "triton" else contextlib.nullcontext():
            with torch.no_grad():
                y = layer(xs[:256].detach())[0].double()
            row[f"{backend}_rel_err"] = ((y - ref).norm() / ref.norm()).item()

            def forward():
                with torch.no_grad():
                    layer(xs)

            def forward_backward():
                torch.autograd.grad(layer(xs)[0], [xs, *layer.parameters()], gys)
            for mode, call in (("fwd", forward), ("fb", forward_backward)):
                if timed and device == "cuda":
                    ms = triton.testing.do_bench(call, warmup=25, rep=100)
                    row[f"{backend}_{mode}_us_per_step"] = ms * 1e3 / seq_len
                    host, _ = measure.host_and_wall_ms(call, torch.device(device), reps=HOST_CALLS)
                    row[f"{backend}_{mode}_host_us_per_call"] = statistics.median(host) * 1e3
                    row[f"{backend}_{mode}_peak_mib"] = measure.peak_memory_mib(call, torch.device(device))[0]
                else:  # the interpreter, or compiling: the calls run, their time means nothing
                    call()
        if backend == "triton":
            row["plan"] = layer.last_plans[0].name
    barrier_status.check_barriers()  # split calls return with it unread: a case whose barrier gave up fails here
    return row


def error_text(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


def compile_case(case: tuple) -> str | None:
    """A compiling process's part: time_case's Triton calls for this case (time_case's arguments) made once, untimed;
    the error, if any, as text."""
    try:
        time_case(*case, timed=False)
    except Exception as err:  # the timed run meets it again and records it
        return error_text(err)
    return None


def compile_first(cases: list[tuple], workers: int) -> None:
    """Every case's kernels compiled into Triton's on-disk cache by `workers` processes at once (compile_case)."""
    start = time.perf_counter()
    # spawned processes start with this one's sys.path, which has this module's folder (it is outside any package)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        errors = pool.map(compile_case, cases, chunksize=1)
    failed = [f"{case[:4]}: {error}" for case, error in zip(cases, errors) if error]
    print(f"compiled {len(cases)} cases in {workers} processes in {time.perf_counter() - start:.1f} s, "
          f"{len(failed)} failed", *failed, sep="\n", flush=True)


def default_compile_workers(device: str) -> int:
    """On a GPU as many as the lease's test steps run (gpu_pytest.default_workers); none elsewhere."""
    return default_workers() if device == "cuda" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for variants.csv")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--hidden", type=int, nargs="+", help="only these hidden sizes")
    parser.add_argument("--batch", type=int, nargs="+", help="only these batch sizes")
    parser.add_argument("--dtype", nargs="+", help="only these dtypes (e.g. bfloat16)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variant", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="only these")
    parser.add_argument("--bidirectional", action="store_true", help="bidirectional layers")
    parser.add_argument("--compile-workers", type=int, metavar="N",
                        help="processes that compile every case's kernels before the timing starts (default: on a "
                             "GPU as many as .ci/gpu_pytest.py's workers; 0 or 1: none)")
    return parser


def selected_cases(variant: str, args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """The variant's cases that pass the --hidden, --batch and --dtype filters."""
    return [(dtype, hidden, batch) for dtype, hidden, batch in CASES[variant]
            if not any(wanted and value not in wanted for value, wanted in
                       ((hidden, args.hidden), (batch, args.batch), (dtype, args.dtype)))]


def planned_cases(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """(variant, dtype, H, B) to time, case by case with each case's variants one after the other, so that a drift
    of the machine falls between cases, not between the forms compared, and a step cut off at its limit loses its
    last cases, not its last variants. Beside other variants, today's form runs only where one of them does.
    ValueError names a variant left no case by the filters, or a filter value that selects none."""
    chosen = {variant: selected_cases(variant, args) for variant in args.variant}
    compared = {case for variant, cases in chosen.items() if variant != "current" for case in cases}
    if compared and "current" in chosen:
        chosen["current"] = [case for case in chosen["current"] if case in compared]
    empty = [variant for variant, cases in chosen.items() if not cases]
    if empty:
        raise ValueError(f"--variant {' '.join(empty)}: no case with these --hidden, --batch and --dtype")
    cases = list(dict.fromkeys(case for cases in chosen.values() for case in cases))
    for axis, option in enumerate(("dtype", "hidden", "batch")):
        unused = [value for value in getattr(args, option) or () if value not in {case[axis] for case in cases}]
        if unused:
            raise ValueError(f"--{option} {' '.join(map(str, unused))}: no case of the variants named has it")
    return [(variant, *case) for case in cases for variant in args.variant if case in chosen[variant]]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        planned = planned_cases(args)
    except ValueError as err:
        parser.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [(*case, args.seq_len, args.device, args.bidirectional) for case in planned]
    workers = default_compile_workers(args.device) if args.compile_workers is None else args.compile_workers
    if workers > 1 and len(cases) > 1:
        compile_first(cases, min(workers, len(cases)))
    rows = []
    for case in cases:
        try:
            rows.append(time_case(*case))
        except Exception as err:  # one failing case must not lose the others
            rows.append({"variant": case[0], "dtype": case[1], "hidden": case[2], "batch": case[3],
                         "error": error_text(err)})
        print(rows[-1], flush=True)
        write_table(rows, args.out / "variants.csv")  # every case: a step cut off at its limit keeps them
    text = summary(rows)
    (args.out / "summary.txt").write_text(text + "\n")
    print(text)
    return 1 if any("error" in row for row in rows) else 0  # the step's exit code in steps.txt says so too


def summary(rows: list[dict]) -> str:
    """Each variant beside today's form ("current") on the cases both ran: its time per step and its peak memory as
    ratios to today's (below 1: the variant is faster, or needs less), forward and forward+backward, and both
    relative errors against float64; and every case that failed, today's form's too."""
    def case(row):
        return row["dtype"], row["hidden"], row["batch"]

    def error(row):
        return f"{row['triton_rel_err']:.2e}" if "triton_rel_err" in row else "n/a"
    today = {case(r): r for r in rows if r["variant"] == "current" and "error" not in r}
    lines = [f"{'variant / today':<26} {'dtype':<9} {'H':>5} {'B':>4} {'fwd':>6} {'f+b':>6} {'mem fwd':>7} "
             f"{'mem f+b':>7} {'its error':>10} {'today':>10}"]
    for row in rows:
        base = today.get(case(row))
        head = f"{row['variant']:<26} {row['dtype']:<9} {row['hidden']:>5} {row['batch']:>4}"
        if "error" in row:
            lines.append(f"{head} failed: {row['error']}")
            continue
        if row["variant"] == "current":
            continue
        if base is None:
            lines.append(f"{head} ran; no times of today's form there to compare with")
            continue
        ratios = [f"{row[k] / base[k]:.3f}" if row.get(k) and base.get(k) else "n/a"
                  for k in ("triton_fwd_us_per_step", "triton_fb_us_per_step", "triton_fwd_peak_mib",
                            "triton_fb_peak_mib")]
        lines.append(f"{head} {ratios[0]:>6} {ratios[1]:>6} {ratios[2]:>7} {ratios[3]:>7} {error(row):>10} "
                     f"{error(base):>10}")
    return "\n".join(lines)


def write_table(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
