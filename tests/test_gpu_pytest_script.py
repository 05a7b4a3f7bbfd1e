""".ci/gpu_pytest.py, how a GPU lease runs its test steps: in worker processes, then what failed there again in one
process, whose exit code is the step's. Checked here on throwaway test files, so that a lease's test signal does not
depend on it untried."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "gpu_pytest.py"
TESTS = """
import os

def test_passes():
    pass

def test_fails_only_in_a_worker():
    assert "PYTEST_XDIST_WORKER" not in os.environ

def test_always_fails():
    assert False
"""


def run(folder: Path, *args: str, tests: str = TESTS, limit: tuple[str, ...] = (),
        env: dict | None = None) -> subprocess.CompletedProcess:
    """The script on throwaway tests, under `limit` (a command such as timeout's) where one is given, in env (this
    process's by default)."""
    (folder / "test_throwaway.py").write_text(tests)
    # this suite's own xdist workers set PYTEST_XDIST_WORKER: the throwaway tests must not see it
    env = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("PYTEST_")}
    return subprocess.run([*limit, sys.executable, str(SCRIPT), *args, "-q", "test_throwaway.py"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_what_failed_only_in_workers_passes_alone_and_the_step_passes(tmp_path):
    result = run(tmp_path, "--workers", "2", "-k", "not always")
    assert result.returncode == 0, result.stdout + result.stderr
    parallel, alone = result.stdout.split("== the tests that failed in parallel, again one at a time:")
    assert "1 failed, 1 passed" in parallel and "FAILED test_throwaway.py::test_fails_only_in_a_worker" in parallel
    assert "1 passed, 2 deselected" in alone  # only the one that failed ran again


def test_a_test_that_fails_alone_too_fails_the_step(tmp_path):
    result = run(tmp_path, "--workers", "2")
    assert result.returncode == 1
    alone = result.stdout.split("again one at a time:")[1]
    assert "FAILED test_throwaway.py::test_always_fails -" in alone and "1 failed, 1 passed" in alone


@pytest.mark.parametrize("workers", ["0", "1"])
def test_one_worker_or_none_runs_pytest_as_it_is(tmp_path, workers):
    result = run(tmp_path, "--workers", workers, "-k", "not always")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout and "again" not in result.stdout


def test_each_worker_gets_its_share_of_the_cores_unless_the_caller_set_one(tmp_path):
    share = max(1, (os.cpu_count() or 2) // 2)
    tests = f"import os\n\ndef test_threads():\n    assert os.environ['OMP_NUM_THREADS'] == '{share}'\n"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    assert run(tmp_path, "--workers", "2", tests=tests, env=env).returncode == 0
    assert run(tmp_path, "--workers", "2", tests=tests, env={**env, "OMP_NUM_THREADS": "7"}).returncode == 1


def test_a_negative_worker_count_is_refused(tmp_path):
    result = run(tmp_path, "--workers", "-1")
    assert result.returncode == 2 and "--workers wants 0 or more (got -1)" in result.stderr


def test_each_failure_is_named_when_it_happens_before_the_summary(tmp_path):
    result = run(tmp_path, "--workers", "2", "-k", "always")
    named = "FAILED NOW test_throwaway.py::test_always_fails (call): assert False"
    assert named in result.stdout and result.stdout.index(named) < result.stdout.index("= FAILURES =")


def test_a_run_its_time_limit_cuts_off_still_names_what_failed(tmp_path):
    """As a lease's step under `timeout` (which stops pytest's whole process group): no summary, the failure named."""
    hangs = "import time\n\ndef test_always_fails():\n    assert 1 == 2\n\ndef test_hangs():\n    time.sleep(600)\n"
    result = run(tmp_path, "--workers", "0", tests=hangs, limit=("timeout", "20"))
    assert result.returncode == 124 and "short test summary" not in result.stdout
    assert "FAILED NOW test_throwaway.py::test_always_fails (call): assert 1 == 2" in result.stdout
