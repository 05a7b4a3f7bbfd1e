"""`rnnbench profile`: traces, kernel table and launch accounting read from the profiler's events,
the Triton kernels' compile facts (they must equal the compile audit's), the report section and
its plot, and the command's usage errors. Runs on CPU (Triton in its interpreter); with a GPU the
same tests read CUDA kernels instead."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml

from kernels import plan_for, resident
from kernels.dispatch import TIERS
from rnnbench import hardware, launches, measure
from rnnbench import profile as profiling
from rnnbench.backends import BACKENDS
from rnnbench.cli import main
from rnnbench.schema import Case, load_scenario

from helpers import timed_out_split_status

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


def profile_one(backend: str, case: Case, mode: str, out: Path, dtype: str = "float32") -> dict:
    """The profile record of one backend on one case, without the compile audit."""
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml", "cpu" if DEVICE.type == "cpu" else "full")
    out.mkdir(parents=True, exist_ok=True)
    request = profiling.Request(scenario, case, dtype, mode, [backend], DEVICE, out, compile_facts=False)
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
            marked = [e for e in trace if e.get("cat") == "kernel" and e["name"] in launches.recurrence_kernel_names()]
        assert len(marked) == 2 * per_pass == rec["recurrence_launches"]
        assert rec["recurrence_launches_per_step"] == pytest.approx(2 * per_pass / T)
    persistent = record(data, "triton")
    plan = plan_for(H, B, torch.float32)  # the smoke scenario's dtype
    assert {k["kernel"] for k in persistent["kernels"] if k["group"] == "recurrence"} == \
        {kernel.__name__ for kernel in TIERS[plan.tier].kernels} == {"fma_forward_kernel", "fma_backward_kernel"}
    assert persistent["launches_by_group"]["backward GEMMs"] >= 3  # dW_ih, dU, dX over all T
    assert persistent["launches_by_group"]["input projection"] == 1


@needs_triton
def test_the_copies_into_fragment_order_and_back_count_as_other_launches(tmp_path, monkeypatch):
    """bf16 at H = 64, B = 16 (the resident tier in fragment order, kernels/fragments.py, switched on): its recurrence
    is its two kernels; the copies of xw, y and dy into fragment order and of y and da back are other launches."""
    monkeypatch.setattr(resident, "FRAGMENT_IO", True)
    rec = profile_one("triton", Case(4, 16, 64, 64, 1), "forward+backward", tmp_path, dtype="bfloat16")
    calls = {(k["kernel"], k["group"]): k["calls"] for k in rec["kernels"]}
    assert rec["recurrence_launches"] == 2
    assert calls[("resident_forward_kernel", "recurrence")] == calls[("resident_backward_kernel", "recurrence")] == 1
    assert calls[("to_fragment_order_kernel", "other")] == 3 and calls[("from_fragment_order_kernel", "other")] == 2


@needs_triton
@pytest.mark.skipif(DEVICE.type == "cuda", reason="counts ops: cuBLAS may run one GEMM as several kernels")
def test_the_layer_call_launches_little_besides_its_kernels(profiled):
    """On a GPU each launch costs host time on every call (the per-call cost that showed at T = 512, resident tier:
    results/variants/20261127-h200/resident_batch_t512.csv), so a forward+backward call of the fma tier launches
    no more than: the input GEMM, U's layout for the backward, the two recurrence kernels, dU (two GEMMs), dW_ih, dX,
    db and h_0's zeros (its kernels add b_hh and write h_n themselves: no bias sum, no stack; its forward reads U where
    it lies)."""
    _, data = profiled
    persistent = record(data, "triton")
    assert persistent["note"].startswith("fma(")
    assert persistent["launches"] <= 9, persistent["kernels"]
    assert persistent["launches_by_group"]["other"] <= 2, persistent["kernels"]


@needs_triton
@pytest.mark.skipif(DEVICE.type == "cuda", reason="counts ops: cuBLAS may run one GEMM as several kernels")
@pytest.mark.parametrize("dtype,hidden", [("bfloat16", 64), ("float32", 16)])
def test_a_forward_call_launches_the_input_gemm_and_the_kernel(tmp_path, dtype, hidden):
    """The resident (bf16) and fma (fp32) kernels add b_hh to each step's input and write h_n themselves
    (kernels/dispatch.py, Tier.fused_ends), and the fma forward reads U where it lies (fma.reads_u_itself): a
    forward call launches the input GEMM and the recurrence kernel; no b_ih + b_hh, no copy of h_n out of the
    states, no copy of U (four and five launches before)."""
    rec = profile_one("triton", Case(8, 2, hidden, hidden, 1), "forward", tmp_path, dtype=dtype)
    assert rec["launches_by_group"] == {"input projection": 1, "recurrence": 1, "backward GEMMs": 0, "other": 0}


@needs_triton
@pytest.mark.skipif(DEVICE.type == "cuda", reason="counts ops: cuBLAS may run one GEMM as several kernels")
def test_a_split_forward_call_launches_the_input_gemm_the_barrier_words_and_the_kernel(tmp_path):
    """The split kernel adds b_hh itself too, and its launcher makes the barrier's words (and a first state of zeros
    for hx=None) in one zeroed allocation: ahead of the kernel a forward call launches the input GEMM and that
    allocation's zeros alone (b_ih + b_hh too before), then (on a GPU one launch for all steps; the interpreter
    launches one a step) the copy of h_n, which the kernel's time on the GPU hides."""
    rec = profile_one("triton", Case(2, 2, 512, 512, 1), "forward", tmp_path, dtype="bfloat16")
    assert rec["note"].startswith("split(")
    assert rec["launches_by_group"] == {"input projection": 1, "recurrence": 2, "backward GEMMs": 0, "other": 2}
    others = sorted(k["kernel"] for k in rec["kernels"] if k["group"] == "other")
    assert others == ["aten::copy_", "aten::zero_"]  # h_n's copy, the zeroed words


def test_a_backend_whose_split_barrier_gave_up_is_a_failed_record(tmp_path, monkeypatch):
    """Split calls return without reading their barriers' status (kernels/barrier_status.py): a backend whose profiled
    calls left a timed-out status behind is reported failed with that error, not with its figures. The status is a
    stand-in for the copy a GPU call leaves (the CPU reads its own at once)."""
    from kernels import barrier_status
    unread = []
    monkeypatch.setattr(barrier_status, "_UNREAD", unread)
    monkeypatch.setattr(measure, "host_and_wall_ms",
                        lambda call, device: unread.append(timed_out_split_status()) or ([1.0], [1.0]))
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml", "cpu")
    request = profiling.Request(scenario, Case(4, 2, 8, 8, 1), "float32", "forward", ["eager"], DEVICE, tmp_path,
                                compile_facts=False)
    record = profiling.profile_backend("eager", request)
    assert record["status"] == "failed" and record["error"].startswith(barrier_status.TIMED_OUT) and unread == []


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
        others = {k["kernel"]: k["calls"] for k in long_["kernels"] if k["group"] == "other"}
        assert others["aten::cat"] == 1  # stacking the T outputs (tensor-list inputs); h_n is the last state itself


@needs_triton
def test_persistent_recurrence_is_one_launch_per_sequence_at_any_length(tmp_path):
    short, long_ = (profile_one("triton", Case(t, B, H, H, 1), "forward", tmp_path / str(t)) for t in (4, 8))
    assert short["recurrence_launches"] == long_["recurrence_launches"] == 1
    assert long_["recurrence_launches_per_step"] == pytest.approx(1 / 8)


@needs_triton
def test_compile_facts_match_the_audit(profiled):
    rec = record(profiled[1], "triton")
    plan = plan_for(H, B, torch.float32)
    assert rec["note"] == plan.name and plan.tier == "fma"
    arch = max(f["arch"] for f in rec["compile_facts"])  # 90 on CPU (80 and 90 are audited), else the GPU's
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "kernels.audit", "--plan", plan.name, "--dtype", "float32",
                           "--nonlinearity", "tanh", "--arch", str(arch), "--json", "/dev/stdout"], env=env,
                          capture_output=True, text=True, timeout=300)
    audit = json.loads(proc.stdout[proc.stdout.index("["):])
    facts = {(f["kernel"], f["arch"], f["config"]): f for f in rec["compile_facts"]}
    assert {f["arch"] for f in rec["compile_facts"]} >= ({80, 90} if DEVICE.type == "cpu" else set())
    # forward and backward kernel, each with and without the L2 prefetch (kernels/prefetch.py), the forward also
    # reading a copy of U where H is not a multiple of 16 (fma.reads_u_itself)
    assert len(audit) == 6
    for row in audit:
        fact = facts[(row["kernel"], arch, row["config"])]
        for key in ("registers", "spill_bytes", "shared", "num_warps", "loop_instructions", "stall_cycles",
                    "bar_per_step", "smem_wavefronts", "bank_conflicts", "status"):
            assert fact[key] == row[key], key
        assert fact["tier"] == plan.tier and fact["plan"] == plan.name
        occupancy = hardware.occupancy(row["registers"], row["shared"], row["num_warps"], arch)["occupancy"]
        assert fact["occupancy"] == occupancy


@needs_triton
def test_compile_facts_tell_the_forward_and_backward_step_kernel_apart(profiled):
    """step_kernel is one @triton.jit for both passes (a BACKWARD flag): each row says which pass it is."""
    folder, data = profiled
    arch = max(f["arch"] for f in record(data, "triton-stepwise")["compile_facts"])
    facts = [f for f in record(data, "triton-stepwise")["compile_facts"] if f["arch"] == arch]
    assert sorted((f["kernel"], f["pass"]) for f in facts) == [("step_kernel", "backward"), ("step_kernel", "forward")]
    assert {f["pass"] for f in record(data, "triton")["compile_facts"] if f["kernel"] == "fma_backward_kernel"} \
        == {"backward"}
    md = (folder / "profile" / "profile.md").read_text()
    for kernel_pass in ("forward", "backward"):
        assert f"| triton-stepwise | stepwise | step_kernel | {kernel_pass} |  | sm_{arch} |" in md  # no L2 prefetch
    for form in ("4 steps", "off"):  # the fma kernels' two audited forms (kernels/prefetch.py)
        assert f"| triton | fma | fma_forward_kernel | forward | {form} | sm_{arch} |" in md


def span(cat, name, ts, dur, tid=1, **args):
    """One complete ("X") event of a Chrome trace, as torch.profiler writes it."""
    return {"ph": "X", "cat": cat, "name": name, "pid": 0 if cat in ("kernel", "gpu_user_annotation") else 100,
            "tid": tid, "ts": ts, "dur": dur, "args": args}


def test_cpu_ops_are_counted_as_the_launches_a_gpu_would_make():
    """The CPU path on a synthetic trace: each innermost aten op that computes is a launch, a GEMM or a reduction one
    whatever it runs inside (on CPU addmm copies its bias and sum fills its output first: a GPU runs one kernel for
    each), views and allocations none; the backward's GEMMs are its own group."""
    events = [
        span("user_annotation", "rnnbench::triton", 0, 1000),
        span("cpu_op", "aten::addmm", 10, 20, **{"Input Dims": [[16], [64, 16], [16, 16]]}),
        span("cpu_op", "aten::copy_", 11, 2, **{"Input Dims": [[64, 16], [16]]}),
        span("cpu_op", "aten::empty_like", 30, 1, **{"Input Dims": [[64, 16]]}),
        span("cpu_op", "autograd::engine::evaluate_function: MmBackward0", 100, 50, tid=2),
        span("cpu_op", "aten::mm", 102, 10, tid=2, **{"Input Dims": [[16, 64], [64, 16]]}),
        span("cpu_op", "aten::sum", 120, 10, tid=2, **{"Input Dims": [[64, 16], [], [], []]}),
        span("cpu_op", "aten::fill_", 121, 2, tid=2, **{"Input Dims": [[16], []]}),
    ]
    found = launches.launches(events, on_cuda=False, seq_len=16)
    assert sorted((la.name, la.group) for la in found) == [
        ("aten::addmm", "input projection"), ("aten::mm", "backward GEMMs"), ("aten::sum", "other")]


def test_gpu_kernels_are_grouped_by_their_launching_range_and_name():
    """The CUDA path on a synthetic trace: a kernel belongs to the innermost CPU range around the
    runtime call that launched it; user ranges on the GPU, memcpy and memset are no kernels."""
    gemm = "sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32"
    events = [
        span("user_annotation", "rnnbench::triton", 0, 1000),
        span("cpu_op", "aten::mm", 10, 20, **{"Input Dims": [[64, 16], [16, 16]]}),
        span("cuda_runtime", "cudaLaunchKernel", 15, 2, correlation=1),
        span("user_annotation", "triton::resident_forward_kernel", 40, 20),
        span("cuda_driver", "cuLaunchKernelEx", 45, 3, correlation=2),
        span("cpu_op", "autograd::engine::evaluate_function: MmBackward0", 100, 50, tid=2),
        span("cpu_op", "MmBackward0", 101, 48, tid=2),
        span("cpu_op", "aten::mm", 102, 40, tid=2, **{"Input Dims": [[16, 64], [64, 16]]}),
        span("cuda_runtime", "cudaLaunchKernel", 110, 2, tid=2, correlation=3),
        span("kernel", gemm, 20, 10.0, correlation=1),
        span("kernel", "resident_forward_kernel", 50, 500.0, correlation=2),
        span("kernel", gemm, 560, 20.0, correlation=3),
        span("kernel", "resident_backward_kernel", 590, 400.0, correlation=4),  # its launch call is not in the trace
        span("kernel", "an_other_stream_kernel", 600, 10.0, tid=9, correlation=5),  # overlaps the one above
        span("gpu_user_annotation", "rnnbench::triton", 20, 980),
        span("gpu_user_annotation", "triton::resident_forward_kernel", 50, 500),
        span("gpu_memset", "Memset (Device)", 1, 1, correlation=6),
    ]
    found = launches.launches(events, on_cuda=True, seq_len=16)
    assert {(la.name, la.phase): la.group for la in found} == {
        (gemm, "forward"): "input projection", ("resident_forward_kernel", "forward"): "recurrence",
        (gemm, "backward"): "backward GEMMs", ("resident_backward_kernel", "backward"): "recurrence",
        ("an_other_stream_kernel", "forward"): "other"}
    counts = launches.accounting(found, 16)
    assert counts["launches"] == 5 and counts["recurrence_launches"] == 2
    assert counts["time_us_by_group"]["recurrence"] == 900.0
    assert launches.busy_us(found) == 10 + 500 + 20 + 400  # the other stream's kernel ran inside the backward one


def test_busy_time_is_the_union_of_the_kernels():
    def kernel(start, dur):
        return launches.Launch("k", "forward", False, False, (), dur, start)
    assert launches.busy_us([]) == 0
    assert launches.busy_us([kernel(0, 5), kernel(10, 5)]) == 10                # apart
    assert launches.busy_us([kernel(3, 5), kernel(0, 5)]) == 8                  # overlapping, out of order
    assert launches.busy_us([kernel(0, 10), kernel(2, 3), kernel(9, 4)]) == 13  # nested, then sticking out


# ---- the real traces of the first H100 run -----------------------------------------------------
# `rnnbench profile scenarios/long_seq.yaml --case seq_len=4096,batch=8,hidden=256 --dtype bfloat16`
# at commit 581d982 on an H100 80GB HBM3 (torch 2.11, cuDNN 9.19, triton 3.6), forward+backward;
# ../shared/gpu-runs/2026-11-25-h100/profile_T4096_B8_H256_bf16.md is the profile they came with.
TRACES = Path(__file__).parent / "traces"
H100_T = 4096
H100_WALL_MS = {"triton": 24.33, "cudnn": 180.4}  # unprofiled calls, median of 3, from that profile.md
H100_TRITON_LATENCY_MS = 22.55                    # p50 of do_bench for triton, from that profile.md


@pytest.fixture(scope="module")
def h100_traces():
    return {name: launches.load_trace(TRACES / f"trace_{name}_T4096_B8_H256_bf16.json.gz")
            for name in ("triton", "cudnn")}


def user_ranges(events) -> set[str]:
    return {e["name"] for e in events if e.get("cat") in ("user_annotation", "gpu_user_annotation")}


def test_h100_triton_trace_counts_each_kernel_once(h100_traces):
    events = h100_traces["triton"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    found = launches.launches(events, on_cuda=True, seq_len=H100_T)
    assert len(found) == len(kernels) == 14
    assert not {la.name for la in found} & user_ranges(events)  # rnnbench::triton, triton::<kernel>: not kernels
    counts = launches.accounting(found, H100_T)
    # By hand from the trace: forward = bias add, input GEMM, resident_forward_kernel; backward =
    # resident_backward_kernel, dU (2 GEMMs + 2 split-K reduces, an add), dW_ih (GEMM), dX (GEMM + ...).
    assert counts["launches_by_group"] == {"input projection": 1, "recurrence": 2, "backward GEMMs": 6, "other": 5}
    assert {(la.name, la.phase) for la in found if la.group == "recurrence"} == \
        {("resident_forward_kernel", "forward"), ("resident_backward_kernel", "backward")}
    persistent_us = 8293.049 + 15117.354  # the two kernels' "dur" in the trace
    assert counts["time_us_by_group"]["recurrence"] == pytest.approx(persistent_us)
    device_us = launches.busy_us(found)
    assert persistent_us < device_us <= sum(e["dur"] for e in kernels) + 1e-6
    assert device_us / 1e3 < H100_WALL_MS["triton"]  # the old sum counted 55.8 ms


def test_h100_cudnn_trace_counts_each_kernel_once(h100_traces):
    events = h100_traces["cudnn"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    found = launches.launches(events, on_cuda=True, seq_len=H100_T)
    assert len(found) == len(kernels) == 16522
    assert not {la.name for la in found} & user_ranges(events)
    counts = launches.accounting(found, H100_T)
    # bf16 cuDNN runs STANDARD: per step a GEMM and an elementwise kernel forward and backward, plus
    # one closing elementwise kernel of the backward (GENERIC_elementWise_bp2): 4 * T + 1.
    assert counts["recurrence_launches"] == 4 * H100_T + 1
    by_phase = Counter((la.phase, la.group) for la in found)
    assert by_phase[("forward", "recurrence")] == 2 * H100_T and by_phase[("backward", "recurrence")] == 2 * H100_T + 1
    # cuDNN's own input GEMM over chunks of 32 steps, launched inside aten::_cudnn_rnn
    assert by_phase[("forward", "input projection")] == H100_T // 32
    # one backward kernel's launch call lost its External id in the trace: found by time, still backward
    bp1 = [la for la in found if la.name.startswith("void RNN_elementWise_bp1")]
    assert len(bp1) == H100_T and {la.phase for la in bp1} == {"backward"}
    assert launches.busy_us(found) / 1e3 < H100_WALL_MS["cudnn"]  # the old sum counted 265.5 ms



def test_cudnn_algorithm_of_the_real_h100_bf16_trace(h100_traces):
    """The H100's bfloat16 forward+backward: a GEMM and an elementwise kernel per step, both passes."""
    names = launches.gpu_kernel_names(h100_traces["cudnn"])
    assert launches.cudnn_algorithm(names) == ("cuDNN algorithm: standard (elemWiseRNNcell, RNN_elementWise_bp1, "
                                               "GENERIC_elementWise_bp2 + a GEMM per step)")

def test_h100_floor_is_below_the_latency_it_is_part_of(h100_traces):
    found = launches.launches(h100_traces["triton"], on_cuda=True, seq_len=H100_T)
    latency_us = H100_TRITON_LATENCY_MS * 1e3 / H100_T
    record = {"backend": "triton", "time_source": "cuda", "note": "resident(BLOCK_B=16,BLOCK_H=256)",
              "kernels": launches.kernel_table(found), "device_ms": launches.busy_us(found) / 1e3,
              "efficiency": {"time_per_step_us": latency_us}}
    cudnn = {"backend": "cudnn", "time_source": "cuda", "note": "", "kernels": [], "efficiency": {}}
    floor = profiling.step_floor([cudnn, record], H100_T)
    persistent_us = 8293.049 + 15117.354
    assert floor["share"] == pytest.approx(persistent_us / (record["device_ms"] * 1e3))
    assert 0.99 < floor["share"] < 1
    assert floor["us_per_step"] == pytest.approx(latency_us * floor["share"]) and floor["us_per_step"] < latency_us
    assert floor["profiled_us_per_step"] == pytest.approx(persistent_us / H100_T)  # 5.715: above the latency
    assert profiling.step_floor([record | {"note": "stepwise(BLOCK_B=16)"}], H100_T) is None
    assert profiling.step_floor([record | {"time_source": "cpu"}], H100_T) is None


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
    tf32, ieee = (hardware.peak_tflops("H100 SXM", "float32", allow_tf32=allowed) for allowed in (True, False))
    assert tf32 > ieee


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
            assert "### Compile facts" in md and "regex:fma_forward_kernel" in data["ncu_command"]
    else:
        assert all("tflops" in r["efficiency"] for r in data["backends"] if r["status"] == "ok")


def test_default_backends_are_those_that_serve_the_dtype(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump({**TINY, "backends": ["eager", "cudnn-fp16"],
                                        "dtypes": ["float32", "bfloat16"]}))
    for dtype, expected in (("float32", ["eager"]), ("bfloat16", ["eager", "cudnn-fp16"])):
        assert main(["profile", str(scenario), "--out", str(tmp_path), "--run-id", dtype, "--dtype", dtype,
                     "--no-compile-facts", "--no-progress"]) == 0
        data = profiling.load(tmp_path / "tiny" / dtype)
        assert [r["backend"] for r in data["backends"]] == expected  # cudnn-fp16 serves bfloat16 jobs only


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
