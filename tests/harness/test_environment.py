"""The environment record of a run (rnnbench/environment.py): what it says of the GPU beyond its name."""
import pytest
import torch

from rnnbench.environment import cluster_counts


def test_the_cluster_counts_are_recorded_on_sm90_only_and_a_failed_query_says_so(monkeypatch):
    """Nothing off CUDA or before sm_90. On sm_90 the counts are asked of a child process, whose query here, without a
    GPU or its driver, fails: the record says so and the run goes on (tests/harness/test_harness_gpu.py checks the
    counts themselves on a GPU)."""
    if torch.cuda.is_available():
        pytest.skip("a failing query needs a machine without a GPU")
    cuda = torch.device("cuda", 0)
    assert cluster_counts(torch.device("cpu")) == ""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert cluster_counts(cuda) == ""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert cluster_counts(cuda) == "unknown (the driver's count failed)"
