"""The compile audit: every dispatchable configuration compiles for sm_80 and sm_90 with no register
spills, shared memory within limits, U hoisted out of the time loop and, in the resident tier, kept
in registers; and the audit's own checks can tell a kernel that re-reads U every step."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from kernels import dispatch, prefetch, resident
from kernels.audit import (
    PERSISTENT_TIERS,
    RE_READ_LIMIT,
    RE_READ_MIN_BLOCK_H,
    SM_COUNT,
    barrier_atomics,
    barrier_kinds,
    cta_barriers,
    first_step_ordered,
    h_allowance,
    l2_prefetches,
    mma_instructions,
    output_over_input,
    shared_bytes_per_warp,
    smem_per_step,
    stall_cycles,
    straight_line,
    streamed_u_bytes,
    tile_loads,
    time_loop,
    u_hoisted,
    u_location,
    wgmma_shared_bytes,
    wgmma_waits,
)
from kernels.dispatch import (
    FMA_CONFIGS,
    RESIDENT_CONFIGS,
    SPLIT_CONFIGS,
    STEPWISE_BLOCK_N,
    SUPPORTED_DTYPES,
    TIERS,
    resident_served,
    split_configs,
)
from kernels.fma import CHAINS, HELD_MAX_BLOCK_H

from helpers import compiled_without_interpreter


def test_u_hoisted_check_can_fail():
    u_load, time_loop_with = "%resident_u_3 = tt.load %p\n", "scf.for %s = %c1 to %T step %c1 {{\n{}}}\n"
    tile_loop = "scf.for %i = %a to %b step %c {\n %y = tt.load %r\n}\n"  # not the time loop: no `to %T`
    assert u_hoisted(u_load + tile_loop + time_loop_with.format(" %x = tt.load %q\n"))
    assert not u_hoisted(time_loop_with.format(" %x = tt.load %q\n"))
    assert not u_hoisted(tile_loop + time_loop_with.format(u_load))
    assert not u_hoisted(u_load + time_loop_with.format(u_load))


def test_the_time_loop_body_is_its_region_past_braces_in_its_types():
    """An fma kernel's loop carries slice-layout vectors, whose types hold braces: the loop's body is still the
    region that follows them, so a load of U in it is found."""
    header = ("%a:2 = scf.for %s = %c0 to %T step %c1 iter_args(%h = %h0) -> "
              "(tensor<256xf32, #ttg.slice<{dim = 0, parent = #blocked}>>) : i32 {\n")
    u_load = "%resident_u = tt.load %p\n"
    assert u_hoisted(u_load + header + " %x = tt.load %q\n  scf.yield %h\n}\n")
    assert not u_hoisted(u_load + header + " " + u_load + "  scf.yield %h\n}\n")


def test_barrier_atomics_check_can_fail():
    both = "@%p1 red.global.gpu.release.add.u32 [%rd1+0], %r1;\n@%p1 ld.global.gpu.acquire.b32 %r2, [%rd1+0];"
    assert barrier_atomics(both)
    assert not barrier_atomics(both.replace("release", "relaxed"))
    assert not barrier_atomics(both.replace("acquire", "relaxed"))
    cluster = "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned;"
    assert barrier_atomics(cluster, cluster=True) and not barrier_atomics(both, cluster=True)
    assert not barrier_atomics(cluster.replace("release", "relaxed"), cluster=True)
    assert not barrier_atomics(cluster.replace("wait.acquire", "wait"), cluster=True)
    remote = " mapa.shared::cluster.u32 a, a, %r5; ld.shared::cluster.b16 %rs3, [a];"
    assert barrier_atomics(cluster + remote, True, "dsmem-pull") and not barrier_atomics(cluster, True, "dsmem-pull")
    # a release of the arrival's own shared memory alone serves the exchanges in shared memory, not the state in L2
    shared = cluster.replace("barrier.cluster.arrive.release", "fence.release.sync_restrict::shared::cta.cluster; "
                             "barrier.cluster.arrive.relaxed")
    assert barrier_atomics(shared + remote, True, "dsmem-pull") and not barrier_atomics(shared, True)
    relaxed_alone = shared.replace("fence.release.sync_restrict::shared::cta.cluster; ", "")
    assert not barrier_atomics(relaxed_alone + remote, True, "dsmem-pull")
    # a K split beside the grid barrier: its partial products' release, acquire and remote reads too
    assert barrier_atomics(both + shared + remote, k_split=True)
    assert not barrier_atomics(both, k_split=True) and not barrier_atomics(both + relaxed_alone + remote, k_split=True)
    copies = (" cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [dst], [src], 1024, [rmb];"
              " mbarrier.arrive.expect_tx.shared::cta.b64 _, [a], 7168;"
              " mbarrier.try_wait.parity.shared::cta.b64 p, [a], 0;")
    assert barrier_atomics(cluster + copies, True, "dsmem-push")
    assert not barrier_atomics(cluster + remote, True, "dsmem-push")


LOOP = "%a:2 = scf.for %s = %c1 to %T step %c1 iter_args(%h = %h0) -> (tensor<...>) {\n{body}\n  scf.yield %h\n}\n"


def ttgir(before: str, body: str) -> str:
    return before + "\n" + LOOP.replace("{body}", body)


def test_u_location_tells_registers_from_shared():
    alloc = "%u_39 = ttg.local_alloc %u_38 : (tensor<128x128xf16>) -> !ttg.memdesc<128x128xf16>"
    re_read = ttgir(alloc, "%u_47 = ttg.local_load %u_39 : !ttg.memdesc -> tensor<...>\n"
                           "%a = ttng.warp_group_dot %u_47, %h_5, %xw {isAsync = true}")
    assert u_location(re_read) == "shared"
    a_from_shared = ttgir(alloc, "%a = ttng.warp_group_dot %u_39, %h_5, %xw {isAsync = true}")
    assert u_location(a_from_shared) == "shared"
    view = ttgir(alloc + "\n%v = ttg.memdesc_trans %u_39", "%x = ttg.local_load %v : !ttg.memdesc -> tensor<...>")
    assert u_location(view) == "shared"
    in_registers = ttgir(alloc + "\n%u_47 = ttg.local_load %u_39 : !ttg.memdesc -> tensor<...>",
                         "%h_74 = ttg.local_alloc %h_73\n%a = ttng.warp_group_dot %u_47, %h_74, %xw")
    assert u_location(in_registers) == "registers"
    # A buffer allocated before the loop but written in it (a per-step exchange) is not U.
    exchange = ttgir("%buf = ttg.local_alloc : () -> !ttg.memdesc<128x16xf16>",
                     "%w = ttg.memdesc_index %buf, %i\nttg.local_store %h, %w : tensor<...>\n"
                     "%r = ttg.local_load %w : !ttg.memdesc -> tensor<...>")
    assert u_location(exchange) == "registers"
    # MLIR reuses names in sibling regions: a loop before the time loop may allocate a buffer of the name
    # the time loop gives its own per-step buffer.
    sibling = ttgir("scf.for %i = %a to %b step %c {\n%s_5 = ttg.local_alloc %s_4\n}",
                    "%s_5 = ttg.local_alloc %s_4\n%x = ttg.local_load %s_5 : !ttg.memdesc -> tensor<...>")
    assert u_location(sibling) == "registers"
    assert u_location(sibling.replace("%s_5 = ttg.local_alloc %s_4\n%x", "%x")) == "shared"


def test_u_location_tells_a_streamed_half_of_u():
    """The fma tier at BLOCK_H = 256 loads half of U (streamed_u) in the time loop: 'regs+L1'; shared memory
    still comes first."""
    streamed = "%streamed_u_76 = tt.load %streamed_u_38 evictionPolicy = evict_last : tensor<64x256x!tt.ptr<f32>>"
    assert u_location(ttgir("", streamed)) == "regs+L1"
    assert u_location(ttgir("", streamed.replace("streamed_u", "xw_next"))) == "registers"
    alloc = "%u_39 = ttg.local_alloc %u_38 : (tensor<128x128xf16>) -> !ttg.memdesc<128x128xf16>"
    assert u_location(ttgir(alloc, streamed + "\n%x = ttg.local_load %u_39")) == "shared"


def test_streamed_u_bytes_counts_the_evict_last_loads_of_the_outer_loop():
    listing = sass("LDG.E.EL.128 R4, desc[UR4][R2.64]",                  # before the loop: not counted
                   "LDG.E.EL.128 R4, desc[UR4][R2.64]",                  # 0x10: the loop starts here
                   "LDG.E.EL.64 R8, desc[UR4][R6.64]",
                   "LDG.E R5, desc[UR4][R6.64]",                          # the step's input: not U
                   "LDG.E.EL R9, desc[UR4][R6.64]",
                   "@P2 BRA 0x10",
                   "EXIT")
    assert streamed_u_bytes(time_loop(listing), num_warps=8) == 8 * 32 * (16 + 8 + 4)


def test_tile_loads_counts_the_step_inputs_of_the_time_loop():
    """[BLOCK_N, BLOCK_B] loads in the time loop: a split kernel's xw, or h and dy; not the 3-D state chunks
    nor the tiles of the first step, before the loop."""
    h = "%h_62 = tt.load %h_61, %18, %cst_3 : tensor<16x64x!tt.ptr<bf16>, #blocked1>"
    state = "%state_9 = tt.load %s_8, %m, %c cacheModifier = cg : tensor<8x16x64x!tt.ptr<bf16>, #blocked>"
    step = ttgir(h, "\n".join([h, state, h.replace("%h", "%dy")]))
    assert tile_loads(step, 16, 64) == 2 and tile_loads(step, 16, 16) == 0


def sass(*lines: str) -> str:
    """A cuobjdump -sass listing of these instructions at addresses 0x0, 0x10, ..."""
    return "\n".join(f"        /*{16 * i:04x}*/   {line} ;   /* 0x0 */" for i, line in enumerate(lines))


def test_smem_per_step_counts_the_outer_loop_once():
    listing = sass("LDS.128 R4, [R2]",                                   # before the loop: not counted
                   "LDS.128 R4, [R2]",                                   # 0x10: the loop starts here
                   "@P0 LDSM.16.M88.4 R8, [R3]",
                   "HGMMA.64x16x16.F32.BF16 R24, R60, gdesc[UR8].tnspB, R24",
                   "HGMMA.64x16x16.F32 R24, gdesc[UR4], R24",            # A through a descriptor too
                   "LDG.E R5, desc[UR4][R6.64]",                          # 0x50: an inner spin loop
                   "@P1 BRA 0x50",
                   "LDS.U16 R7, [R2]",
                   "@P2 BRA 0x10",
                   "EXIT")
    loop = time_loop(listing)
    assert loop[0] == "LDS.128 R4, [R2]" and loop[-1] == "BRA 0x10" and len(loop) == 8
    assert [shared_bytes_per_warp(i) for i in loop[:3]] == [512, 512, 0]
    assert shared_bytes_per_warp("LDS R1, [R2]") == 128 and shared_bytes_per_warp("LDSM.16.MT88.2 R1, [R2]") == 256
    assert wgmma_shared_bytes(loop[2]) == 16 * 16 * 2
    assert wgmma_shared_bytes(loop[3]) == 16 * 16 * 2 + 64 * 16 * 2
    assert wgmma_shared_bytes("HGMMA.64x16x8.F32.TF32 R24, R60, gdesc[UR8], R24") == 16 * 8 * 4
    per_warp, per_warpgroup = 512 + 512 + 64, 512 + 512 + 2048
    assert smem_per_step(loop, num_warps=8) == 8 * per_warp + 2 * per_warpgroup
    assert time_loop(sass("LDS R1, [R2]", "EXIT")) == []


def test_stall_cycles_sums_the_stall_counts_of_the_outer_loop():
    """The 4-bit stall count at bits 41-44 of each instruction's second encoding word, over the loop's instructions."""
    def listing(*lines):  # (text, stall count): cuobjdump's two lines an instruction, other control bits set
        return "\n".join(f"        /*{16 * i:04x}*/   {text} ;   /* 0x0000000000007984 */\n"
                         f"                        /* 0x{(0x7f0 | stall) << 41 | 0x400000:016x} */"
                         for i, (text, stall) in enumerate(lines))
    loop = listing(("MOV R1, R2", 9),              # before the loop
                   ("FFMA R1, R2, R3, R1", 4),     # 0x10: the loop
                   ("MUFU.EX2 R4, R1", 1),
                   ("@P0 BRA 0x10", 5),
                   ("EXIT", 15))
    assert stall_cycles(loop) == 4 + 1 + 5
    assert stall_cycles(listing(("EXIT", 3))) == 0


# The fp32 fma forward at H = 128 with each tanh form it can take on a GPU (activations.py), and bf16's
TANH_FORMS = """
import json, torch
from kernels import activations, audit, dispatch, fma
loops = {}
for dtype, ftz in ((torch.float32, True), (torch.float32, False), (torch.bfloat16, True)):
    activations.FTZ_TANH_ON = ftz
    keywords = fma.launch_keywords(dispatch.FMA_CONFIGS[(dtype, 128)].forward, "tanh", dtype, False, False)
    loop = audit.compiled_time_loop(audit.compile_for(fma.fma_forward_kernel, str(dtype), keywords, 90))
    chain = sorted(i.split()[0] for i in loop if i.startswith(("MUFU", "FSETP")))
    loops[f"{dtype} {ftz}"] = [keywords["TANH_FORM"], chain]
print(json.dumps(loops))
"""


def test_fp32_tanh_on_a_gpu_skips_the_range_checks_and_16_bit_takes_one_instruction():
    """FTZ_TANH: ex2 and rcp without the compare that guards each against denormal operands (the one left is the
    sign's); PORTABLE_TANH: with them; APPROX_TANH (16-bit): tanh.approx.f32, one MUFU.TANH a column."""
    loops = json.loads(compiled_without_interpreter(TANH_FORMS))
    assert loops["torch.float32 True"] == ["ftz", ["FSETP.GEU.AND", "MUFU.EX2", "MUFU.RCP"]]
    assert loops["torch.float32 False"][0] == "portable" and len(loops["torch.float32 False"][1]) == 5
    assert loops["torch.bfloat16 True"] == ["approx", ["MUFU.TANH"]]


def test_bar_per_step_counts_the_cta_barriers_of_the_outer_loop():
    listing = sass("BAR.SYNC.DEFER_BLOCKING 0x0",                        # before the loop: not counted
                   "STS.128 [R0], R24",                                  # 0x10: the loop starts here
                   "BAR.SYNC.DEFER_BLOCKING 0x0",
                   "LDSM.16.MT88.4 R12, [R4+UR5]",
                   "@P0 BAR.ARV 0x1, 0x100",
                   "WARPGROUP.ARRIVE",
                   "HGMMA.64x16x16.F32.BF16 R24, R32, gdesc[UR56].tnspB, R24",
                   "WARPGROUP.DEPBAR.LE gsb0, 0x0",
                   "SYNCS.ARRIVE.TRANS64.RED.A1T0 RZ, [UR4], RZ",
                   "MEMBAR.ALL.GPU",
                   "UCGABAR_ARV",
                   "BAR.RED.POPC.DEFER_BLOCKING 0x0, P1",
                   "BAR.SYNC.DEFER_BLOCKING 0x0",
                   "@P2 BRA 0x10",
                   "BAR.SYNC.DEFER_BLOCKING 0x0",                        # after the loop: not counted
                   "EXIT")
    loop = time_loop(listing)
    assert cta_barriers(loop) == 4   # BAR.SYNC twice, BAR.ARV, BAR.RED; not the wgmma fences, SYNCS nor the cluster's
    assert barrier_kinds(loop) == ("BAR.SYNC.DEFER_BLOCKING x2, BAR.ARV x1, WARPGROUP.ARRIVE x1, "
                                   "WARPGROUP.DEPBAR.LE x1, SYNCS.ARRIVE.TRANS64.RED.A1T0 x1, MEMBAR.ALL.GPU x1, "
                                   "UCGABAR_ARV x1, BAR.RED.POPC.DEFER_BLOCKING x1")
    assert cta_barriers(time_loop(sass("BAR.SYNC 0x0", "EXIT"))) == 0 and barrier_kinds([]) == ""
    assert mma_instructions(loop) == 1 and wgmma_waits(loop) == 1
    assert l2_prefetches(loop) == 0 and l2_prefetches(["CCTL.E.PF2 [R20]", "CCTL.IVALL", "LDG.E R5, [R6.64]"]) == 1
    assert mma_instructions(["HMMA.1688.F32.TF32 R20, R28, R76, R20", "HFMA2 R1, R2, R3, R4",
                             "HGMMA.64x32x8.F32.TF32 R24, R60, gdesc[UR8], R24"]) == 2


@pytest.mark.parametrize("loop,allowed", [
    (["LDG.E R2, [R4.64]", "FFMA R1, R2, R3, R1", "BAR.SYNC.DEFER_BLOCKING 0x0", "STG.E [R6.64], R1"], True),
    (["STG.E [R6.64], R1", "LDG.E R2, [R4.64]", "BAR.SYNC.DEFER_BLOCKING 0x0"], True),   # round the loop
    (["BAR.SYNC.DEFER_BLOCKING 0x0", "STG.E [R6.64], R1", "LDG.E R2, [R4.64]"], True),   # round the loop, first
    (["LDG.E.EL.128 R8, [R10.64]", "STG.E [R6.64], R1"], True),            # U's streamed half is not a step input
    (["LDG.E R2, [R4.64]", "STG.E [R6.64], R1", "BAR.SYNC.DEFER_BLOCKING 0x0"], False),
    (["LDG.E R2, [R4.64]", "BAR.ARV 0x1, 0x100", "STG.E [R6.64], R1"], False),  # an arrival waits for no one
    (["LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "LDG.E R3, [R5.64]", "STG.E [R6.64], R1"], False),  # the second load
    (["LDG.E R2, [R4.64]", "STG.E [R6.64], R1"], False),                     # no barrier at all
])
def test_output_over_input_wants_a_waiting_barrier_between_each_load_and_the_next_store(loop, allowed):
    assert output_over_input(loop) == allowed


@pytest.mark.parametrize("tier", PERSISTENT_TIERS)
def test_the_audit_specialises_the_integers_as_the_jit_does_a_forward_directions_launch(tier):
    """Triton compiles an integer argument equal to 1 as a constant and marks one divisible by 16; the audit's
    compiles must do the same for what a layer's forward direction passes (T = 1024, B = 8, H = 64): its forward
    steps with t_step = 1 from t_first = 0, its backward with t_step = -1 from t_first = T - 1."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    from kernels.audit import _typical_integers
    for kernel, forward in zip(TIERS[tier].kernels, (True, False)):
        launch = {"T": 1024, "B": 8, "H": 64, "t_first": 0 if forward else 1023, "t_step": 1 if forward else -1}
        constants, multiples_of_16 = _typical_integers(kernel)
        for arg, value in launch.items():
            if arg not in kernel.arg_names:
                continue
            kind, attribute = native_specialize_impl(BaseBackend, value, False, True, True)
            audited = ("constexpr", constants[arg]) if arg in constants else ("i32", "D" if arg in multiples_of_16
                                                                               else "")
            assert audited == (kind, attribute), (kernel.__name__, arg)


def test_straight_line_wants_a_time_loop_with_no_branch_inside_and_every_barrier_taken():
    """output_over_input reads the time loop as one sequence: an inner loop, a forward branch (which could skip the
    barrier between a load and a store) or a barrier under a predicate would break that reading."""
    one = sass("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "@P0 BRA 0x0", "EXIT")
    inner = sass("LDG.E R2, [R4.64]", "STG.E [R6.64], R1", "@P1 BRA 0x10", "BAR.SYNC 0x0", "@P0 BRA 0x0", "EXIT")
    skip = sass("LDG.E R2, [R4.64]", "@P1 BRA 0x30", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "@P0 BRA 0x0", "EXIT")
    predicated = sass("LDG.E R2, [R4.64]", "@!P1 BAR.SYNC 0x0", "STG.E [R6.64], R1", "@P0 BRA 0x0", "EXIT")
    before = sass("LDG.E R2, [R4.64]", "@P1 BRA 0x0", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "@P0 BRA 0x20", "EXIT")
    assert straight_line(one) and straight_line(before)  # a loop before the time loop is not inside it
    assert not straight_line(inner) and not straight_line(skip) and not straight_line(predicated)
    assert not straight_line(sass("LDG.E R2, [R4.64]", "EXIT"))  # no time loop: nothing shown
    # sm_80 leaves a loop by a call to the EXIT after it, just before the back edge: its condition, not a skip
    exit_at_end = sass("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "@!P0 CALL.REL.NOINC 0x50",
                       "BRA 0x0", "EXIT")
    exit_within = sass("LDG.E R2, [R4.64]", "@!P0 CALL.REL.NOINC 0x50", "BAR.SYNC 0x0", "STG.E [R6.64], R1",
                       "BRA 0x0", "EXIT")
    assert straight_line(exit_at_end) and not straight_line(exit_within)
    assert output_over_input(time_loop(skip))  # what the linear reading alone would have let through


def test_first_step_ordered_wants_the_peeled_steps_loads_before_a_barrier_that_precedes_its_store():
    """The first step, peeled out of the time loop, stores over its input too: on every path from the kernel's entry
    (through the loop or round it), every load needs a waiting barrier before the next store."""
    loop = ["BAR.SYNC 0x0", "STG.E [R6.64], R1", "LDG.E R2, [R4.64]"]  # the loop at 0x40..0x70, its back edge 0x70
    ordered = sass("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "LDG.E R3, [R5.64]", *loop, "@P0 BRA 0x40",
                   "EXIT")
    assert straight_line(ordered) and first_step_ordered(ordered)  # the step-ahead load meets the loop's barrier
    # step 1's input loaded only where T > 1 (a branch around a load alone), then an EXIT where T = 1
    guarded = sass("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "@!P1 BRA 0x50", "LDG.E R3, [R5.64]",
                   "@!P4 EXIT", *loop, "@P0 BRA 0x60", "EXIT")
    assert first_step_ordered(guarded)
    unordered = sass("LDG.E R2, [R4.64]", "STG.E [R6.64], R1", "BAR.SYNC 0x0", "LDG.E R3, [R5.64]", *loop,
                     "@P0 BRA 0x40", "EXIT")
    around = sass("LDG.E R2, [R4.64]", "@P1 BRA 0x30", "BAR.SYNC 0x0", "STG.E [R6.64], R1", *loop, "@P0 BRA 0x40",
                  "EXIT")
    predicated = sass("LDG.E R2, [R4.64]", "@P1 BAR.SYNC 0x0", "STG.E [R6.64], R1", "LDG.E R3, [R5.64]", *loop,
                      "@P0 BRA 0x40", "EXIT")
    ahead_unordered = sass("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "LDG.E R3, [R5.64]",
                           "STG.E [R6.64], R1", "BAR.SYNC 0x0", "LDG.E R2, [R4.64]", "@P0 BRA 0x40", "EXIT")
    for listing in (unordered, around, predicated, ahead_unordered):
        assert not first_step_ordered(listing)
    assert output_over_input(time_loop(unordered))  # the loop alone would not have shown it
    # where T = 1 the loop is skipped for the code after it (the resident backward's dh0): a store there needs a
    # barrier after the loads before it, as on the way through the loop
    skipped = ("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "LDG.E R3, [R5.64]", "@!P1 BRA 0x90", *loop,
               "@P0 BRA 0x50")
    assert first_step_ordered(sass(*skipped, "BAR.SYNC 0x0", "STG.E [R8.64], R9", "EXIT"))
    assert not first_step_ordered(sass(*skipped, "STG.E [R8.64], R9", "BAR.SYNC 0x0", "EXIT"))
    assert not first_step_ordered(sass(*skipped[:4], "@!P1 BRA 0x400", *loop, "@P0 BRA 0x50", "EXIT"))  # jump nowhere
    # sm_80 leaves the loop by a call to the EXIT after it: the walk follows the call and what follows it
    called = ("LDG.E R2, [R4.64]", "BAR.SYNC 0x0", "STG.E [R6.64], R1", "LDG.E R3, [R5.64]", *loop,
              "@!P0 CALL.REL.NOINC 0x90", "BRA 0x40")
    assert first_step_ordered(sass(*called, "EXIT"))
    assert not first_step_ordered(sass(*called, "STG.E [R8.64], R9", "EXIT"))  # the loop's last load, then a store
    assert not first_step_ordered(sass("LDG.E R2, [R4.64]", "EXIT"))  # no time loop: nothing shown


def test_h_allowance_is_per_mma_issuer_and_pass():
    wgmma, mma_sync = ["HGMMA.64x16x16.F32 R24, R60, gdesc[UR8], R24"], ["HMMA.16816.F32 R20, R28, R76, R20"]
    assert h_allowance(wgmma, num_warps=8, h_bytes=4096, passes=1) == 2 * 4096   # two warpgroups
    assert h_allowance(mma_sync, num_warps=8, h_bytes=4096, passes=1) == 8 * 4096
    assert h_allowance(wgmma, num_warps=8, h_bytes=8192, passes=3) == 2 * 8192 * 3
    # K split over 8 warps: each reads its chunk of h; their 8 fp32 partial products are read back twice.
    assert h_allowance(mma_sync, num_warps=8, h_bytes=32768, passes=1, k_split=8, partial_bytes=2048) == \
        32768 + 2 * 8 * 2048
    # Every warp holds the sum, so each reads the step's input tiles (here h and dy, 1 KiB each).
    assert h_allowance(mma_sync, num_warps=8, h_bytes=32768, passes=1, k_split=8, partial_bytes=2048,
                       tile_bytes=2048) == 32768 + 2 * 8 * 2048 + 8 * 2048


def test_the_audit_flags_a_kernel_that_re_reads_u_every_step():
    facts = json.loads(compiled_without_interpreter(
        "import json; from u_in_shared import audit_facts; print(json.dumps(audit_facts()))"))
    u_bytes = 128 * 128 * 2
    assert facts["u_hoisted"] == "yes" and facts["u_in"] == "shared"
    assert facts["smem_per_step"] - facts["h_allowance"] > RE_READ_LIMIT * u_bytes


L2_PREFETCH_FACTS = """
import json
from kernels import audit
facts = {}
for job in audit.audit_jobs(dtype="bfloat16", nonlinearity="tanh", arch=90):
    if (job.tier, job.keywords.get("BLOCK_H")) in (("resident", 16), ("fma", 128)):  # both forms: launches pick one
        facts[f"{job.kernel} {job.keywords['L2_PREFETCH_STEPS']}"] = audit.compile_one(job).prefetch_per_step
print(json.dumps(facts))
"""


def test_l2_prefetch_is_in_the_time_loop_on_a_gpu_only(monkeypatch):
    """prefetch.L2_PREFETCH_STEPS puts L2 prefetches in the resident and fma kernels' time loops (one per input: xw;
    h and dy backward; checked on the smallest bf16 resident configuration and the fma tier's 16-bit one, sm_90), none
    in the form without (the audit compiles both, as each launch picks one: prefetch.prefetch_distance), and
    launch_keywords leaves the inline PTX out of interpreted launches (and of the resident tier's fp32, where it
    spills)."""
    facts = json.loads(compiled_without_interpreter(L2_PREFETCH_FACTS))
    assert facts == {f"{tier}_{kernel}_kernel {steps}": (0 if steps == 0 else 1 if kernel == "forward" else 2)
                     for tier in ("resident", "fma") for kernel in ("forward", "backward") for steps in (0, 4)}
    monkeypatch.setattr(prefetch, "L2_PREFETCH_STEPS", 16)
    for tier, blocks in (("resident", RESIDENT_CONFIGS[(torch.bfloat16, 16)].forward),
                         ("fma", FMA_CONFIGS[(torch.float32, 128)].forward)):
        for backward in (False, True):
            for interpreted, steps in ((False, 16), (True, 0)):
                keywords = TIERS[tier].launch_keywords(blocks, "tanh", torch.bfloat16, interpreted, backward)
                assert keywords["L2_PREFETCH_STEPS"] == steps
            fp32 = TIERS[tier].launch_keywords(blocks, "tanh", torch.float32, False, backward)
            assert fp32["L2_PREFETCH_STEPS"] == (16 if tier == "fma" else 0)


STEP_LOOPS = """
import json
from kernels import audit
loops = {}
for job in audit.audit_jobs(dtype="float32", nonlinearity="tanh", arch=90):
    if job.kernel == "step_kernel":
        compiled = audit.compile_for(audit._kernel(job.tier, job.kernel), job.dtype, job.keywords, job.arch)
        loop = audit.compiled_time_loop(compiled)
        key = f"{job.keywords['BLOCK_N']} {'backward' if job.keywords['BACKWARD'] else 'forward'}"
        loops[key] = sorted(instruction.split()[0] for instruction in loop)
print(json.dumps(loops))
"""


def test_the_fp32_step_kernels_forward_k_loop_is_the_backwards():
    """Both passes read the product's operand row-major (stepwise.py): the forward's K loop issues the very
    instructions of the backward's, at every column width (sm_90). Read as U's columns, the forward's FMA product
    read its staged slice from one shared-memory bank: 150 us per step on an H200, where forward+backward took 190."""
    loops = json.loads(compiled_without_interpreter(STEP_LOOPS))
    assert {key.split()[0] for key in loops} == {str(n) for n in STEPWISE_BLOCK_N}
    for n in STEPWISE_BLOCK_N:
        assert loops[f"{n} forward"] and loops[f"{n} forward"] == loops[f"{n} backward"], n


FMA_SPLIT_LOOP = """
import dataclasses, json, torch
from kernels import audit, split
from kernels.dispatch import SPLIT_CONFIGS
blocks = SPLIT_CONFIGS[(torch.float32, 2048)].forward
keywords = split.launch_keywords(dataclasses.replace(blocks, ONE_TILE=True), "tanh", torch.float32, False, False)
compiled = audit.compile_for(split.split_forward_kernel, "torch.float32", keywords, 90)
loop = audit.compiled_time_loop(compiled)
print(json.dumps({"opcodes": [i.split()[0].split(".")[0] for i in loop], **blocks.keywords()}))
"""


def test_the_fp32_split_product_at_h2048_multiplies_each_element_of_u_once_per_batch_row():
    """The split tier by FMA (SplitBlocks.FMA): per step, one FFMA (or the FMUL that starts a sum) for each of the
    slice's BLOCK_N x BLOCK_H elements and each of the tile's BLOCK_B rows, spread over the threads with none done
    twice, and no MMA. (That U is held once, not once per lane along the batch, is the audit's no-spill check: 128
    KiB a program fills 16 warps' registers by half.)"""
    loop = json.loads(compiled_without_interpreter(FMA_SPLIT_LOOP))
    products = loop["BLOCK_N"] * loop["BLOCK_H"] * loop["BLOCK_B"] // (32 * loop["num_warps"])
    multiplies = sum(op in ("FFMA", "FMUL") for op in loop["opcodes"])
    assert loop["FMA"] and products <= multiplies <= 1.1 * products, (products, multiplies)
    assert not {"HMMA", "HGMMA"} & set(loop["opcodes"])


FMA_TIER_LOOPS = """
import json, torch
from kernels import audit, fma
from kernels.dispatch import FMA_CONFIGS
loops = {}
for block_h in (128, 256):
    blocks = FMA_CONFIGS[(torch.float32, block_h)].forward
    for backward, kernel in ((False, fma.fma_forward_kernel), (True, fma.fma_backward_kernel)):
        keywords = fma.launch_keywords(blocks, "tanh", torch.float32, False, backward)
        compiled = audit.compile_for(kernel, "torch.float32", keywords, 90)
        loops[f"{block_h} {backward}"] = audit.compiled_time_loop(compiled)
print(json.dumps(loops))
"""


def longest_float_chain(loop: list[str]) -> int:
    """The most FFMA/FADD/FMUL of these instructions in a row of which each reads the one before's result (the most
    seen: a register whose chain ended may be written again later)."""
    depth: dict[int, int] = {}
    longest = 0
    for instruction in loop:
        written = re.match(r"(\S+)\s+R(\d+)\b", instruction)
        if not written:
            continue
        opcode, destination = written.group(1), int(written.group(2))
        if opcode.split(".")[0] in ("FFMA", "FADD", "FMUL"):
            sources = re.findall(r"\bR(\d+)\b", instruction[written.end():])
            depth[destination] = 1 + max((depth.get(int(r), 0) for r in sources), default=0)
            longest = max(longest, depth[destination])
        else:  # a load or anything else starts afresh, in every register a vector load writes
            width = 4 if ".128" in opcode else 2 if ".64" in opcode else 1
            depth.update({destination + i: 0 for i in range(width)})
    return longest


def test_longest_float_chain_follows_results_not_sources():
    listing = ["FMUL R1, R10, R11", "FFMA R2, R12, R13, R1", "LDS.64 R0, [UR4]", "FFMA R3, R14, R15, R2",
               "FFMA R4, R16, R17, R1"]
    assert longest_float_chain(listing) == 3  # R1 -> R2 -> R3; R4 reads R1 as the vector load left it
    assert longest_float_chain(listing + ["MOV R3, RZ"]) == 3  # a chain's end register written again afterwards


def test_the_fma_tiers_threads_hold_whole_columns_and_meet_once_a_step():
    """The fma tier's threads each hold whole columns of the operand (fma.by_columns), so a step sums nothing
    across lanes or warps: per thread one FFMA (or the FMUL that starts a run) per k, no shuffle, and the new
    state reaches every thread through shared memory at one store-barrier-load (plus the barrier that lets
    the store reuse the buffer). Each thread sums its k in independent runs, so the FFMAs' latency overlaps.
    Every warp reads it at one address per load, a broadcast (a uniform register):
    that is what lets the audit count each lane's read of the whole state as reading h (sm_90, forward and
    backward, held at 128 and half streamed at 256)."""
    for key, loop in json.loads(compiled_without_interpreter(FMA_TIER_LOOPS)).items():
        block_h = int(key.split()[0])
        opcodes = [i.split()[0].split(".")[0] for i in loop]
        multiplies = sum(op in ("FFMA", "FMUL") for op in opcodes)
        assert block_h <= multiplies <= 1.1 * block_h, (key, multiplies)
        assert cta_barriers(loop) <= 2 and "SHFL" not in opcodes, key
        shared_loads = [i for i in loop if i.startswith("LDS")]
        assert len(shared_loads) == block_h // 4, key  # the state, 16 bytes a load
        assert all(re.search(r"\[UR\d+(\+0x[0-9a-f]+)?\]", i) for i in shared_loads), key
        # k summed in CHAINS independent runs: no FFMA waits on more than a run's worth, plus the few that join
        # the runs and the activation's
        run = min(block_h, HELD_MAX_BLOCK_H) // CHAINS
        assert CHAINS >= 4 and run < longest_float_chain(loop) <= run + 12, (key, longest_float_chain(loop))


RESIDENT_IO_LOOPS = """
import json, torch
from kernels import audit, layouts, resident
from kernels.dispatch import RESIDENT_CONFIGS
blocks = RESIDENT_CONFIGS[(torch.bfloat16, 256)].forward
barriers = {}
for converted in ("all", "none"):
    layouts.PRODUCT_TO_IO_LAYOUT = converted
    for backward, kernel in ((False, resident.resident_forward_kernel), (True, resident.resident_backward_kernel)):
        keywords = resident.launch_keywords(blocks, "tanh", torch.bfloat16, False, backward)
        loop = audit.compiled_time_loop(audit.compile_for(kernel, "torch.bfloat16", keywords, 90))
        switches = [keywords["ACC_LAYOUT_IO"], keywords["IN_IO_LAYOUT"]]
        barriers[f"{converted} {backward}"] = [*switches, audit.cta_barriers(loop)]
print(json.dumps(barriers))
"""


def test_the_resident_step_converts_its_product_once_not_its_tiles():
    """With layouts.PRODUCT_TO_IO_LAYOUT covering the dtype (where the tiles are not loaded in the accumulator's
    layout: bf16 at H = 256, sm_90, resident.FRAGMENT_IO off), the step's elementwise work is done in the layout of
    its coalesced loads and stores: the product passes through shared memory once (2 CTA barriers), beside h on its
    way to the next MMA (2 more). Without, the input tiles are converted into the product's layout and the output
    tile back: 2 barriers each."""
    barriers = json.loads(compiled_without_interpreter(RESIDENT_IO_LOOPS))
    assert barriers == {"all False": [False, True, 4], "all True": [False, True, 4],  # forward: xw, y
                        "none False": [False, False, 6], "none True": [False, False, 8]}  # backward: h, dy, da


RESIDENT_FRAGMENT_LOOPS = """
import json, torch
from kernels import audit, resident
from kernels.dispatch import RESIDENT_CONFIGS
resident.FRAGMENT_IO = True  # not the default until its GPU tests pass
loops = {}
for block_h in (64, 256):
    config = RESIDENT_CONFIGS[(torch.bfloat16, block_h)]
    for arch in (80, 90):
        for backward, kernel in ((False, resident.resident_forward_kernel), (True, resident.resident_backward_kernel)):
            keywords = resident.launch_keywords(config.backward if backward else config.forward, "tanh",
                                                torch.bfloat16, False, backward)
            loop = audit.compiled_time_loop(audit.compile_for(kernel, "torch.bfloat16", keywords, arch))
            opcodes = [i.split()[0] for i in loop]
            loops[f"{block_h} sm_{arch} {'backward' if backward else 'forward'}"] = {
                "fragments": keywords["FRAGMENTS"], "barriers": audit.cta_barriers(loop),
                "shuffles": sum(op.startswith("SHFL") for op in opcodes),
                "loads": sorted(op for op in opcodes if op.startswith("LDG")),
                "stores": sorted(op for op in opcodes if op.startswith("STG"))}
print(json.dumps(loops))
"""


def test_the_resident_step_in_fragment_order_converts_no_tile():
    """With resident.FRAGMENT_IO (16-bit, fragments.fits) the step's tiles arrive in the MMA accumulator's layout as
    loaded (kernels/fragments.py): one 16-byte load per input and thread, one 16-byte store, no shuffle, and only the
    2 CTA barriers of h on its way to the next MMA, on sm_80's mma.sync and sm_90's wgmma alike."""
    loops = json.loads(compiled_without_interpreter(RESIDENT_FRAGMENT_LOOPS))
    assert len(loops) == 8
    for key, loop in loops.items():
        inputs = 2 if key.endswith("backward") else 1  # h and dy, or xw
        assert loop == {"fragments": True, "barriers": 2, "shuffles": 0, "loads": ["LDG.E.128"] * inputs,
                        "stores": ["STG.E.128"]}, key


def test_an_audit_in_another_process_gets_this_processs_kernel_switches(monkeypatch):
    """switch_arguments (what rnnbench profile passes to its audit subprocess) names every switch, and
    the audit's main sets them from those arguments."""
    from kernels import activations, audit, dispatch, fma, layouts, split
    switches = [(resident, "FP32_PRODUCT", "one-dot-m", "tf32x3"), (resident, "FRAGMENT_IO", True, False),
                (dispatch, "B_HH_IN_KERNEL", False, True), (prefetch, "L2_PREFETCH_STEPS", 16, 4),
                (activations, "FTZ_TANH_ON", False, True), (fma, "READ_U_ITSELF", False, True),
                (fma, "INTERLEAVED_CHAINS", False, True),
                (layouts, "PRODUCT_TO_IO_LAYOUT", "all", "fp32"), (split, "INPUTS_AHEAD", False, True),
                (split, "INPUTS_AFTER_ARRIVAL", False, True), (split, "IN_THREAD_SUM", False, True),
                (dispatch, "SPLIT_TILE_LOOP_STAGES", 3, 1), (dispatch, "SPLIT_LOOPED_BLOCK_B", 8, 16),
                (dispatch, "SPLIT_CLUSTERS", True, False),
                (dispatch, "SPLIT_CLUSTER_EXCHANGE", "dsmem-push", "l2"), (dispatch, "SPLIT_K_CLUSTER", 4, 1)]
    assert {(s.module, s.name) for s in audit.kernel_switches()} == {(m, n) for m, n, _, _ in switches}
    for module, name, on, _ in switches:
        monkeypatch.setattr(module, name, on)
    arguments = audit.switch_arguments()
    assert arguments == ["--fp32-product", "one-dot-m", "--resident-fragments", "--b-hh-summed",
                         "--l2-prefetch-steps", "16",
                         "--product-to-io-layout", "all",
                         "--portable-tanh", "--fma-u-copied", "--fma-chains-in-runs",
                         "--split-inputs-in-step", "--split-inputs-before-arrival", "--split-tl-sum",
                         "--split-tile-loop-stages", "3", "--split-looped-block-b", "8", "--split-clusters",
                         "--split-cluster-exchange", "dsmem-push", "--split-k-cluster", "4"]
    for module, name, _, off in switches:
        monkeypatch.setattr(module, name, off)
    with pytest.raises(SystemExit):  # no plan of that name: main stops once it has set the switches
        audit.main(["--plan", "no-such-plan", *arguments])
    assert [getattr(module, name) for module, name, _, _ in switches] == [on for _, _, on, _ in switches]


def audit_in_a_subprocess(tmp_path, *args: str, timeout: int = 1800) -> tuple[list[dict], str]:
    """(the JSON rows, the printed table) of `python -m kernels.audit ARGS`, compiled (TRITON_INTERPRET unset), which
    must exit 0: no configuration failed."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    report = tmp_path / "audit.json"
    proc = subprocess.run([sys.executable, "-m", "kernels.audit", *args, "--json", str(report)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    return json.loads(report.read_text()), proc.stdout


@pytest.mark.parametrize("exchange", ["l2", "dsmem-pull", "dsmem-push"])
def test_the_cluster_configurations_compile_clean_with_the_cluster_barrier(exchange, tmp_path, monkeypatch):
    """The audit with --split-clusters (what .ci/gpu_variants.py split-clusters launches): the 64-row slices of
    H = 256, 512 and 1024 compile for sm_90 without spills in either activation, with U in registers, and meet at the
    cluster barrier (barrier.cluster with release and acquire), not the grid barrier's atomics. With
    --split-cluster-exchange dsmem-pull or dsmem-push (the variants split-dsmem-pull, -push), their state passes
    through distributed shared memory: what that exchange needs is there too, and pull's arrival releases only its
    shared memory, so that its time loop waits on no gpu-scope fence (MEMBAR.ALL.GPU), which the state through L2
    needs. Only the cluster plans are compiled (the full audit covers the rest)."""
    from kernels import audit
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTER_EXCHANGE", exchange)
    plans = sorted({j.plan for j in audit.audit_jobs(dtype="bfloat16", arch=90) if j.keywords.get("CLUSTER", 1) > 1})
    rows = [row for plan in plans for row in audit_in_a_subprocess(
        tmp_path, "--split-clusters", "--split-cluster-exchange", exchange, "--plan", plan, "--dtype", "bfloat16",
        "--arch", "90", timeout=600)[0]]
    clustered = [r for r in rows if ",CLUSTER=1," not in r["config"] and r["tier"] == "split"]
    assert sorted((r["block_h"], r["kernel"], r["nonlinearity"]) for r in clustered) == [
        (bh, k, act) for bh in (256, 512, 1024) for k in ("split_backward_kernel", "split_forward_kernel")
        for act in ("relu", "tanh")]
    for r in clustered:
        assert r["status"] == "ok" and r["spill_bytes"] == 0 and r["u_in"] == "registers", r
        assert r["barrier_atomics"] == "yes", r
        assert f"EXCHANGE={exchange}," in r["config"], r
        assert ("MEMBAR.ALL.GPU" in r["barrier_kinds"]) == (exchange == "l2"), r


def test_the_fp32_cluster_configuration_holds_u_in_registers_and_meets_at_the_cluster_barrier(tmp_path, monkeypatch):
    """fp32 at H = 256 with --split-clusters: clusters of 4 programs, each holding a 64-column slice of U in registers
    and multiplying it by FMA (no MMA), compile for sm_90 without spills in either activation and meet at the
    cluster barrier."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    plan = dispatch.plan_for(256, 8, torch.float32)
    rows, _ = audit_in_a_subprocess(tmp_path, "--split-clusters", "--plan", plan.name, "--arch", "90", timeout=600)
    assert sorted((r["kernel"], r["nonlinearity"]) for r in rows) == [
        (k, act) for k in ("split_backward_kernel", "split_forward_kernel") for act in ("relu", "tanh")]
    for r in rows:
        assert (r["status"], r["spill_bytes"], r["u_in"], r["mma_per_step"], r["barrier_atomics"]) == (
            "ok", 0, "registers", 0, "yes"), r
        assert ",CLUSTER=4," in r["config"] and "FMA=True" in r["config"] and r["u_bytes"] == 64 * 256 * 4, r


def test_the_k_split_over_clusters_of_4_compiles_clean_with_u_in_registers(tmp_path, monkeypatch):
    """The audit with --split-k-cluster 4 (what .ci/gpu_variants.py split-k-cluster-4 launches): at H = 2048 the
    forward's programs hold their cluster's 128 columns over a quarter of K (the same 128 KiB of U), compile for sm_90
    in either activation without spills with U in registers, meet at the grid barrier (its atomics) and sum their
    partial products through distributed shared memory, and so do the backward's with U's columns. The time loop's
    one gpu-scope fence (MEMBAR.ALL.GPU) is the grid barrier's: each tile's cluster barrier releases only the
    program's shared memory, and does not wait for the tile's output store or the next tile's loads in flight."""
    monkeypatch.setattr(dispatch, "SPLIT_K_CLUSTER", 4)
    plan = dispatch.plan_for(2048, 256, torch.bfloat16)
    rows, _ = audit_in_a_subprocess(tmp_path, "--split-k-cluster", "4", "--plan", plan.name, "--dtype", "bfloat16",
                                    "--arch", "90", timeout=900)
    assert sorted((r["kernel"], r["nonlinearity"]) for r in rows) == [
        (kernel, nonlinearity) for kernel in ("split_backward_kernel", "split_forward_kernel")
        for nonlinearity in ("relu", "tanh")]
    for r in rows:
        assert (r["status"], r["spill_bytes"], r["u_in"], r["barrier_atomics"], r["u_bytes"]) == (
            "ok", 0, "registers", "yes", 32 * 2048 * 2), r
        assert "K_CLUSTER=4," in r["config"], r
        kinds = r["barrier_kinds"]
        assert "MEMBAR.ALL.GPU x1," in kinds and "MEMBAR.ALL.CTA x1," in kinds and "UCGABAR_ARV x1," in kinds, r


def test_the_audit_lists_each_shared_access_of_a_time_loop_with_its_wavefronts(tmp_path):
    """--shared-accesses: after the table, each persistent kernel's time-loop accesses (banks.py), one line each:
    the split forward at H = 1024, B = 16 with tl.sum over the warps, whose 16-way conflicted stores and reads add up
    to Nsight Compute's 960 conflict wavefronts a step."""
    plan = dispatch.plan_for(1024, 16, torch.bfloat16)
    _, out = audit_in_a_subprocess(tmp_path, "--plan", plan.name, "--dtype", "bfloat16", "--arch", "90",
                                   "--nonlinearity", "tanh", "--split-tl-sum", "--shared-accesses", timeout=600)
    forward = next(block for block in out.split("\n\n") if block.startswith("split_forward_kernel bf16 sm_90 tanh"))
    rows = [line.split(None, 4) for line in forward.splitlines()[2:]]
    assert all(len(row) == 5 and row[0].isdigit() for row in rows), forward
    assert ["128", "8", "120"] in [row[1:4] for row in rows if "st.shared.b32" in row[4]], forward
    assert sum(int(row[3]) for row in rows) == 960


def test_every_dispatchable_configuration_compiles_clean(tmp_path):
    rows, table = audit_in_a_subprocess(tmp_path)
    columns = ("regs", "t i64", "smem/step", "wf/step", "conf/step", "bar/step", "mma/step", "instr/step", "stall/step",
               "configurations:")
    assert all(word in table for word in columns)
    # Coverage: every fma, resident and split (dtype, BLOCK_H) each target can get (resident: from its minimum
    # arch on; split: a slice per SM) and the stepwise kernel of every dtype, both activations, both passes.
    def covered(tier):
        return {(r["kernel"], r["dtype"], r["block_h"], r["arch"], r["nonlinearity"])
                for r in rows if r["tier"] == tier}
    assert len(covered("fma")) == len(FMA_CONFIGS) * len(SM_COUNT) * 2 * 2
    resident = sum(resident_served(dt, bh, arch) for dt, bh in RESIDENT_CONFIGS for arch in SM_COUNT)
    assert len(covered("resident")) == resident * 2 * 2
    # fragment order (resident.FRAGMENT_IO) is off until its GPU tests pass: the next test audits it
    assert not any("FRAGMENTS=True" in r["config"] for r in rows)
    split = sum(any(-(-bh // c.forward.BLOCK_N) <= SM_COUNT[arch] for c in split_configs(dt, bh, arch))
                for dt, bh in SPLIT_CONFIGS for arch in SM_COUNT)
    assert len(covered("split")) == split * 2 * 2
    for arch in SM_COUNT:  # H = 2048 on an A100's 108 SMs too: SPLIT_LOOPED_CONFIGS' 64 slices
        assert {r["block_h"] for r in rows if r["tier"] == "split" and r["arch"] == arch} == {128, 256, 512, 1024, 2048}
    assert sum(r["kernel"] == "step_kernel" for r in rows) == len(SUPPORTED_DTYPES) * len(STEPWISE_BLOCK_N) * 2 * 2 * 2
    for r in rows:
        check_audited(r)


def check_audited(r: dict) -> None:
    """What every configuration's audit row must show: compiled clean, U where its tier keeps it, the per-step figures
    within the issues' bounds, stores over input only where a kernel means to make them."""
    assert r["status"] == "ok" and r["spill_bytes"] == 0, r
    assert r["registers"] > 0 and r["shared"] <= r["shared_limit"]
    if r["tier"] in PERSISTENT_TIERS:
        # smem/step is -1 when no time loop was found; 0 is real (BLOCK_H = 16 forward: h stays in registers)
        assert r["u_hoisted"] == "yes" and r["smem_per_step"] >= 0, r
        # U in registers, but for the fma tier's BLOCK_H = 256: half held, half streamed through L1 each step
        streamed = r["tier"] == "fma" and r["block_h"] > HELD_MAX_BLOCK_H
        assert r["u_in"] == ("regs+L1" if streamed else "registers"), r
        assert r["u_l1_per_step"] == (r["u_bytes"] // 2 if streamed else 0), r
        assert min(r["bar_per_step"], r["mma_per_step"], r["waits_per_step"]) >= 0, r  # fp64 has no MMA
        assert r["stall_cycles"] >= r["loop_instructions"] > 0, r
        # no shared-memory bank conflicts (banks.py) but where a split kernel's warps' partial products are
        # summed by tl.sum over the warps: fp32's pipelined tile loop on sm_80 (SplitBlocks.IN_THREAD_SUM)
        assert r["bank_conflicts"] == 0 or "IN_THREAD_SUM=False" in r["config"], r
        assert r["smem_wavefronts"] >= r["bank_conflicts"], r
        if r["tier"] == "resident" and r["dtype"] != "fp64":  # test_the_resident_step_converts_... says why
            converted = {"FRAGMENTS=True": 2, "ACC_LAYOUT_IO=True": 2, "IN_IO_LAYOUT=True": 4}
            assert r["bar_per_step"] <= next((n for k, n in converted.items() if k in r["config"]), 8), r
        if r["tier"] == "split" or r["block_h"] >= RE_READ_MIN_BLOCK_H:
            assert r["smem_per_step"] - r["h_allowance"] <= RE_READ_LIMIT * r["u_bytes"], r
    assert r["barrier_atomics"] == ("yes" if r["tier"] == "split" else "n/a"), r
    # stored over their input: the fma forward and fp32's resident forward (over xw, where spared), the resident
    # kernels in fragment order
    in_place = ((r["tier"] == "fma" and "forward" in r["kernel"]) or "FRAGMENTS=True" in r["config"]
                or (r["kernel"] == "resident_forward_kernel" and r["dtype"] == "fp32"))
    assert r["in_place"] == ("yes" if in_place else "n/a"), r
    # every step's offset t * B * H in 64 bits (test_offsets.py); the step kernel has none
    assert r["offsets_i64"] == ("yes" if r["tier"] in PERSISTENT_TIERS else "n/a"), r


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_resident_configurations_in_fragment_order_compile_clean(dtype, tmp_path):
    """--resident-fragments (resident.FRAGMENT_IO, off until its GPU tests pass): every 16-bit resident configuration
    from BLOCK_H = 64 takes fragment order, and is audited in the form its launchers convert the tiles in too, where
    fragment order would pad a call's tensors too much (fragments.within_padding_bound)."""
    rows, _ = audit_in_a_subprocess(tmp_path, "--resident-fragments", "--dtype", dtype)
    def in_form(fragment_order: bool):
        return {(r["kernel"], r["block_h"], r["arch"], r["nonlinearity"])
                for r in rows if f"FRAGMENTS={fragment_order}" in r["config"]}
    assert in_form(True) == {(r["kernel"], r["block_h"], r["arch"], r["nonlinearity"])
                             for r in rows if r["tier"] == "resident" and r["block_h"] >= 64}
    assert in_form(True) <= in_form(False)
    for r in rows:
        check_audited(r)
