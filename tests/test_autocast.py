"""TritonRNN under torch.autocast: like torch.nn.RNN it runs in the autocast dtype (input, hx and
weights cast on the autograd graph) and the gradients reach the float32 parameters in float32.
Checked against float64 torch.nn.RNN on the weights and inputs rounded to the autocast dtype.

Without the layer's own cast, autocast cast the input GEMM inside the autograd Function and not
the kernels: the forward mixed dtypes and the backward raised a dtype mismatch."""
import pytest
import torch

from kernels import TritonRNN

from helpers import TOLERANCE, reference_copy, rel_err

AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]


def forward_backward(layer, x, hx, autocast_dtype=None):
    """(output, h_n, grads of x, hx and every parameter) for L = <output, w1> + <h_n, w2>; the forward under
    autocast when autocast_dtype is given, the backward outside it (as torch.amp recommends)."""
    x, hx = x.detach().requires_grad_(True), hx.detach().requires_grad_(True)
    device_type = x.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        out, h_n = layer(x, hx)
    g = torch.Generator().manual_seed(1)
    loss = (out.double() * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device)).sum() \
        + (h_n.double() * torch.randn(h_n.shape, generator=g, dtype=torch.float64).to(out.device)).sum()
    loss.backward()
    return out, h_n, {"input": x.grad, "hx": hx.grad, **{n: p.grad for n, p in layer.named_parameters()}}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["plain", "checkpoint"])
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_autocast_runs_the_layer_in_its_dtype_with_float32_gradients(dtype, checkpoint, device):
    torch.manual_seed(0)
    layer = TritonRNN(6, 24, num_layers=2, checkpoint=checkpoint, device=device)  # float32 parameters
    x, hx = torch.randn(9, 3, 6), torch.randn(2, 3, 24) * 0.5
    out, h_n, grads = forward_backward(layer, x.to(device), hx.to(device), dtype)
    assert out.dtype == h_n.dtype == dtype  # what torch.nn.RNN gives under autocast too
    assert all(g.dtype == torch.float32 for g in grads.values())  # the master weights' and the inputs' own dtype

    ref = reference_copy(layer)
    ref.load_state_dict({k: v.to(dtype).double() for k, v in layer.state_dict().items()})  # autocast's rounding
    ref_out, ref_h_n, ref_grads = forward_backward(ref, x.to(dtype).double(), hx.to(dtype).double())
    tol = TOLERANCE[dtype]
    assert rel_err(out.cpu(), ref_out) < tol and rel_err(h_n.cpu(), ref_h_n) < tol
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name].cpu(), ref_grad) < 4 * tol, name


def test_autocast_leaves_a_float64_layer_alone(device):
    """Autocast does not cast float64, for nn.RNN or for TritonRNN."""
    layer = TritonRNN(4, 16, device=device, dtype=torch.float64)
    x, hx = torch.randn(5, 2, 4, dtype=torch.float64), torch.zeros(1, 2, 16, dtype=torch.float64)
    out, h_n, grads = forward_backward(layer, x.to(device), hx.to(device), torch.bfloat16)
    assert out.dtype == torch.float64 and grads["weight_hh_l0"].dtype == torch.float64
    ref_out, _, _ = forward_backward(reference_copy(layer), x, hx)
    assert rel_err(out.cpu(), ref_out) < TOLERANCE[torch.float64]


def test_autocast_casts_a_packed_sequence(device):
    from torch.nn.utils.rnn import pack_sequence
    layer = TritonRNN(3, 16, device=device)
    packed = pack_sequence([torch.randn(n, 3, device=device) for n in (5, 2, 4)], enforce_sorted=False)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        out, h_n = layer(packed)
    assert out.data.dtype == h_n.dtype == torch.bfloat16
