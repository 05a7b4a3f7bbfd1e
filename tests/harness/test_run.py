"""End to end: the smoke scenario's cpu sweep through the real command, the report rebuilt from
the CSV, resume after an interruption, a signal or a crash, failing and unavailable backends and the
exit codes they give, compare, list, --version."""
import csv
import dataclasses
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch
import yaml

from rnnbench import measure, runner
from rnnbench.backends import BACKENDS, Prepared
from rnnbench.cli import EXIT_BROKEN_PIPE, EXIT_UNITS_FAILED, main
from rnnbench.results import COLUMNS, JOB_COLUMNS, RunFolder, job_key
from rnnbench.schema import Case, load_scenario

from helpers import timed_out_split_status

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`python -m rnnbench run scenarios/smoke.yaml` in a fresh process without TRITON_INTERPRET set."""
    out = tmp_path_factory.mktemp("results")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "rnnbench", "run", "scenarios/smoke.yaml", "--out", str(out),
                           "--run-id", "smoke-cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "smoke" / "smoke-cpu", proc.stdout


def png_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("*.png"))


def test_smoke_cpu_sweep_writes_every_output(smoke_run):
    run_dir, stdout = smoke_run
    if not torch.cuda.is_available():
        assert "no CUDA GPU found: running the scenario's smaller `cpu:` sweep" in stdout
        assert "timed by CPU time of the calling thread" in stdout
    for name in ("results.csv", "results.json", "report.md", "environment.json", "scenario.yaml"):
        assert (run_dir / name).is_file(), name
    with (run_dir / "results.csv").open() as f:
        assert next(csv.reader(f)) == COLUMNS
    frame = pd.read_csv(run_dir / "results.csv")
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml", "cpu" if not torch.cuda.is_available() else "full")
    # every planned job wrote rows, and each job either measured or says why not
    assert len(frame.drop_duplicates(JOB_COLUMNS)) == len(runner.plan(scenario))
    bench = frame[frame.kind == "bench"]
    for _, job in bench.groupby(JOB_COLUMNS, dropna=False):
        assert job.error.notna().any() or {"latency", "speedup", "tflops", "tokens_per_s"} <= set(job.metric)
    latency = bench[bench.metric == "latency"].dropna(subset=["p50"])
    assert (latency.p20 <= latency.p50).all() and (latency.p50 <= latency.p80).all() and (latency.p20 > 0).all()
    assert set(frame[frame.kind == "stability"].metric) >= {"rel_err_output", "rel_err_grad_weight_hh_l0",
                                                             "nonfinite", "grad_norm"}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["environment"]["torch"] == torch.__version__ and len(results["rows"]) == len(frame)
    if not torch.cuda.is_available():  # every backend ran with the same, recorded, thread count
        assert results["environment"]["cpu_threads"] == 1
        assert results["environment"]["cpu_timing"] == "CPU time of the calling thread (1 thread)"


def test_cudnn_and_triton_rows_say_what_ran(smoke_run):
    frame = pd.read_csv(smoke_run[0] / "results.csv", dtype=str, keep_default_na=False)
    cudnn_labels = set(frame[frame.backend == "cudnn"].label)
    on_gpu = torch.cuda.is_available()
    assert cudnn_labels == {"cuDNN (torch.nn.RNN)" if on_gpu else "PyTorch native CPU RNN (not cuDNN)"}
    for backend in ("triton", "triton-stepwise"):
        rows = frame[frame.backend == backend]
        # either the kernels ran (and the plan they chose is recorded) or every row says why not
        assert rows[rows.error == ""].note.str.contains(r"\w+\(", regex=True).all()
        assert rows[rows.error != ""].error.str.match(r"(unavailable|skipped): ").all()
        if not torch.cuda.is_available():
            assert rows.label.str.endswith("(interpreter)").all()
    report = (smoke_run[0] / "report.md").read_text()
    column = "PyTorch CPU RNN (cudnn)" if not torch.cuda.is_available() else "cudnn"
    assert f"| case | {column} | triton | triton-stepwise | eager | compile |" in report


def test_plots_are_real_pngs_and_the_report_embeds_them(smoke_run):
    run_dir = smoke_run[0]
    pngs = png_files(run_dir)
    names = {p.name for p in pngs}
    assert {"latency_forward_float32.png", "speedup_fwd_bwd_float32.png", "memory_fwd_bwd_float32.png",
            "stability_error_float32.png", "grad_norm.png"} <= names
    report = (run_dir / "report.md").read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report))
    assert linked == names
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        height, width = matplotlib.image.imread(png).shape[:2]
        assert width > 300 and height > 200
    baseline = "PyTorch CPU RNN (cudnn)" if not torch.cuda.is_available() else "cudnn"
    assert f"## Headline: speedup over {baseline}" in report and "## Environment" in report


def test_report_is_rebuilt_from_the_csv(smoke_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run[0], run_dir)
    original = (run_dir / "report.md").read_text()
    for path in [*png_files(run_dir), run_dir / "report.md", run_dir / "results.json"]:
        path.unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text() == original
    assert {p.name for p in png_files(run_dir)} == {p.name for p in png_files(smoke_run[0])}

    # the report follows the CSV: drop the eager rows and they are gone from the tables
    frame = pd.read_csv(run_dir / "results.csv", dtype=str, keep_default_na=False)
    frame[frame.backend != "eager"].to_csv(run_dir / "results.csv", index=False)
    assert main(["report", str(run_dir)]) == 0
    rebuilt = (run_dir / "report.md").read_text()
    results_part = rebuilt.split("## Run log")[0]  # the run log is jobs.csv's: what ran, not what is reported
    assert "| eager " not in results_part and "| eager " in original.split("## Run log")[0]
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results.csv there" in capsys.readouterr().err


def test_the_hosts_time_per_call_gets_its_table_where_a_run_has_it(smoke_run, tmp_path):
    """A CUDA run's speed jobs carry host_time (runner.host_time); a CPU run's none, and no table. Given such rows,
    the report shows them in a table of their own, beside the latency's, with what they mean."""
    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run[0], run_dir)
    frame = pd.read_csv(run_dir / "results.csv", dtype=str, keep_default_na=False)
    assert ("host_time" in set(frame.metric)) == torch.cuda.is_available()
    frame = frame[frame.metric != "host_time"]  # the rows below are the test's own
    host = frame[frame.metric == "latency"].assign(metric="host_time", p20="0.45", p50="0.5", p80="0.55", note="")
    pd.concat([frame, host]).to_csv(run_dir / "results.csv", index=False)
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    section = report.split("## Host time per call (ms)")[1].split("\n## ")[0]
    assert "the GPU waited for the host" in section and "| 0.5 [0.45–0.55] |" in section


def test_compare_shows_what_changed_and_which_way_is_better(smoke_run, tmp_path, capsys):
    run_b = tmp_path / "b"
    shutil.copytree(smoke_run[0], run_b)
    frame = pd.read_csv(run_b / "results.csv", dtype=str, keep_default_na=False)
    job = (frame.backend == "eager") & (frame["mode"] == "forward") & (frame.seq_len == frame.seq_len.iloc[0])
    for metric, factor in (("latency", 2), ("tokens_per_s", 0.5)):  # B twice as slow
        row = frame[job & (frame.metric == metric)].index[0]
        frame.loc[row, "p50"] = str(float(frame.loc[row, "p50"]) * factor)
    frame.to_csv(run_b / "results.csv", index=False)
    for metric, ratio, way in (("latency", "2", "lower"), ("tokens_per_s", "0.5", "higher")):
        assert main(["compare", str(smoke_run[0]), str(run_b), "--metric", metric, "--threshold", "0.4"]) == 0
        out = capsys.readouterr().out
        table = [line for line in out.splitlines() if line.startswith("| eager")]
        assert len(table) == 1 and table[0].endswith(f"| {ratio} | worse |")
        assert f"{way} is better for {metric}" in out

    assert main(["compare", str(smoke_run[0]), str(run_b), "--metric", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnbench: error: --metric bogus: in neither run (the grad_norm curve is not compared); "
                          "expected one of ") and "latency" in err


# ---- in-process runs of a tiny scenario ------------------------------------------------------

TINY = {"name": "tiny", "backends": ["cudnn", "eager"], "modes": ["forward", "forward+backward"],
        "metrics": ["speed", "memory", "stability"],
        "sweep": {"seq_len": [4, 8], "batch": 2, "hidden": 8},
        "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2},
        "stability": {"seq_lens": [4, 8], "batch": 2, "hidden": 4, "spectral_radii": [0.5]}}


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def run_tiny(path: Path, *extra: str) -> int:
    return main(["run", str(path), "--out", str(path.parent / "out"), "--run-id", "r", "--sweep", "full",
                 "--no-progress", *extra])


def job_keys(run_dir: Path) -> list[tuple]:
    return [tuple(r[c] for c in JOB_COLUMNS) for r in RunFolder(run_dir).rows()]


def test_resume_after_interruption_runs_only_what_is_missing(tiny, monkeypatch, capsys):
    planned = runner.plan(load_scenario(tiny, "full"))
    real, calls = runner.guarded, []

    def interrupt_after_five(job, ctx):
        calls.append(job)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(job, ctx)
    monkeypatch.setattr(runner, "guarded", interrupt_after_five)
    assert run_tiny(tiny) == 130
    assert "--resume" in capsys.readouterr().err
    run_dir = tiny.parent / "out" / "tiny" / "r"
    first = RunFolder(run_dir).rows()
    assert len(set(job_keys(run_dir))) == 5
    assert RunFolder(run_dir).inflight() is None  # an interruption is not a crash

    calls.clear()
    monkeypatch.setattr(runner, "guarded", lambda job, ctx: calls.append(job) or real(job, ctx))
    assert run_tiny(tiny, "--resume", str(run_dir)) == 0
    assert calls == planned[5:]
    rows = RunFolder(run_dir).rows()
    assert rows[:len(first)] == first
    assert len(set(job_keys(run_dir))) == len(planned)
    # speedups of resumed jobs still use the baseline measured before the interruption
    speedups = [r for r in rows if r["metric"] == "speedup"]
    assert speedups and all(r["p50"] and not r["error"] for r in speedups)
    assert (run_dir / "report.md").exists()


def test_resume_after_a_crash_keeps_rows_and_skips_the_crashing_job(tiny, capsys):
    assert run_tiny(tiny) == 0
    run_dir = tiny.parent / "out" / "tiny" / "r"
    folder = RunFolder(run_dir)
    rows = folder.rows()
    # simulate a process that died while running the last job and while writing a row
    last = runner.plan(load_scenario(tiny, "full"))[-1]
    kept = [r for r in rows if job_key(r) != last.key()]
    with folder.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
        f.write("tiny,bench,eager,eager loop,forw")  # a row cut short
    folder.mark_inflight(last)
    assert run_tiny(tiny, "--resume") == EXIT_UNITS_FAILED  # the latest run of this scenario; a crash is a failure
    after = folder.rows()
    assert after[:len(kept)] == kept
    crashed = [r for r in after if job_key(r) == last.key()]
    assert len(crashed) == 1 and "process died" in crashed[0]["error"]
    assert folder.inflight() is None
    assert run_tiny(tiny) == 2 and "already holds a run" in capsys.readouterr().err


def test_a_cuda_error_that_outlives_its_job_stops_the_run_with_the_jobs_rows_kept(tiny, monkeypatch, capsys):
    """A CUDA error such as an illegal address stays for the life of the process: the first sync after the job that
    had it (releasing its memory) raises it again, as would every later job. The job's rows are kept, the run stops
    with exit 3 and says how to go on, and --resume runs the jobs after it (stand-in: the third release raises)."""
    planned = runner.plan(load_scenario(tiny, "full"))
    releases = []

    def release(device):
        releases.append(device)
        if len(releases) == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be ...")
    monkeypatch.setattr(runner, "release_memory", release)
    assert run_tiny(tiny) == EXIT_UNITS_FAILED
    err = capsys.readouterr().err
    assert (f"the GPU can run nothing more in this process, after {planned[2].describe()}: RuntimeError: CUDA error: "
            "an illegal memory access was encountered;") in err and "--resume" in err and "Traceback" not in err
    run_dir = tiny.parent / "out" / "tiny" / "r"
    assert list(dict.fromkeys(job_keys(run_dir))) == [job.key() for job in planned[:3]]
    assert RunFolder(run_dir).inflight() is None  # the job has its rows: not a crash, not run again
    monkeypatch.setattr(runner, "release_memory", lambda device: None)
    assert run_tiny(tiny, "--resume", str(run_dir)) == 0
    assert list(dict.fromkeys(job_keys(run_dir))) == [job.key() for job in planned]


def test_resume_refuses_a_changed_scenario(tiny, capsys):
    assert run_tiny(tiny) == 0
    tiny.write_text(yaml.safe_dump({**TINY, "seed": 7}))
    assert run_tiny(tiny, "--resume") == 2
    assert "different scenario" in capsys.readouterr().err


def test_failing_unavailable_and_oom_backends_do_not_stop_the_run(tiny, monkeypatch, capsys):
    def broken(source, device, dtype):
        raise RuntimeError("kernel exploded\nsecond line")

    def oom(source, device, dtype):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 PiB")
    monkeypatch.setitem(BACKENDS, "eager", dataclasses.replace(BACKENDS["eager"], prepare=broken))
    monkeypatch.setitem(BACKENDS, "compile", dataclasses.replace(BACKENDS["compile"], prepare=oom))
    monkeypatch.setitem(BACKENDS, "triton", dataclasses.replace(BACKENDS["triton"],
                                                                 unavailable=lambda device: "no GPU in this test"))
    TINY_PLUS = {**TINY, "backends": ["cudnn", "eager", "compile", "triton"]}
    tiny.write_text(yaml.safe_dump(TINY_PLUS))
    assert run_tiny(tiny) == EXIT_UNITS_FAILED
    frame = pd.read_csv(tiny.parent / "out" / "tiny" / "r" / "results.csv")
    errors = {b: set(frame[frame.backend == b].error.dropna()) for b in ("eager", "compile", "triton", "cudnn")}
    assert errors["eager"] == {"RuntimeError: kernel exploded"}
    assert errors["compile"] == {"CUDA out of memory: Tried to allocate 1 PiB"}
    assert errors["triton"] == {"unavailable: no GPU in this test"}
    assert errors["cudnn"] == set()
    planned = runner.plan(load_scenario(tiny, "full"))
    assert len(frame.drop_duplicates(JOB_COLUMNS)) == len(planned)
    assert frame[(frame.backend == "cudnn") & (frame.metric == "latency")].p50.notna().all()
    report = (tiny.parent / "out" / "tiny" / "r" / "report.md").read_text()
    assert "RuntimeError: kernel exploded" in report and "unavailable: no GPU in this test" in report
    # one line on stderr says how many jobs failed and shows one; the failures count, skips do not
    failed_jobs = len(frame[frame.backend.isin(["eager", "compile"])].drop_duplicates(JOB_COLUMNS))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rnnbench: {failed_jobs} of {len(planned)} jobs failed, e.g. ")
    assert "kernel exploded" in err[0] or "CUDA out of memory" in err[0]


def test_a_job_whose_split_barrier_gave_up_reports_that_and_not_its_figures(tiny, monkeypatch):
    """A split call returns without reading its barriers' status (kernels/barrier_status.py): a job whose call left a
    timed-out status behind is one error row (its outputs were wrong), and the jobs after it are not blamed for it.
    The status is a stand-in for the copy a GPU call leaves (the CPU reads its own at once)."""
    from kernels import barrier_status
    unread = []
    monkeypatch.setattr(barrier_status, "_UNREAD", unread)
    eager = BACKENDS["eager"]

    def prepare(source, device, dtype):
        good = eager.prepare(source, device, dtype)

        def timed_out(x, h0):
            unread.append(timed_out_split_status())
            return good.fn(x, h0)
        return Prepared(timed_out, good.params)
    monkeypatch.setitem(BACKENDS, "eager", dataclasses.replace(eager, prepare=prepare))
    tiny.write_text(yaml.safe_dump({**TINY, "backends": ["cudnn", "eager"]}))
    assert run_tiny(tiny) == EXIT_UNITS_FAILED
    frame = pd.read_csv(tiny.parent / "out" / "tiny" / "r" / "results.csv")
    eager_rows = frame[(frame.backend == "eager") & (frame.kind == "bench")]
    assert len(eager_rows) == len(eager_rows.drop_duplicates(JOB_COLUMNS))  # one row a job: no figures kept
    assert set(eager_rows.error) == {barrier_status.TIMED_OUT + " (in an earlier split call; "
                                     "kernels.barrier_status.WAIT_FOR_STATUS = True raises in the call itself)"}
    assert frame[(frame.backend == "cudnn") & (frame.metric == "latency")].p50.notna().all() and unread == []


def test_jobs_skipped_for_a_stated_reason_exit_0(tiny, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "eager", dataclasses.replace(BACKENDS["eager"],
                                                                unavailable=lambda device: "not in this test"))
    monkeypatch.setitem(BACKENDS, "cudnn", dataclasses.replace(BACKENDS["cudnn"],
                                                                skip=lambda case, device: "a limit of this test"))
    assert run_tiny(tiny) == 0
    out = capsys.readouterr().out
    planned = len(runner.plan(load_scenario(tiny, "full")))
    stability_reference = sum(u.backend == runner.REFERENCE for u in runner.plan(load_scenario(tiny, "full")))
    assert f"of all {planned}: {stability_reference} measured, {planned - stability_reference} skipped" in out


def test_an_impossible_size_fails_with_exit_3(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump({"name": "huge", "backends": ["eager"], "modes": ["forward"], "metrics": ["speed"],
                                    "sweep": {"seq_len": 10 ** 7, "batch": 10 ** 4, "hidden": 8}}))  # 3 TB of input
    assert run_tiny(path) == EXIT_UNITS_FAILED
    err = capsys.readouterr().err
    assert "rnnbench: 1 of 1 jobs failed, e.g. bench eager float32 forward T=10000000 B=10000 H=8" in err


def test_noisy_timings_are_marked_in_the_csv_and_the_report(tiny, monkeypatch):
    # the jobs in plan order: p80/p20 = 1.2 at T=4, 3 at T=8
    timings = iter([((1.0, 1.1, 1.2), ""), ((1.0, 2.0, 3.0), "")])
    monkeypatch.setattr(runner.measure, "time_call", lambda *args: next(timings))
    tiny.write_text(yaml.safe_dump({**TINY, "metrics": ["speed"], "backends": ["eager"], "modes": ["forward"]}))
    assert run_tiny(tiny) == 0
    rows = RunFolder(tiny.parent / "out" / "tiny" / "r").rows()
    noisy = {(r["seq_len"], r["metric"]) for r in rows if r["note"].startswith("noisy: p80/p20 = 3.00")}
    assert noisy == {("8", m) for m in ("latency", "time_per_step", "tokens_per_s", "tflops")}
    assert not any("noisy" in r["note"] for r in rows if r["seq_len"] == "4")
    report = (tiny.parent / "out" / "tiny" / "r" / "report.md").read_text()
    assert "| T=8 B=2 H=8 I=8 L=1 | 2 [1–3] ⚠ |" in report and "| T=4 B=2 H=8 I=8 L=1 | 1.1 [1–1.2] |" in report
    assert "⚠ noisy: 1 of these timings have p80/p20 > 1.5" in report
    assert "| eager | eager PyTorch loop |  |" in report  # a measurement's note is not a fact of the backend


def test_timings_on_a_machine_that_stayed_busy_are_marked_in_the_csv_and_the_report(tiny, monkeypatch):
    busy = measure.BUSY_NOTE + "no quiet stretch within 10 s, timed anyway"
    timings = iter([((1.0, 1.1, 1.2), ""), ((1.0, 1.1, 1.2), busy)])  # T=4 quiet, T=8 busy
    monkeypatch.setattr(runner.measure, "time_call", lambda *args: next(timings))
    tiny.write_text(yaml.safe_dump({**TINY, "metrics": ["speed"], "backends": ["eager"], "modes": ["forward"]}))
    assert run_tiny(tiny) == 0
    rows = RunFolder(tiny.parent / "out" / "tiny" / "r").rows()
    assert {r["seq_len"] for r in rows if busy in r["note"]} == {"8"}
    report = (tiny.parent / "out" / "tiny" / "r" / "report.md").read_text()
    assert "| T=8 B=2 H=8 I=8 L=1 | 1.1 [1–1.2] ⚠ |" in report and "| T=4 B=2 H=8 I=8 L=1 | 1.1 [1–1.2] |" in report
    assert "⚠ busy: 1 of these timings found no quiet stretch" in report and "noisy:" not in report


def test_the_old_spelling_of_sweep_still_works_and_says_the_new_one(tiny, capsys):
    assert main(["run", str(tiny), "--out", str(tiny.parent / "out"), "--run-id", "old", "--profile", "cpu",
                 "--no-progress"]) == 0
    assert capsys.readouterr().err.startswith("rnnbench: --profile is now --sweep")
    assert RunFolder(tiny.parent / "out" / "tiny" / "old").environment()["sweep"] == "cpu"


def test_report_names_the_sweep_that_ran_and_the_codes_repository(tiny):
    # tiny has no cpu: section: the cpu sweep runs its full sweep, and the report must say so
    assert main(["run", str(tiny), "--out", str(tiny.parent / "out"), "--run-id", "c", "--sweep", "cpu",
                 "--no-progress"]) == 0
    run_dir = tiny.parent / "out" / "tiny" / "c"
    report = (run_dir / "report.md").read_text()
    assert "sweep: **cpu**" in report
    # the CPU banner is for runs on the CPU; a GPU given --sweep cpu times the GPU
    environment = RunFolder(run_dir).environment()
    for device, banner in (("cpu", True), ("cuda", False)):
        (run_dir / "environment.json").write_text(json.dumps({**environment, "device": device}))
        assert main(["report", str(run_dir)]) == 0
        report = (run_dir / "report.md").read_text()
        assert ("> CPU sweep: no CUDA GPU was present, so this ran the scenario's full sweep (it has no `cpu:` "
                "section)" in report) == banner and "`cpu:` sweep" not in report
        assert "sweep: **cpu**" in report
    # the scenario lies outside the repository: the commit is still the code's
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the code is not in a git checkout")
    assert RunFolder(run_dir).environment()["git_commit"].startswith(head.stdout.strip())


SIGNAL_SCENARIO = {"name": "sig", "backends": ["eager"], "modes": ["forward"], "metrics": ["speed"],
                   "sweep": {"seq_len": [4, 8], "batch": 2, "hidden": 8},
                   "timing": {"warmup_ms": 1, "rep_ms": 600, "min_reps": 1}}  # 0.6 s or more per job


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_keeps_what_was_measured_and_resume_reruns_the_cut_job(tmp_path, signum, capsys):
    path = tmp_path / "sig.yaml"
    path.write_text(yaml.safe_dump(SIGNAL_SCENARIO))
    run_dir = tmp_path / "out" / "sig" / "r"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "rnnbench", "run", str(path), "--out", str(tmp_path / "out"),
                             "--run-id", "r", "--sweep", "full", "--no-progress"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run_dir / "inflight.json").exists():  # the first job is being measured
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    folder = RunFolder(run_dir)
    assert folder.rows() == []  # the job cut short left no rows
    if signum == signal.SIGKILL:  # the process itself died: the marker stays, resume records a crash
        assert proc.returncode == -signal.SIGKILL and folder.inflight() is not None
        assert main(["run", str(path), "--out", str(tmp_path / "out"), "--resume", str(run_dir),
                     "--no-progress"]) == EXIT_UNITS_FAILED
        errors = [r["error"] for r in folder.rows()]
        assert errors == ["the process died while running this job; not retried on resume"] + [""] * 6
        return
    assert proc.returncode == 128 + signum
    assert f"interrupted by {signum.name}" in stderr and f"--resume {run_dir}" in stderr and "Traceback" not in stderr
    assert folder.inflight() is None
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--resume", str(run_dir), "--no-progress"]) == 0
    rows = folder.rows()
    assert sorted({r["seq_len"] for r in rows}) == ["4", "8"] and not any(r["error"] for r in rows)


def test_list_shows_scenarios_and_backend_availability(capsys):
    assert main(["list", "--scenarios", str(ROOT / "scenarios")]) == 0
    out = capsys.readouterr().out
    for name in ("smoke.yaml", "long_seq.yaml", "stability.yaml", "batch_sweep.yaml", "hidden_sweep.yaml",
                 "split_h.yaml"):
        assert name in out
    for backend in BACKENDS:
        line = next(line for line in out.splitlines() if line.strip().startswith(backend + " "))
        assert ("unavailable: " in line) != line.endswith("available")
    assert "PyTorch native CPU RNN" in out or "cuDNN" in out


def test_list_into_a_pipe_that_closes_early_is_quiet():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(f"set -o pipefail; {shlex.quote(sys.executable)} -m rnnbench list | head -1", shell=True,
                          executable="/bin/bash", cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("Scenarios in scenarios") and proc.stdout.count("\n") == 1
    assert proc.stderr == "" and proc.returncode in (0, EXIT_BROKEN_PIPE)


def test_version_and_help_document_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"rnnbench {importlib.metadata.version('rnnbench')}\n"
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "exit codes:" in out and "  3    run: at least one job failed" in out and "143 SIGTERM" in out
    readme = (ROOT / "README.md").read_text()
    assert all(f"| {code} |" in readme for code in ("0", "2", "3", "128+N"))


def test_cudnn_skips_sequences_beyond_its_limit_on_cuda():
    cudnn = BACKENDS["cudnn"]
    assert "cuDNN's sequence limit" in cudnn.skip(Case(65536, 8, 128, 128, 1), torch.device("cuda"))
    assert cudnn.skip(Case(65535, 8, 128, 128, 1), torch.device("cuda")) is None
    assert cudnn.skip(Case(65536, 8, 128, 128, 1), torch.device("cpu")) is None  # the CPU RNN has no such limit
