"""The forward check of bench jobs (rnnbench.check): the step error against a float64 loop written
here, the same in any chunk size, small for every backend that computes the RNN, large for one
that does not, and a wrong output fails its job."""
import dataclasses

import pytest
import torch

from rnnbench import check, measure, runner
from rnnbench.backends import BACKENDS, Prepared, seeded_rnn
from rnnbench.schema import Case

CPU = torch.device("cpu")


def step_error_by_hand(y, x, h0, w_ih, w_hh, bias, nonlinearity):
    """The definition, one step at a time in float64."""
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    y, x, h, w_ih, w_hh, bias = (t.double() for t in (y, x, h0, w_ih, w_hh, bias))
    error = norm = 0.0
    for t in range(y.shape[0]):
        expected = act(x[t] @ w_ih.T + bias + h @ w_hh.T)
        error += (y[t] - expected).square().sum().item()
        norm += expected.square().sum().item()
        h = y[t]
    return (error / norm) ** 0.5


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_step_error_matches_the_definition_in_any_chunk_size(nonlinearity):
    gen = torch.Generator().manual_seed(0)
    T, B, I, H = 13, 3, 5, 4
    x, h0 = torch.randn(T, B, I, generator=gen), torch.randn(B, H, generator=gen)
    w_ih, w_hh, bias = (0.5 * torch.randn(*s, generator=gen) for s in ((H, I), (H, H), (H,)))
    y = torch.randn(T, B, H, generator=gen)  # any output: the error is large, but defined
    expected = step_error_by_hand(y, x, h0, w_ih, w_hh, bias, nonlinearity)
    for chunk in (B * I, 4 * B * I, 10 ** 9):  # one step, four steps, everything per chunk
        got = check.relative_step_error(y, x, h0, w_ih, w_hh, bias, nonlinearity, chunk_elements=chunk)
        assert got == pytest.approx(expected, rel=1e-12)


def test_chunks_stay_within_their_bound(monkeypatch):
    """No float64 tensor of the check holds more than a chunk (plus one step: the state before it)."""
    T, B, H = 64, 2, 8
    chunk = 4 * B * H
    largest = []
    real_cat = torch.cat

    def spy(tensors, *args, **kwargs):
        out = real_cat(tensors, *args, **kwargs)
        largest.append(out.numel())
        return out
    monkeypatch.setattr(torch, "cat", spy)
    y = torch.tanh(torch.randn(T, B, H))
    check.relative_step_error(y, torch.randn(T, B, H), torch.zeros(B, H), torch.eye(H), torch.eye(H), None, "tanh",
                              chunk_elements=chunk)
    assert largest and max(largest) <= chunk < T * B * H


@pytest.mark.parametrize("backend,dtype", [("eager", "float32"), ("cudnn", "float32"), ("eager", "bfloat16"),
                                           ("cudnn", "float16"), ("cudnn-fp16", "bfloat16")])
def test_backends_that_compute_the_rnn_pass(backend, dtype):
    measured = measure.prepare_call(backend, Case(24, 3, 16, 8), dtype, "forward", CPU, "tanh", 0, warmup_calls=0)
    error = check.step_error(measured.prepared, measured.inputs.x, measured.inputs.h0, "tanh")
    run_dtype = BACKENDS[backend].dtype_for(dtype)
    assert 0 < error <= check.tolerance(run_dtype, allow_tf32=False)
    if run_dtype == "float32":
        assert error < 1e-6  # one float32 rounding of each output


@pytest.mark.skipif(BACKENDS["triton"].unavailable(CPU) is not None, reason="Triton cannot run here")
@pytest.mark.parametrize("backend", ["triton", "triton-stepwise"])
def test_the_triton_kernels_pass(backend):
    measured = measure.prepare_call(backend, Case(8, 2, 16, 16), "float32", "forward", CPU, "tanh", 0, warmup_calls=0)
    assert check.step_error(measured.prepared, measured.inputs.x, measured.inputs.h0, "tanh") < 1e-6


def test_a_wrong_output_fails_its_job(monkeypatch):
    """A backend whose state skips a step (h_t from h_{t-2}) is caught, its job fails, its speed stays."""
    eager = BACKENDS["eager"]

    def prepare(source, device, dtype):
        good = eager.prepare(source, device, dtype)

        def late(x, h0):
            y, h = good.fn(x, h0)
            return torch.cat([y[:1], y[:-1]]), h
        return Prepared(late, good.params)
    monkeypatch.setitem(BACKENDS, "eager", dataclasses.replace(eager, prepare=prepare))
    ctx = runner.Context(_tiny_scenario(), CPU, folder=None)
    rows = runner.guarded(runner.Job("bench", "eager", "forward", "float32", Case(16, 2, 8, 8)), ctx)
    checked = next(r for r in rows if r["metric"] == "rel_err_step")
    assert checked["p50"] > 0.1 and checked["error"].startswith("wrong output: step error ")
    assert any(r["metric"] == "latency" and r["p50"] for r in rows)


def test_deeper_stacks_are_not_checked_and_say_why():
    scenario = _tiny_scenario()
    ctx = runner.Context(scenario, CPU, folder=None)
    rows = runner.guarded(runner.Job("bench", "eager", "forward", "float32", Case(4, 2, 8, 8, layers=2)), ctx)
    checked = next(r for r in rows if r["metric"] == "rel_err_step")
    assert checked["error"].startswith("not measured: the step check needs each layer's input")


def _tiny_scenario():
    from rnnbench.schema import parse_scenario
    return parse_scenario({"name": "t", "backends": ["eager"], "modes": ["forward"], "metrics": ["speed"],
                           "sweep": {"seq_len": 4, "batch": 2, "hidden": 8},
                           "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2}}, "test", "full")


def test_seeded_source_is_the_same_for_every_backend():
    case = Case(4, 2, 8, 8)
    a, b = seeded_rnn(case, "tanh", 3), seeded_rnn(case, "tanh", 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
