"""Per-step tensors in the MMA accumulator's fragment order (kernels/fragments.py): the host's copies into it and back,
which configurations take it, and the resident kernels with and without it against float64."""
import pytest
import torch

from kernels import fragments, resident
from kernels.dispatch import RESIDENT_CONFIGS, plan_for, recurrence_backward, recurrence_forward
from kernels.launch import SIXTEEN_BIT

from helpers import TOLERANCE, reference_layer, rel_err


def accumulator_offset(row: int, col: int, block_b: int) -> int:
    """Where the fragment order keeps element (row, col) of a transposed tile, from the accumulator fragments of the
    PTX ISA (mma.sync m16n8 and wgmma, fp32 accumulator): lane 4 (row % 8) + (col % 8) // 2 of warp row // 16 holds
    it, as register 4 (col // 8) + 2 ((row % 16) // 8) + col % 2 of its block_b // 2."""
    warp, lane = row // 16, 4 * (row % 8) + (col % 8) // 2
    register = 4 * (col // 8) + 2 * ((row % 16) // 8) + col % 2
    return (32 * warp + lane) * (block_b // 2) + register


@pytest.mark.parametrize("T,B,H,block_h", [(1, 16, 64, 64), (2, 5, 48, 64), (3, 40, 130, 256)])
def test_fragment_order_puts_each_element_in_its_accumulator_register(T, B, H, block_h):
    """Every element of every step lands where the accumulator's thread and register is (odd B and H padded with
    zeros, several batch tiles), from_fragment_order gives back the tensor, and a non-contiguous input is copied
    alike."""
    block_b = 16
    x = torch.randn(T, B, H)
    f = fragments.to_fragment_order(x, block_b, block_h)
    tiles = -(-B // block_b)
    assert f.shape == (T, tiles * block_b * block_h)
    expected = torch.zeros(T, tiles, block_b * block_h)
    for b in range(tiles * block_b):
        for j in range(block_h):
            if b < B and j < H:
                expected[:, b // block_b, accumulator_offset(j, b % block_b, block_b)] = x[:, b, j]
    assert torch.equal(f.view(T, tiles, -1), expected)
    assert torch.equal(fragments.from_fragment_order(f, B, H, block_b, block_h), x)
    batch_major = x.transpose(0, 1).contiguous().transpose(0, 1)  # the same values, not contiguous
    assert torch.equal(fragments.to_fragment_order(batch_major, block_b, block_h), f)


def test_the_resident_16_bit_configurations_whose_warps_hold_row_bands_take_fragment_order():
    """FRAGMENTS exactly where fragments.fits: 16-bit, BLOCK_H = 16 * num_warps (BLOCK_H >= 64); never together with
    the inline-PTX tiles or the product converted; in the interpreter too, which runs the same maths."""
    for (dtype, block_h), config in RESIDENT_CONFIGS.items():
        for interpreted in (False, True):
            for backward, blocks in enumerate((config.forward, config.backward)):
                keywords = resident.launch_keywords(blocks, "tanh", dtype, interpreted, bool(backward))
                expected = dtype in SIXTEEN_BIT and block_h >= 64
                assert keywords["FRAGMENTS"] == expected, (dtype, block_h)
                assert not (keywords["FRAGMENTS"] and (keywords["ACC_LAYOUT_IO"] or keywords["IN_IO_LAYOUT"]))


@pytest.mark.parametrize("dtype", SIXTEEN_BIT, ids=str)
@pytest.mark.parametrize("T,B,H", [(1, 3, 64), (5, 5, 48), (4, 33, 64), (2, 2, 130)], ids=lambda v: str(v))
@pytest.mark.parametrize("nonlinearity,reverse", [("tanh", False), ("relu", True)])
def test_the_resident_kernels_in_fragment_order_match_float64_and_the_converted_tiles(
        dtype, T, B, H, nonlinearity, reverse, device, monkeypatch):
    """Both forms of the 16-bit resident step (fragment order, and the tiles in their own layout: what a GPU lease
    times it against) within the dtype's tolerance of float64, forward and backward, at T = 1, odd B and H, three
    batch tiles; in the interpreter the two give the same bits."""
    g = torch.Generator().manual_seed(1)
    xw, h0, u, dy = (t.to(device=device, dtype=dtype) for t in (
        torch.randn(T, B, H, generator=g) * 0.8, torch.randn(B, H, generator=g) * 0.5,
        torch.randn(H, H, generator=g) / H ** 0.5, torch.randn(T, B, H, generator=g)))
    ref_y, ref_da, ref_dh0 = reference_layer(xw.cpu(), h0.cpu(), u.cpu(), nonlinearity, reverse, dy.cpu())
    results = []
    for on in (True, False):
        monkeypatch.setattr(resident, "FRAGMENT_IO", on)
        plan = plan_for(H, B, dtype, device, kernel="resident")
        y = recurrence_forward(plan, xw, h0, u, nonlinearity, reverse)
        da, dh0 = recurrence_backward(plan, ref_y.to(device=device, dtype=dtype), dy, u, nonlinearity, reverse)
        assert rel_err(y.cpu(), ref_y) < TOLERANCE[dtype]
        assert rel_err(da.cpu(), ref_da) < 2 * TOLERANCE[dtype] and rel_err(dh0.cpu(), ref_dh0) < 2 * TOLERANCE[dtype]
        results.append((y, da, dh0))
    if device == "cpu":
        assert all(torch.equal(a, b) for a, b in zip(*results))
