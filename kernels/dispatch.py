"""Dispatch: which kernel runs a layer of hidden size H, batch B and dtype, and with what configuration.

Tiers, tried in order:

- fma: fp32 at H <= 256 and 16-bit at BLOCK_H = 128 (fma.py). One program per batch row holds all of U in
  fp32 registers (at H > 128: half of it, the other half read through L1 every step) and multiplies by FMA,
  as cuDNN's fp32 kernel does: no tensor core, so none of 3xTF32's three MMAs per step. Serves batches of up
  to one row per SM (FMA_MAX_ROWS_PER_SM), where each program has an SM of its own.
- resident: the persistent kernels of resident.py. One program per BLOCK_B batch rows holds all of
  U (H padded to BLOCK_H) in registers; fits while the compile audit finds no spills.
- split: the persistent kernels of split.py. U is cut into slices of BLOCK_N rows (state columns), one program per
  slice and batch group, all co-resident (at most one per SM), meeting at a grid barrier every step. Needs cdiv(H,
  BLOCK_N) <= the SM count; one launch serves any batch, each group running its batch tiles one after another. Batches
  that fit take 8-row tiles (SPLIT_NARROW_BLOCK_B, mma.sync's N), at H = 1024 in slices of 16 rows
  (SPLIT_FINE_CONFIGS) where the batch fits those; wherever each program has one tile, its kernels have no tile loop
  (ONE_TILE, SPLIT_ONE_TILE); where programs run several tiles, H = 512 and 2048 take slices twice as wide in twice
  the groups (SPLIT_LOOPED_CONFIGS), of 16-row tiles from sm_90 (SPLIT_LOOPED_BLOCK_B; at H = 2048 also where one such
  tile per program holds the batch). From sm_90 a 16-bit batch group at H = 512 is one thread-block cluster meeting
  at the cluster barrier (SPLIT_CLUSTERS_DEFAULT), where the clusters that run at once give each one batch tile. With
  SPLIT_CLUSTERS (off) H = 1024's groups are clusters too, and H = 256 leaves the resident (16-bit) and fma (fp32) tiers
  for clusters of 4 programs that split U between them, where that gives each cluster one batch tile. fp32 at H = 2048
  multiplies by FMA (SplitBlocks.FMA): 3xTF32's slice spills there.
- stepwise: one launch per timestep (stepwise.py); serves any H. Its column tiles narrow where the batch and H
  leave SMs idle (STEPWISE_BLOCK_N).

Every configuration in FMA_CONFIGS, RESIDENT_CONFIGS and SPLIT_CONFIGS passes the compile audit
(kernels/audit.py checks each for sm_80 and sm_90): no spills, U kept out of shared memory in the
time loop, the fewest warps that allow it. Between forms that pass, a GPU's timing decides where one
was taken, else the audit; the comment beside each switch says which, with its figures.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from . import fma, resident, split, stepwise
from .dsmem import L2
from .fma import FmaBlocks
from .launch import SIXTEEN_BIT, LaunchConfig, accumulator_dtype, cdiv, next_power_of_2
from .resident import ResidentBlocks
from .runtime import PLANNING_ARCH, co_resident_programs, device_facts
from .split import SplitBlocks
from .stepwise import StepwiseBlocks

TIER_NAMES = ("fma", "resident", "split", "stepwise")
KERNEL_CHOICES = ("auto",) + TIER_NAMES
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
RESIDENT_BLOCK_B = 16  # the MMA's N: Hopper's wgmma takes U from registers from N = 16


def _fma(block_h: int, warps: int) -> LaunchConfig[FmaBlocks]:
    return LaunchConfig(FmaBlocks(block_h, warps), FmaBlocks(block_h, warps))


# (dtype, BLOCK_H) -> configuration of the FMA kernels: the fewest warps whose threads hold the operand's
# BLOCK_H^2 floats (at 256: half of them, fma.HELD_MAX_BLOCK_H) without spilling, one thread per column of it
# (compile audit; sm_90 time-loop instructions per step, forward: 82 at BLOCK_H = 32, 121 at 64, 201 at 128, 407 at
# 256). On an H200 (fma.py) fp32 took 1.4-3.8x less time per step than the resident tier's 3xTF32, and at
# BLOCK_H = 128 less than the resident tier's bf16 (0.353 against 0.401 us forward at B = 8, 0.524 against 0.632 at
# B = 64), so 16-bit I/O comes here at 128: timed since in bf16 and fp16, the resident tier took 1.31-1.38x this tier's
# time forward and 1.04-1.41x forward+backward at B = 8 and 64
# (results/variants/20261127-h200-untimed/fma_16bit.csv); at 64 and 256 the resident tier's bf16 was faster (0.270
# against 0.315, 0.934 against 1.462 at B = 8).
_FMA_WARPS = {16: 1, 32: 1, 64: 2, 128: 4, 256: 8}
FMA_CONFIGS: dict[tuple[torch.dtype, int], LaunchConfig[FmaBlocks]] = {
    **{(torch.float32, bh): _fma(bh, w) for bh, w in _FMA_WARPS.items()},
    **{(dt, 128): _fma(128, _FMA_WARPS[128]) for dt in SIXTEEN_BIT}}
# Batch rows per SM up to which the FMA tier serves a layer (one program per row): beyond, programs would share
# SMs and their FMA pipes, where the resident tier's tensor cores take 16 rows per program. A guess to time.
FMA_MAX_ROWS_PER_SM = 1


def _resident(block_h: int, warps: int, backward_warps: int | None = None) -> LaunchConfig[ResidentBlocks]:
    forward = ResidentBlocks(RESIDENT_BLOCK_B, block_h, warps)
    return LaunchConfig(forward, ResidentBlocks(RESIDENT_BLOCK_B, block_h, backward_warps or warps))


# (dtype, BLOCK_H) -> configuration of the resident kernels. U in registers takes BLOCK_H^2 * itemsize
# bytes spread over the program's threads, so larger U needs more warps to stay under 255 registers.
_RESIDENT_16BIT = {16: _resident(16, 4), 32: _resident(32, 4), 64: _resident(64, 4), 128: _resident(128, 8),
                   256: _resident(256, 16)}
RESIDENT_CONFIGS: dict[tuple[torch.dtype, int], LaunchConfig[ResidentBlocks]] = {
    **{(torch.bfloat16, bh): cfg for bh, cfg in _RESIDENT_16BIT.items()},
    **{(torch.float16, bh): cfg for bh, cfg in _RESIDENT_16BIT.items()},
    **{(torch.float32, bh): _resident(bh, w) for bh, w in {16: 4, 32: 4, 64: 4, 128: 8}.items()},
    # float64 exists for gradcheck; small sizes only.
    **{(torch.float64, bh): _resident(bh, 4) for bh in (16, 32)},
}
# Resident configurations served only from this compute capability on. fp32 at 128: on sm_80 the
# 3xTF32 product by mma.sync needs more than 255 registers in the backward (it spills; compile audit),
# where Hopper's wgmma reads its right operand from shared memory. Elsewhere these layers go to the
# split tier.
RESIDENT_MIN_ARCH = {(torch.float32, 128): 90}


def _split(block_n: int, block_h: int, warps: int, block_b: int = 16, fma: bool = False) -> LaunchConfig[SplitBlocks]:
    """The product's K split over all the warps: each holds BLOCK_N x BLOCK_H / warps of U's slice (with fma, the
    product by FMA, whose layout spreads K over the warps itself)."""
    blocks = SplitBlocks(BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_H=block_h, K_SPLIT=warps, num_warps=warps, FMA=fma)
    return LaunchConfig(blocks, blocks)


# (dtype, BLOCK_H) -> configuration of the split kernels. Slices of 16-64 KiB (in registers), as few
# programs as that allows: each reads all of h every step, so fewer programs move less through L2. 16-bit at H = 256,
# which the resident tier serves, only where asked for (kernel="split", rnnbench exchange) and as the base of its
# clusters (SPLIT_CLUSTER_CONFIGS).
_SPLIT_16BIT = {256: _split(32, 256, 4), 512: _split(16, 512, 4), 1024: _split(32, 1024, 8),
                2048: _split(16, 2048, 8)}
SPLIT_CONFIGS: dict[tuple[torch.dtype, int], LaunchConfig[SplitBlocks]] = {
    **{(torch.bfloat16, bh): cfg for bh, cfg in _SPLIT_16BIT.items()},
    **{(torch.float16, bh): cfg for bh, cfg in _SPLIT_16BIT.items()},
    (torch.float32, 128): _split(16, 128, 4),  # where the resident tier is not served (sm_80)
    (torch.float32, 256): _split(16, 256, 4),
    (torch.float32, 512): _split(16, 512, 8),
    (torch.float32, 1024): _split(16, 1024, 8, block_b=8),  # 16 rows spill: 3xTF32 holds more per row
    # By FMA (split.fma_slice_product): 128 slices of 16 rows hold 128 KiB of U each, a thread's 64 registers on 16
    # warps, where 3xTF32's product spills (2 KiB a thread; at H = 1024 it takes 245 registers on 8 warps). Compile
    # audit, sm_90, one 8-row tile, forward/backward: 121/121 registers (16 warps' limit: 128), no spills, 1296/1315
    # instructions and 48/50 CTA barriers per step (a sum over the warps per pair of batch rows), its inputs loaded a
    # step ahead (split.INPUTS_AHEAD); since, with the warps' parts summed once a tile in each thread
    # (split.IN_THREAD_SUM), U's slice in runs of 4 k a thread and the inputs read in the step: 128/128 registers,
    # 838/848 instructions and 30/30 CTA barriers. Needs 128 SMs.
    # On an H200 (T = 4096, forward / forward+backward): 9.15/21.5 us per step at B = 8, where the step kernel took
    # 150/190, and 64.5/151 at B = 64 (results/race/20261127-h200; cuDNN fp32: 25.6/53.9 and 50.6/117).
    (torch.float32, 2048): _split(16, 2048, 16, block_b=8, fma=True),
}
# Slices of 16 rows at H = 1024 (64 programs per batch group instead of 32), 16-bit, with 8-row batch tiles: tried
# before SPLIT_CONFIGS' (split_configs), so they serve up to 8 rows per group (B <= 16 on 132 SMs: two groups). They
# have H = 2048's slice shape at half its K. On an H200 (bf16, T = 4096, us per step against 32-row slices, forward and
# forward+backward): 2.92/3.29 and 6.22/7.04 at B = 8, 3.02/3.44 and 6.23/7.27 at B = 16; at B = 64, where the two
# groups would each run two 16-row tiles per step, 7.08/5.50 forward (results/variants/20261126-h200-switches).
# Compile audit, sm_90 bf16: fewer instructions per step and registers than the 32-row slices, no spills (sm_80 too).
_SPLIT_FINE_16BIT = {1024: _split(16, 1024, 8, block_b=8)}
SPLIT_FINE_CONFIGS: dict[tuple[torch.dtype, int], LaunchConfig[SplitBlocks]] = {
    (dt, bh): cfg for dt in (torch.bfloat16, torch.float16) for bh, cfg in _SPLIT_FINE_16BIT.items()}
# Batch tiles of this many rows where a batch fits them (split_config: B <= 8, or up to 8 per batch group): the split
# tier's batched tl.dot is mma.sync, whose N is 8, so a 16-row tile multiplies 8 rows of padding there. Compile audit,
# sm_90 bf16 forward, time-loop instructions against 16 rows: 248/338 (H = 512), 322/465 (1024), 316/452 (2048); fp32
# H = 256: 430/660. Same barriers, fewer registers, no spills. On an H200 (T = 4096, B = 8, forward, us per step):
# 2.42/2.67 (bf16 H = 512), 3.75/5.20 (1024), 3.43/4.41 (2048), fp32 2.64/3.14 (256), 3.39/4.29 (512); forward+backward
# 10-26% faster likewise (results/variants/20261126-h200-switches).
SPLIT_NARROW_BLOCK_B = 8
# The configuration of programs that run several batch tiles per step (split_configs' last), where it is not
# SPLIT_CONFIGS': 16-bit, slices twice as wide with 8-row tiles (from sm_90 16-row ones: SPLIT_LOOPED_BLOCK_B below) in
# twice the batch groups. At H = 2048, 64 slices of 32 rows in two groups instead of one group of 128 16-row slices with
# 16-row tiles (B > 16 on 132 SMs); at H = 512, 16 slices of 32 rows in eight groups instead of 32 of 16 rows in four
# (B > 64). Each program runs as many tiles per step, each half as tall, and the state that all programs read through L2
# every step, slices x B x H x 2 bytes, halves (16 MiB at H = 2048, B = 64); on an H200 each further 16-row tile of
# today's took 3.4-3.8 us per step at H = 2048 (14.85 at B = 64 against 3.38 at B = 8), about twice what reading its
# state through L2 takes. At H = 1024 and B = 64, slices twice as wide and twice the groups were 22% faster (5.50
# against 7.08 us forward, SPLIT_FINE_CONFIGS), though there each program also ran half the tiles, which here it does
# not: only the bytes and instructions per tile halve or shrink. Compile audit, sm_90 bf16, forward/backward, against
# the configurations they replace: H = 2048, the tile loop's instructions per step 405/451 against 483/521,
# shared-memory bytes read per step 55808/59904 against 88576/92672, 222/228 registers; H = 512, 332/360 against 358/400
# and 19968/22016 against 28160/30208; the same CTA barriers, no spills (sm_80 too). H = 1024's 64-row slices spill
# (backward). On an H200 (bf16, T = 4096, us per step forward / forward+backward, against the configurations they
# replace): H = 2048, B = 32: 6.76/14.29 against 7.78/16.23; B = 64: 12.17/26.08 against 14.14/29.96; B = 256: 45.6/99.8
# against 52.2/113.4; H = 512, B = 256: 6.40/13.51 against 7.04/14.74 (results/variants/20261127-h200/wide.csv,
# split-thin-looped). Since (the in-thread sum, 16-row tiles, the pipelined tile loop) each further 16-row tile takes
# 1.82 us per step at H = 2048 (bf16 forward, T = 1024: 5.67 at B = 64, 16.59 at B = 256;
# results/variants/20261127-h200-untimed/split_looped.csv): 8 MiB more state through L2 a step, 4.6 TB/s for the
# whole GPU, near what L2 gives (not measured): these bytes, not the product, bound large batches now, and only fewer
# of them (more of U a program, or a cluster's programs sharing one read) would make B = 256 much faster.
SPLIT_LOOPED_CONFIGS: dict[tuple[torch.dtype, int], LaunchConfig[SplitBlocks]] = {
    (dt, bh): _split(32, bh, warps, block_b=8) for dt in (torch.bfloat16, torch.float16)
    for bh, warps in {512: 4, 2048: 8}.items()}
# The batch tile of SPLIT_LOOPED_CONFIGS' programs from sm_90 on, where it is not SPLIT_NARROW_BLOCK_B's 8 rows: each
# program then runs half as many tiles per step (two of 16 rows at H = 2048, B = 64, not four of 8), and where the batch
# fits one such tile per program (H = 2048, B = 17..32), its one-tile form. On the H200 a further tile cost about as
# much whether it had 8 or 16 rows (2.8 us per step for each 8-row tile past the first at H = 2048, 32-row slices,
# B = 16 -> 64; 3.4-3.8 for each 16-row tile of 16-row slices: wide.csv above), and Nsight Compute found the 8-row tile
# loop latency-bound (18 cycles per issued instruction; results/variants/20261127-h200/ncu). Compile audit, sm_90 bf16,
# forward/backward, per tile against 8-row tiles: H = 2048, 579/606 instructions and 8 CTA barriers for 16 rows (481/498
# and 9 for 8), stall 1500/1510 (1276/1235), 242/246 registers; its one-tile form at B = 17..32 363/375 instructions and
# 1212/1257 stall cycles a step where two 8-row tiles take 962/996 and 2552/2470; H = 512, 443/475 and 1125/1101
# (321/348 and 902/912); no spills, in either activation and 16-bit dtype. sm_80 keeps 8 rows: H = 2048's two stages of
# 16-row state take 192 KiB of shared memory (an A100 has 163). On an H200 (bf16 H = 2048, B = 32, 64, 256, T = 1024)
# 8-row tiles took 1.09-1.14x these tiles' time forward, 1.07-1.14x forward+backward
# (results/variants/20261127-h200-untimed/split_looped.csv).
SPLIT_LOOPED_BLOCK_B = 16
SPLIT_LOOPED_BLOCK_B_MIN_ARCH = 90
# The BLOCK_H whose SPLIT_LOOPED_CONFIGS form also serves batches of one tile per program, in its one-tile form, tried
# before SPLIT_CONFIGS' own (16-row tiles). At H = 2048 that takes B = 9..16 from one group of 128 16-row slices with a
# 16-row tile to two groups of 64 32-row slices with an 8-row tile each: on an H200 (bf16, T = 4096, B = 16) 3.84/8.28
# us per step forward / forward+backward against 4.92/10.23 (B = 8 stays on 16-row slices: 3.34 against the wide
# form's 3.86; results/variants/20261127-h200/wide.csv, variant split-wide-one-tile, since split-thin-one-tile); from
# sm_90, B = 17..32 then takes those groups' one 16-row tile (SPLIT_LOOPED_BLOCK_B). H = 512 (B = 33..64) is not timed
# (split-wide-one-tile-512).
SPLIT_WIDE_ONE_TILE_BLOCK_H = (2048,)
# Batch groups as thread-block clusters (sm_90): H = 512 in 8 slices of 64 rows, H = 1024 in 16 (an H100 schedules
# clusters of up to 16 CTAs), 16-bit, 8-row tiles, as many groups as the GPU runs clusters at once (each runs whole in
# one GPC: runtime.co_resident_clusters asks the driver; planned without a device, every SM counts: 16 and 8 on 132 SMs,
# where an H100's GPCs may hold fewer); each group meets at the hardware's cluster barrier (barrier.cluster_barrier),
# not the grid barrier's counter and polling, which alone took 2.5-2.8 us per step on an H200 at these sizes (rnnbench
# exchange). Triton 3.6 compiles clusters only as one program spread over several CTAs, which these kernels are not, so
# the launcher sets the cluster dimension itself (split._launch_clusters). Compile audit (python -m kernels.audit
# --split-clusters; kernels of 2026-11-27), sm_90 bf16, one tile, forward/backward: H = 512 128/127 registers, 118/126
# instructions and 5/5 CTA barriers per step (today's 16-row slices with 8-row tiles: 175/181, 8/8), H = 1024 126/128
# (16 warps' limit), 115/122 and 5/5 (193/190, 8/8); no spills, in either activation and 16-bit dtype. On an H200
# (bf16, T = 1024, forward / forward+backward us per step; results/variants/20261127-h200-untimed/): H = 512 in
# clusters of 8 took 2.25/5.08 at B = 8 and 2.54/5.40 at B = 64 against the grid barrier's 2.95/5.88 and 3.12/6.82
# (cuDNN fp16: 1.99/4.39 and 4.57/10.11), so from sm_90 16-bit H = 512 takes them by default (SPLIT_CLUSTERS_DEFAULT);
# H = 1024 in clusters of 16 took 2.76/6.45 at B = 8 against 2.88/6.23, within the noise, and keeps the grid barrier.
#
# fp32 at H = 256 too: U is 256 KiB there, a whole SM's registers, so the fma tier holds half of it and streams the
# other half through L1 every step, where a grid barrier over CTAs that split it would cost 2.5 us a step. A cluster's
# barrier takes that place: clusters of 4 programs, each holding a 64-column slice (64 KiB) in registers, multiplied by
# FMA (SplitBlocks.FMA) for 2 batch rows, one cluster per 2 rows (at most 33 on 132 SMs: B <= 66, where the fma tier
# yields to them; beyond, it serves). Compile audit, sm_90, forward/backward: 117/124 registers on 8 warps, 284/293
# instructions and 12/14 CTA barriers per step for the 2 rows, no spills (the fma tier at 256: 407/399 for one row);
# clusters of 2 with 128-column slices took 426/415 and 185/189 registers. Not yet timed (.ci/gpu_variants.py
# split-clusters at fp32, H = 256, against the fma tier and cuDNN).
#
# 16-bit at H = 256 likewise, where the resident tier holds all of U in one program: clusters of 4 programs with 64-row
# slices (32 KiB of U each), 8 warps, 8-row tiles, one cluster per 8 batch rows (at most 33 on 132 SMs: B <= 264, where
# the resident tier yields to them). Each program multiplies a quarter of what the resident step does (where each
# warpgroup chains 16 wgmma) and exchanges the state as the clusters at H = 512 do. Compile audit, sm_90 bf16,
# forward/backward: the L2 exchange 72/80 registers, 103/113 instructions, 342/340 stall cycles and 5 CTA barriers per
# step; in distributed shared memory (SPLIT_CLUSTER_EXCHANGE) pull 204/186 instructions, push 277/256; the resident
# kernels 101/92 (forward, with and without the L2 prefetch) and 129 (backward) instructions on 16 warps. Whether a
# cluster's exchange costs less than the three quarters of the product it saves is the GPU's question
# (.ci/gpu_variants.py split-clusters and split-dsmem-pull/push at bf16 H = 256, bash .ci/gpu clusters and dsmem).
SPLIT_CLUSTER_CONFIGS: dict[tuple[torch.dtype, int], LaunchConfig[SplitBlocks]] = {
    **{(dt, bh): _split(64, bh, warps, block_b=8).replace(CLUSTER=bh // 64)
       for dt in (torch.bfloat16, torch.float16) for bh, warps in {256: 8, 512: 8, 1024: 16}.items()},
    (torch.float32, 256): _split(64, 256, 8, block_b=2, fma=True).replace(CLUSTER=4),
}
# The configurations of SPLIT_CLUSTER_CONFIGS the split tier takes from sm_90 (timed faster than the grid barrier,
# above); SPLIT_CLUSTERS takes all of them (the others not yet timed, or not faster).
SPLIT_CLUSTERS_DEFAULT: frozenset[tuple[torch.dtype, int]] = frozenset({(torch.bfloat16, 512), (torch.float16, 512)})
SPLIT_CLUSTERS = False
# With SPLIT_CLUSTERS, how the clusters' programs exchange the state (split.SplitBlocks.EXCHANGE): through L2 ("l2"), or
# up to SPLIT_DSMEM_MAX_BLOCK_H, in their one-tile form, through the cluster's distributed shared memory (dsmem.py):
# "dsmem-pull" (a local store, the cluster barrier, remote loads) or "dsmem-push" (a local store and bulk copies to the
# others, counted on mbarriers: no cluster barrier, no fence, local loads). Compile audit (python -m kernels.audit
# --split-clusters --split-cluster-exchange X; kernels of 2026-11-27), sm_90 16-bit, forward/backward instructions per
# step, the slots' state read element by element: H = 256 pull 204/186, push 274-277/254-256, against the L2 exchange's
# 103/113; H = 512 pull 273/252, push 351/331 (L2: 118/126); H = 1024 pull 299-303/254-255, push 465-467/389 (L2:
# 115/122), at 16 warps' limit of 128 registers; no spills in either activation (at H = 1024 they spilled 8-40 bytes
# when these exchanges were built, hence a limit of 512 until 2026-11-27). Not yet run on a GPU: "l2" until one says
# they are right and faster (bash .ci/gpu dsmem). 16-bit only: the slots hold 16-bit state, and fp32's clusters keep L2.
# Slots of fp32 compiled, but the FMA product then read each element of h from them once per lane sharing it (inline-asm
# loads take the consumer's layout): 490 instructions per step forward against L2's 284.
SPLIT_CLUSTER_EXCHANGE = L2.value
SPLIT_DSMEM_MAX_BLOCK_H = 1024
# > 1: where programs run several batch tiles a step (split_configs' last) at these BLOCK_H, 16-bit, from sm_90, the
# split kernels, forward and backward, split their product's K over clusters of this many programs
# (split.SplitBlocks.K_CLUSTER). Each program of a batch group reads its group's whole state every step, slices x B x H
# x 2 bytes through L2 in all (64 MiB a step at H = 2048, B = 256), and from B = 64 to 256 each further 16-row tile took
# 1.82 us a step (forward) on an H200, about 4.6 TB/s, near what L2 gives (not measured: bash .ci/gpu ncu-l2). A cluster
# of K_CLUSTER programs shares K_CLUSTER x 32 columns, each reading only its range of K: the bytes / K_CLUSTER, for an
# exchange of fp32 partial products in distributed shared memory (dsmem.sum_partials: [32 K_CLUSTER, 16] a tile) and one
# cluster barrier a tile; the tile loop pipelined as without it (2 stages at H = 2048: no spills, compile audit). Not
# yet run on a GPU: off.
SPLIT_K_CLUSTER = 1
SPLIT_K_CLUSTER_BLOCK_H = (2048,)
# Whether split_configs offers the one-tile form of each configuration (ONE_TILE: no tile loop in a step) for batches
# that leave each program one tile. Compile audit, sm_90 bf16, time-loop instructions per step with / without:
# forward 230/260 (H = 512, 8-row tiles), 239/312 (H = 1024, 16-row slices), 290/361 (H = 2048), backward 246/314,
# 273/366, 324/410; one CTA barrier fewer, no spills. On an H200 (bf16, T = 4096, with the product converted into the
# tiles' layout, layouts.py, then the default; results/variants/20261127-h200/split_tile_loop.csv) the two were within
# 4% at H = 512, B = 8 and H = 1024, B = 8, 16 and 64; at H = 512, B = 64 (16-row tiles) the tile loop took 2.32 us per
# step forward against 2.83. With the tiles converted (16-bit's default since) the one-tile form took 2.38 there
# (io_layout.csv); the tile loop with them is not timed.
SPLIT_ONE_TILE = True
# Software-pipeline stages (num_stages) of the split kernels' tile loop, where each program runs several batch tiles per
# step (H = 2048 from B = 33 on 132 SMs; from 17 on sm_80): with 3, Triton's pipeliner loads the state of the next two
# tiles (cp.async) while one is multiplied, after the step's barrier; the time loop, which holds the barrier's loop, is
# not pipelined. Compile audit, sm_90 bf16: no spills, forward at H = 2048 24 cp.async and 755 instructions per step
# (475 without), 216 registers (204). On an H200 (T = 4096, us per step forward / forward+backward, against no
# pipelining; results/variants/20261127-h200/tile_stages.csv): bf16 H = 512, B = 256: 5.43/11.42 against 6.29/13.47;
# H = 1024, B = 256: 15.51/33.05 against 17.13/35.67; H = 2048, B = 64: 11.42/24.16 against 12.31/26.26; B = 256:
# 40.08/88.07 against 45.54/101.30; fp32 (2 stages) H = 1024, B = 64: 14.34/33.31 against 15.55/36.07.
SPLIT_TILE_LOOP_STAGES = 3
# The most stages fp32's tile loops take: with 3 they spill (H = 128 and 1024); with 2 (the next tile's state loaded
# while one is multiplied) they compile clean, on sm_80 and sm_90 (compile audit; H = 1024, sm_90, forward: 252
# registers, 722 instructions per step against 630).
SPLIT_FP32_MAX_TILE_LOOP_STAGES = 2
# The most stages a 16-bit tile loop takes where a tile's state is more than 8 x 2048 elements (SPLIT_LOOPED_BLOCK_B's
# 16-row tiles at H = 2048): with 3, 240 bytes of spills forward and 232 backward (compile audit, sm_90); with 2, none.
SPLIT_TALL_TILE_MAX_STAGES = 2
SPLIT_TALL_TILE_ELEMENTS = 8 * 2048
# fp32's pipelined tile loop sums its warps' partial products in each thread (split.IN_THREAD_SUM) only from this
# compute capability on: sm_80's ptxas spills with it (8 bytes in the forward at H = 128, 16 in the backward at
# 1024). Compile audit, sm_90, forward/backward, against tl.sum: no conflicts where there were 448-1920 wavefronts
# a step, 10 or 8 CTA barriers instead of 11-13, 7-19% fewer instructions (H = 1024: 627/629 against 696/683), no
# spills; stall cycles 12-35% fewer but in the forward at H = 512 (2177 against 1622). On an H200, fp32 H = 1024, B = 64
# (four 8-row tiles a program): tl.sum took 1.38x the time forward, 1.27x forward+backward
# (results/variants/20261127-h200-untimed/split_sum.csv).
SPLIT_PIPELINED_FP32_SUM_MIN_ARCH = 90
# The step kernel's configuration; float64 takes thinner K slices (32 and 128 spill on sm_90 at 16 columns).
STEPWISE_CONFIGS = {torch.float64: LaunchConfig(StepwiseBlocks(BLOCK_K=16), StepwiseBlocks(BLOCK_K=16))}
STEPWISE_DEFAULT = LaunchConfig(StepwiseBlocks(), StepwiseBlocks())
# The step kernel's BLOCK_N, widest first: stepwise_config takes the first whose grid, cdiv(B, BLOCK_B) x
# cdiv(H, BLOCK_N) programs, gives every SM one (else the narrowest; in the interpreter, which runs one program at a
# time, the widest). Each program's K loop walks all of H, so where the grid leaves SMs idle a step lasts one
# program's loop: on an H200, fp32 at H = 2048 (then on this tier) took 150 us per step at B = 8 (32 programs of 64
# columns) and 160 at B = 64 (128 programs), the same per program (results/race/20261126-h200-defaults; that forward
# read U's columns, since replaced by a row-major U^T: stepwise.py). Compile audit, sm_90 fp32: the K loop's
# instructions per iteration 237 (64 columns), 129 (32), 93 (16); no spills in any dtype. Not yet timed.
STEPWISE_BLOCK_N = (64, 32, 16)


# Whether the fma, resident and split kernels add b_hh to each step's input themselves (Tier.fused_ends), the input GEMM
# taking b_ih alone: a forward call then launches no b_ih + b_hh, for one FADD per element of a step's input a step, off
# its serial chain. Compile audit, sm_90, tanh forward without the L2 prefetch, time-loop instructions and stall cycles
# per step with / without (--b-hh-summed): the bf16 resident forward 132/124 and 274/261 at BLOCK_H = 64, 97/92 and
# 239/225 at 256; the fma forward one instruction more (fp32 116/115 and 188/190 at 64, 195/194 and 273/299 at 128);
# the bf16 split forward 125/121 and 426/418 at H = 512, B = 8 (clusters of 8), 190/189 and 724/716 at 1024, 229/228
# and 971/978 at 2048; fp32's by FMA at 2048 847/838 and 1420/1414; no CTA barrier more, no spills. A launch fewer
# against about 5-15 cycles a step: on a host whose launches cost tens of microseconds the launch weighs more at
# T = 1024, on a GPU-bound one (a CUDA graph) perhaps not. Not yet timed (.ci/gpu_variants.py b-hh-summed, bash .ci/gpu
# host-profile).
B_HH_IN_KERNEL = True


@dataclass(frozen=True)
class Tier:
    """What a tier runs: its launchers, its kernels (forward, backward) and their launch keywords."""
    forward: Callable[..., torch.Tensor | tuple]                  # (xw, h0, u, reverse, blocks, nonlinearity)
    #                                                               -> y, or (y, h_n) where fused_ends
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]  # (y, dy, u, reverse, blocks, nonlinearity)
    #                                                               -> (da, dh0 where its kernel makes it, else None)
    kernels: tuple                                                # (forward, backward) @triton.jit functions
    launch_keywords: Callable[..., dict]                          # (blocks, nonlinearity, dtype, interpreted, backward)
    # Whether two of its launches may run at once on two streams (streams.py): its programs never wait for one
    # another. Not the split tier (its grid barrier needs every program of a launch resident) nor the step kernel
    # (its loop may be captured into a CUDA graph).
    overlaps: bool
    # What its launchers take for U: (u, blocks, backward) -> a tensor. The fma tier's is a copy in its layout (but
    # its forward's, where H is a multiple of 16: U itself, fma.reads_u_itself); the others take U itself.
    operand: Callable[..., torch.Tensor] = lambda u, blocks, backward: u
    # Whether its forward launcher takes xw_spare: xw's memory for its output where the caller no longer needs xw.
    # The resident tier's copy into fragment order has read xw whole before its kernel runs, and the fma and fp32
    # resident kernels load each step's input before a CTA barrier that precedes the store over it; the split and
    # step kernels are not checked for that.
    spares_xw: bool = False
    # (keywords, backward) -> whether its kernel, launched with these keywords, may store each step's output over that
    # step's input (the fma forward's over xw where spared; the resident kernels' in fragment order, y over xw's copy
    # and da over dy's, and fp32's resident forward over xw): the compile audit checks that the time loop orders
    # every such load first (audit.output_over_input).
    in_place: Callable[[dict, bool], bool] = lambda keywords, backward: False
    # Whether its kernels do the layer's ends themselves: the forward starts from zeros where h0 is None (the split
    # tier's zeros come with its barrier words, one allocation), adds b_hh to each step's input (its launcher's keyword
    # b_hh) and writes h_n after the last step (returning (y, h_n)), the backward adds dL/dh_n into its first step's
    # dy (keyword dh_n). For the step kernel recurrence_forward and recurrence_backward do these by torch ops, a
    # launch each: on a GPU every launch costs host time on every call.
    fused_ends: bool = False
    # Whether its forward launcher takes framed: y stored in a frame whose extra step its kernel fills with h_0 (and
    # xw's own frame where spared), so that the backward's dU is one GEMM (frames.py). Not the split tier, whose
    # kernels sit at their register limits: each program storing its columns of h_0 (a load and a store of a tile)
    # spilled 8 bytes by FMA at H = 2048 before the steps, and in 7 configurations after them (compile audit,
    # 2026-11-29); nor the step kernel: there dU is two GEMMs.
    frames: bool = False
    # Whether its backward kernel writes dL/dh_0 (in fp32, or in the dtype its launcher's dh0_dtype asks for); else
    # recurrence_backward makes it by a GEMM.
    makes_dh0: bool = False
    # (config, device) -> a buffer for its backward launcher's operand that its forward kernel fills (its launcher's
    # keyword backward_operand), or None where it does not: the backward then makes none (the fma tier's U by columns).
    # None: its backward takes U itself, or makes its operand.
    backward_operand: Callable[[LaunchConfig, torch.device], torch.Tensor | None] | None = None


TIERS = {
    "fma": Tier(fma.fma_forward, fma.fma_backward, (fma.fma_forward_kernel, fma.fma_backward_kernel),
                fma.launch_keywords, overlaps=True, operand=fma.operand, spares_xw=True,
                in_place=lambda keywords, backward: not backward, fused_ends=True, frames=True, makes_dh0=True,
                backward_operand=fma.empty_backward_operand),
    "resident": Tier(resident.resident_forward, resident.resident_backward,
                     (resident.resident_forward_kernel, resident.resident_backward_kernel), resident.launch_keywords,
                     overlaps=True, spares_xw=True, in_place=resident.stores_over_input, fused_ends=True,
                     frames=True, makes_dh0=True),
    "split": Tier(split.split_forward, split.split_backward, (split.split_forward_kernel, split.split_backward_kernel),
                  split.launch_keywords, overlaps=False, fused_ends=True),
    "stepwise": Tier(stepwise.stepwise_forward, stepwise.stepwise_backward,
                     (stepwise.step_kernel, stepwise.step_kernel), stepwise.launch_keywords, overlaps=False),
}


@dataclass(frozen=True)
class KernelPlan:
    """The kernels chosen for one shape: their tier, compile-time configuration and why."""
    tier: str
    config: LaunchConfig = field(compare=False)
    reason: str = field(compare=False, default="")

    @property
    def name(self) -> str:
        return f"{self.tier}({self.config})"

    @property
    def overlaps(self) -> bool:
        """Whether two of its launches may share the GPU on two streams (Tier.overlaps)."""
        return TIERS[self.tier].overlaps


def padded_hidden(hidden_size: int) -> int:
    """BLOCK_H: the hidden size padded to a power of two, at least 16 (tl.dot's minimum K)."""
    return max(16, next_power_of_2(hidden_size))


def block_sizes(configs: dict, dtype: torch.dtype) -> list[int]:
    """The BLOCK_H a tier's configurations (keyed by (dtype, BLOCK_H)) have for dtype."""
    return [bh for dt, bh in configs if dt == dtype]


def served_sizes(block_hs: list[int], dtype: torch.dtype) -> str:
    """The hidden sizes a tier with configurations for these BLOCK_H serves in dtype, as a refusal says it: each
    BLOCK_H serves the sizes above the next power of two down (padded_hidden), and 16 every size from 1."""
    ranges = []
    for bh in sorted(block_hs):
        low = 1 if bh == 16 else bh // 2 + 1
        if ranges and ranges[-1][1] + 1 == low:
            ranges[-1][1] = bh
        else:
            ranges.append([low, bh])
    sizes = ", ".join(f"{lo}-{hi}" for lo, hi in ranges)
    return f"hidden sizes {sizes} in {dtype}" if ranges else f"no hidden size in {dtype}"


def resident_served(dtype: torch.dtype, block_h: int, arch: int = PLANNING_ARCH) -> bool:
    """Whether the resident tier has a configuration for dtype and BLOCK_H on compute capability arch."""
    return (dtype, block_h) in RESIDENT_CONFIGS and arch >= RESIDENT_MIN_ARCH.get((dtype, block_h), 0)


def resident_limit(dtype: torch.dtype, arch: int = PLANNING_ARCH) -> int:
    """Largest hidden size the resident tier serves for dtype on compute capability arch (0 if none)."""
    return max(resident_block_sizes(dtype, arch), default=0)


def resident_block_sizes(dtype: torch.dtype, arch: int = PLANNING_ARCH) -> list[int]:
    """The BLOCK_H the resident tier serves for dtype on compute capability arch."""
    return [bh for bh in block_sizes(RESIDENT_CONFIGS, dtype) if resident_served(dtype, bh, arch)]


def stepwise_configs(dtype: torch.dtype) -> list[LaunchConfig[StepwiseBlocks]]:
    """Every step kernel configuration for dtype, in the order stepwise_config tries them (STEPWISE_BLOCK_N)."""
    return [STEPWISE_CONFIGS.get(dtype, STEPWISE_DEFAULT).replace(BLOCK_N=n) for n in STEPWISE_BLOCK_N]


def stepwise_config(dtype: torch.dtype, hidden_size: int, batch_size: int,
                    programs: int) -> LaunchConfig[StepwiseBlocks]:
    """The first of stepwise_configs whose grid has at least as many programs as run at once (co_resident_programs:
    the SMs; one in the interpreter, where the widest tiles are the cheapest), else the narrowest."""
    configs = stepwise_configs(dtype)
    return next((c for c in configs if cdiv(batch_size, c.forward.BLOCK_B) *
                 cdiv(hidden_size, c.forward.BLOCK_N) >= programs), configs[-1])


def plan_for(hidden_size: int, batch_size: int, dtype: torch.dtype, device: torch.device | str | None = None,
             kernel: str = "auto") -> KernelPlan:
    """The plan for a layer of this hidden size and batch in dtype on device (its SM count bounds the fma tier's
    batch, the split tier's slices and the stepwise grid). kernel: 'auto' (first tier that fits) or a tier name
    (an error if it cannot serve)."""
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    sms, arch = device_facts(device)
    if kernel == "stepwise":
        return _stepwise_plan(hidden_size, batch_size, dtype, device, "requested")
    block_h = padded_hidden(hidden_size)
    refusals = []
    makers = (("fma", _fma_plan), ("resident", _resident_plan), ("split", partial(_split_plan, device=device)))
    for tier, make in makers:
        if kernel in ("auto", tier):
            plan = make(hidden_size, batch_size, dtype, block_h, sms, arch)
            if tier in ("fma", "resident") and kernel == "auto" and isinstance(plan, KernelPlan):
                plan = _clusters_instead(hidden_size, batch_size, dtype, block_h, sms, arch, device) or plan
            if isinstance(plan, KernelPlan):
                return plan
            refusals.append(f"{tier}: {plan}")
    why = "; ".join(refusals)
    if kernel != "auto":
        raise ValueError(f"kernel={kernel!r} cannot serve this layer ({why}); use kernel='auto' or 'stepwise'")
    return _stepwise_plan(hidden_size, batch_size, dtype, device, why)


def _stepwise_plan(hidden_size, batch_size, dtype, device, reason: str) -> KernelPlan:
    """The stepwise plan: its grid sized for the programs that run at once on device."""
    return KernelPlan("stepwise", stepwise_config(dtype, hidden_size, batch_size, co_resident_programs(device)), reason)


def _fma_plan(hidden_size, batch_size, dtype, block_h, sms, arch) -> KernelPlan | str:
    """The FMA plan, or why there is none."""
    if (dtype, block_h) not in FMA_CONFIGS:
        return f"serves {served_sizes(block_sizes(FMA_CONFIGS, dtype), dtype)}, not {hidden_size}"
    if batch_size > FMA_MAX_ROWS_PER_SM * sms:
        return f"batch {batch_size} exceeds {FMA_MAX_ROWS_PER_SM} row(s) per SM on {sms} SMs (one program per row)"
    size_kib = block_h * block_h * fma.HELD_DTYPE.itemsize / 1024
    where = ("stays in the registers" if block_h <= fma.HELD_MAX_BLOCK_H else
             "stays half in the registers, half read through L1 every step,")
    return KernelPlan("fma", FMA_CONFIGS[(dtype, block_h)],
                      f"U ({block_h}x{block_h} in {fma.HELD_DTYPE}, {size_kib:.0f} KiB) {where} of each of "
                      f"{batch_size} program(s), one per batch row, multiplied by FMA")


def _clusters_instead(hidden_size, batch_size, dtype, block_h, sms, arch, device=None) -> str | None:
    """Why the dispatcher passes over the fma or resident tier for the split tier's clusters (SPLIT_CLUSTER_CONFIGS at
    H = 256, U split between a cluster's programs: fp32 from the fma tier, 16-bit from the resident tier) where those
    give every program one batch tile; else None."""
    if not _clustered(dtype, block_h, arch):
        return None
    cluster = SPLIT_CLUSTER_CONFIGS[(dtype, block_h)].forward
    if not _one_tile_each(cluster, hidden_size, batch_size, sms, device):
        return None
    return f"clusters of {cluster.CLUSTER} programs split U between them for this batch (SPLIT_CLUSTERS, split tier)"


def _resident_plan(hidden_size, batch_size, dtype, block_h, sms, arch) -> KernelPlan | str:
    """The resident plan, or why there is none."""
    if not resident_served(dtype, block_h, arch):
        return f"serves {served_sizes(resident_block_sizes(dtype, arch), dtype)} on sm_{arch}, not {hidden_size}"
    config = RESIDENT_CONFIGS[(dtype, block_h)]
    size_kib = block_h * block_h * dtype.itemsize / 1024
    return KernelPlan("resident", config, f"U ({block_h}x{block_h} {dtype}, {size_kib:.0f} KiB) stays in the "
                                          f"registers of each of {cdiv(batch_size, config.forward.BLOCK_B)} "
                                          f"program(s), one per {config.forward.BLOCK_B} batch rows")


def split_configs(dtype: torch.dtype, block_h: int, arch: int = PLANNING_ARCH) -> list[LaunchConfig[SplitBlocks]]:
    """Every split configuration the dispatcher can pick for dtype and BLOCK_H on compute capability arch, in the
    order split_config tries them: the one-tile forms (ONE_TILE: no tile loop; without SPLIT_ONE_TILE, the forms with
    it) of SPLIT_CLUSTER_CONFIGS' (with SPLIT_CLUSTERS, from sm_90) and SPLIT_FINE_CONFIGS' where there are some, of
    SPLIT_CONFIGS' with its narrow batch tile where it has a wider one, of SPLIT_LOOPED_CONFIGS' at
    SPLIT_WIDE_ONE_TILE_BLOCK_H (with its narrow tile first where it has a wider one: SPLIT_LOOPED_BLOCK_B), and of
    SPLIT_CONFIGS'; last, SPLIT_LOOPED_CONFIGS' where there is one, else SPLIT_CONFIGS' itself, whose programs run
    their tiles one after another. A SPLIT_CLUSTER_EXCHANGE other than L2's makes the 16-bit cluster form one-tile,
    exchanging the state that way, up to SPLIT_DSMEM_MAX_BLOCK_H."""
    base = SPLIT_CONFIGS[(dtype, block_h)]
    last = _looped(dtype, block_h, arch) or base
    clustered = _clustered(dtype, block_h, arch)
    forms = [SPLIT_CLUSTER_CONFIGS[(dtype, block_h)]] if clustered else []
    forms += [SPLIT_FINE_CONFIGS[(dtype, block_h)]] if (dtype, block_h) in SPLIT_FINE_CONFIGS else []
    wide = _narrow(last) + [last] if last != base and block_h in SPLIT_WIDE_ONE_TILE_BLOCK_H else []
    forms += _narrow(base) + wide + [base]
    looped = [_pipelined(c, dtype) for c in forms[:-1]]  # a tile loop in every step
    first = [c.replace(ONE_TILE=True) for c in forms] if SPLIT_ONE_TILE else looped
    if (clustered and SPLIT_CLUSTER_EXCHANGE != L2.value and block_h <= SPLIT_DSMEM_MAX_BLOCK_H
            and dtype in SIXTEEN_BIT):  # slots of one tile, of 16-bit state
        first[0] = forms[0].replace(ONE_TILE=True, EXCHANGE=SPLIT_CLUSTER_EXCHANGE)
    configs = [_summed_where_it_fits(c, dtype, arch) for c in first + [_k_clustered(_pipelined(last, dtype), dtype,
                                                                                    block_h, arch)]]
    return list(dict.fromkeys(configs))  # without SPLIT_ONE_TILE, first may hold last


def _k_clustered(config: LaunchConfig[SplitBlocks], dtype: torch.dtype, block_h: int,
                 arch: int) -> LaunchConfig[SplitBlocks]:
    """config with its product's K split over clusters of SPLIT_K_CLUSTER programs, forward and backward, where that
    switch asks for it (16-bit, from sm_90, at SPLIT_K_CLUSTER_BLOCK_H); else config."""
    if SPLIT_K_CLUSTER == 1 or arch < 90 or dtype not in SIXTEEN_BIT or block_h not in SPLIT_K_CLUSTER_BLOCK_H:
        return config
    return config.replace(K_CLUSTER=SPLIT_K_CLUSTER)


def _runnable_k_split(config: LaunchConfig[SplitBlocks], hidden_size: int, block_h: int, sms: int,
                      device) -> LaunchConfig[SplitBlocks]:
    """config, or config without the K split over clusters (_k_clustered) where H < BLOCK_H would pad a range of K or
    those clusters do not run at once on device."""
    if config.forward.K_CLUSTER == 1 or (hidden_size == block_h
                                         and split.co_resident_groups(hidden_size, config.forward, sms, device) > 0):
        return config
    return config.replace(K_CLUSTER=1)


def _looped(dtype: torch.dtype, block_h: int, arch: int) -> LaunchConfig[SplitBlocks] | None:
    """SPLIT_LOOPED_CONFIGS' configuration for dtype and BLOCK_H, with SPLIT_LOOPED_BLOCK_B-row tiles on compute
    capability arch from SPLIT_LOOPED_BLOCK_B_MIN_ARCH; None where there is none."""
    config = SPLIT_LOOPED_CONFIGS.get((dtype, block_h))
    if config is None or arch < SPLIT_LOOPED_BLOCK_B_MIN_ARCH:
        return config
    return config.replace(BLOCK_B=SPLIT_LOOPED_BLOCK_B)


def _pipelined(config: LaunchConfig[SplitBlocks], dtype: torch.dtype) -> LaunchConfig[SplitBlocks]:
    """config with its tile loop software-pipelined over SPLIT_TILE_LOOP_STAGES, at most
    SPLIT_FP32_MAX_TILE_LOOP_STAGES in fp32 and SPLIT_TALL_TILE_MAX_STAGES where a tile's state has more than
    SPLIT_TALL_TILE_ELEMENTS elements."""
    if dtype not in SIXTEEN_BIT:
        most = SPLIT_FP32_MAX_TILE_LOOP_STAGES
    elif config.forward.BLOCK_B * config.forward.BLOCK_H > SPLIT_TALL_TILE_ELEMENTS:
        most = SPLIT_TALL_TILE_MAX_STAGES
    else:
        most = SPLIT_TILE_LOOP_STAGES
    return config.replace(num_stages=min(SPLIT_TILE_LOOP_STAGES, most))


def _summed_where_it_fits(config: LaunchConfig[SplitBlocks], dtype: torch.dtype,
                          arch: int) -> LaunchConfig[SplitBlocks]:
    """config summing its warps' partial products by tl.sum where the in-thread sum spills: fp32's pipelined tile
    loop before SPLIT_PIPELINED_FP32_SUM_MIN_ARCH."""
    spills = (dtype == torch.float32 and config.forward.num_stages > 1 and arch < SPLIT_PIPELINED_FP32_SUM_MIN_ARCH)
    return config.replace(IN_THREAD_SUM=False) if spills else config


def _clustered(dtype: torch.dtype, block_h: int, arch: int) -> bool:
    """Whether the split tier takes SPLIT_CLUSTER_CONFIGS' configuration for dtype and BLOCK_H first (from sm_90, where
    SPLIT_CLUSTERS_DEFAULT has it, or all of them with SPLIT_CLUSTERS)."""
    key = (dtype, block_h)
    return arch >= 90 and key in SPLIT_CLUSTER_CONFIGS and (SPLIT_CLUSTERS or key in SPLIT_CLUSTERS_DEFAULT)


def _narrow(config: LaunchConfig[SplitBlocks]) -> list[LaunchConfig[SplitBlocks]]:
    """config with SPLIT_NARROW_BLOCK_B-row batch tiles where its tile is wider; else nothing."""
    return [config.replace(BLOCK_B=SPLIT_NARROW_BLOCK_B)] if config.forward.BLOCK_B > SPLIT_NARROW_BLOCK_B else []


def split_config(dtype: torch.dtype, block_h: int, hidden_size: int, batch_size: int, sms: int,
                 arch: int = PLANNING_ARCH, device: torch.device | str | None = None) -> LaunchConfig[SplitBlocks]:
    """The split configuration for this layer: the first of split_configs with which no program runs more than
    one tile per step (the tiles spread over the groups device's SMs run beside the slices; without a device, sms
    SMs all alike), else the last, SPLIT_LOOPED_CONFIGS' or SPLIT_CONFIGS'. A narrower tile or a thinner slice only
    pays where it spares a program a second tile per step."""
    configs = [_runnable_k_split(c, hidden_size, block_h, sms, device) for c in split_configs(dtype, block_h, arch)]
    configs = [c for c in configs if split.co_resident_groups(hidden_size, c.forward, sms, device) > 0]  # they run
    for config in configs:
        if _one_tile_each(config.forward, hidden_size, batch_size, sms, device):
            return config
    return configs[-1] if configs else SPLIT_CONFIGS[(dtype, block_h)]


def _one_tile_each(blocks: SplitBlocks, hidden_size: int, batch_size: int, sms: int, device) -> bool:
    """Whether the batch's tiles spread over the groups of these programs that run at once on device
    (split.co_resident_groups: none where they cannot run there), one tile per program."""
    groups = split.co_resident_groups(hidden_size, blocks, sms, device)
    return groups > 0 and cdiv(batch_size, blocks.BLOCK_B) <= groups


def _split_plan(hidden_size, batch_size, dtype, block_h, sms, arch, device=None) -> KernelPlan | str:
    """The split-H plan, or why there is none."""
    if (dtype, block_h) not in SPLIT_CONFIGS:
        return f"serves {served_sizes(block_sizes(SPLIT_CONFIGS, dtype), dtype)}, not {hidden_size}"
    config = split_config(dtype, block_h, hidden_size, batch_size, sms, arch, device)
    slices = split.split_slices(hidden_size, config.forward)
    if slices > sms:
        return f"{slices} slices of U need {slices} co-resident programs but the device has {sms} SMs"
    _, groups = split.split_grid(batch_size, hidden_size, config.forward, sms, device)
    tiles = cdiv(batch_size, config.forward.BLOCK_B)
    barrier = (f"each group a cluster of {slices} meeting at its barrier" if config.forward.CLUSTER > 1 else
               "a grid barrier")
    product = ", multiplied by FMA" if config.forward.FMA else ""
    cluster = config.forward.K_CLUSTER
    k_split = (f" and a cluster barrier per tile in clusters of {cluster}, each program holding its "
               f"cluster's {cluster * config.forward.BLOCK_N} rows over 1/{cluster} of K" if cluster > 1 else "")
    return KernelPlan("split", config, f"U cut into {slices} row slices of {config.forward.BLOCK_N} held in the "
                                       f"registers of {slices} x {groups} programs ({sms} SMs){product}, {barrier} per "
                                       f"step{k_split}; one launch, each program running {cdiv(tiles, groups)} batch "
                                       f"tile(s) of {config.forward.BLOCK_B} per step")


def recurrence_operand(plan: KernelPlan, u: torch.Tensor, backward: bool) -> torch.Tensor:
    """U as the plan's forward (or backward) launcher takes it (Tier.operand): what recurrence_forward and
    recurrence_backward take as `operand` where a caller launches several times with one U."""
    return TIERS[plan.tier].operand(u, plan.config.backward if backward else plan.config.forward, backward)


def biases(plan: KernelPlan, b_ih: torch.Tensor | None,
           b_hh: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(the input GEMM's bias, recurrence_forward's b_hh) for a layer with biases b_ih and b_hh (None and None for one
    without): (b_ih, b_hh) where the plan's kernels add b_hh themselves (Tier.fused_ends, B_HH_IN_KERNEL), else
    (b_ih + b_hh, None): one vector added, where recurrence_forward given b_hh would add it to all of xw."""
    if b_ih is None:
        return None, None
    if TIERS[plan.tier].fused_ends and B_HH_IN_KERNEL:
        return b_ih, b_hh
    return b_ih + b_hh, None


def recurrence_forward(plan: KernelPlan, xw: torch.Tensor, h0: torch.Tensor | None, u: torch.Tensor,
                       nonlinearity: str, reverse: bool, operand: torch.Tensor | None = None,
                       xw_spare: bool = False, b_hh: torch.Tensor | None = None, framed: bool = False,
                       backward_operand: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_t for all t [T, B, H] in xw's dtype, h_n [B, H]): h_t = act(xw_t + b_hh + h_{t-1} U^T), h_n the state after
    the last processed step, with its own storage (h0 None: zeros; b_hh None: xw holds every bias; operand:
    recurrence_operand's, if made). With xw_spare (the caller no longer needs xw) the states may be written over xw
    (Tier.spares_xw). The fma, resident and split kernels start from zeros without a launch of them, add b_hh and
    write h_n themselves (Tier.fused_ends); for the step kernel here, a launch each. framed (where frames_states
    says the plan's tier takes it): h_t in a frame holding h0 (frames.py), xw, if spared, made by
    frames.framed_empty. backward_operand (empty_backward_operand's): filled by the forward kernel with the backward
    launcher's operand."""
    operand = recurrence_operand(plan, u, backward=False) if operand is None else operand
    tier = TIERS[plan.tier]
    keywords = {"xw_spare": True} if xw_spare and tier.spares_xw else {}
    if framed:  # a tier without Tier.frames takes no such keyword
        keywords["framed"] = True
    if backward_operand is not None:  # nor one without Tier.backward_operand
        keywords["backward_operand"] = backward_operand
    if tier.fused_ends:
        return tier.forward(xw, h0, operand, reverse, plan.config.forward, nonlinearity, b_hh=b_hh, **keywords)
    if b_hh is not None:
        xw = xw.add_(b_hh) if xw_spare else xw + b_hh
    h0 = xw.new_zeros(xw.shape[1:]) if h0 is None else h0
    y = tier.forward(xw, h0, operand, reverse, plan.config.forward, nonlinearity, **keywords)
    return y, y[last_step(reverse)].clone()


def empty_backward_operand(plan: KernelPlan, device: torch.device) -> torch.Tensor | None:
    """A buffer for the operand the plan's backward launcher takes (recurrence_operand's, backward), where its forward
    kernel writes it (Tier.backward_operand: no copy's launch in the backward); else None."""
    make = TIERS[plan.tier].backward_operand
    return None if make is None else make(plan.config, device)


def frames_states(plan: KernelPlan) -> bool:
    """Whether the plan's forward writes its states in a frame with h_0 (Tier.frames, frames.py)."""
    return TIERS[plan.tier].frames


def recurrence_backward(plan: KernelPlan, y: torch.Tensor, dy: torch.Tensor | None, u: torch.Tensor,
                        nonlinearity: str, reverse: bool, operand: torch.Tensor | None = None,
                        dh0_wanted: bool = True, dh_n: torch.Tensor | None = None,
                        dh0_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/da_t for all t in y's dtype, dL/dh_0 in the accumulator dtype) from the stored h_t, their gradients dy (None:
    zeros, where the loss reads h_n alone: the fma, resident and split kernels then read none, and for the step kernel
    they are made here) and dh_n, the gradient of the state after the last processed step (h_n's, or a later
    segment's; None: none), which the fma, resident and split kernels add into that step's dy themselves
    (Tier.fused_ends), in the accumulator dtype; for the step kernel it is added here, into a copy of dy rounded to its
    dtype. operand: recurrence_operand's, if made.
    The fma and resident kernels make dL/dh_0 themselves; for the split and step kernels it is dL/da of the step that
    consumed h_0 times U, one GEMM here, made only where dh0_wanted (else None): two casts and a GEMM fewer where h_0
    needs no gradient. dh0_dtype: the dtype the caller will take dL/dh_0 in, which the fma and resident kernels
    write it in (Tier.makes_dh0: no cast's launch after them)."""
    operand = recurrence_operand(plan, u, backward=True) if operand is None else operand
    tier = TIERS[plan.tier]
    if tier.fused_ends:
        keywords = {"dh0_dtype": dh0_dtype} if tier.makes_dh0 else {}
        da, dh0 = tier.backward(y, dy, operand, reverse, plan.config.backward, nonlinearity, dh_n=dh_n, **keywords)
    else:
        if dy is None:
            dy = torch.zeros_like(y)
        elif dh_n is not None:
            dy = dy.clone()
        if dh_n is not None:
            dy[last_step(reverse)].add_(dh_n)
        da, dh0 = tier.backward(y, dy, operand, reverse, plan.config.backward, nonlinearity)
    if dh0 is None and dh0_wanted:
        acc = accumulator_dtype(y.dtype)
        dh0 = da[last_step(not reverse)].to(acc) @ u.to(acc)  # the step that consumed h_0: the first processed
    return da, dh0


def last_step(reverse: bool) -> int:
    """The time index of a direction's last processed step in a [T, ...] tensor: h_n's."""
    return 0 if reverse else -1
