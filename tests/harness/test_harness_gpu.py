"""The harness on a GPU: the shape that ran out of memory on the H100 (T=65536, B=64, H=512) runs
through the runner, a refused cuDNN call leaves no memory behind, cuDNN's algorithm is read from its
kernels, and long calls are timed with events. Skipped without CUDA."""
import dataclasses

import pandas as pd
import pytest
import torch
import yaml

from rnnbench import measure, runner
from rnnbench import profile as profiling
from rnnbench.backends import BACKENDS
from rnnbench.cli import main
from rnnbench.results import RunFolder, is_failure
from rnnbench.schema import Case, Timing, parse_scenario

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
OOM_SHAPE = {"seq_len": 65536, "batch": 64, "hidden": 512}  # "CUDA out of memory" on the 2026-11-25 H100 run


def test_the_shape_that_ran_out_of_memory_runs_through_the_runner(tmp_path):
    path = tmp_path / "oom.yaml"
    path.write_text(yaml.safe_dump({"name": "oom", "backends": ["cudnn", "triton"], "dtypes": ["bfloat16", "float32"],
                                    "metrics": ["speed", "memory"], "sweep": OOM_SHAPE,
                                    "timing": {"warmup_ms": 5, "rep_ms": 20}}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress"]) == 0
    folder = RunFolder(tmp_path / "out" / "oom" / "r")
    frame = pd.read_csv(folder.csv, keep_default_na=False)
    assert set(frame[frame.backend == "cudnn"].error) == {
        "skipped: cuDNN's sequence limit: it refuses seq_len > 65535 (CUDNN_STATUS_NOT_SUPPORTED)"}
    triton = frame[frame.backend == "triton"]
    assert not triton.error.map(is_failure).any(), set(triton.error)
    latency = triton[triton.metric == "latency"]
    assert len(latency) == 4 and (latency.error == "").all()  # two dtypes, two modes, all measured
    assert (pd.to_numeric(triton[triton.metric == "rel_err_step"].p50) < 0.05).all()
    log = folder.job_log()
    assert (log.allocated_mib.astype(float) < 1024).all(), log  # nothing held from one job to the next


def test_a_refused_cudnn_call_leaves_no_memory_behind(monkeypatch):
    """The H100 run's out-of-memory rows came after a refused cuDNN call in every T=65536 case; the
    harness now skips those calls, and this says whether a refusal itself held memory."""
    monkeypatch.setitem(BACKENDS, "cudnn", dataclasses.replace(BACKENDS["cudnn"], skip=lambda case, device: None))
    scenario = parse_scenario({"name": "refused", "backends": ["cudnn"], "metrics": ["speed"], "sweep": OOM_SHAPE},
                              "test", "full")
    ctx = runner.Context(scenario, CUDA, folder=None)
    runner.release_memory(CUDA)
    before = measure.cuda_memory(CUDA)
    for mode in ("forward", "forward+backward", "forward+backward"):
        rows = runner.guarded(runner.Job("bench", "cudnn", mode, "float32", Case(**OOM_SHAPE, input_size=512)), ctx)
        assert "CUDNN_STATUS_NOT_SUPPORTED" in rows[0]["error"], rows[0]["error"]
    runner.release_memory(CUDA)  # as run_job does after each job: the inputs' blocks back to the driver
    after = measure.cuda_memory(CUDA)
    assert after["allocated_mib"] <= before["allocated_mib"] + 1
    assert after["free_mib"] >= before["free_mib"] - 256, (measure.memory_text(before), measure.memory_text(after))


@pytest.mark.parametrize("dtype,hidden,algorithm", [("float16", 128, "persistent"), ("bfloat16", 256, "standard")])
def test_cudnn_algorithm_read_from_its_kernels(dtype, hidden, algorithm):
    """As Nsight Compute showed on the H100 (gpu-runs/2026-11-25-h100/cudnn_kernels_ncu.md)."""
    note = profiling.cudnn_algorithm("cudnn", Case(2048, 8, hidden, hidden), dtype, "forward", CUDA, "tanh", 0)
    assert note.startswith(f"cuDNN algorithm: {algorithm} ("), note


def test_long_calls_are_timed_with_events():
    calibration = 10 ** 7
    torch.cuda._sleep(calibration)  # the first call loads the kernel: timed, it made the spin too short (H200)
    spin_ms = measure.event_timing(lambda: torch.cuda._sleep(calibration), 3)[1]
    cycles = int(calibration * 80 / spin_ms)  # about 80 ms of the GPU spinning

    def call():
        torch.cuda._sleep(cycles)
    (p20, p50, p80), note = measure.time_call(call, CUDA, Timing())
    assert note.startswith(measure.LONG_CALL_NOTE) and 40 < p20 <= p50 <= p80 < 400


def test_the_environment_records_the_drivers_cluster_counts():
    """On sm_90 a run's environment holds the clusters of 2-16 CTAs the GPU runs at once, as the split tier's plans see
    them (asked in a child process); before sm_90 nothing."""
    from kernels.occupancy import counts_by_size
    from rnnbench.environment import cluster_counts
    if torch.cuda.get_device_capability()[0] < 9:
        assert cluster_counts(CUDA) == ""
    else:
        assert cluster_counts(CUDA) == counts_by_size(torch.cuda.current_device())


def test_with_cuda_graphs_every_backend_is_timed_from_its_replays(tmp_path):
    """timing.cuda_graphs: each backend's call captured into a CUDA graph and its replays timed, forward and
    forward+backward; the split tier (H = 512) among them, whose captured calls' barrier statuses are read after the
    replays and let go (measure.release_graphs)."""
    from kernels import barrier_status
    path = tmp_path / "graphs.yaml"
    path.write_text(yaml.safe_dump({"name": "graphs", "backends": ["triton", "cudnn", "cudnn-fp16", "eager"],
                                    "dtypes": ["bfloat16", "float32"], "metrics": ["speed"],
                                    "sweep": {"seq_len": 256, "batch": 8, "hidden": [128, 512]},
                                    "timing": {"warmup_ms": 5, "rep_ms": 20, "cuda_graphs": True}}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress"]) == 0
    frame = pd.read_csv(RunFolder(tmp_path / "out" / "graphs" / "r").csv, keep_default_na=False)
    latency = frame[frame.metric == "latency"]
    assert len(latency) == 2 * 2 * (3 * 2 + 1)  # modes, H; triton, cudnn and eager in both dtypes, cudnn-fp16 in bf16
    assert (latency.error == "").all(), set(latency.error)
    assert latency.note.str.contains(measure.GRAPH_NOTE).all()
    assert barrier_status._CAPTURED == []
