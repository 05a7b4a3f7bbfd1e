"""kernels/banks.py: shared-memory wavefronts and bank conflicts from a kernel's PTX, against hand-counted access
patterns, a synthetic loop, and Nsight Compute's count on an H200."""
import json

import numpy as np
import pytest

from kernels.banks import shared_accesses, time_loop_lines, wavefronts

from helpers import compiled_without_interpreter

LANES = np.arange(32)


@pytest.mark.parametrize("starts,width,expected", [
    (4 * LANES, 4, (1, 1)),              # one word a lane, consecutive: every bank once
    (8 * LANES, 4, (2, 1)),              # every other word: 16 banks, two words each
    (128 * LANES, 4, (32, 1)),           # one bank for the whole warp
    (np.zeros(32, dtype=int), 4, (1, 1)),  # one word for all: a broadcast
    (16 * LANES, 16, (4, 4)),            # 16 bytes a lane, consecutive: 512 bytes take 4
    (32 * LANES, 16, (8, 4)),            # 16 bytes a lane every 32: half the banks, 8 words each
    (2 * LANES, 2, (1, 1)),              # 16-bit, consecutive: 64 bytes, 16 words
], ids=["words", "stride-2", "stride-32", "broadcast", "vec4", "vec4-stride-2", "halves"])
def test_wavefronts_of_one_warps_access(starts, width, expected):
    assert wavefronts(np.asarray(starts), width) == expected


# A kernel's shape as LLVM prints it: set-up, a loop whose header and blocks its comments name, an exit. Each thread t
# stores at 4 * (t * 8 % 256) (lanes 8 words apart: 8-way), then loads 4 * t (conflict-free) under a predicate true for
# t < 16; before the loop, an access that is not counted, and in it one whose address comes from a parameter.
SYNTHETIC_PTX = """
.visible .entry k(.param .u64 k_param_0)
{
	mov.u32 	%r1, %tid.x;
	mov.b32 	%r2, global_smem;
	shl.b32 	%r3, %r1, 5;
	and.b32 	%r4, %r3, 1023;
	add.s32 	%r5, %r2, %r4;
	shl.b32 	%r6, %r1, 2;
	add.s32 	%r7, %r2, %r6;
	setp.lt.u32 	%p1, %r1, 16;
	ld.param.u32 	%r8, [k_param_0];
	st.shared.b32 	[%r7], %r1;
$L__BB0_1:                              // =>This Loop Header: Depth=1
                                        //     Child Loop BB0_2 Depth 2
	st.shared.b32 	[%r5+0], %r1;
	bar.sync 	0;
$L__BB0_2:                              //   Parent Loop BB0_1 Depth=1
                                        // =>  This Inner Loop Header: Depth=2
	@%p1 ld.shared.b32 	%r9, [%r7];
	@%p1 bra 	$L__BB0_2;
// %bb.3:                               //   in Loop: Header=BB0_1 Depth=1
	ld.shared.b32 	%r10, [%r8];
	bra.uni 	$L__BB0_1;
// %bb.4:
	ret;
}
"""


def test_time_loop_lines_follow_llvms_loop_comments():
    lines = SYNTHETIC_PTX.splitlines()
    loop = [lines[i].strip() for i in sorted(time_loop_lines(SYNTHETIC_PTX))]
    assert loop[0].startswith("$L__BB0_1:") and loop[-1] == "bra.uni 	$L__BB0_1;"
    assert "st.shared.b32 	[%r7], %r1;" not in loop and "ret;" not in loop


def test_shared_accesses_of_the_loop_by_thread_arithmetic_and_predicates():
    accesses = shared_accesses(SYNTHETIC_PTX, num_warps=2)
    assert [(a.store, a.wavefronts, a.ideal, a.conflicts, a.unknown) for a in accesses] == [
        (True, 2 * 8, 2, 14, False),   # 8 words apart: 8 per bank, in each of 2 warps
        (False, 1, 1, 0, False),       # only lanes 0-15 of warp 0 load; warp 1's lanes all predicated off
        (False, 2, 2, 0, True),        # an address from a parameter: not computed, counted as its bytes' fewest
    ]


def ldmatrix_loop(row_bytes: int, rows: int = 32) -> str:
    """A loop whose ldmatrix .x4 takes lane t's row at (t % rows) * row_bytes."""
    return f"""
	mov.u32 	%r1, %tid.x;
	and.b32 	%r7, %r1, {rows - 1};
	mul.lo.s32 	%r2, %r7, {row_bytes};
$L__BB0_1:                              // =>This Loop Header: Depth=1
	ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%r3, %r4, %r5, %r6}}, [%r2];
	bra.uni 	$L__BB0_1;
"""


@pytest.mark.parametrize("row_bytes,rows,expected", [(16, 32, 4), (256, 32, 32), (144, 32, 4), (16, 8, 4)],
                         ids=["rows-contiguous", "rows-256-bytes-apart", "rows-padded", "one-matrix-four-times"])
def test_an_ldmatrix_takes_a_wavefront_per_matrix_unless_its_rows_share_banks(row_bytes, rows, expected):
    """Each of the 4 matrices is 8 rows of 16 bytes, read in its own wavefront: contiguous or padded rows (144 bytes
    apart) cover all 32 banks once; rows 256 bytes apart fall in the same 4 banks, 8 wavefronts a matrix; the same
    128 bytes as all four matrices still take one wavefront each."""
    access, = shared_accesses(ldmatrix_loop(row_bytes, rows), num_warps=1)
    assert (access.wavefronts, access.ideal, access.store) == (expected, 4, False)


# The split forward kernel at H = 1024, B = 16, bf16 (8-row tiles, 64 slices), as Nsight Compute profiled it on an
# H200 (results/variants/20261127-h200/ncu/): 480 load and 480 store bank-conflict wavefronts per program and step,
# with the warps' partial products summed by tl.sum; none with them summed in each thread (split.IN_THREAD_SUM).
SPLIT_CONFLICTS = """
import json, torch
from kernels import audit, banks, dispatch, split
plan = dispatch.plan_for(1024, 16, torch.bfloat16)
blocks = plan.config.forward
counts = {}
for in_thread in (False, True):
    split.IN_THREAD_SUM = in_thread
    keywords = split.launch_keywords(blocks, "tanh", torch.bfloat16, False, False)
    compiled = audit.compile_for(split.split_forward_kernel, "torch.bfloat16", keywords, 90)
    accesses = banks.shared_accesses(compiled.asm["ptx"], blocks.num_warps)
    counts[str(in_thread)] = [sum(a.conflicts for a in accesses if not a.store),
                              sum(a.conflicts for a in accesses if a.store), sum(a.unknown for a in accesses)]
print(json.dumps([blocks.BLOCK_B, blocks.BLOCK_N, blocks.ONE_TILE, counts]))
"""


def test_the_split_kernels_conflicts_are_nsight_computes_and_the_in_thread_sum_has_none():
    block_b, block_n, one_tile, counts = json.loads(compiled_without_interpreter(SPLIT_CONFLICTS))
    assert (block_b, block_n, one_tile) == (8, 16, True)  # the profiled configuration
    assert counts == {"False": [480, 480, 0], "True": [0, 0, 0]}
