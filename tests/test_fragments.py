"""Per-step tensors in the MMA accumulator's fragment order (kernels/fragments.py): the host's copies into it and back,
which configurations take it, and the resident kernels with and without it against float64. Each test runs with
resident.FRAGMENT_IO on, which is off by default until these tests pass on a GPU."""
import json

import pytest
import torch

from kernels import fragments, resident
from kernels.dispatch import RESIDENT_CONFIGS, plan_for, recurrence_backward, recurrence_forward
from kernels.launch import SIXTEEN_BIT, next_power_of_2

from helpers import (
    TOLERANCE,
    compiled_without_interpreter,
    reference_layer,
    reference_with_ends,
    rel_err,
    where_it_departs,
)


@pytest.fixture(autouse=True)
def fragment_io(monkeypatch):
    monkeypatch.setattr(resident, "FRAGMENT_IO", True)


def accumulator_offset(row: int, col: int, block_b: int) -> int:
    """Where the fragment order keeps element (row, col) of a transposed tile, from the accumulator fragments of the
    PTX ISA (mma.sync m16n8 and wgmma, fp32 accumulator): lane 4 (row % 8) + (col % 8) // 2 of warp row // 16 holds
    it, as register 4 (col // 8) + 2 ((row % 16) // 8) + col % 2 of its block_b // 2."""
    warp, lane = row // 16, 4 * (row % 8) + (col % 8) // 2
    register = 4 * (col // 8) + 2 * ((row % 16) // 8) + col % 2
    return (32 * warp + lane) * (block_b // 2) + register


@pytest.mark.parametrize("T,B,H,block_h", [(1, 16, 64, 64), (2, 5, 48, 64), (70, 40, 130, 256)])
def test_fragment_order_puts_each_element_in_its_accumulator_register(T, B, H, block_h, device):
    """Every element of every step lands where the accumulator's thread and register is (odd B and H padded with
    zeros, several batch tiles, steps beyond a program's), from_fragment_order gives back the tensor, and a
    non-contiguous input is copied alike."""
    block_b = 16
    x = torch.randn(T, B, H)
    f = fragments.to_fragment_order(x.to(device), block_b, block_h).cpu()
    tiles = -(-B // block_b)
    assert f.shape == (T, tiles * block_b * block_h)
    expected = torch.zeros(T, tiles, block_b * block_h)
    for b in range(tiles * block_b):
        for j in range(block_h):
            if b < B and j < H:
                expected[:, b // block_b, accumulator_offset(j, b % block_b, block_b)] = x[:, b, j]
    assert torch.equal(f.view(T, tiles, -1), expected)
    assert torch.equal(fragments.from_fragment_order(f.to(device), B, H, block_b, block_h).cpu(), x)
    batch_major = x.to(device).transpose(0, 1).contiguous().transpose(0, 1)  # the same values, not contiguous
    assert torch.equal(fragments.to_fragment_order(batch_major, block_b, block_h).cpu(), f)


CONVERSIONS_COMPILED = """
import json
from kernels import audit, fragments
usage = {}
for arch in (80, 90):
    for block_h in (64, 128, 256):
        keywords = {"STEPS": fragments.steps_per_program(4096, 16, block_h), "BLOCK_B": 16, "BLOCK_H": block_h,
                    "num_warps": fragments.CONVERSION_WARPS}
        for kernel in (fragments.to_fragment_order_kernel, fragments.from_fragment_order_kernel):
            compiled = audit.compile_for(kernel, "torch.bfloat16", keywords, arch)
            usage[f"{kernel.__name__} BLOCK_H={block_h} sm_{arch}"] = audit.resource_usage(compiled.asm["cubin"])
print(json.dumps(usage))
"""


def test_the_conversions_compile_for_the_gpus_without_spilling():
    """The copies into fragment order and back as a GPU launches them (steps_per_program's programs, CONVERSION_WARPS),
    compiled for sm_80 and sm_90 at every BLOCK_H that takes fragment order: no spills, few registers."""
    usage = json.loads(compiled_without_interpreter(CONVERSIONS_COMPILED))
    assert len(usage) == 12
    for name, (registers, spilled) in usage.items():
        assert spilled == 0 and registers <= 64, (name, registers, spilled)


def test_fragment_order_pads_a_tensor_to_at_most_twice_its_elements():
    """A 16-row tile from 8 batch rows on (a whole BLOCK_H at most twice H): below, a copy would hold 2-16 times the
    tensor, and the launchers convert the tiles instead."""
    assert fragments.PADDING_MAX == 2
    assert [B for B in range(1, 40) if fragments.within_padding_bound(B, 256, 16, 256)] == list(range(8, 40))
    assert fragments.within_padding_bound(16, 33, 16, 64) and not fragments.within_padding_bound(16, 31, 16, 64)
    assert not fragments.within_padding_bound(8, 200, 16, 256)  # 2 x 1.28


@pytest.mark.parametrize("B,copies", [(3, 0), (12, 1)])
def test_the_resident_launchers_take_fragment_order_only_within_the_padding_bound(B, copies, device, monkeypatch):
    """bf16 at H = 64: 3 batch rows would be copied into 16-row tiles, so the tiles are converted in the kernel;
    12 rows take fragment order (one copy into it forward, two backward: y and dy). Both against float64."""
    made = []
    monkeypatch.setattr(resident, "to_fragment_order", lambda x, *blocks: made.append(x.shape) or
                        fragments.to_fragment_order(x, *blocks))
    g = torch.Generator().manual_seed(2)
    xw, h0, u, dy = (t.to(device=device, dtype=torch.bfloat16) for t in (
        torch.randn(3, B, 64, generator=g), torch.randn(B, 64, generator=g) * 0.5,
        torch.randn(64, 64, generator=g) / 8, torch.randn(3, B, 64, generator=g)))
    ref_y, ref_da, _ = reference_layer(xw.cpu(), h0.cpu(), u.cpu(), "tanh", False, dy.cpu())
    plan = plan_for(64, B, torch.bfloat16, device, kernel="resident")
    assert rel_err(recurrence_forward(plan, xw, h0, u, "tanh", False)[0].cpu(), ref_y) < TOLERANCE[torch.bfloat16]
    assert len(made) == copies
    da, _ = recurrence_backward(plan, ref_y.to(device=device, dtype=torch.bfloat16), dy, u, "tanh", False)
    assert rel_err(da.cpu(), ref_da) < 2 * TOLERANCE[torch.bfloat16] and len(made) == 3 * copies


@pytest.mark.parametrize("B", [8, 3])
def test_the_l2_prefetch_is_decided_by_the_tensors_each_kernel_streams(B, device, monkeypatch):
    """prefetch.prefetch_distance weighs what a launch reads and writes: in fragment order (B = 8) the copies, twice
    xw's size here; with the tiles converted (B = 3) xw and y, then y, dy and da, dy read as given (cold: not written
    by the call, prefetch.COLD_GRADIENT), where fragment order reads the call's copy of it."""
    streamed, cold_reads = [], []

    def distance(keywords, streams, cold=None):
        streamed.append([tuple(t.shape) for t in streams])
        cold_reads.append(cold)
        return 0
    monkeypatch.setattr(resident, "prefetch_distance", distance)
    xw, h0, u = (torch.randn(*shape, device=device, dtype=torch.bfloat16) / 8 for shape in ((3, B, 64), (B, 64),
                                                                                             (64, 64)))
    plan = plan_for(64, B, torch.bfloat16, device, kernel="resident")
    y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    recurrence_backward(plan, y, xw, u, "tanh", False)
    copy, tensor = (3, 16 * 64), (3, B, 64)
    assert streamed == ([[copy] * 2, [copy] * 3] if B == 8 else [[tensor] * 2, [tensor] * 3])
    assert cold_reads[0] is None and (cold_reads[1] is None if B == 8 else cold_reads[1].data_ptr() == xw.data_ptr())


@pytest.mark.parametrize("B,spared", [(16, True), (3, False)])
def test_the_layers_forward_writes_the_states_over_xw_in_fragment_order(B, spared, device):
    """recurrence_forward(..., xw_spare=True), as the layer's autograd calls it: in fragment order (bf16, H = 64,
    B = 16) the states go where xw was, so a forward call needs no buffer for them; beyond the padding bound (B = 3),
    or without xw_spare, xw is left as it was. The states match float64 either way."""
    g = torch.Generator().manual_seed(3)
    xw, h0, u = (t.to(device=device, dtype=torch.bfloat16) for t in (
        torch.randn(5, B, 64, generator=g), torch.randn(B, 64, generator=g) * 0.5,
        torch.randn(64, 64, generator=g) / 8))
    ref_y = reference_layer(xw.cpu(), h0.cpu(), u.cpu(), "tanh", False, xw.cpu())[0]
    plan = plan_for(64, B, torch.bfloat16, device, kernel="resident")
    kept = xw.clone()
    y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    assert torch.equal(xw, kept) and y.data_ptr() != xw.data_ptr()
    spared_y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False, xw_spare=True)
    assert (spared_y.data_ptr() == xw.data_ptr()) == spared and torch.equal(spared_y, y)
    assert rel_err(y.cpu(), ref_y) < TOLERANCE[torch.bfloat16]


def test_the_resident_16_bit_configurations_whose_warps_hold_row_bands_take_fragment_order(monkeypatch):
    """FRAGMENTS exactly where fragments.fits: 16-bit, BLOCK_H = 16 * num_warps (BLOCK_H >= 64); never together with
    the inline-PTX tiles or the product converted; in the interpreter too, which runs the same maths. A launch beyond
    the padding bound takes the form without it."""
    for (dtype, block_h), config in RESIDENT_CONFIGS.items():
        for interpreted in (False, True):
            for backward, blocks in enumerate((config.forward, config.backward)):
                keywords = resident.launch_keywords(blocks, "tanh", dtype, interpreted, bool(backward))
                expected = dtype in SIXTEEN_BIT and block_h >= 64
                assert keywords["FRAGMENTS"] == expected, (dtype, block_h)
                assert not (keywords["FRAGMENTS"] and (keywords["ACC_LAYOUT_IO"] or keywords["IN_IO_LAYOUT"]))
                # beyond the padding bound (fragments.within_padding_bound): the form resident.FRAGMENT_IO off gives
                converted = resident.launch_keywords(blocks, "tanh", dtype, interpreted, bool(backward),
                                                     fragment_order=False)
                with monkeypatch.context() as switched:
                    switched.setattr(resident, "FRAGMENT_IO", False)
                    assert converted == resident.launch_keywords(blocks, "tanh", dtype, interpreted, bool(backward))


@pytest.mark.parametrize("dtype", SIXTEEN_BIT, ids=str)
@pytest.mark.parametrize("T,B,H", [(1, 8, 64), (5, 12, 48), (4, 33, 64), (2, 16, 130)], ids=lambda v: str(v))
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_the_resident_kernels_in_fragment_order_match_float64_and_the_converted_tiles(
        dtype, T, B, H, nonlinearity, reverse, device, monkeypatch):
    """Both forms of the 16-bit resident step (fragment order, and the tiles in their own layout: what a GPU lease
    times it against) within the dtype's tolerance of float64, forward and backward, at T = 1, odd B and H, three
    batch tiles, each within the padding bound, given b_hh and dL/dh_n as the layer gives them; in the interpreter
    the two give the same bits."""
    assert fragments.within_padding_bound(B, H, 16, next_power_of_2(H))
    g = torch.Generator().manual_seed(1)
    xw, h0, u, dy, b_hh, dh_n = (t.to(device=device, dtype=dtype) for t in (
        torch.randn(T, B, H, generator=g) * 0.8, torch.randn(B, H, generator=g) * 0.5,
        torch.randn(H, H, generator=g) / H ** 0.5, torch.randn(T, B, H, generator=g),
        torch.randn(H, generator=g) * 0.3, torch.randn(B, H, generator=g)))
    ref_y, ref_da, ref_dh0 = reference_with_ends(*(t.cpu() for t in (xw, h0, u)), nonlinearity, reverse,
                                                 *(t.cpu() for t in (dy, b_hh, dh_n)))
    results = []
    for on in (True, False):
        monkeypatch.setattr(resident, "FRAGMENT_IO", on)
        plan = plan_for(H, B, dtype, device, kernel="resident")
        y, h_n = recurrence_forward(plan, xw, h0, u, nonlinearity, reverse, b_hh=b_hh)
        da, dh0 = recurrence_backward(plan, ref_y.to(device=device, dtype=dtype), dy, u, nonlinearity, reverse,
                                      dh_n=dh_n)
        assert rel_err(y.cpu(), ref_y) < TOLERANCE[dtype], (on, where_it_departs(y.cpu(), ref_y, TOLERANCE[dtype]))
        assert torch.equal(h_n, y[0 if reverse else -1])
        assert rel_err(da.cpu(), ref_da) < 2 * TOLERANCE[dtype], (on, where_it_departs(da.cpu(), ref_da,
                                                                                      2 * TOLERANCE[dtype]))
        assert rel_err(dh0.cpu(), ref_dh0) < 2 * TOLERANCE[dtype]
        results.append((y, da, dh0))
    if device == "cpu":
        assert all(torch.equal(a, b) for a, b in zip(*results))
