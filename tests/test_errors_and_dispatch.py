"""Bad input is refused with a message naming the argument, before anything is launched; the
dispatcher's choices and limits."""
import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from kernels import TritonRNN, dispatch, fma, plan_for, prefetch, split
from kernels.dispatch import (
    FMA_CONFIGS,
    RESIDENT_CONFIGS,
    SPLIT_CONFIGS,
    SPLIT_LOOPED_CONFIGS,
    KernelPlan,
    _clusters_instead,
    _fma_plan,
    _resident_plan,
    _split_plan,
    recurrence_backward,
    recurrence_forward,
    resident_limit,
    served_sizes,
)
from kernels.launch import LaunchConfig
from kernels.resident import ResidentBlocks
from kernels.runtime import PLANNING_SM_COUNT
from kernels.split import split_grid


@pytest.fixture
def layer():
    return TritonRNN(4, 8, num_layers=2)


@pytest.mark.parametrize("args,exc,words", [
    ((torch.randn(3, 2, 5),), ValueError, ["input_size=4", "(3, 2, 5)"]),
    ((torch.randn(2, 3, 2, 4),), ValueError, ["3-D", "(2, 3, 2, 4)"]),
    ((torch.randn(0, 2, 4),), ValueError, ["at least one timestep"]),
    ((torch.randn(3, 2, 4, dtype=torch.float64),), TypeError, ["torch.float64", "torch.float32"]),
    ((torch.randint(0, 3, (3, 2, 4)),), TypeError, ["input dtype", "torch.int64"]),
    ((torch.randn(3, 2, 4), torch.randn(1, 2, 8)), ValueError, ["hx", "(2, 2, 8)", "(1, 2, 8)"]),
    ((torch.randn(3, 2, 4), torch.randn(2, 2, 8, dtype=torch.float16)), TypeError, ["hx dtype", "torch.float16"]),
    (([[1.0]],), TypeError, ["input must be a torch.Tensor or a PackedSequence"]),
    ((pack_sequence([torch.randn(3, 5)]),), ValueError, ["input_size=4", "(3, 5)"]),
    ((PackedSequence(torch.randn(3, 2, 4), torch.tensor([2, 1])),), ValueError, ["PackedSequence", "(3, 2, 4)"]),
    ((pack_sequence([torch.randn(3, 4), torch.randn(2, 4)]), torch.randn(2, 1, 8)), ValueError,
     ["hx", "(2, 2, 8)", "(2, 1, 8)"]),
    ((pack_sequence([torch.randn(3, 4, dtype=torch.float16)]),), TypeError, ["torch.float16", "torch.float32"]),
])
def test_bad_input_names_the_problem(layer, args, exc, words):
    with pytest.raises(exc) as info:
        layer(*args)
    for word in words:
        assert word in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_device_mismatch_is_refused():
    layer = TritonRNN(4, 8).cuda()
    with pytest.raises(ValueError, match="input is on cpu"):
        layer(torch.randn(3, 2, 4))


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(nonlinearity="gelu"), ValueError, "gelu"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(hidden_size=-3), ValueError, "hidden_size"),
    (dict(input_size=0), ValueError, "input_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(kernel="fast"), ValueError, "kernel must be one of"),
    (dict(checkpoint="yes"), TypeError, "checkpoint must be True or False"),
])
def test_bad_construction_is_refused(kwargs, exc, pattern):
    args = {"input_size": 4, "hidden_size": 8} | kwargs
    with pytest.raises(exc, match=pattern):
        TritonRNN(args.pop("input_size"), args.pop("hidden_size"), **args)


def test_a_tier_asked_for_a_size_it_does_not_serve_names_the_sizes_it_serves():
    refusal = (r"kernel='resident' cannot serve this layer \(resident: serves hidden sizes 1-128 in torch.float32 on "
               r"sm_90, not 200\); use kernel='auto' or 'stepwise'")
    with pytest.raises(ValueError, match=refusal):
        plan_for(200, 4, torch.float32, kernel="resident")
    with pytest.raises(ValueError, match=r"\(split: serves hidden sizes 129-2048 in torch.float16, not 17\)"):
        plan_for(17, 4, torch.float16, kernel="split")
    with pytest.raises(ValueError, match=r"\(split: serves hidden sizes 65-2048 in torch.float32, not 4096\)"):
        plan_for(4096, 4, torch.float32, kernel="split")
    with pytest.raises(ValueError, match=r"\(split: serves no hidden size in torch.float64, not 16\)"):
        plan_for(16, 4, torch.float64, kernel="split")


def test_served_sizes_joins_the_ranges_of_consecutive_block_sizes():
    assert served_sizes([16, 32, 64], torch.float32) == "hidden sizes 1-64 in torch.float32"
    assert served_sizes([512, 128, 256], torch.bfloat16) == "hidden sizes 65-512 in torch.bfloat16"
    assert served_sizes([16, 128, 256], torch.float16) == "hidden sizes 1-16, 65-256 in torch.float16"
    assert served_sizes([], torch.float64) == "no hidden size in torch.float64"


def test_resident_configurations_that_need_hopper_go_to_the_split_tier_on_sm80():
    """fp32 at H=128 spills in the resident backward on sm_80 (compile audit): there it takes the split tier."""
    assert resident_limit(torch.float32, arch=90) == 128 and resident_limit(torch.float32, arch=80) == 64
    assert resident_limit(torch.bfloat16, arch=80) == 256
    assert "serves hidden sizes 1-64 in torch.float32 on sm_80, not 128" in _resident_plan(128, 4, torch.float32, 128,
                                                                                         108, 80)
    split = _split_plan(128, 4, torch.float32, 128, 108, 80)
    assert split.tier == "split" and split.config.forward.BLOCK_H == 128


def test_plan_names_show_both_passes_when_they_differ():
    same = ResidentBlocks(BLOCK_B=16, BLOCK_H=64, num_warps=4)
    assert KernelPlan("resident", LaunchConfig(same, same)).name == "resident(BLOCK_B=16,BLOCK_H=64,num_warps=4)"
    other = dataclasses.replace(same, num_warps=8)
    assert KernelPlan("resident", LaunchConfig(same, other)).name == \
        "resident(fwd:BLOCK_B=16,BLOCK_H=64,num_warps=4 bwd:BLOCK_B=16,BLOCK_H=64,num_warps=8)"


SPLIT_LIMIT = {torch.bfloat16: 2048, torch.float16: 2048, torch.float32: 2048}


@pytest.mark.parametrize("dtype", list(SPLIT_LIMIT))
def test_dispatch_tiers_fma_then_resident_then_split_then_stepwise(dtype):
    assert resident_limit(torch.bfloat16) == 256 and resident_limit(torch.float16) == 256
    assert resident_limit(torch.float32) == 128
    limit = resident_limit(dtype)
    for h in (1, 48, 100, limit):
        fma = dtype == torch.float32 or 64 < h <= 128  # 16-bit: BLOCK_H = 128 only
        assert plan_for(h, 5, dtype).tier == ("fma" if fma else "resident"), (dtype, h)
        plan = plan_for(h, 5, dtype, kernel="resident")
        assert plan.config.forward.BLOCK_H >= h and (dtype, plan.config.forward.BLOCK_H) in RESIDENT_CONFIGS
    fma_limit = 256 if dtype == torch.float32 else 0
    for h in (limit + 1, 768, SPLIT_LIMIT[dtype]):
        assert plan_for(h, 5, dtype).tier == ("fma" if h <= fma_limit else "split"), (dtype, h)
        plan = plan_for(h, 5, dtype, kernel="split")
        assert (dtype, plan.config.forward.BLOCK_H) in SPLIT_CONFIGS and plan.config.forward.BLOCK_H >= h
        assert -(-h // plan.config.forward.BLOCK_N) <= PLANNING_SM_COUNT
    over = plan_for(SPLIT_LIMIT[dtype] + 1, 5, dtype)
    assert over.tier == "stepwise" and all(f"{tier}:" in over.reason for tier in ("fma", "resident", "split"))
    assert plan_for(64, 5, dtype, kernel="stepwise").tier == "stepwise"
    assert plan_for(48, 5, dtype, kernel="resident").name.startswith("resident(BLOCK_B=16,BLOCK_H=64,num_warps=")


def test_fma_tier_serves_fp32_up_to_256_and_16_bit_at_128_with_a_batch_row_per_sm():
    """One program per batch row: fp32 up to BLOCK_H = 256 (beyond 128 with half of U streamed), 16-bit at 128, while
    the batch leaves each program an SM (on sm_80 too, where the resident tier's 3xTF32 cannot take BLOCK_H = 128);
    the tensor-core tiers beyond."""
    assert {bh for dt, bh in FMA_CONFIGS if dt == torch.float32} == {16, 32, 64, 128, 256} and len(FMA_CONFIGS) == 7
    plan = plan_for(48, 5, torch.float32)
    assert plan.name == "fma(BLOCK_H=64,num_warps=2)" and "5 program(s), one per batch row" in plan.reason
    assert "stays in the registers" in plan.reason
    assert plan_for(128, PLANNING_SM_COUNT, torch.float32).tier == "fma"
    assert plan_for(128, PLANNING_SM_COUNT + 1, torch.float32).tier == "resident"
    streamed = plan_for(129, 8, torch.float32)
    assert streamed.name == "fma(BLOCK_H=256,num_warps=8)" and "half read through L1 every step" in streamed.reason
    assert plan_for(256, PLANNING_SM_COUNT + 1, torch.float32).tier == "split"
    assert plan_for(257, 8, torch.float32).tier == "split"
    assert isinstance(_fma_plan(128, 8, torch.float32, 128, 108, 80), KernelPlan)
    assert "108 SMs" in _fma_plan(128, 109, torch.float32, 128, 108, 80)
    for dtype in (torch.bfloat16, torch.float16):
        plan = plan_for(100, PLANNING_SM_COUNT, dtype)
        assert plan.name == "fma(BLOCK_H=128,num_warps=4)" and "128x128 in torch.float32, 64 KiB" in plan.reason
        assert plan_for(100, PLANNING_SM_COUNT + 1, dtype).tier == "resident"
        assert [plan_for(h, 8, dtype).tier for h in (64, 129)] == ["resident"] * 2
        with pytest.raises(ValueError, match=r"\(fma: serves hidden sizes 65-128 in torch.b?float16, not 32\)"):
            plan_for(32, 8, dtype, kernel="fma")
    assert plan_for(32, 8, torch.float64).tier == "resident"
    with pytest.raises(ValueError, match=r"\(fma: serves no hidden size in torch.float64, not 32\)"):
        plan_for(32, 8, torch.float64, kernel="fma")


def test_launches_prefetch_into_l2_only_where_their_streams_outgrow_it(monkeypatch):
    """prefetch.prefetch_distance: the launch keywords' L2 prefetch distance where the [T, B, H] tensors a launch
    streams (forward: xw and y; backward: y, dy and da) take more than the device's L2 cache, else 0; the timed cases
    (bf16, T = 4096, against an H100's 50 MiB) on the side they were faster on."""
    monkeypatch.setattr(prefetch, "l2_cache_bytes", lambda device: 50 * 2 ** 20)
    on = {"L2_PREFETCH_STEPS": 4}

    def distance(B, H, tensors=2, keywords=on):
        streams = tuple(torch.empty((4096, B, H), dtype=torch.bfloat16, device="meta") for _ in range(tensors))
        return prefetch.prefetch_distance(keywords, streams)
    assert [distance(8, 128), distance(64, 128), distance(8, 256), distance(64, 256)] == [0, 4, 0, 4]
    assert [distance(20, 128), distance(20, 128, tensors=3)] == [0, 4]  # 40 MiB forward, 60 backward
    assert distance(64, 256, tensors=3, keywords={"L2_PREFETCH_STEPS": 0}) == 0  # off: interpreter, fp32
    # a tensor read and written over (fragment order's copy, y over it) is streamed once: 32 MiB, not 64
    copy = torch.empty((4096, 16 * 256), dtype=torch.bfloat16, device="meta")
    assert prefetch.prefetch_distance(on, (copy, copy)) == 0 and distance(16, 256) == 4
    # no dy (the loss reads h_n alone): the backward streams y and da, 40 MiB at B = 20, H = 128
    y, dy, da = (torch.empty((4096, 20, 128), dtype=torch.bfloat16, device="meta") for _ in range(3))
    assert prefetch.prefetch_distance(on, (y, None, da)) == 0 and prefetch.prefetch_distance(on, (y, dy, da)) == 4
    # over half of L2 (prefetch.STREAMED_L2_SHARE, the lease's variant): 40 MiB then takes it, 24 MiB not
    monkeypatch.setattr(prefetch, "STREAMED_L2_SHARE", 0.5)
    assert [distance(20, 128), distance(12, 128)] == [4, 0]
    # a stream the call did not write (the backward's dy as given) with prefetch.COLD_GRADIENT: whatever the size
    small = tuple(torch.empty((16, 2, 16), dtype=torch.bfloat16, device="meta") for _ in range(3))
    assert prefetch.prefetch_distance(on, small, cold=small[1]) == 0
    monkeypatch.setattr(prefetch, "COLD_GRADIENT", True)
    assert prefetch.prefetch_distance(on, small, cold=small[1]) == 4 and prefetch.prefetch_distance(on, small) == 0
    assert prefetch.prefetch_distance({"L2_PREFETCH_STEPS": 0}, small, cold=small[1]) == 0  # off stays off
    # in every launch (STREAMED_L2_SHARE 0, the lease's l2-prefetch-always): the smallest streams take it too
    monkeypatch.setattr(prefetch, "STREAMED_L2_SHARE", 0.0)
    assert [distance(1, 16), distance(8, 64, tensors=3)] == [4, 4]


def test_the_fma_backward_names_dy_as_the_stream_its_call_did_not_write(device, monkeypatch):
    """The fma backward reads dy as its caller gave it (prefetch.COLD_GRADIENT's case); none where the loss reads h_n
    alone; the forward's xw is the call's own."""
    cold_reads = []
    monkeypatch.setattr(fma, "prefetch_distance", lambda keywords, streams, cold=None: cold_reads.append(cold) or 0)
    plan = plan_for(16, 2, torch.float32, device, kernel="fma")
    xw, h0, u, dy = (torch.randn(*shape, device=device) for shape in ((3, 2, 16), (2, 16), (16, 16), (3, 2, 16)))
    y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    recurrence_backward(plan, y, dy, u, "tanh", False)
    recurrence_backward(plan, y, None, u, "tanh", False)
    assert cold_reads[0] is None and cold_reads[1] is dy and cold_reads[2] is None


def test_split_tier_needs_a_slice_per_sm_and_runs_every_batch_tile_in_one_launch():
    config = plan_for(2048, 8, torch.bfloat16, kernel="split").config.forward
    assert config.BLOCK_N == 16  # 128 slices: fits an H100's 132 SMs, not an A100's 108
    assert split_grid(8, 2048, config, 132) == (128, 1)
    # (slices, groups): the SMs left over by the slices take batch tiles side by side; a group runs
    # its tiles one after another. B = 256 at H = 2048 is one launch of 64 slices x 2 groups, 8 tiles of 16 each.
    config = plan_for(2048, 256, torch.bfloat16, kernel="split").config.forward
    assert (config.BLOCK_N, config.BLOCK_B) == (32, 16) and split_grid(256, 2048, config, 132) == (64, 2)
    assert "8 batch tile(s) of 16" in plan_for(2048, 256, torch.bfloat16).reason
    # An A100's 108 SMs hold the 64 slices of 32 rows at any batch, not fewer SMs.
    assert _split_plan(2048, 8, torch.bfloat16, 2048, 108, 80).config.forward.BLOCK_N == 32
    assert "60 SMs" in _split_plan(2048, 8, torch.bfloat16, 2048, 60, 80)
    config = plan_for(1024, 64, torch.bfloat16, kernel="split").config.forward  # 32 slices of 32 rows
    assert split_grid(64, 1024, config, 132) == (32, 4)   # 4 tiles of 16, one per group
    assert split_grid(100, 1024, config, 132) == (32, 4)  # 7 tiles over 4 groups
    assert split_grid(5, 1024, config, 132) == (32, 1)
    assert "2 batch tile(s)" in plan_for(1024, 100, torch.bfloat16).reason
    with pytest.raises(RuntimeError, match="could never be met"):
        split_grid(8, 2048, plan_for(2048, 8, torch.bfloat16, kernel="split").config.forward, 100)
    with pytest.raises(ValueError, match="kernel='split' cannot serve"):
        plan_for(4096, 4, torch.bfloat16, kernel="split")


def split_block_b(hidden, batch, dtype=torch.bfloat16):
    return plan_for(hidden, batch, dtype, kernel="split").config.forward.BLOCK_B


def test_split_takes_8_row_tiles_where_the_batch_fits_them(monkeypatch):
    """SPLIT_NARROW_BLOCK_B: 8-row tiles (mma.sync's N) where every program then runs one tile per step (B <= 8, or
    8 rows per batch group), in every dtype."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS_DEFAULT", frozenset())  # H = 512's grid-barrier forms (sm_80's)
    assert [split_block_b(512, b) for b in (1, 8, 9, 32, 33)] == [8, 8, 8, 8, 16]  # 32 slices: 4 groups
    # 128 slices: one group; from B = 9, 64 x 2 (SPLIT_WIDE_ONE_TILE_BLOCK_H, else a 16-row tile up to 16); from B = 17
    # 16-row tiles (SPLIT_LOOPED_BLOCK_B)
    assert [split_block_b(2048, b) for b in (1, 8, 9, 16, 17)] == [8, 8, 8, 8, 16]
    assert [split_block_b(h, 8, torch.float32) for h in (128, 256, 512, 1024)] == [8, 8, 8, 8]
    assert "32 x 4 programs" in plan_for(1024, 32, torch.bfloat16, kernel="split").reason
    monkeypatch.setattr(dispatch, "SPLIT_NARROW_BLOCK_B", 16)  # off: .ci/gpu_variants.py split-16-row-tiles
    assert [split_block_b(512, 1), split_block_b(256, 8, torch.float32)] == [16, 16]


def test_split_runs_without_a_tile_loop_wherever_each_program_has_one_tile(monkeypatch):
    """ONE_TILE: every configuration split_config picks for one tile per program drops the tile loop; where the
    SMs run out of batch groups (H = 2048 from B = 33 on 132 SMs, H = 1024 from B = 65), the configurations loop;
    SPLIT_ONE_TILE off, the same tiles and slices, all with the loop."""
    def one_tile(hidden, batch, dtype=torch.bfloat16):
        config = plan_for(hidden, batch, dtype, kernel="split").config
        assert config.forward.ONE_TILE == config.backward.ONE_TILE
        return config.forward.ONE_TILE
    assert [one_tile(2048, b) for b in (1, 8, 16, 32, 33, 64)] == [True, True, True, True, False, False]
    assert [one_tile(1024, b) for b in (1, 16, 64, 65, 256)] == [True, True, True, False, False]
    assert [one_tile(512, b, torch.float32) for b in (8, 64, 65)] == [True, True, False]
    stages = dispatch.SPLIT_TILE_LOOP_STAGES
    looped = SPLIT_LOOPED_CONFIGS[(torch.bfloat16, 2048)].forward
    assert plan_for(2048, 64, torch.bfloat16, kernel="split").config.forward == \
        dataclasses.replace(looped, BLOCK_B=16, num_stages=dispatch.SPLIT_TALL_TILE_MAX_STAGES)
    assert plan_for(1024, 256, torch.bfloat16, kernel="split").config.forward == \
        dataclasses.replace(SPLIT_CONFIGS[(torch.bfloat16, 1024)].forward, num_stages=stages)
    shapes = {b: plan_for(1024, b, torch.bfloat16, kernel="split").config.forward for b in (1, 17, 64)}
    monkeypatch.setattr(dispatch, "SPLIT_ONE_TILE", False)  # off: .ci/gpu_variants.py split-tile-loop
    assert [one_tile(1024, b) for b in (1, 17, 64)] == [False] * 3
    for b, config in shapes.items():
        assert plan_for(1024, b, torch.bfloat16, kernel="split").config.forward == \
            dataclasses.replace(config, ONE_TILE=False, num_stages=dispatch.SPLIT_TILE_LOOP_STAGES)


def test_split_tile_loop_stages_apply_where_programs_run_several_tiles(monkeypatch):
    """SPLIT_TILE_LOOP_STAGES: the software-pipeline stages of the tile loop, on every configuration that has one (fp32:
    SPLIT_FP32_MAX_TILE_LOOP_STAGES at most, 3 spill there; so do 16-bit tiles of more than SPLIT_TALL_TILE_ELEMENTS,
    SPLIT_TALL_TILE_MAX_STAGES at most), never on the one-tile forms (no tile loop: their time loop, which holds the
    barrier, must not be pipelined). 3 by default; 1 turns it off."""
    def stages(hidden, batch, dtype=torch.bfloat16):
        config = plan_for(hidden, batch, dtype, kernel="split").config
        assert config.forward.num_stages == config.backward.num_stages
        return config.forward.num_stages
    assert [stages(2048, b) for b in (8, 16, 32, 33, 64)] == [1, 1, 1, 2, 2]  # 16-row tiles of 2048: tall
    assert [stages(1024, 256), stages(512, 129, torch.float16), stages(512, 65, torch.float32)] == [3, 3, 2]
    assert stages(512, 128, torch.float16) == 1  # clusters of 8 (SPLIT_CLUSTERS_DEFAULT): one tile each
    assert stages(1024, 64, torch.float32) == 2 and stages(1024, 8, torch.float32) == 1
    def expected(c, dt):
        tall = c.forward.BLOCK_B * c.forward.BLOCK_H > dispatch.SPLIT_TALL_TILE_ELEMENTS
        return 1 if c.forward.ONE_TILE else 2 if dt == torch.float32 or tall else 3
    assert all(c.forward.num_stages == expected(c, dt) for (dt, bh) in SPLIT_CONFIGS for arch in (80, 90)
               for c in dispatch.split_configs(dt, bh, arch))
    monkeypatch.setattr(dispatch, "SPLIT_ONE_TILE", False)  # every form with the loop, every one pipelined
    assert [stages(2048, 8), stages(1024, 1)] == [3, 3]
    monkeypatch.setattr(dispatch, "SPLIT_TILE_LOOP_STAGES", 1)  # off: none pipelined
    assert [stages(2048, 64), stages(1024, 64, torch.float32)] == [1, 1]


def test_split_sums_in_each_thread_but_in_fp32s_pipelined_tile_loop_before_sm90(monkeypatch):
    """SplitBlocks.IN_THREAD_SUM: on in every split configuration (the product by FMA too), but fp32's pipelined tile
    loop on sm_80 (ptxas spills with it: SPLIT_PIPELINED_FP32_SUM_MIN_ARCH); the launch keywords also off with the
    module switch (the split-tl-sum variant)."""
    def summed(config, dtype):
        return [split.launch_keywords(blocks, "tanh", dtype, interpreted=False, backward=backward)["IN_THREAD_SUM"]
                for backward, blocks in enumerate((config.forward, config.backward))]
    pairs = [(dt, bh, arch, c) for (dt, bh) in SPLIT_CONFIGS for arch in (80, 90)
             for c in dispatch.split_configs(dt, bh, arch)]
    for dt, bh, arch, c in pairs:
        pipelined_fp32 = dt == torch.float32 and c.forward.num_stages > 1
        assert summed(c, dt) == [not (pipelined_fp32 and arch < 90)] * 2, (dt, bh, arch, c)
    assert any(dt == torch.float32 and c.forward.num_stages > 1 and not c.forward.FMA for dt, _, _, c in pairs)
    monkeypatch.setattr(split, "IN_THREAD_SUM", False)
    assert not any(any(summed(c, dt)) for dt, _, _, c in pairs)


def test_split_runs_several_tiles_per_program_in_wider_slices_at_h512_and_h2048(monkeypatch):
    """SPLIT_LOOPED_CONFIGS: 16-bit H = 2048 where programs run several tiles per step (B > 32 on 132 SMs) takes 64
    slices of 32 rows and two batch groups of 16-row tiles (SPLIT_LOOPED_BLOCK_B), not one group of 128 16-row slices
    with 16-row tiles; H = 512 (B > 64; from sm_90 past its clusters, B > 128) 16 slices of 32 rows in eight groups,
    not 32 of 16 in four: half the tiles per program, half the state read per step. Up to one tile per program,
    unchanged, but at H = 2048 from B = 9
    (SPLIT_WIDE_ONE_TILE_BLOCK_H): the wide slices' two groups of one 8-row tile, not one group of a 16-row tile, and
    from B = 17 of one 16-row tile."""
    def shape(hidden, batch, dtype=torch.bfloat16):
        config = plan_for(hidden, batch, dtype, kernel="split").config
        assert config.forward == config.backward
        return config.forward.BLOCK_N, config.forward.BLOCK_B, config.forward.ONE_TILE
    assert [shape(2048, b) for b in (8, 16, 32)] == [(16, 8, True), (32, 8, True), (32, 16, True)]
    assert [shape(2048, b, dt) for b in (33, 64, 256)
            for dt in (torch.bfloat16, torch.float16)] == [(32, 16, False)] * 6
    assert "64 x 2 programs" in plan_for(2048, 64, torch.bfloat16).reason
    assert "2 batch tile(s) of 16" in plan_for(2048, 64, torch.bfloat16).reason
    assert [shape(512, b) for b in (32, 64, 128, 129, 256)] == [(64, 8, True)] * 3 + [(32, 16, False)] * 2  # clusters
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS_DEFAULT", frozenset())  # the grid barrier's forms (sm_80's)
    assert [shape(512, b) for b in (32, 64, 65, 256)] == [(16, 8, True), (16, 16, True)] + [(32, 16, False)] * 2
    assert "16 x 8 programs" in plan_for(512, 256, torch.float16).reason
    assert shape(1024, 256) == (32, 16, False) and shape(512, 256, torch.float32) == (16, 16, False)
    monkeypatch.setattr(dispatch, "SPLIT_LOOPED_CONFIGS", {})  # off: .ci/gpu_variants.py split-thin-looped
    assert [shape(2048, b) for b in (16, 64)] == [(16, 16, True), (16, 16, False)]
    assert shape(512, 256) == (16, 16, False)


def test_split_programs_running_several_tiles_take_16_row_tiles_from_sm90(monkeypatch):
    """SPLIT_LOOPED_BLOCK_B: the wide slices' programs run 16-row tiles from sm_90 (half as many per step), and at
    H = 2048 one such tile where the batch fits it (B = 17..32), pipelined over SPLIT_TALL_TILE_MAX_STAGES there;
    sm_80 keeps 8-row tiles (two stages of 16-row state at H = 2048 outgrow an A100's shared memory), and so does
    SPLIT_LOOPED_BLOCK_B = 8 (.ci/gpu_variants.py split-looped-8-row-tiles) on sm_90."""
    def tiles(hidden, batch, arch=90):
        config = dispatch.split_config(torch.bfloat16, hidden, hidden, batch, 132, arch)
        assert config.forward == config.backward
        return config.forward.BLOCK_N, config.forward.BLOCK_B, config.forward.ONE_TILE, config.forward.num_stages
    today = [tiles(2048, b) for b in (16, 32, 64)] + [tiles(512, 256)]
    assert today == [(32, 8, True, 1), (32, 16, True, 1), (32, 16, False, 2), (32, 16, False, 3)]
    eight_rows = [(32, 8, True, 1), (32, 8, False, 3), (32, 8, False, 3), (32, 8, False, 3)]
    assert [tiles(2048, b, 80) for b in (16, 32, 64)] + [tiles(512, 256, 80)] == eight_rows
    monkeypatch.setattr(dispatch, "SPLIT_LOOPED_BLOCK_B", 8)
    assert [tiles(2048, b) for b in (16, 32, 64)] + [tiles(512, 256)] == eight_rows


def test_fp32_at_h2048_takes_the_split_tier_by_fma_where_the_sms_hold_its_slices():
    """fp32 past H = 1024: 128 slices of 16 rows multiplied by FMA (3xTF32's slice spills there), 8-row tiles, one per
    program at B <= 8 and all of a batch's in one launch beyond; on an A100's 108 SMs, and past 2048, the stepwise
    tier. The forms by tl.dot stay where they were."""
    def blocks(hidden, batch, sms=132):
        plan = _split_plan(hidden, batch, torch.float32, 2048, sms, 90)
        return plan if isinstance(plan, str) else (plan.config.forward.BLOCK_N, plan.config.forward.BLOCK_B,
                                                   plan.config.forward.K_SPLIT, plan.config.forward.FMA,
                                                   plan.config.forward.ONE_TILE)
    assert [blocks(2048, b) for b in (1, 8, 9, 256)] == [(16, 8, 16, True, True)] * 2 + [(16, 8, 16, True, False)] * 2
    assert blocks(1025, 8) == (16, 8, 16, True, True)
    assert "128 slices of U need 128 co-resident programs" in blocks(2048, 8, sms=108)
    plan = plan_for(2048, 64, torch.float32)
    assert plan.tier == "split" and plan.config.forward == plan.config.backward
    assert "multiplied by FMA" in plan.reason and "8 batch tile(s) of 8" in plan.reason
    assert plan_for(2049, 8, torch.float32).tier == "stepwise"
    assert not any(c.forward.FMA for key, c in SPLIT_CONFIGS.items() if key != (torch.float32, 2048))
    assert "multiplied by FMA" not in plan_for(1024, 8, torch.float32).reason
    with pytest.raises(ValueError, match="FMA takes K_SPLIT = num_warps and the L2 exchange, not 4 and l2"):
        SPLIT_CONFIGS[(torch.float32, 1024)].replace(FMA=True, K_SPLIT=4)
    with pytest.raises(ValueError, match="FMA takes K_SPLIT = num_warps and the L2 exchange, not 16 and dsmem-pull"):
        SPLIT_CONFIGS[(torch.float32, 2048)].replace(EXCHANGE="dsmem-pull")


def test_split_takes_16_row_slices_at_h1024_where_the_batch_fits_them(monkeypatch):
    """SPLIT_FINE_CONFIGS: 16-bit H = 1024 in 64 slices of 16 rows with 8-row tiles where each program then runs one
    tile per step (B <= 16 on 132 SMs: two groups; B <= 8 on 108), else 32 slices of 32 rows; fp32 unchanged."""
    def blocks(batch, dtype=torch.bfloat16, sms=132):
        plan = _split_plan(1024, batch, dtype, 1024, sms, 90)
        return plan.config.forward.BLOCK_N, plan.config.forward.BLOCK_B
    assert [blocks(b) for b in (1, 16, 17, 33)] == [(16, 8), (16, 8), (32, 8), (32, 16)]
    assert blocks(16, torch.float16) == (16, 8) and blocks(16, torch.float32) == (16, 8)
    assert [blocks(b, sms=108) for b in (8, 9)] == [(16, 8), (32, 8)]
    assert "64 x 2 programs" in plan_for(1024, 16, torch.bfloat16, kernel="split").reason
    monkeypatch.setattr(dispatch, "SPLIT_FINE_CONFIGS", {})  # off: .ci/gpu_variants.py split-32-row-slices
    assert blocks(1) == (32, 8)


def test_16_bit_h512_runs_in_clusters_of_8_by_default_from_sm90(monkeypatch):
    """SPLIT_CLUSTERS_DEFAULT (timed faster than the grid barrier on an H200): 16-bit H = 257..512 in clusters of 8
    slices of 64 rows, 8-row tiles, one tile a cluster, as many clusters as 132 SMs hold (16: B <= 128); past them, on
    sm_80, in fp32, and at H = 1024 and 256 (not faster, or not timed), the forms of before."""
    def config(hidden, batch, dtype=torch.bfloat16, arch=90):
        return _split_plan(hidden, batch, dtype, max(512, hidden), 132, arch).config.forward
    for b in (1, 5, 64, 128):
        assert (config(512, b).CLUSTER, config(512, b).BLOCK_N, config(512, b).BLOCK_B, config(512, b).ONE_TILE) == (
            8, 64, 8, True), b
    assert [config(300, 8).CLUSTER, config(512, 8, torch.float16).CLUSTER] == [8, 8]
    assert [config(512, 129).CLUSTER, config(512, 8, arch=80).CLUSTER, config(512, 8, torch.float32).CLUSTER,
            config(1024, 8).CLUSTER] == [1, 1, 1, 1]
    assert [plan_for(256, 8, dt).tier for dt in (torch.bfloat16, torch.float32)] == ["resident", "fma"]
    assert "each group a cluster of 8" in plan_for(512, 64, torch.bfloat16).reason
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS_DEFAULT", frozenset())  # .ci/gpu_variants.py split-grid-barrier-512
    assert (config(512, 8).CLUSTER, config(512, 8).BLOCK_N) == (1, 16)


def test_split_clusters_serve_h512_and_h1024_from_sm90_where_each_group_has_one_tile(monkeypatch):
    """SPLIT_CLUSTERS (off by default): 16-bit H = 512 in clusters of 8 slices of 64 rows (as by default), H = 1024 in
    clusters of 16, 8-row tiles, as many clusters as the 132 SMs hold (16 and 8), one tile each; beyond that, on sm_80,
    in fp32 and at H = 2048, the grid-barrier configurations."""
    def cluster(hidden, batch, dtype=torch.bfloat16, arch=90):
        return _split_plan(hidden, batch, dtype, max(512, hidden), 132, arch).config.forward.CLUSTER
    assert [cluster(512, 8), cluster(1024, 8)] == [8, 1]
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)  # on: .ci/gpu_variants.py split-clusters
    assert [cluster(512, b) for b in (1, 128, 129)] == [8, 8, 1]
    assert [cluster(1024, b) for b in (1, 64, 65)] == [16, 16, 1]
    assert [cluster(300, 8), cluster(512, 8, torch.float16)] == [8, 8]
    assert [cluster(512, 8, arch=80), cluster(512, 8, torch.float32), cluster(2048, 8)] == [1, 1, 1]
    plan = plan_for(300, 8, torch.bfloat16, kernel="split")
    assert split_grid(8, 300, plan.config.forward, 132) == (8, 1)  # a whole cluster, three slices past H
    assert "each group a cluster of 8" in plan.reason


def test_split_clusters_take_fp32_at_h256_from_the_fma_tier_where_each_cluster_has_one_tile(monkeypatch):
    """SPLIT_CLUSTERS also splits fp32 U at H = 256 over clusters of 4 programs (64 columns each, by FMA), one
    cluster per 2 batch rows: 33 clusters on 132 SMs, so B <= 66; beyond, and on sm_80 or with the switch off, the
    fma tier holds half of U and streams the rest. With a DSMEM exchange asked for, fp32 keeps L2's (16-bit slots)."""
    def plan(hidden, batch):  # planned for an H100: 132 SMs, sm_90
        return plan_for(hidden, batch, torch.float32)
    assert [plan(256, b).tier for b in (1, 8, 64)] == ["fma"] * 3  # off by default
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTER_EXCHANGE", "dsmem-pull")
    for b in (1, 5, 8, 64, 66):
        config = plan(256, b).config.forward
        assert (config.CLUSTER, config.BLOCK_N, config.BLOCK_B, config.FMA, config.ONE_TILE, config.EXCHANGE) == (
            4, 64, 2, True, True, "l2"), b
        assert split_grid(b, 256, config, 132) == (4, (b + 1) // 2)
    assert [plan(200, 8).tier, plan(129, 8).tier] == ["split"] * 2  # BLOCK_H 256: the last slice partly past H
    assert [plan(256, 67).tier, plan(128, 8).tier] == ["fma"] * 2
    assert _clusters_instead(256, 8, torch.float32, 256, 132, 80) is None  # sm_80: no clusters
    assert "clusters of 4 programs split U" in _clusters_instead(256, 8, torch.float32, 256, 132, 90)
    assert plan_for(256, 8, torch.float32, kernel="fma").tier == "fma"  # asked for by name: still served
    assert "each group a cluster of 4" in plan(256, 8).reason and "multiplied by FMA" in plan(256, 8).reason


def test_split_clusters_take_16_bit_h256_from_the_resident_tier_where_each_cluster_has_one_tile(monkeypatch):
    """SPLIT_CLUSTERS also splits 16-bit U at H = 256 over clusters of 4 programs (64 columns each), one cluster per
    8 batch rows: 33 clusters on 132 SMs, so B <= 264; beyond, and on sm_80 or with the switch off, the resident
    tier holds all of U in each program. Asked for by name, the split tier serves 16-bit H = 256 without clusters in 8
    slices of 32 rows."""
    def plan(batch, dtype=torch.bfloat16, hidden=256):  # planned for an H100: 132 SMs, sm_90
        return plan_for(hidden, batch, dtype)
    assert [plan(b).tier for b in (1, 8, 64)] == ["resident"] * 3  # off by default
    forced = plan_for(256, 8, torch.bfloat16, kernel="split").config.forward
    assert (forced.BLOCK_N, forced.BLOCK_B, forced.CLUSTER) == (32, 8, 1)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    for b in (1, 8, 64, 264):
        config = plan(b).config.forward
        assert (config.CLUSTER, config.BLOCK_N, config.BLOCK_B, config.FMA, config.ONE_TILE) == (4, 64, 8, False, True)
        assert split_grid(b, 256, config, 132) == (4, -(-b // 8))
    assert [plan(8, torch.float16).tier, plan(8, hidden=200).tier] == ["split"] * 2  # H = 200: the last slice short
    assert [plan(265).tier, plan(8, hidden=128).tier, plan(8, hidden=64).tier] == ["resident", "fma", "resident"]
    assert _clusters_instead(256, 8, torch.bfloat16, 256, 132, 80) is None  # sm_80: no clusters
    assert plan_for(256, 8, torch.bfloat16, kernel="resident").tier == "resident"  # asked for by name: still served
    assert "each group a cluster of 4" in plan(8).reason


def test_a_split_configuration_refuses_an_unknown_exchange(monkeypatch):
    """A misspelt exchange would compile into kernels that exchange nothing: the configuration refuses it, and so
    does a plan made with the switch set to it."""
    config = dispatch.SPLIT_CLUSTER_CONFIGS[(torch.bfloat16, 512)]
    with pytest.raises(ValueError, match="EXCHANGE must be one of l2, dsmem-pull, dsmem-push, not 'dsmem'"):
        config.replace(EXCHANGE="dsmem")
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTER_EXCHANGE", "dsmem")
    with pytest.raises(ValueError, match="not 'dsmem'"):
        _split_plan(512, 8, torch.bfloat16, 512, 132, 90)


@pytest.mark.parametrize("exchange", ["dsmem-pull", "dsmem-push"])
def test_split_cluster_dsmem_serves_the_16_bit_clusters_and_only_with_clusters(exchange, monkeypatch):
    """A SPLIT_CLUSTER_EXCHANGE in distributed shared memory makes the 16-bit cluster forms (H = 256, 512 and 1024, up
    to SPLIT_DSMEM_MAX_BLOCK_H) exchange the state that way (one tile per cluster); beyond that limit they keep L2,
    and without SPLIT_CLUSTERS only the clusters taken by default (SPLIT_CLUSTERS_DEFAULT: H = 512) change."""
    def form(hidden, batch, dtype=torch.bfloat16):
        config = _split_plan(hidden, batch, dtype, hidden, 132, 90).config.forward
        return config.CLUSTER, config.ONE_TILE, config.EXCHANGE
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTER_EXCHANGE", exchange)
    assert [form(512, 8), form(1024, 8)] == [(8, True, exchange), (1, True, "l2")]
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    assert [form(512, 8), form(512, 128, torch.float16)] == [(8, True, exchange)] * 2
    assert [form(256, 8), form(1024, 8)] == [(4, True, exchange), (16, True, exchange)]
    monkeypatch.setattr(dispatch, "SPLIT_DSMEM_MAX_BLOCK_H", 512)
    assert form(1024, 8) == (16, True, "l2")
    assert form(512, 129) == (1, False, "l2")  # 17 tiles for the 16 clusters that fit: the grid barrier's tile loop
    monkeypatch.setattr(dispatch, "SPLIT_ONE_TILE", False)  # the state's slots hold one tile: still one-tile
    assert form(512, 8) == (8, True, exchange)


def test_stepwise_column_tiles_narrow_until_the_grid_fills_the_sms():
    """STEPWISE_BLOCK_N: the widest column tile whose grid gives each of the 132 SMs (an H100's, for plans made
    without a device) a program, else the narrowest."""
    def block_n(hidden, batch, dtype=torch.float32):
        plan = plan_for(hidden, batch, dtype, kernel="stepwise")
        assert plan.config.forward == plan.config.backward
        return plan.config.forward.BLOCK_N
    assert [block_n(2048, b) for b in (8, 64, 128, 256)] == [16, 32, 64, 64]  # 1, 4, 8, 16 batch tiles of 16
    assert [block_n(8448, 8), block_n(4096, 8, torch.bfloat16), block_n(64, 5)] == [64, 16, 16]
    assert plan_for(2048, 8, torch.float32, kernel="stepwise").name == \
        "stepwise(BLOCK_B=16,BLOCK_N=16,BLOCK_K=128,num_warps=8)"
    # The interpreter runs one program at a time: its grid has nothing to fill, so the widest tiles.
    assert plan_for(2048, 8, torch.float32, "cpu", kernel="stepwise").config.forward.BLOCK_N == 64
    assert {c.forward.BLOCK_K for c in dispatch.stepwise_configs(torch.float64)} == {16}  # 32 and 128 spill in fp64


def test_stepwise_serves_hidden_sizes_beyond_the_persistent_tiers(device):
    torch.manual_seed(0)
    layer = TritonRNN(3, 2100, device=device)  # fp32 persistent tiers end at 2048
    ref = torch.nn.RNN(3, 2100, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    x = torch.randn(2, 2, 3)
    with torch.no_grad():
        out, _ = layer(x.to(device))
        ref_out, _ = ref(x.double())
    assert layer.last_plans[0].tier == "stepwise"
    assert ((out.cpu().double() - ref_out).norm() / ref_out.norm()).item() < 2e-5


def test_without_cuda_or_interpreter_the_error_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the kernels can run")
    code = ("import torch, kernels\n"
            "try:\n    kernels.TritonRNN(2, 4)(torch.randn(3, 1, 2))\n"
            "except RuntimeError as e:\n    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert "ERR" in out and "TRITON_INTERPRET=1" in out and "CUDA" in out


def test_the_split_tier_splits_k_over_clusters_only_where_asked_and_it_can(monkeypatch):
    """dispatch.SPLIT_K_CLUSTER (off by default; not yet run on a GPU): both passes of the configuration whose programs
    run several batch tiles (16-bit, H = 2048, from sm_90) split their K over clusters, their tile loop pipelined as
    without it; not where each program runs one tile, where H < BLOCK_H would pad a range of K, in fp32 or before
    sm_90; never in the interpreter, where a cluster's programs cannot meet."""
    monkeypatch.setattr(dispatch, "SPLIT_K_CLUSTER", 4)
    plan = dispatch.plan_for(2048, 256, torch.bfloat16)
    config = plan.config
    assert "in clusters of 4, each program holding its cluster's 128 rows over 1/4 of K" in plan.reason, plan.reason
    assert config.forward == config.backward and (config.forward.K_CLUSTER, config.forward.num_stages) == (4, 2)
    assert dispatch.plan_for(2048, 64, torch.float16).config.backward.K_CLUSTER == 4
    cases = ((2048, 8, torch.bfloat16), (2000, 256, torch.bfloat16), (2048, 256, torch.float32))
    unsplit = [dispatch.plan_for(hidden, batch, dtype).config for hidden, batch, dtype in cases]
    assert all(c.forward.K_CLUSTER == 1 for c in dispatch.split_configs(torch.bfloat16, 2048, arch=80))
    assert split.launch_keywords(config.forward, "tanh", torch.bfloat16, True, False)["K_CLUSTER"] == 1
    assert split.launch_keywords(config.forward, "tanh", torch.bfloat16, False, False)["K_CLUSTER"] == 4
    monkeypatch.setattr(dispatch, "SPLIT_K_CLUSTER", 1)
    assert dispatch.plan_for(2048, 256, torch.bfloat16).config == config.replace(K_CLUSTER=1)
    assert unsplit == [dispatch.plan_for(hidden, batch, dtype).config for hidden, batch, dtype in cases]
    with pytest.raises(ValueError, match="K_CLUSTER takes the grid barrier, the L2 exchange and the MMA product"):
        split.SplitBlocks(BLOCK_B=8, BLOCK_N=64, BLOCK_H=256, K_SPLIT=8, num_warps=8, CLUSTER=4, K_CLUSTER=2)
