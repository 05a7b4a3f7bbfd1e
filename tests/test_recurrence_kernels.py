"""The recurrence kernels themselves (fma, resident, split and stepwise), forward and backward, against float64."""
import dataclasses
import json
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
import triton
import triton.language as tl

from kernels import barrier, dispatch, fma, frames, layouts, resident, split
from kernels.dispatch import TIERS, KernelPlan, plan_for, recurrence_backward, recurrence_forward, recurrence_operand
from kernels.launch import LaunchConfig
from kernels.runtime import device_facts, interpreting
from kernels.split import SplitBlocks, split_backward, split_forward

from helpers import DTYPES, TOLERANCE, compiled_without_interpreter, reference_layer, reference_with_ends, rel_err

# (T, B, H): T=1, odd H and B, two and three batch tiles (B=17, 40) in one launch, padding to BLOCK_H
# (48 -> 64, 130 -> 256).
SHAPES = [(1, 1, 16), (5, 5, 48), (6, 17, 33), (2, 40, 64), (3, 2, 130)]


def case_id(value) -> str:
    """A test id: T{T}-B{B}-H{H} for a (T, B, H) shape, else the value as text."""
    return "T{}-B{}-H{}".format(*value) if isinstance(value, tuple) else str(value)


def make_inputs(T, B, H, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    xw = torch.randn(T, B, H, generator=g) * 0.8
    h0 = torch.randn(B, H, generator=g) * 0.5
    u = torch.randn(H, H, generator=g) / H ** 0.5
    dy = torch.randn(T, B, H, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (xw, h0, u, dy)]


def make_ends(B, H, dtype, device, seed=0):
    """(b_hh [H], dL/dh_n [B, H]): what a layer's kernels add at its ends besides xw and dy."""
    g = torch.Generator().manual_seed(seed + 100)
    b_hh, dh_n = torch.randn(H, generator=g) * 0.3, torch.randn(B, H, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (b_hh, dh_n)]


def check_against_reference(plan, dtype, shape, nonlinearity, reverse, device, ends=True):
    """One plan's forward and backward kernels against float64, each within the dtype's tolerance; with ends, given
    b_hh (added to xw in the reference) and dL/dh_n (added to dy's last processed step there), else neither and h_0
    None (zeros, as hx=None gives the layer)."""
    T, B, H = shape
    xw, h0, u, dy = make_inputs(T, B, H, dtype, device)
    b_hh, dh_n = make_ends(B, H, dtype, device) if ends else (None, None)
    y, h_n = recurrence_forward(plan, xw, h0 if ends else None, u, nonlinearity, reverse, b_hh=b_hh)
    ref_h0 = h0.cpu() if ends else torch.zeros(B, H, dtype=dtype)
    ref_y, ref_da, ref_dh0 = reference_with_ends(xw.cpu(), ref_h0, u.cpu(), nonlinearity, reverse, dy.cpu(),
                                                 *(None if t is None else t.cpu() for t in (b_hh, dh_n)))
    assert y.dtype == h_n.dtype == dtype and y.shape == (T, B, H) and h_n.shape == (B, H)
    assert rel_err(y.cpu(), ref_y) < TOLERANCE[dtype]
    last = 0 if reverse else -1
    assert torch.equal(h_n, y[last]) and h_n.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()
    # Backward from the reference states, so only the backward kernel's own error is measured.
    da, dh0 = recurrence_backward(plan, ref_y.to(device=device, dtype=dtype), dy, u, nonlinearity, reverse,
                                  dh_n=dh_n)
    assert rel_err(da.cpu(), ref_da) < 2 * TOLERANCE[dtype]
    assert rel_err(dh0.cpu(), ref_dh0) < 2 * TOLERANCE[dtype]


@pytest.mark.parametrize("tier", ["resident", "stepwise"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_kernel_matches_float64_reference(tier, dtype, shape, nonlinearity, reverse, device):
    if tier == "resident" and shape[2] > 128 and dtype == torch.float32:
        pytest.skip("beyond the fp32 resident limit (covered by the dispatch tests)")
    check_against_reference(plan_for(shape[2], shape[1], dtype, device, kernel=tier), dtype, shape, nonlinearity,
                            reverse, device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tier,shape", [("fma", (3, 5, 100)), ("fma", (2, 3, 130)), ("resident", (1, 1, 16)),
                                        ("resident", (3, 5, 48)), ("split", (2, 3, 130)), ("stepwise", (3, 5, 48))],
                         ids=case_id)
def test_kernels_without_b_hh_h_0_or_a_gradient_of_h_n_match_float64_reference(tier, dtype, shape, device):
    """A layer without biases called with hx=None, a loss that does not read h_n: the kernels' launches without those
    tensors (the other tests give them). The fma and resident kernels take them in the kernel (Tier.fused_ends), the
    others by torch."""
    if tier == "fma" and dtype != torch.float32 and shape[2] > 128:
        pytest.skip("the fma tier serves 16-bit at BLOCK_H = 128 only")
    plan = plan_for(shape[2], shape[1], dtype, device, kernel=tier)
    check_against_reference(plan, dtype, shape, "tanh", True, device, ends=False)


@pytest.mark.parametrize("tier,dtype,shape,fragment_io", [
    ("fma", torch.float32, (3, 5, 100), False), ("fma", torch.bfloat16, (2, 3, 128), False),
    ("resident", torch.float32, (3, 2, 33), False), ("resident", torch.bfloat16, (3, 5, 48), False),
    ("resident", torch.bfloat16, (2, 16, 64), True), ("split", torch.bfloat16, (2, 3, 130), False),
    ("split", torch.float32, (2, 20, 320), False), ("stepwise", torch.float32, (3, 5, 48), False)],
    ids=case_id)
def test_a_backward_without_dy_matches_float64_with_dy_zeros(tier, dtype, shape, fragment_io, device, monkeypatch):
    """dy None, as a loss that reads h_n alone gives it: the fma, resident (also in fragment order) and split kernels
    read no dy, the step kernel's launcher makes its zeros; dL/da and dL/dh_0 as float64's with dy zeros and dL/dh_n,
    in both directions."""
    monkeypatch.setattr(resident, "FRAGMENT_IO", fragment_io)
    T, B, H = shape
    xw, h0, u, _ = make_inputs(T, B, H, dtype, device)
    b_hh, dh_n = make_ends(B, H, dtype, device)
    plan = plan_for(H, B, dtype, device, kernel=tier)
    for reverse in (False, True):
        ref_y, ref_da, ref_dh0 = reference_with_ends(xw.cpu(), h0.cpu(), u.cpu(), "tanh", reverse,
                                                     torch.zeros(T, B, H, dtype=dtype), b_hh.cpu(), dh_n.cpu())
        da, dh0 = recurrence_backward(plan, ref_y.to(device=device, dtype=dtype), None, u, "tanh", reverse,
                                      dh_n=dh_n)
        assert rel_err(da.cpu(), ref_da) < 2 * TOLERANCE[dtype] and rel_err(dh0.cpu(), ref_dh0) < 2 * TOLERANCE[dtype]


@pytest.mark.parametrize("fp32_product", [p for p in resident.FP32_PRODUCTS if p != resident.FP32_PRODUCT])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[2] <= 128], ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_resident_fp32_products_match_float64_reference(fp32_product, shape, nonlinearity, reverse, device,
                                                        monkeypatch):
    """The fp32 products other than the default (test_kernel_matches_float64_reference runs that one).
    The interpreter multiplies TF32 exactly: this checks their algebra, test_fp32_..._accuracy their precision."""
    monkeypatch.setattr(resident, "FP32_PRODUCT", fp32_product)
    check_against_reference(plan_for(shape[2], shape[1], torch.float32, device, kernel="resident"), torch.float32,
                            shape, nonlinearity, reverse, device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tier,shape", [("resident", (1, 1, 16)), ("resident", (6, 17, 33)), ("resident", (3, 2, 130)),
                                        ("split", (2, 20, 320))], ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_kernels_with_the_other_step_layout_match_float64_reference(tier, dtype, shape, nonlinearity, reverse, device,
                                                                    monkeypatch):
    """Each dtype with the step layout it does not take by default (layouts.PRODUCT_TO_IO_LAYOUT): 16-bit with the
    product converted into the layout of the step's tiles, fp32 with the tiles converted into the product's (the
    resident accumulator starting from the step's input), as the resident 16-bit forward's accumulator-layout I/O on
    a GPU also does. The other tests run the default. (B = 20 gives the split tier's programs two tiles a step.)"""
    if tier == "resident" and dtype == torch.float32 and shape[2] > 128:
        pytest.skip("beyond the fp32 resident limit")
    monkeypatch.setattr(layouts, "PRODUCT_TO_IO_LAYOUT", "none" if layouts.converts_product(dtype) else "all")
    assert layouts.converts_product(dtype) == (dtype != torch.float32)
    plan = plan_for(shape[2], shape[1], dtype, device, kernel=tier)
    assert plan.tier == tier
    check_against_reference(plan, dtype, shape, nonlinearity, reverse, device)


@pytest.mark.parametrize("H,copied", [(16, False), (48, False), (128, False), (33, True), (100, True), (200, True)])
def test_the_fma_forward_reads_u_where_it_lies_where_h_is_a_multiple_of_16(H, copied, device):
    """fma.reads_u_itself: the forward's operand is U itself (no copy, no launch) where H is a multiple of 16 and U is
    held whole, else a by_columns copy of U^T; the backward's always a copy. Both forms match float64 (T = 3, B = 2,
    one direction each way)."""
    plan = plan_for(H, 2, torch.float32, device, kernel="fma")
    u = torch.randn(H, H, device=device)
    assert (recurrence_operand(plan, u, backward=False) is not u) == copied
    assert recurrence_operand(plan, u, backward=True).shape == (plan.config.backward.BLOCK_H // 4,
                                                                  plan.config.backward.BLOCK_H, 4)
    check_against_reference(plan, torch.float32, (3, 2, H), "tanh", False, device)
    check_against_reference(plan, torch.float32, (3, 2, H), "relu", True, device)


@pytest.mark.parametrize("shape", [(4, 3, 128), (3, 2, 200)], ids=case_id)
def test_fma_kernels_with_chains_of_consecutive_k_match_float64_reference(shape, device, monkeypatch):
    """fma.INTERLEAVED_CHAINS off (.ci/gpu_variants.py fma-chains-in-runs): each chain of the product a run of
    consecutive k, U held whole and half streamed."""
    monkeypatch.setattr(fma, "INTERLEAVED_CHAINS", False)
    check_against_reference(plan_for(shape[2], shape[1], torch.float32, device, kernel="fma"), torch.float32, shape,
                            "tanh", False, device)


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[2] <= 128] + [(4, 3, 128), (3, 2, 200), (4, 3, 256)],
                         ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_fma_kernels_match_float64_reference(shape, nonlinearity, reverse, device):
    """fp32 by FMA, one program per batch row (B programs): every SHAPES case up to 128, where U is held whole,
    at 128, and beyond it, where half of U is streamed (padded, and at the limit)."""
    check_against_reference(plan_for(shape[2], shape[1], torch.float32, device, kernel="fma"), torch.float32, shape,
                            nonlinearity, reverse, device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 65), (5, 3, 100), (4, 2, 128)], ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_fma_kernels_with_16_bit_io_match_float64_reference(dtype, shape, nonlinearity, reverse, device):
    """16-bit I/O by FMA, the default at BLOCK_H = 128 (dispatch.FMA_CONFIGS): 16-bit tiles in and out, U and the
    state in fp32; H padded (65, 100) and whole."""
    plan = plan_for(shape[2], shape[1], dtype, device)
    assert plan.tier == "fma"
    check_against_reference(plan, dtype, shape, nonlinearity, reverse, device)


@pytest.mark.parametrize("tier,dtype,shape,over_xw", [
    ("fma", torch.float32, (5, 5, 48), True), ("fma", torch.float32, (3, 2, 200), True),
    ("fma", torch.bfloat16, (4, 3, 100), True), ("resident", torch.float32, (4, 5, 48), True),
    ("resident", torch.float32, (1, 17, 100), True), ("resident", torch.bfloat16, (3, 5, 48), False),
    ("split", torch.float32, (3, 5, 320), False), ("stepwise", torch.bfloat16, (3, 5, 48), False)],
                         ids=case_id)
def test_a_forward_given_xw_to_spare_writes_the_states_over_it_where_its_tier_may(tier, dtype, shape, over_xw,
                                                                                 device):
    """recurrence_forward(..., xw_spare=True), as the layer's autograd calls it: the fma kernel and fp32's resident
    kernel store each step's states over its input (their loops load it first, audit.output_over_input), so a
    forward call needs no buffer for them; the split and step kernels, and the resident tier's 16-bit tiles converted
    (unless in fragment order), leave xw alone. Either way the states are those of a call that keeps xw, within
    float64's tolerance (the resident tier's fragment order: test_fragments.py)."""
    T, B, H = shape
    xw, h0, u, _ = make_inputs(T, B, H, dtype, device, seed=4)
    plan = plan_for(H, B, dtype, device, kernel=tier)
    kept = xw.clone()
    y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    assert torch.equal(xw, kept) and y.data_ptr() != xw.data_ptr()
    spared_y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False, xw_spare=True)
    assert (spared_y.data_ptr() == xw.data_ptr()) == over_xw
    assert torch.equal(spared_y, y)
    assert rel_err(y.cpu(), reference_layer(kept.cpu(), h0.cpu(), u.cpu(), "tanh", False, kept.cpu())[0]) < \
        TOLERANCE[dtype]


@pytest.mark.parametrize("tier,dtype,fragment_io,over_xw", [
    ("fma", torch.float32, False, True), ("fma", torch.bfloat16, False, True), ("resident", torch.float32, False, True),
    ("resident", torch.bfloat16, False, False), ("resident", torch.bfloat16, True, True)], ids=case_id)
@pytest.mark.parametrize("shape", [(1, 11, 48), (3, 13, 100)], ids=case_id)  # within fragments.PADDING_MAX
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("spare", [True, False], ids=["xw-spared", "xw-kept"])
def test_a_framed_forward_writes_h0_where_the_states_entering_each_step_are_one_view(tier, dtype, fragment_io, over_xw,
                                                                                    shape, reverse, spare, device,
                                                                                    monkeypatch):
    """recurrence_forward(..., framed=True), as the layer's autograd calls it where h_0 is given: the fma and resident
    kernels (the latter in fragment order too, where its copy of y is copied back into the frame) store h_0 into the
    step of y's frame before its first processed step, so that frames.entering is h_0 then y shifted by one step
    against the processing order; y starts on a 16-byte boundary and is the states of an unframed call. With xw
    spared, xw itself is made in a frame (input_projection's), and the states written over it where the tier may."""
    monkeypatch.setattr(resident, "FRAGMENT_IO", fragment_io)
    T, B, H = shape
    if tier == "fma" and dtype != torch.float32:
        H = 100  # the fma tier serves 16-bit at BLOCK_H = 128
    xw, h0, u, _ = make_inputs(T, B, H, dtype, device, seed=5)
    plan = plan_for(H, B, dtype, device, kernel=tier)
    assert plan.tier == tier and dispatch.frames_states(plan)
    plain_y, plain_h_n = recurrence_forward(plan, xw, h0, u, "tanh", reverse)
    framed_xw = frames.framed_empty(T, B, H, dtype, xw.device, reverse).copy_(xw) if spare else xw
    y, h_n = recurrence_forward(plan, framed_xw, h0, u, "tanh", reverse, xw_spare=spare, framed=True)
    assert (y.data_ptr() == framed_xw.data_ptr()) == (spare and over_xw)
    assert y.is_contiguous() and y.data_ptr() % 16 == 0
    same = torch.equal if device == "cpu" else lambda a, b: rel_err(a.cpu(), b.cpu().double()) < TOLERANCE[dtype]
    assert same(y, plain_y) and same(h_n, plain_h_n)
    assert torch.equal(frames.slot(y, reverse), h0)
    before = torch.cat([y[1:], h0[None]]) if reverse else torch.cat([h0[None], y[:-1]])
    assert torch.equal(frames.entering(y, reverse), before)


@pytest.mark.parametrize("dtype,H", [(torch.float32, 16), (torch.float32, 48), (torch.float32, 20),
                                     (torch.float32, 100), (torch.float32, 128), (torch.float32, 200),
                                     (torch.bfloat16, 100), (torch.float16, 128)], ids=case_id)
@pytest.mark.parametrize("B", [1, 5])
def test_the_fma_forward_writes_the_backwards_operand_once_and_its_states_as_without(dtype, H, B, device):
    """The fma forward given a buffer for the backward's operand (dispatch.empty_backward_operand, as the layer's
    autograd passes it where a backward may follow) fills it with fma.by_columns(U), zero-padded, from the U^T its
    program 0 holds, whether it read U itself (H a multiple of 16) or its forward copy (H = 20, 100), and at
    BLOCK_H = 256 (H = 200) from the half it holds and the half it streams; its states are those of a call without
    it, and the backward kernel then gives the same da and dh0 as from the launcher's copy."""
    T = 3
    xw, h0, u, dy = make_inputs(T, B, H, dtype, device, seed=7)
    plan = plan_for(H, B, dtype, device, kernel="fma")
    operand = dispatch.empty_backward_operand(plan, xw.device)
    assert plan.tier == "fma" and operand is not None
    operand.fill_(float("nan"))  # every element written, the padding as zeros
    plain_y, plain_h_n = recurrence_forward(plan, xw, h0, u, "tanh", False)
    y, h_n = recurrence_forward(plan, xw, h0, u, "tanh", False, backward_operand=operand)
    assert torch.equal(y, plain_y) and torch.equal(h_n, plain_h_n)
    assert torch.equal(operand, fma.by_columns(u, plan.config.backward.BLOCK_H))
    da, dh0 = recurrence_backward(plan, y, dy, u, "tanh", False, operand)
    da_copy, dh0_copy = recurrence_backward(plan, y, dy, u, "tanh", False)
    assert torch.equal(da, da_copy) and torch.equal(dh0, dh0_copy)


def test_only_the_fma_tier_has_its_forward_write_the_backwards_operand():
    """dispatch.empty_backward_operand: a buffer of by_columns' shape on the fma tier, none on the other tiers, whose
    backward launchers take U itself."""
    for H in (128, 256):
        assert dispatch.empty_backward_operand(plan_for(H, 8, torch.float32, "cpu", kernel="fma"), "cpu").shape == (
            H // 4, H, 4)
    for tier, H in (("resident", 128), ("split", 512), ("stepwise", 128)):
        assert dispatch.empty_backward_operand(plan_for(H, 8, torch.bfloat16, "cpu", kernel=tier), "cpu") is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_n", dispatch.STEPWISE_BLOCK_N)
def test_every_stepwise_column_tile_matches_float64_reference(dtype, block_n, device):
    """Each BLOCK_N the dispatcher can give the step kernel, with H in two whole K slices and a partial one (300 at
    BLOCK_K = 128: 5 to 19 column tiles)."""
    config = next(c for c in dispatch.stepwise_configs(dtype) if c.forward.BLOCK_N == block_n)
    H = 2 * config.forward.BLOCK_K + 44
    check_against_reference(KernelPlan("stepwise", config), dtype, (3, 5, H), "tanh", False, device)


@pytest.mark.parametrize("H,bound", [(32, 5e-3), (100, 3e-4)])  # the resident tier's, the fma tier's
def test_hidden_state_carried_in_fp32_not_io_dtype(H, bound, device):
    """Over many steps an fp16 carry would drift; the kernel's error stays near one rounding of h_t. The fma tier
    multiplies the fp32 state itself, so its error is that rounding (half an fp16 ulp, 2^-12 for |h| < 1; a 16-bit
    carry gave 5.8e-4 here); the resident tier's MMA takes the state rounded to 16 bits."""
    T, B = 40, 2
    xw, h0, u, dy = make_inputs(T, B, H, torch.float16, device, seed=3)
    y, _ = recurrence_forward(plan_for(H, B, torch.float16, device), xw, h0, u, "tanh", False)
    ref_y, _, _ = reference_layer(xw.cpu(), h0.cpu(), u.cpu(), "tanh", False, dy.cpu())
    assert (y.cpu().double() - ref_y).abs().max().item() < bound


# Split-H: hidden sizes past the resident tier, one launch per step in the interpreter; B=20 makes each
# program run two batch tiles per step.
SPLIT_SHAPES = [(3, 5, 320), (2, 20, 320), (2, 2, 512), (2, 1, 1024)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SPLIT_SHAPES, ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_split_kernels_match_float64_reference(dtype, shape, nonlinearity, reverse, device):
    plan = plan_for(shape[2], shape[1], dtype, device)
    assert plan.tier == "split"
    check_against_reference(plan, dtype, shape, nonlinearity, reverse, device)


# The cluster configurations (dispatch.SPLIT_CLUSTER_CONFIGS, off by default): 64-row slices, 8-row tiles, the
# state exchanged through L2, or in distributed shared memory in their one-tile form (dsmem.py). Their barrier is
# compiled out in the interpreter like the grid barrier, and there the state passes through global memory; on a GPU
# (sm_90) these run clustered. H = 300 leaves three of H = 512's eight slices past H, H = 200 most of H = 256's fourth;
# B = 9 takes two batch groups.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_h,shape,nonlinearity,reverse", [(512, (2, 5, 300), "tanh", False),
                                                                 (512, (3, 9, 512), "relu", True),
                                                                 (256, (2, 9, 200), "tanh", True)],
                         ids=["T2-B5-H300", "T3-B9-H512", "T2-B9-H200"])
@pytest.mark.parametrize("exchange", ["l2", "dsmem-pull", "dsmem-push"])
def test_split_cluster_configurations_match_float64_reference(exchange, dtype, block_h, shape, nonlinearity, reverse,
                                                              device):
    if device == "cuda" and device_facts("cuda")[1] < 90:
        pytest.skip("thread-block clusters need sm_90")
    if interpreting() and exchange != "l2":
        pytest.skip("the interpreter's one-step launches exchange the state through global memory: the l2 case")
    config = dispatch.SPLIT_CLUSTER_CONFIGS[(dtype, block_h)]
    plan = KernelPlan("split", config if exchange == "l2" else config.replace(ONE_TILE=True, EXCHANGE=exchange))
    check_against_reference(plan, dtype, shape, nonlinearity, reverse, device)


# fp32 at H = 256 in clusters of 4 programs multiplied by FMA (dispatch.SPLIT_CLUSTER_CONFIGS, off by default), as the
# dispatcher gives it (one 2-row tile per cluster) and with the tile loop: B = 5 makes three tiles, the last half
# empty; H = 200 leaves the last slice partly past H. One launch per step in the interpreter.
@pytest.mark.parametrize("one_tile,shape,nonlinearity,reverse", [(True, (2, 5, 200), "tanh", False),
                                                                 (False, (3, 5, 256), "relu", True)],
                         ids=["one-tile-T2-B5-H200", "tile-loop-T3-B5-H256"])
def test_the_fp32_cluster_configuration_matches_float64_reference(one_tile, shape, nonlinearity, reverse, device,
                                                                  monkeypatch):
    if device == "cuda" and device_facts("cuda")[1] < 90:
        pytest.skip("thread-block clusters need sm_90")
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    plan = plan_for(shape[2], shape[1], torch.float32, device)
    assert plan.tier == "split" and plan.config.forward.CLUSTER == 4 and plan.config.forward.ONE_TILE
    check_against_reference(plan if one_tile else KernelPlan("split", dispatch.SPLIT_CLUSTER_CONFIGS[
        (torch.float32, 256)]), torch.float32, shape, nonlinearity, reverse, device)


# A split configuration at an H the interpreter affords (the dispatcher's own start at H = 512), over shapes that
# mask what the dispatcher's never do: T = 1; one partial tile (B = 5); a full tile and one more row (B = 33);
# nine tiles, the last partial (B = 70), each run in turn; H = 72 and 100 leave most of the second warp's K part
# (64-127) masked off.
SPLIT_BLOCKS = SplitBlocks(BLOCK_B=8, BLOCK_N=16, BLOCK_H=128, K_SPLIT=2, num_warps=2)
SPLIT_BLOCK_SHAPES = [(1, 5, 100), (3, 33, 128), (2, 70, 72)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SPLIT_BLOCK_SHAPES, ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_split_block_shapes_match_float64_reference(dtype, shape, nonlinearity, reverse, device):
    check_against_reference(KernelPlan("split", LaunchConfig(SPLIT_BLOCKS, SPLIT_BLOCKS)), dtype, shape, nonlinearity,
                            reverse, device)


# The split product by FMA (SplitBlocks.FMA; the dispatcher's fp32 at H = 2048) at an H the interpreter affords: U's
# slice held as [BLOCK_H, BLOCK_N] (the forward's from U^T), batch rows in pairs, over SPLIT_BLOCK_SHAPES' masks,
# with the tile loop and without (ONE_TILE: a batch group per tile), the warps' parts summed in each thread once a
# tile (IN_THREAD_SUM) and by tl.sum a pair of rows at a time (the split-tl-sum variant); with BLOCK_B = 16 the barrier
# path's test below runs two 8-row groups, and the fp32 cluster configuration's test 2-row tiles.
FMA_SPLIT_BLOCKS = SplitBlocks(BLOCK_B=8, BLOCK_N=16, BLOCK_H=128, K_SPLIT=4, num_warps=4, FMA=True)


@pytest.mark.parametrize("one_tile,shape,summed,block_h", [(False, s, True, 128) for s in SPLIT_BLOCK_SHAPES]
                         + [(True, SPLIT_BLOCK_SHAPES[0], True, 128), (False, SPLIT_BLOCK_SHAPES[0], False, 128),
                            (False, (2, 9, 200), True, 256)],  # two reps of each thread's runs of k
                         ids=case_id)
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_split_fma_product_matches_float64_reference(one_tile, shape, summed, block_h, nonlinearity, reverse,
                                                     device):
    blocks = dataclasses.replace(FMA_SPLIT_BLOCKS, ONE_TILE=one_tile, IN_THREAD_SUM=summed, BLOCK_H=block_h)
    check_against_reference(KernelPlan("split", LaunchConfig(blocks, blocks)), torch.float32, shape, nonlinearity,
                            reverse, device)


# The split product's K_SPLIT partial products summed by Triton's tl.sum over the warps (split.IN_THREAD_SUM off:
# .ci/gpu_variants.py split-tl-sum) rather than in each thread: the two parts of SPLIT_BLOCKS, and the four of 32-row
# slices over three tiles, the last partial.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("blocks,shape", [(SPLIT_BLOCKS, (3, 33, 128)),
                                          (SplitBlocks(BLOCK_B=8, BLOCK_N=32, BLOCK_H=128, K_SPLIT=4, num_warps=4),
                                           (2, 20, 100))], ids=["K2-T3-B33-H128", "K4-T2-B20-H100"])
def test_split_kernels_summing_by_tl_sum_match_float64_reference(blocks, shape, dtype, device, monkeypatch):
    monkeypatch.setattr(split, "IN_THREAD_SUM", False)
    check_against_reference(KernelPlan("split", LaunchConfig(blocks, blocks)), dtype, shape, "tanh", False, device)


@triton.jit
def _sum_leading_kernel(x_ptr, out_ptr, K: tl.constexpr, R: tl.constexpr, C: tl.constexpr):
    offs = tl.arange(0, K)[:, None, None] * R * C + tl.arange(0, R)[None, :, None] * C + tl.arange(0, C)[None, None, :]
    summed = layouts.sum_leading(tl.load(x_ptr + offs))
    tl.store(out_ptr + tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :], summed)


@pytest.mark.parametrize("K", [1, 2, 8, 32])
def test_sum_leading_is_the_sum_over_the_first_axis(K, device):
    """layouts.sum_leading, whole numbers so that any order of the additions is exact."""
    x = torch.randint(-50, 50, (K, 16, 8), generator=torch.Generator().manual_seed(K)).float().to(device)
    out = torch.empty(16, 8, device=device)
    _sum_leading_kernel[(1,)](x, out, K, 16, 8)
    assert torch.equal(out, x.sum(0))


# dispatch.SPLIT_LOOPED_CONFIGS' shape (32-row slices, each K part of U's slice held by one warp, tiles run one
# after another) at an H the interpreter affords: H = 100 leaves most of the last slice and of the last K part
# masked; B = 20 three 8-row tiles (sm_80's), or two of 16 rows (sm_90's, dispatch.SPLIT_LOOPED_BLOCK_B), the last
# partial.
WIDE_SLICE_BLOCKS = SplitBlocks(BLOCK_B=8, BLOCK_N=32, BLOCK_H=128, K_SPLIT=4, num_warps=4)


@pytest.mark.parametrize("block_b", [8, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_split_32_row_slices_with_several_tiles_match_float64_reference(dtype, block_b, device):
    blocks = dataclasses.replace(WIDE_SLICE_BLOCKS, BLOCK_B=block_b)
    check_against_reference(KernelPlan("split", LaunchConfig(blocks, blocks)), dtype, (3, 20, 100), "tanh", False,
                            device)


def barrier_config(block_h: int, one_tile: bool = False, fma: bool = False) -> SplitBlocks:
    """A split configuration whose grid is one program when H <= 16: the barrier path can run in the interpreter."""
    return SplitBlocks(BLOCK_B=16, BLOCK_N=16, BLOCK_H=block_h, K_SPLIT=4 if fma else 1, num_warps=4,
                       ONE_TILE=one_tile, FMA=fma)


@pytest.mark.skipif(not interpreting(), reason="interpreter-only: one program per SM is the interpreter's rule")
@pytest.mark.parametrize("fma", [False, True], ids=["dot", "fma"])
@pytest.mark.parametrize("inputs_ahead", [True, False], ids=["inputs-ahead", "inputs-in-step"])
@pytest.mark.parametrize("one_tile,B", [(False, 20), (True, 5)], ids=["two-tiles", "one-tile"])
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_split_barrier_path_with_a_one_program_grid(nonlinearity, reverse, one_tile, B, inputs_ahead, fma,
                                                    monkeypatch):
    """The persistent time loop (the barrier's; each program's first tile's input a step ahead or not; two batch
    tiles run by the one program every step, or one tile without the tile loop; the product by tl.dot or by FMA),
    run whole, with the layer's ends: b_hh added each step, h_n written after the last, dL/dh_n added to the first
    reverse step's dy, and (the reverse direction's cases) h_0 None, the zeros made with the barrier's words."""
    monkeypatch.setattr(split, "INPUTS_AHEAD", inputs_ahead)
    T, H = 6, 16
    xw, h0, u, dy = make_inputs(T, B, H, torch.float32, "cpu")
    b_hh, dh_n = make_ends(B, H, torch.float32, "cpu")
    h0 = None if reverse else h0
    config = barrier_config(16, one_tile, fma)
    y, h_n = split_forward(xw, h0, u, reverse, config, nonlinearity, use_barrier=True, b_hh=b_hh)
    ref_y, ref_da, _ = reference_with_ends(xw, torch.zeros(B, H) if h0 is None else h0, u, nonlinearity, reverse, dy,
                                           b_hh, dh_n)
    assert rel_err(y, ref_y) < TOLERANCE[torch.float32] and torch.equal(h_n, y[0 if reverse else -1])
    da, dh0 = split_backward(ref_y.float(), dy, u, reverse, config, nonlinearity, use_barrier=True, dh_n=dh_n)
    assert rel_err(da, ref_da) < 2 * TOLERANCE[torch.float32] and dh0 is None  # dh0: dispatch.recurrence_backward's


@pytest.mark.parametrize("tier,H", [("fma", 32), ("resident", 48), ("split", 320), ("stepwise", 48)])
@pytest.mark.parametrize("reverse", [False, True])
def test_dh0_is_made_where_wanted_by_the_split_and_step_kernels_gemm(tier, H, reverse, device):
    """dispatch.recurrence_backward: dL/dh_0 (the split and step kernels': da of the step that consumed h_0, times U,
    in both directions) matches float64 where wanted; where not, those two tiers make none, and the fma and resident
    kernels, which make it themselves, still give it."""
    T, B = 3, 5
    xw, h0, u, dy = make_inputs(T, B, H, torch.float32, device)
    ref_y, ref_da, ref_dh0 = reference_layer(xw.cpu(), h0.cpu(), u.cpu(), "tanh", reverse, dy.cpu())
    plan = plan_for(H, B, torch.float32, device, kernel=tier)
    y = ref_y.to(device=device, dtype=torch.float32)
    da, dh0 = recurrence_backward(plan, y, dy, u, "tanh", reverse)
    assert rel_err(da.cpu(), ref_da) < 2 * TOLERANCE[torch.float32]
    assert rel_err(dh0.cpu(), ref_dh0) < 2 * TOLERANCE[torch.float32]
    _, unwanted = recurrence_backward(plan, y, dy, u, "tanh", reverse, dh0_wanted=False)
    assert (unwanted is None) == (tier in ("split", "stepwise"))


class CountedLaunches:
    """A kernel whose launches record their step count (the argument T) before running."""

    def __init__(self, kernel):
        self.kernel, self.steps = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **keywords):
            self.steps.append(args[-5])  # (..., counters, status, pin, T, B, H, t_first, t_step)
            return self.kernel[grid](*args, **keywords)
        return launch


@pytest.mark.skipif(not interpreting(), reason="interpreter-only: one program per SM is the interpreter's rule")
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_split_runs_more_steps_than_one_launch_takes_in_several(nonlinearity, reverse, monkeypatch):
    """Beyond split.launch_steps (the grid barrier's targets stay below barrier.LOST: here 4, so 4 steps for one
    program), T = 9 runs as launches of 4, 4 and 1 steps, each from the state the one before wrote last, each adding
    b_hh; the last writes h_n, and dL/dh_n goes into the first backward launch's first step alone."""
    monkeypatch.setattr(barrier, "LOST", tl.constexpr(4))
    forward, backward = CountedLaunches(split.split_forward_kernel), CountedLaunches(split.split_backward_kernel)
    monkeypatch.setattr(split, "split_forward_kernel", forward)
    monkeypatch.setattr(split, "split_backward_kernel", backward)
    xw, h0, u, dy = make_inputs(9, 5, 16, torch.float32, "cpu")
    b_hh, dh_n = make_ends(5, 16, torch.float32, "cpu")
    y, h_n = split_forward(xw, h0, u, reverse, barrier_config(16), nonlinearity, use_barrier=True, b_hh=b_hh)
    ref_y, ref_da, _ = reference_with_ends(xw, h0, u, nonlinearity, reverse, dy, b_hh, dh_n)
    da, _ = split_backward(ref_y.float(), dy, u, reverse, barrier_config(16), nonlinearity, use_barrier=True,
                           dh_n=dh_n)
    assert forward.steps == backward.steps == [4, 4, 1]
    assert rel_err(y, ref_y) < TOLERANCE[torch.float32] and torch.equal(h_n, y[0 if reverse else -1])
    assert rel_err(da, ref_da) < 2 * TOLERANCE[torch.float32]


@triton.jit
def barriers_never_met(counter_ptr, status_ptr, STEPS: tl.constexpr):
    """One program at STEPS grid barriers, each waiting for a second program that never arrives."""
    for s in range(1, STEPS + 1):
        barrier.grid_barrier(counter_ptr, status_ptr, 2 * s)


def test_a_grid_barrier_that_gives_up_lets_the_later_ones_pass(device, monkeypatch):
    """After MAX_SPINS polls the barrier reports (status) and raises the counter to LOST, past every target of the
    launch: the next barriers pass at their first poll, so a broken launch waits one bound, not one per step."""
    monkeypatch.setattr(barrier, "MAX_SPINS", tl.constexpr(8))
    counter, status = (torch.zeros(1, dtype=torch.int32, device=device) for _ in range(2))
    barriers_never_met[(1,)](counter, status, STEPS=5)
    assert status.item() == 1 and counter.item() == barrier.LOST.value + 4  # the arrivals after the first give-up


def test_a_cluster_configuration_refuses_the_barrier_path_off_a_gpu():
    """The interpreter runs a grid's programs one after another: a cluster's 8 programs cannot meet at its barrier."""
    xw, h0, u, _ = make_inputs(2, 3, 512, torch.bfloat16, "cpu")
    config = dispatch.SPLIT_CLUSTER_CONFIGS[(torch.bfloat16, 512)].forward
    with pytest.raises(RuntimeError, match="needs 8 co-resident programs but the device has 1 SMs"):
        split_forward(xw, h0, u, False, config, "tanh", use_barrier=True)


# What split._launch_clusters relies on in the installed Triton, read without a GPU: a compiled kernel's packed launch
# metadata is (num_warps, num_ctas, shared), and the CUDA launcher turns num_ctas into the cluster dimension and
# multiplies the grid's x by it; the module is loaded at the first launch, with the shared memory size of the kernel's
# metadata (a named tuple), which opts in to more than 48 KiB where that needs it.
LAUNCH_CONTRACT = """
import inspect, json
import torch
from triton.backends.nvidia import driver
from triton.compiler.compiler import CompiledKernel
from triton.runtime.jit import JITFunction
from kernels import audit, fma
keywords = fma.launch_keywords(fma.FmaBlocks(16, 1), "tanh", torch.float32, False, backward=False)
compiled = audit.compile_for(fma.fma_forward_kernel, "torch.float32", keywords, 90)
source = inspect.getsource(driver)
print(json.dumps({"packed": list(compiled.packed_metadata), "warps": compiled.metadata.num_warps,
                  "ctas": compiled.metadata.num_ctas, "shared": compiled.metadata.shared,
                  "cluster_dim": "clusterDim.x = num_ctas" in source, "grid_x": "gridDimX = gridX * num_ctas" in source,
                  "warmup": hasattr(JITFunction, "warmup"), "replace": hasattr(compiled.metadata, "_replace"),
                  "loads_with_shared": "metadata.shared, device" in inspect.getsource(CompiledKernel._init_handles),
                  "lazy_load": compiled.module is None}))
"""


def test_the_cluster_launch_relies_on_what_tritons_launcher_does():
    """Checked against the installed Triton, so that an upgrade which changes it shows here before a GPU run."""
    facts = json.loads(compiled_without_interpreter(LAUNCH_CONTRACT))
    assert facts["packed"] == [facts["warps"], 1, facts["shared"]] and facts["ctas"] == 1
    assert facts["cluster_dim"] and facts["grid_x"] and facts["warmup"]
    assert facts["replace"] and facts["loads_with_shared"] and facts["lazy_load"]


@pytest.mark.parametrize("extra_shared,shared", [(0, 40964), (16400, 40960 + 128 + 16400)])
def test_the_cluster_launch_sets_the_cta_count_and_divides_the_grid(extra_shared, shared):
    """split._launch_clusters compiles without launching, sets the compiled kernel's CTA count to the cluster size
    and its shared memory to its own plus extra_shared (dsmem.py's slots, from a 128-byte boundary), once, then
    launches cdiv(x, cluster) clusters: with Triton's launcher, one CTA per program, in clusters."""
    class Kernel:
        compiled = SimpleNamespace(packed_metadata=(8, 1, 40964),
                                   metadata=namedtuple("KernelMetadata", "num_warps shared")(8, 40964))
        launches = []

        def warmup(self, *args, grid, **keywords):
            assert grid == (8, 3) and keywords == {"CLUSTER": 8}
            return self.compiled

        def __getitem__(self, grid):
            return lambda *args, **keywords: self.launches.append((grid, args, keywords))
    kernel = Kernel()
    for _ in range(2):  # the second launch finds the kernel set up
        split._launch_clusters(kernel, (8, 3), 8, extra_shared, ("x", 1), {"CLUSTER": 8})
        assert kernel.compiled.packed_metadata == (8, 8, shared) and kernel.compiled.metadata.shared == shared
    assert kernel.launches == [((1, 3), ("x", 1), {"CLUSTER": 8})] * 2


@pytest.mark.parametrize("work", ["exchange", "barrier"])
@pytest.mark.parametrize("dtype,fma", [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True)],
                         ids=["float32", "bfloat16", "float32-fma"])
def test_split_steps_without_the_product_read_and_write_the_state_as_they_say(work, dtype, fma, device):
    """The exchange benchmark's kernels (a configuration by FMA too): without the product, y_t = act(xw_t + the
    sum of h_{t-1} over the hidden units), every step reading the whole previous state the programs wrote; without
    the state's read either, y_t = act(xw_t)."""
    T, B, H = 3, 20, 100 if fma else 512
    xw, h0, u, _ = make_inputs(T, B, H, dtype, device)
    config = FMA_SPLIT_BLOCKS if fma else plan_for(H, B, dtype, device).config.forward
    y = split_forward(xw, h0, u, False, config, "tanh", work=work)[0].cpu().float()
    prev, xw = h0.cpu().float(), xw.cpu().float()
    for t in range(T):
        read = prev.sum(1, keepdim=True) if work == "exchange" else 0.0
        assert rel_err(y[t], torch.tanh(xw[t] + read)) < TOLERANCE[dtype]
        prev = y[t]


def test_a_split_step_refuses_work_it_does_not_know(device):
    xw, h0, u, _ = make_inputs(2, 4, 48, torch.float32, device)
    with pytest.raises(ValueError, match="work must be one of full, exchange, barrier, got 'product'"):
        split_forward(xw, h0, u, False, barrier_config(64), "tanh", work="product")


@pytest.mark.skipif(not interpreting(), reason="interpreter-only: one program per SM is the interpreter's rule")
def test_split_barrier_refuses_a_grid_that_cannot_be_co_resident():
    xw, h0, u, _ = make_inputs(2, 1, 32, torch.float32, "cpu")  # two slices of 16: two programs, one "SM"
    with pytest.raises(RuntimeError, match="co-resident"):
        split_forward(xw, h0, u, False, barrier_config(32), "tanh", use_barrier=True)


@pytest.mark.skipif(not interpreting(), reason="interpreter-only: one program per SM is the interpreter's rule")
def test_a_one_tile_split_configuration_refuses_a_batch_of_several_tiles_per_program():
    xw, h0, u, dy = make_inputs(2, 17, 16, torch.float32, "cpu")  # two tiles of 16 rows, one batch group
    with pytest.raises(ValueError, match="ONE_TILE.*B = 17 makes 2 tiles of 16 for 1 batch group"):
        split_forward(xw, h0, u, False, barrier_config(16, one_tile=True), "tanh", use_barrier=True)
    with pytest.raises(ValueError, match="ONE_TILE"):
        split_backward(xw, dy, u, False, barrier_config(16, one_tile=True), "tanh", use_barrier=True)


def tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to TF32 (10 mantissa bits, to nearest), as the tensor cores read an fp32 operand."""
    bits = x.float().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def emulated_product(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """a @ b as the kernels compute it for fp32 operands in this precision, products summed in float64
    (the order of the fp32 accumulation aside): ieee exact; tf32 one rounded pass; tf32x3 the big and
    small TF32 parts, big*big + big*small + small*big; the resident one-dot products small*small too."""
    if precision == "ieee":
        return a.double() @ b.double()
    a_big, b_big = tf32(a), tf32(b)
    product = a_big.double() @ b_big.double()
    if precision != "tf32":
        a_small, b_small = tf32(a - a_big), tf32(b - b_big)
        product += a_big.double() @ b_small.double() + a_small.double() @ b_big.double()
    if precision in (resident.ONE_DOT_K.value, resident.ONE_DOT_M.value):
        product += a_small.double() @ b_small.double()
    return product


FP32_PRECISIONS = [("resident", p) for p in resident.FP32_PRODUCTS] + [("split", None)]


@pytest.mark.parametrize("tier,fp32_product", FP32_PRECISIONS)
def test_fp32_kernels_multiply_at_fp32_accuracy(tier, fp32_product, monkeypatch):
    """The interpreter multiplies fp32 exactly whatever the precision asked, so the fp32 precision the
    compiled kernels use is checked here by emulation: a 200-step recurrence through it stays within
    the fp32 tolerance of float64 (plain TF32 does not: 2.5e-4 here, against 7e-8 for 3xTF32)."""
    if fp32_product:
        monkeypatch.setattr(resident, "FP32_PRODUCT", fp32_product)
    H = 128 if tier == "resident" else 256
    blocks = plan_for(H, 1, torch.float32, kernel=tier).config.forward
    precision = TIERS[tier].launch_keywords(blocks, "tanh", torch.float32, interpreted=False,
                                            backward=False)["DOT_PRECISION"]
    xw, h0, u, dy = make_inputs(200, 16, H, torch.float32, "cpu")
    ref, _, _ = reference_layer(xw, h0, u, "tanh", False, dy)
    h, states = h0, []
    for t in range(xw.shape[0]):
        h = torch.tanh(xw[t].double() + emulated_product(h, u.t(), precision)).float()
        states.append(h)
    assert rel_err(torch.stack(states), ref) < TOLERANCE[torch.float32]
    assert rel_err(emulated_product(h0, u.t(), "tf32").float(), h0.double() @ u.t().double()) > 1e-4


ATYPICAL_LAUNCHES = """
import json
import torch
from kernels import audit
from kernels.dispatch import TIERS, plan_for
usage = {}
for dtype, hidden, batch in ((torch.float32, 128, 8), (torch.bfloat16, 256, 16), (torch.float32, 64, 200),
                             (torch.bfloat16, 64, 8), (torch.bfloat16, 512, 8), (torch.float32, 2048, 8)):
    plan = plan_for(hidden, batch, dtype)
    tier = TIERS[plan.tier]
    no_h0 = () if plan.tier == "split" else ("h0_ptr",)  # the split launcher gives zeros (split.zeroed)
    unframed = {"h0 unframed": ("h0_copy_ptr",)} if tier.frames else {}  # h_0 given, no frame (frames.py)
    # under no_grad: neither the frame nor the backward's operand that the fma forward writes (empty_backward_operand)
    inference = {"inference": ("h0_copy_ptr", "u_columns_ptr")} if plan.tier == "fma" else {}
    # dL/dh_0 written in the I/O dtype (h_0's, where it needs a gradient): 16-bit, where the kernel makes it
    dh0_in_io = {"dh0 in io dtype": ()} if tier.makes_dh0 and dtype != torch.float32 else {}
    for backward, forms in ((False, {"typical": None, **unframed, **inference, "no h0 no b_hh": no_h0 + ("b_hh_ptr",),
                                     "one step": None}),
                            (True, {"typical": None, "dh_n": (), "dh_n no dy": ("dy_ptr",), **dh0_in_io,
                                    "one step": None})):
        blocks = plan.config.backward if backward else plan.config.forward
        keywords = tier.launch_keywords(blocks, "tanh", dtype, interpreted=False, backward=backward)
        for form, absent in forms.items():
            pointers = {"dh0_ptr": "*" + audit.TRITON_DTYPE[str(dtype)]} if form == "dh0 in io dtype" else None
            # T = 1 (a decoder's step, checkpointed BPTT's last segment of one step): the JIT compiles it as a constant
            one_step = {"T": 1} if form == "one step" else {}
            compiled = audit.compile_for(tier.kernels[backward], str(dtype), keywords | one_step, 90, absent, pointers)
            usage[f"{plan.name} {dtype} {'backward' if backward else 'forward'} {form}"] = audit.resource_usage(
                compiled.asm["cubin"])
print(json.dumps(usage))
"""


def test_the_kernels_compile_for_launches_the_audit_does_not_run():
    """The compile audit compiles typical launches (h_0 and b_hh given, no dL/dh_n, dy given); the interpreter runs
    every launch but is no compiler (a constexpr branch that returns early compiles what follows it, for one). So
    each tier's kernels are compiled for sm_90 here as the layer launches them otherwise: forward without h_0 (hx=None;
    the split tier's launcher always gives one) and b_hh (bias=False), the fma and resident forward given h_0 with no
    frame to copy it into (a frozen U; inference, where the fma forward writes no operand for a backward either),
    backward given dL/dh_n, with and without dy (a loss reading the output and h_n, or h_n alone), and writing
    dL/dh_0 in 16-bit (an h_0 that needs a gradient), and a sequence of one step, which the JIT compiles with T a
    constant (Triton makes an integer argument equal to 1 one; the 16-bit resident forward at BLOCK_H <= 128 once
    failed to compile so): fma fp32 H = 128, resident bf16 256 and 64 (its tiles loaded by inline PTX) and fp32 64
    (3xTF32), split bf16 512 (clusters of 8) and fp32 2048 (by FMA, at 16 warps' limit of 128 registers). None
    spills, and without dy none takes more registers than with it."""
    usage = json.loads(compiled_without_interpreter(ATYPICAL_LAUNCHES))
    assert len(usage) == 49 and {name.split("(")[0] for name in usage} == {"fma", "resident", "split"}
    for name, (registers, spilled) in usage.items():
        assert spilled == 0, (name, usage)
        if name.endswith(" no dy"):
            assert registers <= usage[name.replace(" no dy", "")][0], (name, usage)
