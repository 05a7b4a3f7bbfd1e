""".ci/host_profile.py, a lease's profile of a layer call's host work, run here in the interpreter on tiny layers so
that a lease does not spend its time on a broken script."""
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import load_ci_script

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "host_profile.py"
ROOT = SCRIPT.parents[1]


def run(*args: str, interpret: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(ROOT)}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_each_case_and_mode_gets_its_host_time_per_call_and_where_it_went(tmp_path):
    result = run("--out", str(tmp_path), "--calls", "2", "--warmup", "1", "--seq-len", "3", "--batch", "5",
                 "--case", "float32:16", "bfloat16:48", "--top", "40")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "host_profile.txt").read_text()
    costs, *heads = [line for line in report.splitlines() if line.startswith("## ")]
    assert re.fullmatch(r"## launch costs: [0-9.]+ us of host time per one-element torch op, [0-9.]+ per Triton "
                        r"launch of a kernel that does nothing \(2 of each\)", costs)
    assert [head.split(":")[0] for head in heads] == [
        "## float32 H=16 T=3 B=5 forward", "## float32 H=16 T=3 B=5 forward+backward",
        "## bfloat16 H=48 T=3 B=5 forward", "## bfloat16 H=48 T=3 B=5 forward+backward"]
    assert "plan fma(" in heads[0] and "plan resident(" in heads[2] and [costs, *heads] == result.stdout.splitlines()
    # each time unprofiled and profiled, beside torch.nn.RNN's in the case's dtype (and fp16 for 16-bit)
    timed = r": [0-9.]+ ms of host time per call, [0-9.]+ under cProfile \(2 calls; "
    assert all(re.search(timed, head) for head in heads)
    assert all(re.search(r"torch.nn.RNN's: float32 [0-9.]+ ms$", head) for head in heads[:2])
    assert all(re.search(r"torch.nn.RNN's: bfloat16 [0-9.]+, float16 [0-9.]+ ms$", head) for head in heads[2:])
    # each profile ordered both ways, reaching down to the layer and its recurrence
    assert report.count("Ordered by: internal time") == report.count("Ordered by: cumulative time") == 4
    assert "kernels/layer.py" in report and "(recurrence_forward)" in report and "(recurrence_backward)" in report


def test_a_bad_case_or_count_is_a_usage_error(tmp_path):
    bad_case = run("--out", str(tmp_path), "--case", "float8:64")
    assert bad_case.returncode == 2 and "expected DTYPE:H with DTYPE one of float32" in bad_case.stderr
    bad_count = run("--out", str(tmp_path), "--calls", "0")
    assert bad_count.returncode == 2 and "--calls wants 1 or more (got 0)" in bad_count.stderr


def test_with_launches_stubbed_a_cpu_profiles_the_host_path_and_counts_the_launches(tmp_path):
    """--stub-launches on a CPU without the interpreter (launch_stub.py): no kernel runs, each call's Triton launches
    are counted (the fma tier: its kernel forward, and its backward kernel after it), and torch.nn.RNN is not timed."""
    result = run("--out", str(tmp_path), "--calls", "3", "--warmup", "1", "--seq-len", "4", "--batch", "3",
                 "--case", "float32:16", "bfloat16:512", "--stub-launches", interpret=False)
    assert result.returncode == 0, result.stderr
    costs, *heads = result.stdout.splitlines()
    assert costs.endswith("per Triton launch of a kernel that does nothing, stubbed (3 of each)")
    assert [re.search(r"Triton launches a call: (\d+), stubbed\); torch.nn.RNN's: not timed", head).group(1)
            for head in heads] == ["1", "2", "1", "2"]
    assert "plan fma(" in heads[0] and "plan split(" in heads[2]
    report = (tmp_path / "host_profile.txt").read_text()
    assert report.startswith("# Host time per layer call on CPU, Triton launches stubbed")
    assert "launch_stub.py" in report and "(recurrence_backward)" in report
    interpreted = run("--out", str(tmp_path), "--stub-launches")
    assert interpreted.returncode == 2 and "--stub-launches stubs compiled kernels' launches" in interpreted.stderr


def test_the_launch_costs_are_timed_after_warm_up_calls(monkeypatch):
    """The first call of an op or a kernel pays one-off costs that are no launch's (torch's first op on a tensor,
    CUDA's lazy loading of a module, Triton's compile): --warmup calls of each come before the timed ones, and the
    kernel's at least one."""
    script = load_ci_script("host_profile")
    timed = []

    def host_seconds(call, calls, device, profile=None):
        tensor = call.__closure__[0].cell_contents  # the one-element tensor both calls take
        timed.append((call.__name__, tensor.item()))  # the op adds 1 a call: its count so far
        return 1e-6
    monkeypatch.setattr(script, "host_seconds", host_seconds)
    kernel_runs = []
    monkeypatch.setattr(script, "nothing_kernel", {(1,): lambda *args, **kwargs: kernel_runs.append(args)})
    for warmup, kernel_warmups in ((3, 3), (0, 1)):
        timed.clear()
        kernel_runs.clear()
        script.launch_costs(SimpleNamespace(calls=5, warmup=warmup, stub_launches=False), torch.device("cpu"))
        assert timed == [("op", warmup), ("launch", warmup)] and len(kernel_runs) == kernel_warmups


def test_each_timed_call_starts_with_the_device_idle_and_the_profile_sees_the_calls_alone(monkeypatch):
    """host_seconds syncs the device before each call, outside its timing and the profile (back to back, calls on a
    GPU slower than the host would fill CUDA's launch queue and wait for it), and once after the last."""
    script = load_ci_script("host_profile")
    events = []

    def synchronize(device):
        events.append("sync")
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)

    def call():
        events.append("call")
    profile = script.cProfile.Profile()
    assert script.host_seconds(call, 3, torch.device("cuda"), profile) >= 0
    assert events == ["sync", "call"] * 3 + ["sync"]
    profiled = {name for _, _, name in script.pstats.Stats(profile).stats}
    assert "call" in profiled and "synchronize" not in profiled


def test_each_case_is_kept_as_it_ends(monkeypatch, tmp_path):
    """A lease's step can be cut short by its time limit, or a case can raise: the report holds the launch costs and
    every case profiled before that."""
    script = load_ci_script("host_profile")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(script, "launch_costs", lambda args, device: "## launch costs: stood in")

    def profile_case(dtype, hidden, args, device):
        if hidden == 32:
            raise RuntimeError("cut short")
        return f"## {dtype} H={hidden}: stood in"
    monkeypatch.setattr(script, "profile_case", profile_case)
    with pytest.raises(RuntimeError, match="cut short"):
        script.main(["--out", str(tmp_path), "--case", "float32:16", "float32:32"])
    report = (tmp_path / "host_profile.txt").read_text().splitlines()
    assert [line for line in report if line.startswith("## ")] == ["## launch costs: stood in",
                                                                   "## torch.float32 H=16: stood in"]
