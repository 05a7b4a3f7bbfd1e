"""The Triton rows are real: they run kernels.TritonRNN (in the interpreter without a GPU), record the
plan the dispatcher chose, agree with the float64 reference, respect the interpreter cap and say how they launch."""
import pytest
import torch

from rnnbench import backends, stability
from rnnbench.backends import BACKENDS, INTERPRETER_MAX_WORK
from rnnbench.schema import Case

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(BACKENDS["triton"].unavailable(DEVICE) is not None,
                                reason=f"triton backend unavailable: {BACKENDS['triton'].unavailable(DEVICE)}")


@pytest.mark.parametrize("backend,kernel", [("triton", "auto"), ("triton-stepwise", "stepwise")])
def test_triton_matches_float64_and_records_its_plan(backend, kernel):
    from kernels import plan_for
    hidden, batch, seq_len = 16, 2, 12
    ref = stability.reference(hidden, batch, seq_len, 0.9, "tanh", 0, 0.01, True)
    prepared = BACKENDS[backend].prepare(stability.stability_rnn(hidden, 0.9, "tanh", 0), DEVICE, torch.float32)
    x, gy = stability.study_inputs(seq_len, batch, hidden, 0, 0.01)
    result = stability.run_study(prepared, x, gy, DEVICE, torch.float32, True)
    errors = stability.error_metrics(result, ref)
    assert max(errors.values()) < 1e-4, errors
    assert stability.nonfinite(result) == 0
    torch.testing.assert_close(result.curve, ref.curve, rtol=1e-4, atol=0)
    assert prepared.note() == plan_for(hidden, batch, torch.float32, DEVICE, kernel=kernel).name


def test_interpreter_cap_skips_large_cases_with_a_reason():
    if DEVICE.type == "cuda":
        assert BACKENDS["triton"].skip(Case(65536, 64, 512, 512, 1), DEVICE) is None
        return
    assert BACKENDS["triton"].skip(Case(16, 4, 32, 32, 1), DEVICE) is None
    reason = BACKENDS["triton"].skip(Case(INTERPRETER_MAX_WORK, 4, 32, 32, 1), DEVICE)
    assert reason and "interpreter cap" in reason
    assert "interpreter" in BACKENDS["triton"].label(DEVICE)


def test_the_stepwise_label_says_how_it_launches(monkeypatch):
    """On CUDA the stepwise row is one launch per step replayed from a CUDA graph; the label says so."""
    monkeypatch.setattr(backends, "_triton_mode", lambda device: "cuda")
    cuda = torch.device("cuda")
    assert BACKENDS["triton-stepwise"].label(cuda) == f"Triton stepwise ({backends.STEPWISE_ON_CUDA})"
    assert "CUDA graph" in backends.STEPWISE_ON_CUDA and BACKENDS["triton"].label(cuda) == "Triton auto"
    monkeypatch.setattr(backends, "_triton_mode", lambda device: "interpreter")
    assert BACKENDS["triton-stepwise"].label(cuda) == "Triton stepwise (interpreter)"
