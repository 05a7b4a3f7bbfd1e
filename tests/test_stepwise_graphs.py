"""The stepwise kernel's T launches replayed from CUDA graphs (kernels/stepwise.py StepGraphs).

On CPU: the capture-on-second-sight and eviction rules with a stand-in for the capture, the key
(everything the launches read), and that interpreter loops never touch the graphs. On a GPU: the
layer gives the float64 reference's numbers on every call while its loops replay, the harness's
timed closure replays every call once warm, and a caller's own capture records the launches as is.
"""
import pytest
import torch

from kernels import TritonRNN
from kernels.reference import reference_forward
from kernels.stepwise import STEP_GRAPHS, StepGraphs, loop_key

from helpers import TOLERANCE, rel_err

CPU = torch.device("cpu")


class Recorder:
    """A stand-in capture: counts the loops it was given and the replays of what it returned."""

    def __init__(self):
        self.captured, self.replayed = [], 0

    def __call__(self, loop, device):
        self.captured.append(loop)
        return self

    def replay(self):
        self.replayed += 1


def test_a_loop_runs_on_first_sight_is_captured_on_the_second_and_replayed_after():
    recorder, ran = Recorder(), []
    graphs = StepGraphs(capture=recorder, size=8)
    for _ in range(4):
        graphs.run("a", lambda: ran.append("a"), CPU)
    assert ran == ["a"]                     # only the first sight ran the loop itself
    assert len(recorder.captured) == 1 and recorder.replayed == 3
    assert (graphs.captures, graphs.replays) == (1, 3)
    graphs.run("b", lambda: ran.append("b"), CPU)  # another key: its own first sight
    assert ran == ["a", "b"] and recorder.replayed == 3


def test_the_least_recently_used_loop_is_dropped_beyond_the_cache_size():
    recorder, ran = Recorder(), []
    graphs = StepGraphs(capture=recorder, size=2)
    for key in ("a", "a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        graphs.run(key, lambda key=key: ran.append(key), CPU)
    assert list(graphs.graphs) == ["a", "c"]
    graphs.run("b", lambda: ran.append("b"), CPU)  # forgotten: a first sight again
    assert ran == ["a", "b", "c", "b"] and graphs.captures == 1 and graphs.replays == 2


def test_the_key_holds_every_address_shape_dtype_direction_and_setting():
    xw, h0 = torch.zeros(4, 2, 8), torch.zeros(2, 8)
    config = {"ACTIVATION": 0, "BACKWARD": False}
    key = loop_key((xw, h0), False, config)
    assert key == loop_key((xw, h0), False, dict(reversed(config.items())))  # the same launches
    assert key == loop_key((xw.view(4, 2, 8), h0), False, config)           # a view of the same memory
    different = [loop_key((xw.clone(), h0), False, config),                  # another address
                 loop_key((xw, h0[:1]), False, config),                       # another shape
                 loop_key((xw, h0), True, config),                            # the other direction
                 loop_key((xw, h0), False, config | {"BACKWARD": True}),      # the other pass
                 loop_key((xw.double(), h0), False, config)]                  # another dtype
    assert len({key, *different}) == 1 + len(different)


def test_interpreter_loops_never_touch_the_graphs(device):
    if device != "cpu":
        pytest.skip("the interpreter runs on CPU tensors")
    before = dict(STEP_GRAPHS.graphs)
    layer = TritonRNN(4, 16, kernel="stepwise")
    x = torch.randn(5, 2, 4, requires_grad=True)
    for _ in range(2):
        out, _ = layer(x)
        out.sum().backward()
    assert STEP_GRAPHS.graphs == before


# ---- on a GPU -------------------------------------------------------------------------------

LAYERS, DIRECTIONS, PASSES = 2, 2, 2
T, B, I, H = 12, 3, 8, 40


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_replayed_loops_give_the_reference_numbers_on_every_call(dtype):
    """Six calls on the same tensors refilled with new values: once the loops replay (the last
    three calls), every output and gradient still matches the float64 reference of that call."""
    torch.manual_seed(0)
    layer = TritonRNN(I, H, num_layers=LAYERS, bidirectional=True, kernel="stepwise", device="cuda", dtype=dtype)
    params = list(layer.parameters())
    calls = 6
    xs = torch.randn(calls, T, B, I, device="cuda", dtype=dtype)
    gys = torch.randn(calls, T, B, DIRECTIONS * H, device="cuda", dtype=dtype)
    x, gy = torch.empty_like(xs[0]), torch.empty_like(gys[0])  # the same addresses on every call
    outs, dxs = torch.empty_like(gys), torch.empty_like(xs)    # results kept without allocating
    dws = [torch.empty(calls, *p.shape, device="cuda", dtype=dtype) for p in params]
    loops = LAYERS * DIRECTIONS * PASSES
    for call in range(calls):
        if call == calls - 3:
            captures, replays = STEP_GRAPHS.captures, STEP_GRAPHS.replays
        x.copy_(xs[call])
        gy.copy_(gys[call])
        x_leaf = x.detach().requires_grad_(True)
        out, h_n = layer(x_leaf)
        dx, *dw = torch.autograd.grad(out, [x_leaf, *params], gy)
        outs[call].copy_(out)
        dxs[call].copy_(dx)
        for i, kept in enumerate(dws):
            kept[call].copy_(dw[i])
        del out, h_n, dx, dw  # nothing of this call outlives it, as in the harness's timing loop
    assert STEP_GRAPHS.captures == captures and STEP_GRAPHS.replays - replays == 3 * loops
    tol = TOLERANCE[dtype]
    weights = {name: p.detach().double().requires_grad_(True) for name, p in layer.named_parameters()}
    for call in range(calls):
        x_ref = xs[call].double().requires_grad_(True)
        ref_out, _ = reference_forward(x_ref, None, weights, num_layers=LAYERS, bidirectional=True)
        ref_dx, *ref_dw = torch.autograd.grad(ref_out, [x_ref, *weights.values()], gys[call].double())
        assert rel_err(outs[call], ref_out) < tol, call
        assert rel_err(dxs[call], ref_dx) < 4 * tol, call
        for kept, ref in zip(dws, ref_dw):
            assert rel_err(kept[call], ref) < 4 * tol, call


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_the_harness_call_replays_every_timed_call(mode):
    from rnnbench import measure
    from rnnbench.backends import BACKENDS
    from rnnbench.schema import Case, Timing
    case, cuda = Case(64, 8, 128, 128, 1), torch.device("cuda")
    assert "CUDA graph" in BACKENDS["triton-stepwise"].label(cuda)
    # the runner's warm-up call, then the first calls of the timing
    call = measure.prepare_call("triton-stepwise", case, "bfloat16", mode, cuda, "tanh", 0, warmup_calls=3).call
    captures, replays = STEP_GRAPHS.captures, STEP_GRAPHS.replays
    for _ in range(3):
        call()
    loops = 1 if mode == "forward" else 2
    assert STEP_GRAPHS.captures == captures and STEP_GRAPHS.replays - replays == 3 * loops
    measure.time_call(call, cuda, Timing(warmup_ms=5, rep_ms=20, min_reps=3))
    assert STEP_GRAPHS.captures == captures and STEP_GRAPHS.replays > replays + 3 * loops


@pytest.mark.gpu
def test_a_callers_own_capture_records_the_launches_as_they_are():
    torch.manual_seed(0)
    layer = TritonRNN(I, H, kernel="stepwise", device="cuda")
    x = torch.randn(T, B, I, device="cuda")
    with torch.no_grad():
        expected, _ = layer(x)  # compiles the kernels before the capture
        graph = torch.cuda.CUDAGraph()
        captures = STEP_GRAPHS.captures
        with torch.cuda.graph(graph):
            out, _ = layer(x)
        assert STEP_GRAPHS.captures == captures
        x.mul_(0.5)
        graph.replay()
        again, _ = layer(x)
    torch.cuda.synchronize()
    assert rel_err(out, again) < 1e-6 and rel_err(out, expected) > 0.01  # the replay read the new x
