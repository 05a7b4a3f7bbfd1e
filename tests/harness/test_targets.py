"""Speed targets (rnnbench/targets.py): each row a target selects gets the fastest of the others that ran and the
ratio of their latencies; a row without the numbers is not measured; the report and `rnnbench run` say how many rows
met it. A hand-made results frame, and an in-process CPU run of a tiny scenario."""
import itertools
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

from rnnbench.cli import main
from rnnbench.report import targets_section
from rnnbench.results import load_frame
from rnnbench.schema import Case, Target, load_scenario
from rnnbench.targets import REPLAYED, summary_lines, tally, target_rows

CASE_A, CASE_B = Case(16, 2, 8, 8), Case(16, 2, 32, 32)


def latency(backend: str, case: Case, p50: float, dtype: str = "bfloat16", mode: str = "forward",
            error: str = "") -> dict:
    return {"kind": "bench", "backend": backend, "mode": mode, "dtype": dtype, **vars(case), "metric": "latency",
            "p50": p50, "error": error}


FRAME = pd.DataFrame([
    latency("ours", CASE_A, 1.0), latency("cudnn", CASE_A, 4.0), latency("cudnn-fp16", CASE_A, 2.0),
    latency("ours", CASE_B, 2.0), latency("cudnn", CASE_B, 2.5), latency("cudnn-fp16", CASE_B, float("nan"),
                                                                          error="out of memory"),
    latency("ours", CASE_A, 1.0, dtype="float32"), latency("cudnn", CASE_A, 1.2, dtype="float32"),
    latency("ours", CASE_B, float("nan"), dtype="float32", error="failed: boom"),
    latency("cudnn", CASE_B, 3.0, dtype="float32"),
    {**latency("ours", CASE_A, 9.0), "metric": "peak_memory"},  # not a latency: not read
])


def test_each_selected_row_is_over_the_fastest_of_the_others_that_ran():
    target = Target("t", "ours", ("cudnn", "cudnn-fp16"), 1.5)
    rows = {(row.dtype, row.case): row for row in target_rows(FRAME, target)}
    assert len(rows) == 4
    a16, b16, a32, b32 = (rows[key] for key in [("bfloat16", CASE_A), ("bfloat16", CASE_B), ("float32", CASE_A),
                                                ("float32", CASE_B)])
    assert (a16.compared_with, a16.ratio, a16.met(target)) == ("cudnn-fp16", 2.0, True)  # 2.0 / 1.0, not 4.0 / 1.0
    assert (b16.compared_with, b16.ratio, b16.met(target)) == ("cudnn", 1.25, False)  # cudnn-fp16 ran out of memory
    assert (a32.compared_with, a32.ratio) == ("cudnn", pytest.approx(1.2))  # no cudnn-fp16 row at all
    assert b32.ratio is None and b32.not_measured == "ours has no latency here" and not b32.met(target)
    assert tally(target, list(rows.values())) == ("met in 1 of 3 rows (1 not measured); the worst 1.2x: forward "
                                                  "float32 T=16 B=2 H=8 I=8 L=1 (cudnn)")


def test_where_selects_rows_by_dtype_mode_and_case_fields():
    only = Target("t", "ours", ("cudnn",), 1.0, (("dtypes", ("bfloat16",)), ("hidden", (32,))))
    assert [(row.dtype, row.case) for row in target_rows(FRAME, only)] == [("bfloat16", CASE_B)]
    nothing = Target("t", "ours", ("cudnn",), 1.0, (("modes", ("forward+backward",)),))
    assert target_rows(FRAME, nothing) == [] and tally(nothing, []) == "no row of this run is one it selects"
    absent = Target("t", "ours", ("eager",), 1.0, (("dtypes", ("bfloat16",)),))
    assert {row.not_measured for row in target_rows(FRAME, absent)} == {"none of eager has a latency here"}


def test_a_ratio_of_times_against_the_backends_own_row_at_other_case_fields():
    """at_most with `at`: the backend's latency here over the fastest of `over` in the row with those case fields
    changed (issue 8: H = 2048's B = 64 within 1.5x of B = 8's time); over itself allowed there."""
    at_h8 = (("hidden", 8), ("input_size", 8))
    within = Target("t", "ours", ("ours",), None, (("hidden", (32,)),), at_most=1.5, at=at_h8)
    rows = {row.dtype: row for row in target_rows(FRAME, within)}
    assert rows["bfloat16"].ratio == 2.0 and not rows["bfloat16"].met(within)  # 2.0 against 1.0 at H = 8
    assert rows["bfloat16"].compared_with == "ours at T=16 B=2 H=8 I=8 L=1"
    assert rows["float32"].not_measured == "ours has no latency here"
    assert tally(within, list(rows.values())) == ("met in 0 of 1 rows (1 not measured); the worst 2x: forward "
                                                  "bfloat16 T=16 B=2 H=32 I=32 L=1 (ours at T=16 B=2 H=8 I=8 L=1)")
    loose = Target("t", "ours", ("cudnn", "cudnn-fp16"), None, (("hidden", (32,)),), at_most=1.0, at=at_h8)
    row = target_rows(FRAME, loose)[0]  # bfloat16 H = 32 (2.0) against the fastest at H = 8, cudnn-fp16 (2.0)
    assert (row.ratio, row.met(loose), row.compared_with) == (1.0, True, "cudnn-fp16 at T=16 B=2 H=8 I=8 L=1")
    lost = Target("t", "ours", ("cudnn",), None, (("hidden", (8,)),), at_most=2.0, at=(("batch", 4),))
    assert {row.not_measured for row in target_rows(FRAME, lost)} == {"none of cudnn has a latency at T=16 B=4 H=8 "
                                                                      "I=8 L=1"}


SCENARIO = {"name": "goals", "backends": ["eager", "cudnn"], "dtypes": ["float32"], "modes": ["forward"],
            "metrics": ["speed"], "sweep": {"seq_len": 8, "batch": 2, "hidden": [8, 16]},
            "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2},
            "targets": [{"name": "cudnn beats eager", "backend": "cudnn", "over": "eager", "at_least": 0.001},
                        {"name": "out of reach", "backend": "cudnn", "over": "eager", "at_least": 1e9,
                         "where": {"hidden": 16}}]}


def test_a_run_reports_its_targets_from_its_own_latencies(tmp_path, capsys):
    path = tmp_path / "goals.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    on_cpu = not torch.cuda.is_available()  # on a GPU the same run times the GPU: no CPU caveat then
    assert ("targets, counted on CPU timings (the Triton interpreter and PyTorch on a CPU); they are for a "
            "GPU:" in stdout) == on_cpu
    assert "target cudnn beats eager: met in 2 of 2 rows; the worst " in stdout
    assert "target out of reach: met in 0 of 1 rows; the worst " in stdout
    folder = tmp_path / "out" / "goals" / "r"
    frame = load_frame(folder)
    p50 = frame[frame.metric == "latency"].set_index(["backend", "hidden"]).p50
    section = (folder / "report.md").read_text().split("## Targets")[1].split("\n## ")[0]
    assert ("These are CPU timings" in section) == on_cpu
    assert "**out of reach**: cudnn at least 1e+09x faster than eager (hidden 16): met in 0 of 1 rows" in section
    ratio = p50["eager", 16] / p50["cudnn", 16]
    assert f"| forward | float32 | T=8 B=2 H=16 I=16 L=1 | eager | {ratio:.4g} | no |" in section
    assert main(["report", str(folder)]) == 0  # a report rebuilt says the same
    assert "target out of reach: met in 0 of 1 rows; the worst " in capsys.readouterr().out


def test_a_run_whose_scenario_no_longer_parses_gets_its_report_without_targets(tmp_path):
    path = tmp_path / "goals.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress"]) == 0
    folder = tmp_path / "out" / "goals" / "r"
    (folder / "scenario.yaml").write_text(yaml.safe_dump({**SCENARIO, "a_key_of_a_later_schema": 1}))
    assert main(["report", str(folder)]) == 0
    report = (folder / "report.md").read_text()
    assert "## Targets" not in report and "## Latency" in report


def test_compare_tallies_the_later_runs_targets_on_both_runs(tmp_path, capsys):
    """rnnbench compare A B: B's targets, each tallied on A's latencies and on B's; A's scenario had none."""
    path = tmp_path / "goals.yaml"
    for run_id, scenario in (("a", {k: v for k, v in SCENARIO.items() if k != "targets"}), ("b", SCENARIO)):
        path.write_text(yaml.safe_dump(scenario))
        assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", run_id, "--no-progress"]) == 0
    capsys.readouterr()
    runs = [str(tmp_path / "out" / "goals" / run_id) for run_id in ("a", "b")]
    assert main(["compare", *runs]) == 0
    table = capsys.readouterr().out.split("Targets (B's scenario), on each run's latencies:")[1]
    reach = [line for line in table.splitlines() if line.startswith("| out of reach |")]
    assert len(reach) == 1 and reach[0].count("met in 0 of 1 rows; the worst ") == 2


SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
WITH_TARGETS = [path for path in sorted(SCENARIOS.glob("*.yaml")) if load_scenario(path, "full").targets]


def test_the_race_and_its_graph_replays_hold_the_kernels_to_the_same_targets():
    assert [path.stem for path in WITH_TARGETS] == ["checkpoint", "race", "race_graphs"]
    race, graphs = (load_scenario(SCENARIOS / f"{name}.yaml", "full") for name in ("race", "race_graphs"))
    assert race.targets == graphs.targets


@pytest.mark.parametrize("path", WITH_TARGETS, ids=lambda path: path.stem)
def test_every_shipped_target_selects_rows_of_its_scenarios_sweep(path):
    """A target whose where (or at) names a value the sweep lacks would never be measured: met in 0 of 0 rows."""
    scenario = load_scenario(path, "full")
    rows = list(itertools.product(scenario.modes, scenario.dtypes, scenario.cases))
    for target in scenario.targets:
        selected = [case for mode, dtype, case in rows if target.selects(mode, dtype, case)]
        assert selected, target.name
        assert all(target.reference(case) in scenario.cases for case in selected), target.name


def replay(backend: str, case: Case, us: float) -> dict:
    return {**latency(backend, case, us), "metric": REPLAYED}


def test_a_run_that_timed_replays_counts_each_target_on_them_too():
    """timing: {cuda_graphs: both}: each target tallied again on the replays (the GPU's work alone), in the report's
    table beside each row's own ratio, where a row with no replays says so; a run without them, as before."""
    target = Target("t", "ours", ("cudnn", "cudnn-fp16"), 3.0, (("dtypes", ("bfloat16",)),))
    frame = pd.concat([FRAME, pd.DataFrame([replay("ours", CASE_A, 0.5), replay("cudnn-fp16", CASE_A, 2.0),
                                            replay("cudnn", CASE_A, 3.0)])])
    assert summary_lines(frame, (target,)) == [
        "target t: met in 0 of 2 rows; the worst 1.25x: forward bfloat16 T=16 B=2 H=32 I=32 L=1 (cudnn)",
        "target t, replayed from CUDA graphs: met in 1 of 1 rows; the worst 4x: forward bfloat16 T=16 B=2 H=8 I=8 "
        "L=1 (cudnn-fp16)"]
    section = "\n".join(targets_section(frame, SimpleNamespace(targets=(target,)), on_cpu=False))
    assert "Replayed from CUDA graphs (the GPU's work alone): met in 1 of 1 rows" in section
    assert "| forward | bfloat16 | T=16 B=2 H=8 I=8 L=1 | cudnn-fp16 | 2 | no | cudnn-fp16 | 4 | yes |" in section
    assert "| forward | bfloat16 | T=16 B=2 H=32 I=32 L=1 | cudnn | 1.25 | no |  |  | not replayed |" in section
    assert len(summary_lines(FRAME, (target,))) == 1
    assert "eplayed" not in "\n".join(targets_section(FRAME, SimpleNamespace(targets=(target,)), on_cpu=False))
