"""`rnnbench profile`: traces, kernel table and launch accounting read from the profiler's events,
the Triton kernels' compile facts (they must equal the compile audit's), the report section and
its plot, and the command's usage errors. Runs on CPU (Triton in its interpreter); with a GPU the
same tests read CUDA kernels instead."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch
import yaml

from kernels import plan_for
from rnnbench import hardware, launches
from rnnbench import profile as profiling
from rnnbench.backends import BACKENDS
from rnnbench.cli import main
from rnnbench.schema import Case, load_scenario

ROOT = Path(__file__).resolve().parents[2]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T, B, H = 8, 2, 16
BACKEND_NAMES = ["cudnn", "triton", "triton-stepwise", "eager"]
needs_triton = pytest.mark.skipif(BACKENDS["triton"].unavailable(DEVICE) is not None, reason="Triton cannot run here")

TINY = {"name": "tiny", "backends": ["eager"], "modes": ["forward"], "metrics": ["speed"],
        "sweep": {"seq_len": 4, "batch": 2, "hidden": 8}, "timing": {"warmup_ms": 0.1, "rep_ms": 0.5, "min_reps": 2}}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """`rnnbench profile scenarios/smoke.yaml` on a small case, every backend but compile."""
    out = tmp_path_factory.mktemp("results")
    code = main(["profile", str(ROOT / "scenarios" / "smoke.yaml"), "--out", str(out), "--run-id", "p-cpu",
                 "--case", f"T={T},B={B},H={H}", "--backend", ",".join(BACKEND_NAMES), "--no-progress"])
    assert code == 0
    folder = out / "smoke" / "p-cpu"
    return folder, json.loads((folder / "profile" / "profile.json").read_text())


def record(data: dict, backend: str) -> dict:
    return next(r for r in data["backends"] if r["backend"] == backend)


def profile_one(backend: str, case: Case, mode: str, out: Path) -> dict:
    """The profile record of one backend on one case, without the compile audit."""
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml", "cpu" if DEVICE.type == "cpu" else "full")
    out.mkdir(parents=True, exist_ok=True)
    request = profiling.Request(scenario, case, "float32", mode, [backend], DEVICE, out, compile_facts=False)
    result = profiling.profile_backend(backend, request)
    assert result["status"] == "ok", result
    return result


def test_every_backend_ran_and_wrote_a_trace_with_events(profiled):
    folder, data = profiled
    assert data["case"] == {"seq_len": T, "batch": B, "hidden": H, "input_size": H, "layers": 1}
    assert data["mode"] == "forward+backward" and [r["backend"] for r in data["backends"]] == BACKEND_NAMES
    for rec in data["backends"]:
        if rec["status"] != "ok":
            assert rec["backend"].startswith("triton") and rec["error"], rec
            continue
        trace = json.loads((folder / "profile" / rec["trace"]).read_text())
        names = [e.get("name", "") for e in trace["traceEvents"]]
        assert len(names) > 10 and f"rnnbench::{rec['backend']}" in names
        assert sum(r["share"] for r in rec["kernels"]) == pytest.approx(1.0)
        assert sum(r["calls"] for r in rec["kernels"]) == rec["launches"]
        assert set(rec["time_us_by_group"]) == set(launches.GROUPS)
    header = (folder / "profile" / "kernels.csv").read_text().splitlines()[0]
    assert header == ",".join(profiling.KERNEL_COLUMNS)


@needs_triton
def test_triton_launches_are_counted_from_the_trace(profiled):
    """One persistent launch per pass (forward, backward) for the whole sequence; one per step and
    pass for the stepwise kernel; the counts equal the launch events in the Chrome trace."""
    folder, data = profiled
    for backend, per_pass in (("triton", 1), ("triton-stepwise", T)):
        rec = record(data, backend)
        trace = json.loads((folder / "profile" / rec["trace"]).read_text())["traceEvents"]
        if DEVICE.type == "cpu":
            marked = [e for e in trace if e.get("name", "").startswith(launches.TRITON_PREFIX)]
        else:
            marked = [e for e in trace if e.get("cat") == "kernel" and e["name"] in launches.triton_kernel_names()]
        assert len(marked) == 2 * per_pass == rec["recurrence_launches"]
        assert rec["recurrence_launches_per_step"] == pytest.approx(2 * per_pass / T)
    persistent = record(data, "triton")
    assert {k["kernel"] for k in persistent["kernels"] if k["group"] == "recurrence"} == \
        {"resident_forward_kernel", "resident_backward_kernel"}
    assert persistent["launches_by_group"]["backward GEMMs"] >= 3  # dW_ih, dU, dX over all T
    assert persistent["launches_by_group"]["input projection"] == 1


def test_eager_launches_per_step_grow_with_the_ops_per_step(tmp_path):
    """Eager runs mm, add and tanh per step and layer: the count per step is the same at any T,
    and doubles with a second layer; its input projection is one GEMM per layer."""
    short, long_, deep = (profile_one("eager", Case(t, B, H, H, layers), "forward", tmp_path / f"{t}-{layers}")
                          for t, layers in ((8, 1), (16, 1), (8, 2)))
    assert short["recurrence_launches_per_step"] == long_["recurrence_launches_per_step"] >= 3
    assert deep["recurrence_launches"] == 2 * short["recurrence_launches"]
    assert long_["launches_by_group"]["input projection"] == 1 and deep["launches_by_group"]["input projection"] == 2
    if DEVICE.type == "cpu":
        per_op = {k["kernel"]: k["calls"] for k in long_["kernels"] if k["group"] == "recurrence"}
        assert per_op["aten::tanh"] == 16 and per_op["aten::mm"] == 16


@needs_triton
def test_persistent_recurrence_is_one_launch_per_sequence_at_any_length(tmp_path):
    short, long_ = (profile_one("triton", Case(t, B, H, H, 1), "forward", tmp_path / str(t)) for t in (4, 8))
    assert short["recurrence_launches"] == long_["recurrence_launches"] == 1
    assert long_["recurrence_launches_per_step"] == pytest.approx(1 / 8)


@needs_triton
def test_compile_facts_match_the_audit(profiled):
    rec = record(profiled[1], "triton")
    plan = plan_for(H, B, torch.float32)
    assert rec["note"] == plan.name and plan.tier == "resident"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "kernels.audit", "--plan", plan.name, "--dtype", "float32",
                           "--nonlinearity", "tanh", "--arch", "90", "--json", "/dev/stdout"], env=env,
                          capture_output=True, text=True, timeout=300)
    audit = json.loads(proc.stdout[proc.stdout.index("["):])
    facts = {(f["kernel"], f["arch"]): f for f in rec["compile_facts"]}
    assert {f["arch"] for f in rec["compile_facts"]} >= ({80, 90} if DEVICE.type == "cpu" else set())
    assert len(audit) == 2  # forward and backward kernel
    for row in audit:
        fact = facts[(row["kernel"], 90)]
        for key in ("registers", "spill_bytes", "shared", "num_warps", "status"):
            assert fact[key] == row[key], key
        assert fact["tier"] == "resident" and fact["plan"] == plan.name
        assert fact["occupancy"] == hardware.occupancy(row["registers"], row["shared"], row["num_warps"], 90)["occupancy"]


def fake_event(name, device="CPU", kernels=(), parent=None, shapes=(), us=0.0):
    event = SimpleNamespace(name=name, device_type=getattr(torch.autograd.DeviceType, device), cpu_parent=parent,
                            cpu_children=[], input_shapes=[list(s) for s in shapes], cpu_time_total=us,
                            kernels=[SimpleNamespace(name=k, device=0, duration=d) for k, d in kernels],
                            time_range=SimpleNamespace(elapsed_us=lambda: us))
    if parent is not None:
        parent.cpu_children.append(event)
    return event


def test_gpu_kernels_are_grouped_by_their_launching_op_and_name():
    """The CUDA path on synthetic events: kernels attached to CPU ops, plus one CUPTI left unlinked."""
    gemm = "sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32"
    root = fake_event("rnnbench::triton")
    fwd_mm = fake_event("aten::mm", kernels=[(gemm, 10.0)], parent=root, shapes=[(64, 16), (16, 16)])
    ranged = fake_event("triton::resident_forward_kernel", kernels=[("resident_forward_kernel", 500.0)], parent=root)
    engine = fake_event("autograd::engine::evaluate_function: MmBackward0")
    bwd_mm = fake_event("aten::mm", kernels=[(gemm, 20.0)], parent=fake_event("MmBackward0", parent=engine),
                        shapes=[(16, 64), (64, 16)])
    on_device = [fake_event(n, "CUDA", us=us) for n, us in
                 ((gemm, 10.0), ("resident_forward_kernel", 500.0), (gemm, 20.0), ("resident_backward_kernel", 400.0))]
    events = [root, fwd_mm, ranged, engine, bwd_mm, *on_device]
    found = {(la.name, la.phase): la for la in launches.launches(events, on_cuda=True, seq_len=16)}
    assert {key: la.group for key, la in found.items()} == {
        (gemm, "forward"): "input projection", ("resident_forward_kernel", "forward"): "recurrence",
        (gemm, "backward"): "backward GEMMs", ("resident_backward_kernel", "backward"): "recurrence"}
    counts = launches.accounting(list(found.values()), 16)
    assert counts["recurrence_launches"] == 2 and counts["time_us_by_group"]["recurrence"] == 900.0


def test_occupancy_follows_the_stated_formula():
    # 128 regs x 32 threads = 4096 per warp; 4 warps -> 16384 per block; 65536 / 16384 = 4 blocks
    assert hardware.occupancy(128, 6144, 4, 90) == {"blocks_per_sm": 4, "occupancy": 0.25, "limiter": "registers"}
    # 92 regs round up to 96 per thread (3072 per warp); 8 warps -> 24576; 65536 // 24576 = 2 blocks
    assert hardware.occupancy(92, 36864, 8, 90) == {"blocks_per_sm": 2, "occupancy": 0.25, "limiter": "registers"}
    # 100000 B + 1 KiB reserve per block: 1 block in 164 KiB (sm_80), 2 in 228 KiB (sm_90)
    assert hardware.occupancy(32, 100000, 4, 80)["blocks_per_sm"] == 1
    assert hardware.occupancy(32, 100000, 4, 90) == {"blocks_per_sm": 2, "occupancy": 0.125, "limiter": "shared memory"}
    assert hardware.occupancy(16, 0, 16, 90) == {"blocks_per_sm": 4, "occupancy": 1.0, "limiter": "warps"}


def test_known_gpus_and_unknown_ones():
    assert hardware.known_gpu("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert hardware.known_gpu("NVIDIA H100 PCIe") == "H100 PCIe"
    assert hardware.known_gpu("NVIDIA H200") == "H200"
    assert hardware.known_gpu("NVIDIA A100-SXM4-40GB") == "A100 40GB"
    assert hardware.known_gpu("NVIDIA GeForce RTX 4090") is None
    assert hardware.peak_tflops("H100 SXM", "float32", allow_tf32=True) > hardware.peak_tflops("H100 SXM", "float32", False)


def test_report_section_plot_and_gpu_only_parts(profiled):
    folder, data = profiled
    md = (folder / "profile" / "profile.md").read_text()
    for heading in ("## Where the time goes", "### Launches per time step", "### Time by group", "### Top kernels",
                    "## Environment"):
        assert heading in md
    png = folder / "profile" / profiling.PLOT_NAME
    assert f"]({profiling.PLOT_NAME})" in md and png.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 600 and height > 200
    if DEVICE.type == "cpu":
        assert "GPU only" in md and all("efficiency" not in r for r in data["backends"])
        assert data["floor"] is None and data["nvtx"] is False
        if record(data, "triton")["status"] == "ok":
            assert "### Compile facts" in md and "regex:resident_forward_kernel" in data["ncu_command"]
    else:
        assert all("tflops" in r["efficiency"] for r in data["backends"] if r["status"] == "ok")


def test_profile_into_a_run_folder_adds_the_section_to_its_report(tmp_path, capsys):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(scenario), "--out", str(tmp_path), "--run-id", "r-cpu", "--no-progress"]) == 0
    run_dir = tmp_path / "tiny" / "r-cpu"
    assert "Where the time goes" not in (run_dir / "report.md").read_text()
    assert main(["profile", str(scenario), "--run-dir", str(run_dir), "--no-progress"]) == 0
    report = (run_dir / "report.md").read_text()
    assert "## Where the time goes" in report and f"](profile/{profiling.PLOT_NAME})" in report
    assert "report: " in capsys.readouterr().out
    # the default case is the first of the scenario, the default backends the scenario's
    data = profiling.load(run_dir)
    assert data["case"]["seq_len"] == 4 and [r["backend"] for r in data["backends"]] == ["eager"]


@pytest.mark.parametrize("args,message", [
    (["--case", "7"], "--case 7: "),
    (["--case", "T=x"], "--case T=x: expected an index or key=value pairs"),
    (["--case", "depth=3"], "got 'depth=3'"),
    (["--backend", "eager,nope"], "--backend nope: unknown backend"),
    (["--run-dir", "/nonexistent/run"], "--run-dir /nonexistent/run: no such folder"),
])
def test_usage_errors_name_the_argument(tmp_path, capsys, args, message):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    assert main(["profile", str(scenario), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnbench: error: ") and message in err and "Traceback" not in err


def test_a_missing_scenario_or_case_is_a_usage_error(tmp_path, capsys):
    assert main(["profile", "no/such.yaml"]) == 2
    assert "no/such.yaml: cannot read the scenario file" in capsys.readouterr().err
    no_sweep = tmp_path / "study.yaml"
    no_sweep.write_text(yaml.safe_dump({"name": "study", "backends": ["eager"], "metrics": ["stability"]}))
    assert main(["profile", str(no_sweep)]) == 2
    assert "has no sweep cases; give the shape" in capsys.readouterr().err


def test_a_run_from_another_device_is_not_mixed_with_this_one(tmp_path, capsys):
    other = "cpu" if DEVICE.type == "cuda" else "cuda"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "environment.json").write_text(json.dumps({"device": other}))
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    assert main(["profile", str(scenario), "--run-dir", str(run_dir)]) == 2
    assert f"that run was on {other}" in capsys.readouterr().err
