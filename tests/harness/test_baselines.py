"""Honest baselines: speedups over the first baseline that ran, with the fallback and its reason in
plain words; bfloat16 also over cuDNN in float16; the longest sequence each backend ran; the run log
(jobs.csv); and the run-time estimate of the shipped scenarios. In-process runs of tiny scenarios on
CPU, where `cudnn` is PyTorch's CPU RNN and a skip stands in for cuDNN's sequence limit."""
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from rnnbench import estimate, launches, runner
from rnnbench.backends import BACKENDS, HOST_BOUND_MAX_SEQ_LEN
from rnnbench.cli import main
from rnnbench.results import JOB_LOG_COLUMNS, RunFolder, fallback_baseline
from rnnbench.schema import Case, load_scenario

SCENARIO = {"name": "base", "backends": ["cudnn", "cudnn-fp16", "eager"], "baseline": ["cudnn", "eager"],
            "dtypes": ["bfloat16"], "modes": ["forward"], "metrics": ["speed"],
            "sweep": {"seq_len": [4, 8], "batch": 2, "hidden": 8},
            "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2}}
LIMIT = "a sequence limit of this test"

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """The scenario run with both cuDNN backends refusing T > 4, as cuDNN refuses T > 65535."""
    def skip(case, device):
        return LIMIT if case.seq_len > 4 else None
    for name in ("cudnn", "cudnn-fp16"):
        monkeypatch.setitem(BACKENDS, name, dataclasses.replace(BACKENDS[name], skip=skip))

    def run(**changes) -> tuple:
        path = tmp_path / "base.yaml"
        path.write_text(yaml.safe_dump({**SCENARIO, **changes}))
        code = main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--sweep", "full",
                     "--no-progress"])
        return code, tmp_path / "out" / "base" / "r"
    return run


def latency(frame: pd.DataFrame, backend: str, seq_len: int) -> float:
    row = frame[(frame.backend == backend) & (frame.seq_len == seq_len) & (frame.metric == "latency")]
    return float(row.p50.iloc[0])


def value(frame: pd.DataFrame, backend: str, seq_len: int, metric: str) -> pd.Series:
    return frame[(frame.backend == backend) & (frame.seq_len == seq_len) & (frame.metric == metric)].iloc[0]


def test_speedups_over_the_first_baseline_that_ran_and_over_cudnn_fp16(run_dir):
    code, folder = run_dir()
    assert code == 0
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False, na_values={"p50": [""]})
    # T=4: cudnn ran; eager's speedups are the latency ratios over cudnn and over cudnn-fp16
    assert value(frame, "eager", 4, "speedup").p50 == pytest.approx(
        latency(frame, "cudnn", 4) / latency(frame, "eager", 4))
    assert value(frame, "eager", 4, "speedup_fp16").p50 == pytest.approx(
        latency(frame, "cudnn-fp16", 4) / latency(frame, "eager", 4))
    assert value(frame, "cudnn-fp16", 4, "speedup_fp16").p50 == pytest.approx(1)
    assert not fallback_baseline(value(frame, "eager", 4, "speedup").note)
    # T=8: cuDNN refused; the speedup falls back to eager, and the note says why
    fallback = value(frame, "eager", 8, "speedup")
    assert fallback.p50 == pytest.approx(1)
    assert fallback_baseline(fallback.note) == ("eager", f"cudnn did not run (skipped: {LIMIT})")
    assert value(frame, "eager", 8, "speedup_fp16").error == f"not measured: cudnn-fp16 did not run (skipped: {LIMIT})"
    # cudnn-fp16 really ran in float16 while its rows are bfloat16 jobs
    assert set(frame[frame.backend == "cudnn-fp16"].dtype) == {"bfloat16"}
    assert set(frame[frame.backend == "cudnn-fp16"].label) == {"PyTorch native CPU RNN (not cuDNN) in float16"}


def test_the_headline_shows_both_speedups_and_says_where_the_baseline_fell_back(run_dir):
    _, folder = run_dir()
    report = (folder / "report.md").read_text()
    headline = report.split("## Headline")[1].split("\n## ")[0]
    assert "bfloat16 rows also give the speedup over cuDNN in float16 (cudnn-fp16)" in headline
    assert f"Where cudnn did not run (skipped: {LIMIT}), 1 speedups are over eager instead." in headline
    assert "**forward, bfloat16** — each cell: over the baseline / over cudnn-fp16 (—: it did not run)" in headline
    rows = {line.split(" | ")[0].strip("| "): line for line in headline.splitlines() if line.startswith("| T=")}
    assert rows["T=4 B=2 H=8 I=8 L=1"].split(" | ")[1] == "PyTorch CPU RNN (cudnn)"
    assert rows["T=8 B=2 H=8 I=8 L=1"].split(" | ")[1] == f"eager — cudnn did not run (skipped: {LIMIT})"
    cells = rows["T=4 B=2 H=8 I=8 L=1"].strip(" |").split(" | ")[2:]  # cudnn, cudnn-fp16, eager
    assert cells[0] == "1" and cells[1].endswith(" / 1") and " / " in cells[2]  # cudnn: its inverse is cudnn-fp16's
    assert rows["T=8 B=2 H=8 I=8 L=1"].strip(" |").split(" | ")[-1] == "1 / —"  # no cuDNN float16 at T=8


def test_the_baseline_column_names_the_algorithms_cudnn_ran(run_dir):
    """On a GPU the cuDNN rows' notes name the algorithm (rnnbench.cudnn_probe); the report, rebuilt
    from the CSV alone, shows it beside the baseline."""
    _, folder = run_dir()
    frame = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    for backend, algorithm in (("cudnn", "standard"), ("cudnn-fp16", "persistent")):
        rows = frame.backend == backend
        frame.loc[rows, "note"] = f"TF32 off; cuDNN algorithm: {algorithm} (some_kernel)"
    frame.to_csv(folder / "results.csv", index=False)
    assert main(["report", str(folder)]) == 0
    report = (folder / "report.md").read_text()
    assert ("| T=4 B=2 H=8 I=8 L=1 | PyTorch CPU RNN (cudnn) (standard); PyTorch CPU RNN fp16 (cudnn-fp16) "
            "(persistent) |") in report
    backends = report.split("## Backends")[1].split("\n## ")[0]
    assert "| cudnn | PyTorch native CPU RNN (not cuDNN) | TF32 off |" in backends  # its settings; the algorithm:
    assert "| cudnn | standard (some_kernel) | bfloat16 | forward | T=4 B=2 H=8 I=8 L=1 |" in backends


def test_the_headline_names_the_kernel_tier_behind_each_speedup(run_dir):
    """A Triton backend's latency rows name the kernel plans that ran (TritonRNN.last_plans); the headline, rebuilt
    from the CSV alone, adds the plans' tier to the speedup cells, with a cluster barrier's size. Here eager's rows
    stand in for a Triton backend's."""
    _, folder = run_dir()
    frame = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    plans = {"4": "resident(BLOCK_B=16,BLOCK_H=16,num_warps=4)",
             "8": "split(BLOCK_B=8,BLOCK_N=16,BLOCK_H=512,CLUSTER=8,FMA=False); long call: 3 calls timed"}
    for seq_len, plan in plans.items():
        frame.loc[(frame.backend == "eager") & (frame.seq_len == seq_len) & (frame.metric == "latency"), "note"] = plan
    frame.to_csv(folder / "results.csv", index=False)
    assert main(["report", str(folder)]) == 0
    headline = (folder / "report.md").read_text().split("## Headline")[1].split("\n## ")[0]
    cells = {line.split(" | ")[0].strip("| "): line.strip(" |").split(" | ")[2:] for line in headline.splitlines()
             if line.startswith("| T=")}  # cudnn, cudnn-fp16, eager
    assert cells["T=4 B=2 H=8 I=8 L=1"][2].endswith(" (resident)") and cells["T=4 B=2 H=8 I=8 L=1"][0] == "1"
    assert cells["T=8 B=2 H=8 I=8 L=1"][2] == "1 / — (split, clusters of 8)"
    # and the Backends section lists each plan with the cases it ran, apart from the backend's settings
    backends = (folder / "report.md").read_text().split("## Backends")[1].split("\n## ")[0]
    assert "| eager | eager PyTorch loop |  |" in backends
    assert ("| eager | resident(BLOCK_B=16,BLOCK_H=16,num_warps=4) | bfloat16 | forward | T=4 B=2 H=8 I=8 L=1 |"
            in backends)
    assert ("| eager | split(BLOCK_B=8,BLOCK_N=16,BLOCK_H=512,CLUSTER=8,FMA=False) | bfloat16 | forward | "
            "T=8 B=2 H=8 I=8 L=1 |") in backends


def test_without_any_baseline_the_row_says_so(run_dir):
    code, folder = run_dir(baseline="cudnn")
    assert code == 0  # a speedup that cannot be had is not a failure
    frame = pd.read_csv(folder / "results.csv", keep_default_na=False)
    error = value(frame, "eager", 8, "speedup").error
    assert error == f"not measured: no baseline ran (cudnn did not run (skipped: {LIMIT}))"
    report = (folder / "report.md").read_text()
    assert f"| T=8 B=2 H=8 I=8 L=1 | none — no baseline ran (cudnn did not run (skipped: {LIMIT})) |" in report


def test_longest_sequence_each_backend_ran(run_dir):
    _, folder = run_dir()
    section = (folder / "report.md").read_text().split("## Longest sequence each backend ran")[1].split("\n## ")[0]
    assert f"| PyTorch CPU RNN (cudnn) | 4 | T=8 (bfloat16, forward): skipped: {LIMIT} |" in section
    assert "| eager | 8 |  |" in section


def test_every_job_is_logged_with_its_time(run_dir):
    _, folder = run_dir()
    log = RunFolder(folder).job_log()
    assert list(log.columns) == JOB_LOG_COLUMNS
    planned = runner.plan(load_scenario(folder / "scenario.yaml", "full"))
    assert [tuple(map(str, r)) for r in log[JOB_LOG_COLUMNS[:10]].itertuples(index=False)] == [j.key() for j in planned]
    outcomes = dict(zip(log.backend + "/" + log.seq_len.astype(str), log.outcome))
    assert outcomes["cudnn/8"] == "skipped" and outcomes["eager/8"] == "measured"
    seconds = pd.to_numeric(log.seconds)
    assert (seconds[log.outcome == "measured"] > 0).all() and (seconds >= 0).all()
    assert log.free_mib.isna().all()  # no CUDA: no memory before the jobs
    assert "## Run log (jobs.csv)" in (folder / "report.md").read_text()


def test_fixed_dtype_backends_are_planned_only_where_they_apply(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SCENARIO, "dtypes": ["float32", "bfloat16"], "metrics": ["speed", "stability"],
                                    "stability": {"seq_lens": [4], "batch": 2, "hidden": 4, "spectral_radii": [0.5]}}))
    jobs = runner.plan(load_scenario(path, "full"))
    fp16_jobs = [j for j in jobs if j.backend == "cudnn-fp16"]
    assert fp16_jobs and {(j.kind, j.dtype) for j in fp16_jobs} == {("bench", "bfloat16")}


def test_host_bound_backends_stop_at_their_cap_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for name, cap in HOST_BOUND_MAX_SEQ_LEN.items():
        assert BACKENDS[name].skip(Case(cap, 8, 128, 128), cuda) is None
        reason = BACKENDS[name].skip(Case(cap + 1, 8, 128, 128), cuda)
        assert reason.startswith("host-bound loop: run up to seq_len") and "the same at any T" in reason
        assert BACKENDS[name].skip(Case(cap + 1, 8, 128, 128), cpu) is None


@pytest.mark.parametrize("name,minutes", [("long_seq", 10), ("stability", 3)])
def test_the_headline_scenarios_fit_their_time_on_an_h100_by_the_cost_model(name, minutes):
    """A guard on the size of the shipped scenarios, by rnnbench/estimate.py's cost model (no timing here; the
    model's figures are from the 2026-11-27 H200 race and the 2026-11-25 H100 run, guesses marked)."""
    scenario = load_scenario(SCENARIOS / f"{name}.yaml", "full")
    assert estimate.run_seconds(scenario, runner.plan(scenario)) <= minutes * 60


def test_the_estimate_counts_the_graph_replays_a_scenario_asks_for():
    """timing.cuda_graphs adds a warm-up call and the capture to each speed job, and "both" the replays' timing too
    (estimate.graph_seconds), on top of the plain timing."""
    scenario = load_scenario(SCENARIOS / "race_graphs.yaml", "full")
    jobs = runner.plan(scenario)
    def with_graphs(graphs):
        return dataclasses.replace(scenario, timing=dataclasses.replace(scenario.timing, cuda_graphs=graphs))
    seconds = {graphs: estimate.run_seconds(with_graphs(graphs), jobs) for graphs in (False, True, "both")}
    assert seconds[False] < seconds[True] < seconds["both"]
    assert seconds["both"] - seconds[False] >= len(jobs) * (scenario.timing.warmup_ms + scenario.timing.rep_ms) / 1e3


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_scenario_has_an_estimate(path):
    """Every backend and kind of job has a cost (a triton-checkpoint job once had none, and the ETA
    line raised before the first job)."""
    scenario = load_scenario(path, "full")
    assert 0 < estimate.run_seconds(scenario, runner.plan(scenario)) < 3600


def test_the_estimate_counts_the_calls_of_a_long_job():
    scenario = load_scenario_text({"name": "e", "backends": ["eager"], "modes": ["forward+backward"],
                                   "metrics": ["speed", "memory"],
                                   "sweep": {"seq_len": 4096, "batch": 8, "hidden": 128}})
    job = runner.plan(scenario)[0]
    call = 4096 * estimate.US_PER_STEP[("eager", None)][None][1] / 1e6
    forward = 4096 * estimate.US_PER_STEP[("eager", None)][None][0] / 1e6
    # warm-up, peak memory, the step check's and the activation memory's forwards, one untimed and three timed calls,
    # three for the host's time per call
    expected = estimate.JOB_OVERHEAD_S + 2 * call + 2 * forward + (1 + 3) * call + 3 * call
    assert estimate.bench_seconds(job, scenario) == pytest.approx(expected)


def test_cudnn_algorithms_are_probed_in_a_child_process():
    """The probe's plumbing on any machine: without a GPU the profiled call has no kernels to name."""
    from rnnbench import cudnn_probe
    shapes = [cudnn_probe.shape_key("cudnn", "float32", "forward", Case(1000, 2, 8, 8)),
              cudnn_probe.shape_key("cudnn-fp16", "bfloat16", "forward+backward", Case(16, 2, 8, 8))]
    assert shapes[0][3].seq_len == cudnn_probe.PROBE_STEPS and shapes[1][3].seq_len == 16
    notes = cudnn_probe.algorithms(shapes + shapes[:1], "cpu", "tanh", 0)
    assert notes == {shape: "cuDNN algorithm: unknown (no cuDNN RNN kernel among 0 kernels)" for shape in shapes}
    failed = cudnn_probe.algorithms(shapes[:1], "no-such-device", "tanh", 0)
    assert failed[shapes[0]].startswith("cuDNN algorithm: unknown (")


def load_scenario_text(data: dict):
    from rnnbench.schema import parse_scenario
    return parse_scenario(data, "test", "full")


def test_the_eta_is_printed_at_the_start(run_dir, capsys):
    run_dir()
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("6 jobs to run; no time estimate on CPU")


CUDNN_NAMES = {  # kernel names cuDNN 9.19 ran on the H100 (gpu-runs/2026-11-25-h100/cudnn_kernels_ncu.md, traces)
    "fp16 H=128": ["void RNN_blockPersist_fp_RNN_HMMA<__half, __half, float, 128>(RNN_persistBlockParams)"],
    "fp16 H=512": ["persistRNN_init_negMax(int, float*)", "void RNN_persist_fp<__half, __half, float, 512>(int)"],
    "bf16 backward": ["void RNN_blockPersist_bp_RNN<float, float, float, 128>(int)",
                      "void RNN_elementWise_bp1<__nv_bfloat16, __nv_bfloat16, float>(int, int)"],
}


@pytest.mark.parametrize("names,expected", [
    (CUDNN_NAMES["fp16 H=128"], "cuDNN algorithm: persistent (RNN_blockPersist_fp_RNN_HMMA)"),
    (CUDNN_NAMES["fp16 H=512"], "cuDNN algorithm: persistent (persistRNN_init_negMax, RNN_persist_fp)"),
    (["nvjet_sm90_tst_64x8_64x16_4x1_v_bz_NNT", "void elemWiseRNNcell<__nv_bfloat16>(int)"],
     "cuDNN algorithm: standard (elemWiseRNNcell + a GEMM per step)"),
    (["void RNN_blockPersist_fp_RNN<float>(int)", "void GENERIC_elementWise_bp2<float>(int)"],
     "cuDNN algorithm: persistent forward, standard backward (RNN_blockPersist_fp_RNN, GENERIC_elementWise_bp2 + a "
     "GEMM per step)"),
    (["ampere_sgemm_128x64_nn"], "cuDNN algorithm: unknown (no cuDNN RNN kernel among 1 kernels)"),
], ids=["block-persistent", "persistent", "standard", "mixed", "unknown"])
def test_cudnn_algorithm_from_kernel_names(names, expected):
    assert launches.cudnn_algorithm(names) == expected
    assert launches.algorithm_of(f"TF32 off; {expected}") == expected.split(": ")[1].split(" (")[0]

