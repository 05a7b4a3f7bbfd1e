"""pytest as a GPU lease runs it: the tests spread over worker processes, then any failures again one at a time.

    python3 .ci/gpu_pytest.py [--workers N] PYTEST_ARGS...

A lease's test steps spend their time compiling, not running: 78 tests of the split and fma tiers took 82 s on an
H200 (results/variants/20261127-h200-untimed/recurrence_kernel_tests.log), about 1 s each at T <= 3, where a step
takes microseconds, and Triton compiles a kernel on one CPU core, where the device machine has 16. Worker processes
(pytest-xdist, on the GPU image) compile at once. Their kernels do not run at once: "a kernel from one CUDA context
cannot execute concurrently with a kernel from another CUDA context" (CUDA C++ Programming Guide, concurrent kernel
execution; unless an MPS server runs, which nothing here starts), so a persistent kernel still has the GPU's SMs to
itself while it runs and its grid barrier stays sound. Its waits are bounded by polls (barrier.py), or by 2 s of
the GPU's clock (dsmem.py), far beyond the driver's time slices between contexts. Each worker keeps its own memory
statistics.

Each worker's CPU work (the tests' float64 references, their inputs) gets its share of the cores: OMP_NUM_THREADS,
which torch's thread pool follows, is set to the cores over the workers, where the caller has not set it. Left at
torch's default, 8 workers would run 16 threads each on 16 cores.

Time slices can stretch what a test times, though: tests/harness/test_harness_gpu.py's event-timed spin would read
past its bound if other workers' kernels took enough turns inside it. So where tests failed in parallel, they run
again in one process (pytest --last-failed), which tells a failure only parallel runs cause from the kernels'; the
exit code is that run's. Without pytest-xdist, or with --workers 0 or 1, pytest runs as it is.

A step's time limit ends pytest before its summary, which is where pytest names what failed and why: two lease steps
of 2026-11-28 were cut off with four failures each that nobody could name. So pytest runs with this module as a plugin
(-p gpu_pytest), which prints each failure's test and crash line the moment it is reported.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys

FAILED = 1  # pytest's exit code when tests ran and some failed (others: interrupted, usage, no tests, ...)


def default_workers() -> int:
    """Half the CPU cores, at most 8: compiling takes a core, and each worker also holds a CUDA context."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def pytest_runtest_logreport(report) -> None:
    """As pytest's plugin: a failure named at once, with its crash line (in xdist's controller, which reports every
    worker's tests; a worker's own output is not shown)."""
    if report.failed and "PYTEST_XDIST_WORKER" not in os.environ:
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = crash.message if crash else str(report.longrepr)
        print(f"\nFAILED NOW {report.nodeid} ({report.when}): {reason.splitlines()[0][:300] if reason else ''}",
              flush=True)


def pytest(*args: str, threads: int | None = None) -> int:
    """pytest with this module as its plugin; threads: each process's OMP_NUM_THREADS, unless the caller set one."""
    print("$ pytest", shlex.join(args), flush=True)
    here = os.path.dirname(os.path.abspath(__file__))  # where pytest imports this module from as its plugin
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return subprocess.call([sys.executable, "-m", "pytest", "-p", "gpu_pytest", *args], env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     usage="%(prog)s [--workers N] PYTEST_ARGS...")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes (default: half the CPU cores, at most 8; 0 or 1: none)")
    ours, pytest_args = parser.parse_known_args(argv)
    if ours.workers < 0:
        parser.error(f"--workers wants 0 or more (got {ours.workers})")
    if ours.workers <= 1 or importlib.util.find_spec("xdist") is None:
        return pytest(*pytest_args)
    status = pytest("-n", str(ours.workers), *pytest_args, threads=max(1, (os.cpu_count() or 2) // ours.workers))
    if status != FAILED:
        return status
    print("== the tests that failed in parallel, again one at a time:", flush=True)
    return pytest("--last-failed", "--last-failed-no-failures", "none", *pytest_args)


if __name__ == "__main__":
    sys.exit(main())
