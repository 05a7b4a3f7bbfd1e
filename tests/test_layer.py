"""TritonRNN as a drop-in torch.nn.RNN, and ElmanRNNModel, against float64 nn.RNN with the same weights."""
import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kernels import ElmanRNNModel, TritonRNN, dispatch, fma, plan_for, recompute, resident

from helpers import DTYPES, TOLERANCE, reference_copy, rel_err, run_and_backward

CASES = {
    "1layer-tanh-h48-b5": dict(num_layers=1, nonlinearity="tanh", T=7, B=5, H=48),
    "2layer-relu-bidir-batchfirst": dict(num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True,
                                         T=4, B=3, H=24),
    "no-bias-no-h0-T1": dict(bias=False, T=1, B=2, H=16, no_h0=True),
    "T37-B1": dict(T=37, B=1, H=20),
}


def check_layer_against_nn_rnn(case, dtype, kernel, device, tier=None):
    """TritonRNN built as case (a CASES value) says: outputs within dtype's tolerance of float64 nn.RNN's,
    gradients within 4x, on the tier kernel asks for (with auto: tier, by default CASES' sizes' tier)."""
    spec = dict(case)
    T, B, H, no_h0 = spec.pop("T"), spec.pop("B"), spec.pop("H"), spec.pop("no_h0", False)
    torch.manual_seed(0)
    layer = TritonRNN(6, H, kernel=kernel, device=device, dtype=dtype, **spec)
    ref = reference_copy(layer)
    D = 2 if layer.bidirectional else 1
    x = torch.randn((B, T, 6) if layer.batch_first else (T, B, 6))
    hx = None if no_h0 else torch.randn(layer.num_layers * D, B, H) * 0.5
    out, h_n, grads = run_and_backward(layer, x.to(device, dtype), None if hx is None else hx.to(device, dtype))
    ref_hx = None if hx is None else hx.to(dtype).double()
    ref_out, ref_h_n, ref_grads = run_and_backward(ref, x.to(dtype).double(), ref_hx)
    assert out.shape == ref_out.shape and h_n.shape == ref_h_n.shape and out.dtype == dtype
    tol = TOLERANCE[dtype]
    assert rel_err(out.cpu(), ref_out) < tol
    assert rel_err(h_n.cpu(), ref_h_n) < tol
    for name, ref_grad in ref_grads.items():
        if ref_grad is None:
            continue
        assert rel_err(grads[name].cpu(), ref_grad) < 4 * tol, name
    tier = kernel if kernel != "auto" else tier or ("fma" if dtype == torch.float32 else "resident")  # CASES' sizes
    assert layer.last_plans and all(p.tier == tier for p in layer.last_plans)


# Every tier the dispatcher picks for CASES' sizes (auto), the resident tier where auto picks another (fp32),
# and the stepwise one.
KERNELS = [(dt, k) for dt in DTYPES for k in ("auto", "stepwise")] + [(torch.float32, "resident")]


@pytest.mark.parametrize("dtype,kernel", KERNELS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_nn_rnn_float64(case, dtype, kernel, device):
    check_layer_against_nn_rnn(CASES[case], dtype, kernel, device)


@pytest.mark.parametrize("fp32_product", [p for p in resident.FP32_PRODUCTS if p != resident.FP32_PRODUCT])
@pytest.mark.parametrize("case", ["1layer-tanh-h48-b5", "2layer-relu-bidir-batchfirst"])
def test_fp32_products_match_nn_rnn_float64(case, fp32_product, device, monkeypatch):
    """The resident fp32 products other than the default, through the layer (both directions, stacked)."""
    monkeypatch.setattr(resident, "FP32_PRODUCT", fp32_product)
    check_layer_against_nn_rnn(CASES[case], torch.float32, "resident", device)


def test_fp32_beyond_128_matches_nn_rnn_float64(device):
    """fp32 at 128 < H <= 256: the fma tier with half of U streamed every step (BLOCK_H = 256), through the
    layer: both directions, stacked, H padded."""
    case = dict(num_layers=2, nonlinearity="tanh", bidirectional=True, T=3, B=2, H=200)
    check_layer_against_nn_rnn(case, torch.float32, "auto", device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_at_h128_matches_nn_rnn_float64_on_the_fma_tier(dtype, device):
    """16-bit at 64 < H <= 128: the fma tier (fp32 U and state, 16-bit tiles), through the layer: both directions,
    stacked, H padded, relu; dh0 comes back in fp32 and the layer casts it."""
    case = dict(num_layers=2, nonlinearity="relu", bidirectional=True, T=3, B=2, H=100)
    check_layer_against_nn_rnn(case, dtype, "auto", device, tier="fma")


def test_fp32_at_h2048_matches_nn_rnn_float64_by_the_split_tiers_fma_product(device):
    """fp32 past H = 1024: the dispatcher's own configuration (125 slices of 16 rows of H = 2000, padded to 2048,
    multiplied by FMA) through the layer, with h0, every gradient and relu."""
    plan = plan_for(2000, 2, torch.float32, device)
    if plan.tier != "split":
        pytest.skip(f"fp32 at H = 2048 needs 128 SMs for the split tier: {plan.reason}")
    assert plan.config.forward.FMA
    check_layer_against_nn_rnn(dict(nonlinearity="relu", T=2, B=2, H=2000), torch.float32, "split", device)


def test_state_dict_round_trips_with_nn_rnn(device):
    torch.manual_seed(0)
    theirs = torch.nn.RNN(5, 12, num_layers=2, bidirectional=True)
    ours = TritonRNN(5, 12, num_layers=2, bidirectional=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.RNN(5, 12, num_layers=2, bidirectional=True)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(6, 3, 5)
    with torch.no_grad():
        expected, _ = theirs(x)
        got, _ = ours.to(device)(x.to(device))
        again, _ = back(x)
    assert rel_err(got.cpu(), expected) < 1e-5
    assert torch.equal(again, expected)


def test_parametrized_weights_run_as_in_nn_rnn(device):
    """A weight under torch.nn.utils.parametrize is read through its parametrization, as nn.RNN reads it, and its
    gradient reaches the original tensor."""
    from torch.nn.utils import parametrize

    class Halved(torch.nn.Module):
        def forward(self, w):
            return 0.5 * w
    torch.manual_seed(0)
    theirs = torch.nn.RNN(5, 12, num_layers=2).double()
    ours = TritonRNN(5, 12, num_layers=2).to(device)
    ours.load_state_dict(theirs.state_dict())
    for layer in (theirs, ours):
        parametrize.register_parametrization(layer, "weight_hh_l1", Halved())
    x = torch.randn(6, 3, 5)
    expected, got = theirs(x.double())[0], ours(x.to(device))[0]
    originals = (layer.parametrizations.weight_hh_l1.original for layer in (theirs, ours))
    (expected_grad,), (grad,) = (torch.autograd.grad(y.sum(), w) for y, w in zip((expected, got), originals))
    assert rel_err(got.cpu(), expected) < 2e-5
    assert rel_err(grad.cpu(), expected_grad) < 1e-4


def test_initialisation_matches_nn_rnn():
    torch.manual_seed(7)
    theirs = torch.nn.RNN(9, 33, num_layers=2)
    torch.manual_seed(7)
    ours = TritonRNN(9, 33, num_layers=2)
    for (name, a), (_, b) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert torch.equal(a, b), name


def test_unbatched_input_and_non_contiguous_input(device):
    torch.manual_seed(0)
    layer = TritonRNN(4, 16, device=device)
    ref = reference_copy(layer)
    x = torch.randn(3, 10, 4).transpose(0, 1)  # [T=10, B=3, I=4], not contiguous
    assert not x.is_contiguous()
    with torch.no_grad():
        out, h_n = layer(x.to(device))
        ref_out, ref_h_n = ref(x.double())
        single, single_h = layer(x[:, 0].to(device))  # unbatched [T, I]
    assert rel_err(out.cpu(), ref_out) < 2e-5 and rel_err(h_n.cpu(), ref_h_n) < 2e-5
    assert single.shape == (10, 16) and single_h.shape == (1, 16)
    assert rel_err(single.cpu(), ref_out[:, 0]) < 2e-5


def test_dropout_between_layers_only_in_training(device):
    torch.manual_seed(0)
    layer = TritonRNN(4, 16, num_layers=2, dropout=0.5, device=device)
    x = torch.randn(5, 3, 4, device=device)
    with torch.no_grad():
        layer.eval()
        a, _ = layer(x)
        b, _ = layer(x)
        layer.train()
        c, _ = layer(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_gradcheck_float64(device):
    torch.manual_seed(0)
    layer = TritonRNN(3, 5, num_layers=1, dtype=torch.float64, device=device)
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(1, 2, 5, dtype=torch.float64, device=device, requires_grad=True)
    params = tuple(layer.parameters())

    def f(x, h0, *weights):
        names = [n for n, _ in layer.named_parameters()]
        out, h_n = torch.func.functional_call(layer, dict(zip(names, weights)), (x, h0))
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-6)


class ShapesMade(TorchDispatchMode):
    """The shape of every tensor an op makes while it is on (on autograd's own threads too); views and aliases of a
    tensor are not made."""

    def __init__(self):
        super().__init__()
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.shapes.update(tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


# Which of the layer's inputs need no gradient: data fed to a first layer, hx=None's zeros, frozen weights.
NO_GRAD = {"data-input": {"input"}, "hx": {"hx"}, "frozen-input-weights": {"weight_ih_l0", "bias_ih_l0"},
           "frozen-recurrence-data-input": {"weight_hh_l0", "bias_hh_l0", "input"},
           "frozen-weights": {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"},
           "hx-alone": {"input", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}}


@pytest.mark.parametrize("kernel", ["auto", "stepwise"])  # dL/dh_0 by the kernel (resident), by the dispatcher's GEMM
@pytest.mark.parametrize("checkpoint", [False, True], ids=["full", "checkpointed"])
@pytest.mark.parametrize("no_grad", NO_GRAD.values(), ids=NO_GRAD)
def test_only_the_gradients_asked_for_are_made(no_grad, checkpoint, kernel, device, monkeypatch):
    """Every gradient asked for matches float64 nn.RNN's; what needs none gets none, and its work is not done: no op
    of the backward makes a tensor of dX's shape for an input without grad ([T * B, I]: the GEMM, its buffer) nor of
    dW_ih's for a frozen W_ih. Checkpointed in segments of 3 steps, whose sums go through the fp32 buffers and whose
    dL/dh passes from each segment to the next whether or not h_0 wants one."""
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 1)
    T, B, I, H = 7, 5, 6, 48  # I appears in no other operand's shape
    torch.manual_seed(0)
    layer = TritonRNN(I, H, kernel=kernel, checkpoint=checkpoint, device=device)
    ref = reference_copy(layer)
    x, hx = torch.randn(T, B, I), torch.randn(1, B, H)
    grads, made = {}, {}
    for module, dtype in ((layer, torch.float32), (ref, torch.float64)):
        for name, p in module.named_parameters():
            p.requires_grad_(name not in no_grad)
        inputs = {"input": x.to(device, dtype).requires_grad_("input" not in no_grad),
                  "hx": hx.to(device, dtype).requires_grad_("hx" not in no_grad)}
        out, h_n = module(inputs["input"], inputs["hx"])
        wanted = {**{n: t for n, t in inputs.items() if t.requires_grad},
                  **{n: p for n, p in module.named_parameters() if p.requires_grad}}
        with ShapesMade() as made[module]:
            found = torch.autograd.grad(out.sum() + h_n.square().sum(), list(wanted.values()))
        grads[module] = dict(zip(wanted, found))
    assert set(grads[layer]) == set(grads[ref]) == {"input", "hx", *dict(layer.named_parameters())} - no_grad
    for name, ref_grad in grads[ref].items():
        assert rel_err(grads[layer][name].cpu(), ref_grad.cpu()) < 4 * TOLERANCE[torch.float32], name
    shapes = made[layer].shapes
    assert ((T * B, I) in shapes or (T, B, I) in shapes) == ("input" not in no_grad)
    assert ((H, I) in shapes) == ("weight_ih_l0" not in no_grad)


# What a loss reads of the layer's (output, h_n): a sequence model's outputs, a classifier's final state
READS = {"output": (1.0, 0.0), "h_n": (0.0, 1.0)}


@pytest.mark.parametrize("dtype,kernel", [(torch.float32, "auto"), (torch.bfloat16, "auto"),
                                          (torch.float32, "stepwise")], ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("checkpoint", [False, True], ids=["full", "checkpointed"])
@pytest.mark.parametrize("reads", READS)
def test_a_loss_of_the_output_alone_or_of_h_n_alone_gets_nn_rnns_gradients(reads, checkpoint, dtype, kernel, device,
                                                                             monkeypatch):
    """The layer's h_n is an output of its own (the fma and resident kernels write it and take its gradient, Tier.
    fused_ends): a loss that reads only one of (output, h_n) gets the gradients float64 nn.RNN gives, the other's
    being None to autograd (zeros for the output where only h_n is read). Both directions; checkpointed in segments of
    3 steps, so that dL/dh_n enters the last processed segment and each segment's dL/dh_0 the one before."""
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 1)
    torch.manual_seed(0)
    layer = TritonRNN(6, 40, bidirectional=True, kernel=kernel, checkpoint=checkpoint, device=device, dtype=dtype)
    ref = reference_copy(layer)
    x, hx = torch.randn(7, 5, 6), torch.randn(2, 5, 40) * 0.5
    weights = READS[reads]
    grads = {}
    for module, io_dtype in ((layer, dtype), (ref, torch.float64)):
        inputs = [x.to(device, io_dtype).requires_grad_(), hx.to(device, io_dtype).requires_grad_()]
        out, h_n = module(*inputs)
        loss = weights[0] * out.double().sin().sum() + weights[1] * h_n.double().sin().sum()
        grads[module] = torch.autograd.grad(loss, inputs + list(module.parameters()))
    for got, want in zip(grads[layer], grads[ref]):
        assert rel_err(got.cpu(), want.cpu()) < 4 * TOLERANCE[dtype]
    assert {p.tier for p in layer.last_plans} == {"fma" if dtype == torch.float32 and kernel == "auto" else
                                                 "resident" if kernel == "auto" else kernel}


class OpsRun(TorchDispatchMode):
    """The aten ops run inside it, by name."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


GEMMS = {"mm", "addmm", "addmm_"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # the fma and resident tiers
def test_a_call_without_hx_fills_no_zeros_for_h_0_and_either_way_du_is_one_gemm(dtype, device):
    """hx=None: the fma and resident kernels start from zeros themselves (Tier.fused_ends), so the forward fills no
    tensor of zeros (nn.RNN makes hx's), and dU's term of h_0, zero, is no GEMM in the backward. With hx given their
    forward writes h_0 beside the states (frames.py), so that dU is one GEMM too: per direction of the first layer dW_ih
    and dU, of the second dX, dW_ih and dU, either way. The gradients as float64 nn.RNN's."""
    torch.manual_seed(0)
    layer = TritonRNN(6, 32, num_layers=2, bidirectional=True, device=device, dtype=dtype)
    ref = reference_copy(layer)
    x = torch.randn(5, 3, 6)
    gemms = {}
    for hx in (None, torch.zeros(4, 3, 32, device=device, dtype=dtype)):
        with OpsRun() as forward:
            out, h_n = layer(x.to(device, dtype), hx)
        with OpsRun() as backward:
            grads = torch.autograd.grad(out.float().sum() + h_n.float().sum(), list(layer.parameters()))
        gemms[hx is None] = sum(name in GEMMS for name in backward.names)
        if hx is None:
            assert not {"zeros", "new_zeros", "zero_", "fill_"} & set(forward.names), forward.names
            ref_out, ref_h_n = ref(x.double())
            ref_grads = torch.autograd.grad(ref_out.sum() + ref_h_n.sum(), list(ref.parameters()))
            for got, want in zip(grads, ref_grads):
                assert rel_err(got.cpu(), want) < 4 * TOLERANCE[dtype]
    assert {p.tier for p in layer.last_plans} == {"fma" if dtype == torch.float32 else "resident"}
    assert gemms[True] == gemms[False] == 2 * 2 + 2 * 3


@pytest.mark.parametrize("hidden", [48, 100], ids=["resident", "fma"])  # bf16: the fma tier from BLOCK_H = 128
@pytest.mark.parametrize("checkpoint", [False, True], ids=["full", "checkpointed"])
def test_a_16_bit_h_0_that_needs_a_gradient_gets_it_from_the_kernel_in_its_dtype(hidden, checkpoint, device,
                                                                                 monkeypatch):
    """A decoder's hx (an encoder's h_n) needs a gradient: the fma and resident backward kernels write dL/dh_0 in hx's
    dtype (Tier.makes_dh0), so no cast follows them: the backward runs as many conversions as where hx needs none.
    Checkpointed in segments of 2 steps, whose dL/dh between them stays in fp32. dL/dh_0 and every other gradient as
    float64 nn.RNN's."""
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 1)
    torch.manual_seed(0)
    layer = TritonRNN(6, hidden, checkpoint=checkpoint, device=device, dtype=torch.bfloat16)
    x, hx = torch.randn(5, 3, 6), torch.randn(1, 3, hidden) * 0.5
    conversions = {}
    for wants in (False, True):
        h0 = hx.to(device, torch.bfloat16).requires_grad_(wants)
        out, _ = layer(x.to(device, torch.bfloat16), h0)
        with OpsRun() as backward:
            grads = torch.autograd.grad(out.float().sin().sum(), [h0, *layer.parameters()][not wants:])
        conversions[wants] = backward.names.count("_to_copy")
    assert {p.tier for p in layer.last_plans} == {"resident" if hidden == 48 else "fma"}
    assert grads[0].dtype == torch.bfloat16 and conversions[True] == conversions[False]
    ref = reference_copy(layer)
    ref_h0 = hx.double().requires_grad_()
    ref_grads = torch.autograd.grad(ref(x.double(), ref_h0)[0].sin().sum(), [ref_h0, *ref.parameters()])
    for got, want in zip(grads, ref_grads):
        assert rel_err(got.float().cpu(), want) < 4 * TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("case,framed", [("training", True), ("no-grad", False), ("hx-none", False),
                                        ("u-frozen", False), ("split", False)])
def test_the_states_are_framed_with_h_0_only_where_a_backward_may_want_du(case, framed, device):
    """The fma and resident forward writes its states one step into a buffer holding h_0 (frames.py) only where that
    saves the backward a GEMM: hx given, grad enabled and U not frozen; under no_grad (inference), without hx and on
    the split tier the output has storage of its own size. Either way the output is float64 nn.RNN's."""
    T, B, H = 5, 3, 130 if case == "split" else 32
    torch.manual_seed(0)
    layer = TritonRNN(6, H, kernel="split" if case == "split" else "auto", device=device)
    layer.weight_hh_l0.requires_grad_(case != "u-frozen")
    x, hx = torch.randn(T, B, 6), torch.randn(1, B, H) * 0.5
    given = None if case == "hx-none" else hx.to(device)
    with torch.set_grad_enabled(case != "no-grad"):
        out, _ = layer(x.to(device), given)
    assert out.untyped_storage().nbytes() == (T + framed) * B * H * 4
    ref_out, _ = reference_copy(layer)(x.double(), None if given is None else hx.double())
    assert rel_err(out.detach().cpu(), ref_out) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("case,written,copies", [("training", True, 0), ("no-grad", False, None),
                                                 ("all-frozen", False, None), ("checkpointed", False, 1),
                                                 ("resident", False, 0)])
def test_the_fma_forward_writes_its_backwards_copy_of_u_only_where_that_backward_will_run(case, written, copies,
                                                                                         device, monkeypatch):
    """The fma forward kernel writes the backward kernel's operand, U by columns (fma.store_u_by_columns), into a
    buffer the layer keeps for its backward, only where a backward will run without making its own: grad enabled,
    something needing a gradient, no checkpointing; the backward then makes no copy of U. The gradients are float64
    nn.RNN's either way (the resident tier's backward takes U itself)."""
    made, copied = [], []
    empty_operand, by_columns = dispatch.TIERS["fma"].backward_operand, fma.by_columns
    monkeypatch.setitem(dispatch.TIERS, "fma", dataclasses.replace(
        dispatch.TIERS["fma"], backward_operand=lambda *a: made.append(a) or empty_operand(*a)))
    monkeypatch.setattr(fma, "by_columns", lambda *a: copied.append(a) or by_columns(*a))
    torch.manual_seed(0)
    layer = TritonRNN(6, 32, checkpoint=case == "checkpointed", device=device,
                      dtype=torch.bfloat16 if case == "resident" else torch.float32)
    x = torch.randn(5, 3, 6, device=device, dtype=layer.weight_hh_l0.dtype, requires_grad=case != "all-frozen")
    for weight in layer.parameters():
        weight.requires_grad_(case != "all-frozen")
    with torch.set_grad_enabled(case != "no-grad"):
        out, _ = layer(x)
    assert layer.last_plans[0].tier == ("resident" if case == "resident" else "fma") and len(made) == written
    assert out.requires_grad == (copies is not None)
    if out.requires_grad:
        grads = torch.autograd.grad(out.sum(), [x, *layer.parameters()])
        assert len(copied) == copies  # the fma backward's own copy of U, where the forward wrote none
        ref = reference_copy(layer)
        xd = x.detach().cpu().double().requires_grad_()
        ref_grads = torch.autograd.grad(ref(xd)[0].sum(), [xd, *ref.parameters()])
        for grad, ref_grad in zip(grads, ref_grads):
            assert rel_err(grad.cpu(), ref_grad) < TOLERANCE[x.dtype] * 4


@pytest.mark.parametrize("dtype,kernel,hidden", [(torch.float32, "auto", 40), (torch.bfloat16, "auto", 40),
                                                 (torch.bfloat16, "split", 130)], ids=["fma", "resident", "split"])
@pytest.mark.parametrize("checkpoint", [False, True], ids=["full", "checkpointed"])
def test_a_loss_of_h_n_alone_fills_no_gradient_of_the_output_with_zeros(dtype, kernel, hidden, checkpoint, device,
                                                                        monkeypatch):
    """A sequence classifier's loss reads h_n alone: the output's gradient is None to autograd, and the fma, resident
    and split kernels take it as zeros without reading any, so the backward makes no T x B x H tensor of zeros (the
    split tier fills its barrier's words alone; checkpointed, in segments of 2 steps, the sums of the weight gradients
    too). Gradients as float64 nn.RNN's."""
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", 1)
    torch.manual_seed(0)
    layer = TritonRNN(6, hidden, kernel=kernel, checkpoint=checkpoint, device=device, dtype=dtype)
    ref = reference_copy(layer)
    x = torch.randn(4, 3, 6)
    loss = layer(x.to(device, dtype))[1].float().sin().sum()
    with OpsRun() as backward:
        grads = torch.autograd.grad(loss, list(layer.parameters()))
    ref_grads = torch.autograd.grad(ref(x.double())[1].sin().sum(), list(ref.parameters()))
    assert layer.last_plans[0].tier == {"auto": "fma" if dtype == torch.float32 else "resident"}.get(kernel, kernel)
    zero_fills = [name for name in backward.names if name in ("zeros", "new_zeros", "zeros_like", "zero_", "fill_")]
    # split: each launcher's words, checkpointed a forward and a backward per segment of the two
    words = (4 if checkpoint else 1) if kernel == "split" else 0
    assert zero_fills == ["zeros"] * (words + 3 * checkpoint), zero_fills
    for got, want in zip(grads, ref_grads):
        assert rel_err(got.cpu(), want) < 4 * TOLERANCE[dtype]


def test_a_split_call_fills_one_allocation_of_zeros_and_adds_the_biases_and_dh_n_in_its_kernels(device):
    """The split tier's ends (kernels/split.py): with hx or without, a forward call fills one allocation of zeros (its
    barrier's words, and for hx=None the first step's state) and adds no b_ih + b_hh (its kernel adds b_hh); where
    the loss reads h_n, its backward adds dL/dh_n in the kernel, into no copy of dy, and fills one allocation of zeros
    too. Output, h_n and gradients as float64 nn.RNN's."""
    torch.manual_seed(0)
    layer = TritonRNN(6, 100, kernel="split", device=device)
    ref = reference_copy(layer)
    x = torch.randn(3, 2, 6)
    for hx in (None, torch.randn(1, 2, 100)):
        with OpsRun() as forward:
            out, h_n = layer(x.to(device), None if hx is None else hx.to(device))
        with OpsRun() as backward:
            grads = torch.autograd.grad(out.sum() + h_n.square().sum(), list(layer.parameters()))
        assert layer.last_plans[0].tier == "split"
        assert forward.names.count("zeros") == backward.names.count("zeros") == 1
        assert "add" not in forward.names and "add_" not in backward.names, (forward.names, backward.names)
        ref_out, ref_h_n = ref(x.double(), None if hx is None else hx.double())
        ref_grads = torch.autograd.grad(ref_out.sum() + ref_h_n.square().sum(), list(ref.parameters()))
        assert rel_err(out.cpu(), ref_out) < TOLERANCE[torch.float32]
        assert rel_err(h_n.cpu(), ref_h_n) < TOLERANCE[torch.float32]
        for got, want in zip(grads, ref_grads):
            assert rel_err(got.cpu(), want) < 4 * TOLERANCE[torch.float32]


@pytest.mark.parametrize("kernel", ["auto", "stepwise"])
def test_h_n_has_storage_of_its_own_as_nn_rnns_has(kernel, device):
    """h_n is not a view of the output, whichever kernel writes it (nn.RNN's is not): writing into the output in
    place leaves it as it was."""
    layer = TritonRNN(6, 16, kernel=kernel, device=device)
    with torch.no_grad():
        out, h_n = layer(torch.randn(4, 3, 6, device=device))
        assert torch.equal(h_n[0], out[-1])
        kept = h_n.clone()
        out.zero_()
    assert torch.equal(h_n, kept)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # torch's, about the test's own call
def test_a_second_derivative_through_the_layer_raises_rather_than_being_silently_zero(device):
    """The kernels' gradients are not differentiable again: a gradient penalty through the layer raises, also where the
    loss is linear in the output, whose dL/dh does not require grad (once_differentiable alone then let the penalty's
    term through the layer pass as zero: a wrong weight gradient, silently). backward(create_graph=True) itself still
    gives nn.RNN's gradients."""
    torch.manual_seed(0)
    layer = TritonRNN(3, 5, device=device)
    x = torch.randn(4, 2, 3, device=device, requires_grad=True)
    for loss_of in (torch.sum, lambda out: out.square().sum()):
        g, = torch.autograd.grad(loss_of(layer(x)[0]), x, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice"):
            (g.square().sum() + loss_of(layer(x)[0])).backward()
    layer.zero_grad()
    ref = reference_copy(layer).to(device)
    for module, inputs in ((layer, x.detach()), (ref, x.detach().double())):
        module(inputs)[0].square().sum().backward(create_graph=True)
    for (name, p), q in zip(layer.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad) < TOLERANCE[torch.float32], name


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_of_a_model_around_the_layer_runs_the_layer_as_it_is(backend, device):
    """torch.compile cannot trace the layer's launchers (in the interpreter, the interpreter itself): the layer runs
    outside the graph, ops around it inside, and the loss and every gradient are nn.RNN's."""
    torch.manual_seed(0)
    layer = TritonRNN(6, 16, num_layers=2, bidirectional=True, batch_first=True, device=device)
    ref = reference_copy(layer).to(device)
    x = torch.randn(3, 5, 6, device=device)

    def model(rnn, x):
        out, h_n = rnn(x * 2)
        return torch.tanh(out).sum() + h_n.square().sum()
    torch._dynamo.reset()
    loss = torch.compile(model, backend=backend)(layer, x)
    loss.backward()
    want = model(ref, x.double())
    want.backward()
    assert rel_err(loss, want) < TOLERANCE[torch.float32]
    for (name, p), q in zip(layer.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad) < TOLERANCE[torch.float32], name


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_classifies_and_models_language(dtype, device):
    torch.manual_seed(0)
    model = ElmanRNNModel(8, 32, 5, vocab_size=11, num_layers=1, device=device, dtype=dtype)
    ref = ElmanRNNModel(8, 32, 5, vocab_size=11, num_layers=1, rnn_cls=torch.nn.RNN, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    tokens = torch.randint(0, 11, (9, 4))
    log_probs, _ = model(tokens.to(device))
    ref_log_probs, _ = ref(tokens)
    assert log_probs.shape == (9, 4, 5)
    assert rel_err(log_probs.cpu(), ref_log_probs) < 4 * TOLERANCE[dtype]
    probs = log_probs.float().exp().sum(-1)
    assert torch.allclose(probs, torch.ones_like(probs), atol=2e-2)
    assert torch.equal(model.classify(tokens.to(device)), log_probs[-1])
    loss = torch.nn.functional.nll_loss(log_probs.float().reshape(-1, 5), tokens.to(device).reshape(-1) % 5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_model_training_reduces_loss(device):
    """A few SGD steps on a learnable task (class = sign of the input's running sum) lower the loss."""
    torch.manual_seed(0)
    model = ElmanRNNModel(1, 16, 2, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(6, 32, 1, device=device)
    y = (x.sum(0).squeeze(-1) > 0).long()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(model.classify(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_tier_through_the_layer(dtype, device):
    """H past the resident tier: the dispatcher picks split-H; outputs and every gradient match."""
    torch.manual_seed(0)
    layer = TritonRNN(8, 300, bidirectional=True, device=device, dtype=dtype)
    ref = reference_copy(layer)
    x, hx = torch.randn(3, 2, 8), torch.randn(2, 2, 300) * 0.5
    out, h_n, grads = run_and_backward(layer, x.to(device, dtype), hx.to(device, dtype))
    ref_out, ref_h_n, ref_grads = run_and_backward(ref, x.to(dtype).double(), hx.to(dtype).double())
    assert {p.tier for p in layer.last_plans} == {"split"}
    assert rel_err(out.cpu(), ref_out) < TOLERANCE[dtype] and rel_err(h_n.cpu(), ref_h_n) < TOLERANCE[dtype]
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name].cpu(), ref_grad) < 4 * TOLERANCE[dtype], name
