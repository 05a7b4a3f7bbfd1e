"""TritonRNN captured into CUDA graphs, as torch.nn.RNN can be, in each persistent tier: the forward under
torch.cuda.graph, and forward and backward through torch.cuda.make_graphed_callables. A replay reads the inputs'
new values and gives what an eager call gives; a split call's barrier status, which a captured call cannot read,
is read by check_barriers() after the replays (kernels/barrier_status.py). GPU only: the step kernel's own graphs
and a caller's capture of it are tests/test_stepwise_graphs.py's."""
import pytest
import torch

from kernels import TritonRNN, barrier_status

from helpers import rel_err

pytestmark = pytest.mark.gpu

I = 32
# (tier, dtype, H, B): the fma tier, the resident tier (in fragment order where resident.FRAGMENT_IO is on), the
# split tier in clusters of 8 (16-bit H = 512) and at the grid barrier by a cooperative launch (H = 1024)
CASES = [pytest.param("fma", torch.float32, 128, 5, id="fma-fp32-128-5"),
         pytest.param("resident", torch.bfloat16, 256, 16, id="resident-bf16-256-16"),
         pytest.param("split", torch.bfloat16, 512, 8, id="split-bf16-512-8"),
         pytest.param("split", torch.bfloat16, 1024, 8, id="split-bf16-1024-8")]


def layer_and_input(tier: str, dtype: torch.dtype, H: int, B: int, T: int = 64):
    torch.manual_seed(0)
    layer = TritonRNN(I, H, kernel=tier, device="cuda", dtype=dtype)
    return layer, torch.randn(T, B, I, device="cuda", dtype=dtype)


@pytest.mark.parametrize("tier,dtype,H,B", CASES)
def test_a_captured_forward_replays_what_an_eager_call_gives(tier, dtype, H, B, monkeypatch):
    layer, x = layer_and_input(tier, dtype, H, B)
    monkeypatch.setattr(barrier_status, "_CAPTURED", [])
    with torch.no_grad():
        side = torch.cuda.Stream()  # the warm-up (it compiles the kernels) on a side stream, as torch's docs ask
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            first, _ = layer(x)
        torch.cuda.current_stream().wait_stream(side)
        assert layer.last_plans[0].tier == tier
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, h_n = layer(x)
        x.copy_(torch.randn_like(x))
        graph.replay()
        expected, expected_h = layer(x)
    torch.cuda.synchronize()
    assert rel_err(out, expected) < 1e-6 and rel_err(h_n, expected_h) < 1e-6
    assert rel_err(out, first) > 0.01  # the replay read x's new values
    assert len(barrier_status._CAPTURED) == (1 if tier == "split" else 0)
    barrier_status.check_barriers()  # the replay's barriers all met


@pytest.mark.parametrize("tier,dtype,H,B", CASES)
def test_graphed_callables_give_eager_outputs_and_gradients(tier, dtype, H, B, monkeypatch):
    layer, x = layer_and_input(tier, dtype, H, B)
    monkeypatch.setattr(barrier_status, "_CAPTURED", [])
    x.requires_grad_(True)
    graphed = torch.cuda.make_graphed_callables(layer, (x,))  # warms up, then captures forward and backward
    fresh = torch.randn_like(x).requires_grad_(True)
    gy = torch.randn(x.shape[0], B, H, device="cuda", dtype=dtype)
    results = []
    for module in (graphed, layer):
        layer.zero_grad()
        fresh.grad = None
        out, _ = module(fresh)
        out.backward(gy)
        results.append((out.detach().clone(), fresh.grad.clone(), [p.grad.clone() for p in layer.parameters()]))
    (out, x_grad, grads), (eager_out, eager_x_grad, eager_grads) = results
    assert rel_err(out, eager_out) < 1e-6 and rel_err(x_grad, eager_x_grad) < 1e-6
    assert all(rel_err(g, e) < 1e-6 for g, e in zip(grads, eager_grads))
    assert len(barrier_status._CAPTURED) == (2 if tier == "split" else 0)  # the forward's and the backward's
    barrier_status.check_barriers()
