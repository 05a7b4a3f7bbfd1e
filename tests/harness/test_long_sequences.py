"""Long-sequence scenarios: the triton-checkpoint backend (TritonRNN(checkpoint=True)) in a run, its
activation memory against the count of states checkpointed BPTT keeps and the report's table of memory
saved and time overhead; the ultra-long case, where cuDNN's refusal is a stated skip."""
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from kernels import recompute
from rnnbench.cli import main
from rnnbench.report import fmt
from rnnbench.schema import load_scenario

ROOT = Path(__file__).resolve().parents[2]
T, B, H = 36, 2, 8  # without the segments' floor, checkpoints every ceil(sqrt(36)) = 6 steps: 5 states kept, not 36


@pytest.mark.parametrize("floor", [1, recompute.SEGMENT_MIN_STEPS], ids=["sqrt-segments", "default-floor"])
def test_checkpoint_backend_saves_the_memory_it_should_and_the_report_shows_the_cost(tmp_path, monkeypatch, floor):
    """With the segments' floor (T = 36: one segment), nothing is kept: the backward recomputes every state."""
    monkeypatch.setattr(recompute, "SEGMENT_MIN_STEPS", floor)
    path = tmp_path / "ckpt.yaml"
    path.write_text(yaml.safe_dump({"name": "ckpt", "backends": ["triton", "triton-checkpoint"],
                                    "modes": ["forward+backward"],
                                    "metrics": ["speed", "memory"], "sweep": {"seq_len": T, "batch": B, "hidden": H},
                                    "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2}}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress"]) == 0
    run_dir = tmp_path / "out" / "ckpt" / "r"
    frame = pd.read_csv(run_dir / "results.csv", keep_default_na=False)
    memory = frame[frame.metric == "activation_memory"].set_index("backend").p50.astype(float)
    kept = math.ceil(T / max(math.ceil(math.sqrt(T)), floor)) - 1
    # every state and h_0 (frames.py), and the fma backward's operand that the forward writes (U in fp32, BLOCK_H 16)
    full = (T + 1) * B * H * 4 + 16 ** 2 * 4
    assert memory["triton"] == pytest.approx(full / 2 ** 20)
    assert memory["triton-checkpoint"] == pytest.approx(kept * B * H * 4 / 2 ** 20)
    latency = frame[frame.metric == "latency"].set_index("backend").p50.astype(float)
    report = (run_dir / "report.md").read_text()
    assert "## Checkpointed BPTT: memory saved and time overhead (triton-checkpoint vs triton)" in report
    assert "at most 1.35x" in report
    row = (f"| float32 | T={T} B={B} H={H} I={H} L=1 | {fmt(memory['triton'])} | {fmt(memory['triton-checkpoint'])} "
           f"| {fmt(full / (kept * B * H * 4)) if kept else 'all'} |")
    assert row in report
    assert f"| {fmt(latency['triton-checkpoint'] / latency['triton'])} |" in report
    assert "Triton auto checkpoint=True" in report  # the backends table says what ran


def test_the_checkpoint_scenario_compares_the_two_on_forward_and_backward():
    for profile in ("full", "cpu"):
        scenario = load_scenario(ROOT / "scenarios" / "checkpoint.yaml", profile)
        assert set(scenario.backends) == {"triton", "triton-checkpoint"} and scenario.modes == ("forward+backward",)
        assert {"speed", "memory"} <= set(scenario.metrics)


def test_the_ultra_long_case_records_cudnns_refusal_as_a_skip_at_bounded_cost():
    full = load_scenario(ROOT / "scenarios" / "ultra_long.yaml", "full")
    longest = max(full.cases, key=lambda case: case.seq_len)
    assert longest.seq_len == 1_048_576 and longest.seq_len * longest.batch * longest.hidden >= 2 ** 31
    assert set(full.backends) == {"cudnn", "triton"} and len(full.dtypes) == 1 and full.modes == ("forward+backward",)
    from rnnbench.backends import BACKENDS, CUDNN_MAX_SEQ_LEN
    cuda = torch.device("cuda")
    skipped = [case.seq_len for case in full.cases if BACKENDS["cudnn"].skip(case, cuda)]
    assert skipped == [case.seq_len for case in full.cases if case.seq_len > CUDNN_MAX_SEQ_LEN] and 1_048_576 in skipped
    assert any(case.seq_len == CUDNN_MAX_SEQ_LEN for case in full.cases)  # the last T cuDNN runs, beside it
    cpu = load_scenario(ROOT / "scenarios" / "ultra_long.yaml", "cpu")
    assert all(BACKENDS["triton"].skip(case, torch.device("cpu")) is None for case in cpu.cases)  # small enough
