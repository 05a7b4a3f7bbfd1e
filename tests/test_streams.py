"""kernels/streams.py: which launches go to a second CUDA stream, and that the code around it keeps its order and
results where there is none (a CPU, the interpreter). That the streams' overlap is right on a GPU is
tests/test_gpu.py's (bidirectional and checkpointed runs against the same runs in order on one stream)."""
import functools

import pytest
import torch

from kernels import streams
from kernels.dispatch import TIERS, KernelPlan
from kernels.driver import rnn_forward
from kernels.reference import elman_layer, reference_forward
from kernels.streams import Beside, side_stream

from helpers import rel_err


def test_a_second_stream_only_where_a_tier_can_share_the_gpu(monkeypatch):
    assert {name for name, tier in TIERS.items() if tier.overlaps} == {"fma", "resident"}  # split: its grid barrier
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert all(side_stream(KernelPlan(name, None), cpu) is None for name in TIERS)
    monkeypatch.setattr(streams, "interpreting", lambda: False)  # as on a GPU machine
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: ("stream", device))
    assert {name: side_stream(KernelPlan(name, None), cuda) for name in TIERS} == {
        "fma": ("stream", cuda), "resident": ("stream", cuda), "split": None, "stepwise": None}
    monkeypatch.setattr(streams, "OVERLAP", False)
    assert side_stream(KernelPlan("fma", None), cuda) is None


def test_without_a_stream_beside_changes_nothing():
    x = torch.ones(3)
    with Beside(None) as block:
        y = x * 2
    block.join(y)
    assert block.done is None and torch.equal(y, torch.full((3,), 2.0))


class Recorder:
    """A Beside that notes what the driver runs inside and outside it, and what it joins."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append("enter")
        return self

    def __exit__(self, *exc):
        self.log.append("exit")

    def join(self, *tensors):
        self.log.append(("join", len(tensors)))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_a_bidirectional_layer_issues_its_reverse_direction_first_beside_the_forward_one(num_layers):
    """The reverse direction inside `beside`, before the forward one (else its stream would wait for it), joined
    before the directions' outputs are concatenated; the output as nn.RNN's."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(4, 6, num_layers=num_layers, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    log = []

    def layer_fn(*args):
        log.append("reverse" if args[-1] else "forward")
        return elman_layer(*args)
    out, h_n = rnn_forward(x, None, dict(rnn.named_parameters()), layer_fn=layer_fn, num_layers=num_layers,
                           bidirectional=True, beside=lambda: Recorder(log))
    assert log == ["enter", "reverse", "exit", "forward", ("join", 2)] * num_layers
    ref_out, ref_h_n = rnn(x)
    assert rel_err(out, ref_out) < 1e-12 and rel_err(h_n, ref_h_n) < 1e-12


def test_without_a_second_stream_the_driver_stays_traceable_by_torch_compile():
    """rnnbench's compile backend compiles the reference loop through this driver: with no `beside` nothing wraps
    the directions (a context around them once broke Dynamo's tracing of a bidirectional layer)."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 4)
    compiled = torch.compile(functools.partial(reference_forward, num_layers=2, nonlinearity="tanh",
                                               bidirectional=True), dynamic=False, backend="eager")
    out, h_n = compiled(x, None, dict(rnn.named_parameters()))
    ref_out, ref_h_n = rnn(x)
    assert rel_err(out.detach(), ref_out.detach()) < 1e-6 and rel_err(h_n.detach(), ref_h_n.detach()) < 1e-6
