"""Checkpointed BPTT (TritonRNN(checkpoint=True), ElmanRecurrence's checkpoint argument): the same
gradients as without it and as float64 torch.nn.RNN, and about sqrt(T) states saved instead of T.
The option reaches ElmanRecurrence through the layer, so these tests run it too. The interpreter affords
short sequences only, so most tests lower the segments' floor (recompute.SEGMENT_MIN_STEPS) to 1: the square
root's segments, several of them."""
import math

import pytest
import torch

from kernels import TritonRNN, recompute
from kernels.recompute import ahead, segments
from rnnbench.backends import Prepared
from rnnbench.measure import Inputs, saved_activation_mib

from helpers import DTYPES, TOLERANCE, reference_copy, rel_err, run_and_backward


@pytest.fixture
def sqrt_segments(monkeypatch):
    """Segments of ceil(sqrt(T)) steps at every T: no floor."""
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 1)


@pytest.mark.parametrize("floor", [1, recompute.SEGMENT_MIN_STEPS])
@pytest.mark.parametrize("T", [1, 2, 4, 5, 10, 99, 100, 300, 4096, 1_100_000])
def test_segments_cover_time_in_pieces_of_sqrt_t_or_the_floor(T, floor, monkeypatch):
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", floor)
    pieces = segments(T, checkpoint=True)
    size = max(math.ceil(math.sqrt(T)), floor)
    assert pieces[0][0] == 0 and pieces[-1][1] == T
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(0 < stop - start <= size for start, stop in pieces)
    assert [stop - start for start, stop in pieces[:-1]] == [size] * (len(pieces) - 1)
    assert len(pieces) == math.ceil(T / size) <= math.ceil(math.sqrt(T))  # never more states kept than sqrt(T)
    assert segments(T, checkpoint=False) == [(0, T)]


def test_the_default_floor_makes_few_long_segments():
    floor = recompute.SEGMENT_MIN_STEPS
    assert floor > 1
    assert segments(4096, True) == [(s, s + floor) for s in range(0, 4096, floor)]
    assert segments(floor, True) == [(0, floor)]  # one: nothing kept


def test_each_next_segment_is_recomputed_before_the_current_one_is_handed_over():
    """recompute.ahead issues segment k+1's recomputation before the caller's backward of segment k (on a GPU on
    a second stream, beside it; here in the same order on the one stream), and hands them over in order."""
    events = []

    def recompute_segment(k):
        events.append(("recompute", k))
        return torch.full((1,), float(k))
    for k, states in ahead([3, 2, 1, 0], recompute_segment, stream=None):
        assert states.item() == k
        events.append(("backward", k))
    assert events == [("recompute", 3), ("recompute", 2), ("backward", 3), ("recompute", 1), ("backward", 2),
                      ("recompute", 0), ("backward", 1), ("backward", 0)]
    assert list(ahead([5], recompute_segment, stream=None))[0][0] == 5


# T=10 and 17 give segments of 4 and 5 with a shorter last one; T=1 a single step.
CASES = {
    "T17-h48-b5": dict(T=17, B=5, H=48),
    "T10-2layer-relu-bidir-batchfirst": dict(num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True,
                                             T=10, B=3, H=24),
    "T1-no-bias-no-h0": dict(bias=False, T=1, B=2, H=16, no_h0=True),
}


def run_case(spec, dtype, device, kernel="auto", checkpoint=True):
    spec = dict(spec)
    T, B, H, no_h0 = spec.pop("T"), spec.pop("B"), spec.pop("H"), spec.pop("no_h0", False)
    torch.manual_seed(0)
    layer = TritonRNN(6, H, kernel=kernel, checkpoint=checkpoint, device=device, dtype=dtype, **spec)
    D = 2 if layer.bidirectional else 1
    x = torch.randn((B, T, 6) if layer.batch_first else (T, B, 6)).to(dtype)
    hx = None if no_h0 else (torch.randn(layer.num_layers * D, B, H) * 0.5).to(dtype)
    return layer, x, hx, run_and_backward(layer, x.to(device), None if hx is None else hx.to(device))


@pytest.mark.parametrize("kernel", ["auto", "stepwise"])
@pytest.mark.parametrize("dtype", [torch.float64] + DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_checkpointed_gradients_match_nn_rnn_float64(case, dtype, kernel, device, sqrt_segments):
    if dtype == torch.bfloat16 and CASES[case].get("nonlinearity") == "relu":
        pytest.skip("bf16 relu: a pre-activation within bf16 rounding of 0 flips relu' (test_packed.py says more)")
    layer, x, hx, (out, h_n, grads) = run_case(CASES[case], dtype, device, kernel)
    ref_out, ref_h_n, ref_grads = run_and_backward(reference_copy(layer), x.double(),
                                                   None if hx is None else hx.double())
    tol = TOLERANCE[dtype]
    assert rel_err(out.cpu(), ref_out) < tol and rel_err(h_n.cpu(), ref_h_n) < tol
    for name, ref_grad in ref_grads.items():
        if ref_grad is not None:
            assert rel_err(grads[name].cpu(), ref_grad) < 4 * tol, name


@pytest.mark.parametrize("case", CASES, ids=str)
def test_checkpointed_gradients_equal_the_full_backward_in_float64(case, device, sqrt_segments):
    *_, (_, _, full) = run_case(CASES[case], torch.float64, device, checkpoint=False)
    *_, (_, _, checkpointed) = run_case(CASES[case], torch.float64, device, checkpoint=True)
    for name, grad in full.items():
        if grad is not None:
            assert rel_err(checkpointed[name].cpu(), grad.cpu()) < 1e-13, name


def test_checkpoint_through_the_split_tier(device, sqrt_segments):
    layer, x, hx, (out, h_n, grads) = run_case(dict(T=3, B=1, H=300, bidirectional=True), torch.float32, device)
    assert {p.tier for p in layer.last_plans} == {"split"}
    _, _, ref_grads = run_and_backward(reference_copy(layer), x.double(), hx.double())
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name].cpu(), ref_grad) < 4 * TOLERANCE[torch.float32], name


def test_segments_of_the_floor_give_the_full_backward(device, monkeypatch):
    """T = 20 with a floor of 8: segments of 8, 8 and 4 (the square root's: 4 of 5), in both directions."""
    spec = dict(T=20, B=3, H=24, bidirectional=True)
    *_, (_, _, full) = run_case(spec, torch.float64, device, checkpoint=False)
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 8)
    *_, (_, _, checkpointed) = run_case(spec, torch.float64, device, checkpoint=True)
    for name, grad in full.items():
        assert rel_err(checkpointed[name].cpu(), grad.cpu()) < 1e-13, name
    assert saved_bytes(TritonRNN(8, 24, checkpoint=True, device=device), 20, 3, device) == 2 * 3 * 24 * 4


def test_the_forward_fixes_the_segments(device, monkeypatch):
    """The states kept are the entries of the forward's segments: a floor changed before the backward changes
    nothing (its segments would need states the forward did not keep)."""
    x = torch.randn(20, 2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
    x.requires_grad_(True)
    grads = {}
    for checkpoint in (False, True):
        torch.manual_seed(0)  # the same weights
        layer = TritonRNN(6, 16, checkpoint=checkpoint, device=device, dtype=torch.float64)
        monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 8)
        out, _ = layer(x)
        monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 1)
        grads[checkpoint] = torch.autograd.grad(out.sum(), [x, *layer.parameters()])
    for name, full, checkpointed in zip(["input", *dict(layer.named_parameters())], grads[False], grads[True]):
        assert rel_err(checkpointed.cpu(), full.cpu()) < 1e-13, name


def saved_bytes(layer: TritonRNN, T: int, B: int, device) -> int:
    """What autograd keeps for the backward of one forward: rnnbench's activation_memory measurement."""
    x = torch.randn(T, B, layer.input_size, device=device)
    h0 = torch.zeros(1, B, layer.hidden_size, device=device)
    return round(saved_activation_mib(Prepared(layer, dict(layer.named_parameters())), Inputs(x, h0, x)) * 2 ** 20)


def test_checkpoint_saves_about_sqrt_t_states_instead_of_t(device, sqrt_segments):
    T, B, H = 256, 4, 32
    torch.manual_seed(0)
    full = saved_bytes(TritonRNN(8, H, device=device), T, B, device)
    checkpointed = saved_bytes(TritonRNN(8, H, checkpoint=True, device=device), T, B, device)
    state_bytes = B * H * 4
    u_bytes = H * H * 4  # the fma backward's operand, U by columns in fp32, which its forward writes (BLOCK_H = H)
    assert full == (T + 1) * state_bytes + u_bytes  # every h_t, and h_0 in their frame (frames.py: dU in one GEMM)
    assert checkpointed == (len(segments(T, True)) - 1) * state_bytes  # the state entering each later segment
    assert checkpointed <= 2 * math.sqrt(T) * state_bytes


@pytest.mark.parametrize("H,forward_copies", [(16, 0), (20, 1)])
def test_the_backward_lays_out_u_once_for_all_its_segments(H, forward_copies, device, monkeypatch, sqrt_segments):
    """The fma tier's backward takes U in its own layout, a copy, and so does its forward where H is not a multiple
    of 16 (fma.reads_u_itself; elsewhere it reads U itself): the checkpointed backward makes the recomputation's and
    its own once (dispatch.recurrence_operand), not once per segment, and the gradients stay right."""
    from kernels import fma
    copies = []
    lay_out = fma.by_columns
    monkeypatch.setattr(fma, "by_columns", lambda m, block_h: copies.append(block_h) or lay_out(m, block_h))
    torch.manual_seed(0)
    layer = TritonRNN(6, H, checkpoint=True, device=device)
    x = torch.randn(17, 2, 6, device=device, requires_grad=True)
    out, _ = layer(x)
    block_h = layer.last_plans[0].config.forward.BLOCK_H
    assert layer.last_plans[0].tier == "fma" and copies == [block_h] * forward_copies  # the forward's
    grads = torch.autograd.grad(out.sum(), [x, *layer.parameters()])
    # then the recomputation's, where the forward copies, and the backward's
    assert len(segments(17, True)) == 4 and copies == [block_h] * (2 * forward_copies + 1)
    ref = reference_copy(layer)
    ref_grads = torch.autograd.grad(ref(x.detach().cpu().double().requires_grad_(True))[0].sum(),
                                    list(ref.parameters()))
    for got, want in zip(grads[1:], ref_grads):
        assert rel_err(got.cpu(), want) < 4 * TOLERANCE[torch.float32]
