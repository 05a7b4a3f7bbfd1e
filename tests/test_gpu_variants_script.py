""".ci/gpu_variants.py, the script a short GPU lease runs, checked here so that a lease is not spent on a
broken one: every variant switches what it says and restores it, and a run writes its table."""
import ast
import csv
import re
from pathlib import Path

import pytest
import torch

from kernels import activations, barrier_status, dispatch, dsmem, fma, layouts, prefetch, resident, split, streams

from helpers import load_gpu_variants

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "gpu_variants.py"


@pytest.fixture(scope="module")
def variants():
    return load_gpu_variants()


def switches() -> dict:
    """Every module default the kernels read at launch: the upper-case names of activations, dispatch, fma, layouts,
    prefetch, resident, split, barrier_status and streams."""
    modules = (activations, dispatch, fma, layouts, prefetch, resident, split, barrier_status, streams)
    return {(module.__name__, name): value for module in modules for name, value in vars(module).items()
            if name.isupper()}


def test_every_variant_has_cases_and_restores_the_defaults(variants):
    assert set(variants.VARIANTS) == set(variants.CASES)
    before = switches()
    for name, variant in variants.VARIANTS.items():
        assert variants.CASES[name], name
        with variant():
            inside = switches()
        assert switches() == before, name
        assert (inside == before) == (name in ("current", "fp32-fma")), name  # those two time today's defaults


def test_the_dsmem_variants_time_every_cluster_case_that_exchanges_in_dsmem(variants, monkeypatch):
    """split-dsmem-pull and -push run exactly the cluster cases whose plan then exchanges the state in distributed
    shared memory (16-bit, up to dispatch.SPLIT_DSMEM_MAX_BLOCK_H), so none of those sizes goes untimed."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTER_EXCHANGE", "dsmem-pull")
    exchanging = [c for c in variants.SPLIT_CLUSTER_CASES
                  if dispatch.plan_for(c[1], c[2], getattr(torch, c[0])).config.forward.EXCHANGE == "dsmem-pull"]
    assert {c[1] for c in exchanging} == {256, 512, 1024}
    assert variants.CASES["split-dsmem-pull"] == variants.CASES["split-dsmem-push"] == exchanging


def test_the_fp32_variants_pick_the_tier_they_name(variants):
    plans = {}
    for name in ("fp32-fma", "fp32-fma-2x-warps", "fp32-fma-shared-sms", "fp32-tf32x3", "fp32-one-dot-k",
                 "fp32-split-256"):
        with variants.VARIANTS[name]():
            plans[name] = (dispatch.plan_for(128, 8, torch.float32).name,
                           dispatch.plan_for(128, 256, torch.float32).tier, resident.FP32_PRODUCT,
                           dispatch.plan_for(256, 8, torch.float32).tier)
    assert plans["fp32-fma"] == ("fma(BLOCK_H=128,num_warps=4)", "resident", "tf32x3", "fma")
    assert plans["fp32-split-256"] == plans["fp32-fma"][:3] + ("split",)
    assert plans["fp32-fma-2x-warps"][0] == "fma(BLOCK_H=128,num_warps=8)"
    assert plans["fp32-fma-shared-sms"][1] == "fma"
    assert plans["fp32-tf32x3"] == ("resident(BLOCK_B=16,BLOCK_H=128,num_warps=8)", "resident", "tf32x3", "split")
    assert plans["fp32-one-dot-k"][2] == "one-dot-k" and plans["fp32-one-dot-k"][0].startswith("resident(")


def test_the_ends_variants_put_b_hh_and_u_back_where_they_were(variants):
    """b-hh-summed: the input GEMM takes b_ih + b_hh and the kernel none (dispatch.biases), on the fma, resident and
    split tiers; fma-u-copied: the fma forward takes a copy of U^T, not U (fma.reads_u_itself)."""
    b_ih, b_hh, u = torch.randn(64), torch.randn(64), torch.randn(64, 64)
    for name in ("current", "b-hh-summed", "fma-u-copied"):
        with variants.VARIANTS[name]():
            for dtype, hidden in ((torch.float32, 64), (torch.bfloat16, 64), (torch.bfloat16, 512)):  # fma, resident,
                plan = dispatch.plan_for(hidden, 8, dtype)                                        # split
                gemm_bias, kernel_bias = dispatch.biases(plan, b_ih, b_hh)
                assert (kernel_bias is None) == (name == "b-hh-summed"), (name, plan.tier)
                assert torch.equal(gemm_bias, b_ih + b_hh if name == "b-hh-summed" else b_ih)
            operand = dispatch.recurrence_operand(dispatch.plan_for(64, 8, torch.float32), u, backward=False)
            assert (operand is u) == (name != "fma-u-copied"), name


def test_the_stepwise_variants_change_what_they_name(variants):
    """fp32 at H = 2048, B = 64 (a race case): the split tier by FMA today; the step kernel as it is, with K slices
    of 32, 64 columns, or 32 x 32 tiles."""
    plans = {}
    for name in ("current", "fp32-2048-stepwise", "stepwise-k32", "stepwise-64-columns", "stepwise-32x32-tiles"):
        with variants.VARIANTS[name]():
            plan = dispatch.plan_for(2048, 64, torch.float32)
        config = plan.config.forward
        last = config.FMA if plan.tier == "split" else config.BLOCK_K
        plans[name] = (plan.tier, config.BLOCK_B, config.BLOCK_N, last)
    assert plans == {"current": ("split", 8, 16, True), "fp32-2048-stepwise": ("stepwise", 16, 32, 128),
                     "stepwise-k32": ("stepwise", 16, 32, 32), "stepwise-64-columns": ("stepwise", 16, 64, 128),
                     "stepwise-32x32-tiles": ("stepwise", 32, 32, 128)}
    assert dispatch.plan_for(2048, 64, torch.float32).tier == "split"  # each variant restores the default


def test_a_run_writes_its_table(variants, tmp_path, device):
    if device == "cuda":
        pytest.skip("on a GPU the script times real sizes: .ci/gpu runs it")
    assert variants.main(["--out", str(tmp_path), "--device", "cpu", "--seq-len", "2", "--hidden", "64",
                          "--batch", "8", "--variant", "fp32-fma", "fp32-tf32x3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "variants.csv")))
    assert [(r["variant"], r["plan"].split("(")[0]) for r in rows] == [("fp32-fma", "fma"), ("fp32-tf32x3", "resident")]
    assert all(float(r["triton_rel_err"]) < 1e-5 and not r.get("error") for r in rows)


def test_cases_run_one_by_one_with_todays_form_only_where_a_variant_is_compared(variants):
    """planned_cases: each case's variants back to back; beside variants, today's form times only their cases; alone
    it times all of its own that pass the filters."""
    parse = variants.build_parser().parse_args
    args = parse(["--out", "x", "--hidden", "512", "--dtype", "float16", "--variant", "current",
                  "split-grid-barrier-512"])
    planned = variants.planned_cases(args)
    compared = variants.selected_cases("split-grid-barrier-512", args)
    assert planned == [(v, *case) for case in compared for v in ("current", "split-grid-barrier-512")]
    assert len(compared) >= 2
    alone = parse(["--out", "x", "--hidden", "512", "--dtype", "float16", "--variant", "current"])
    assert variants.planned_cases(alone) == [("current", *c) for c in variants.selected_cases("current", alone)]
    for name, cases in variants.CASES.items():  # so every variant is timed beside today's form
        assert set(cases) <= set(variants.CASES["current"]), name


@pytest.mark.parametrize("filters, message", [
    (["--hidden", "512", "4096", "--dtype", "float16"], "--hidden 4096: no case of the variants named has it"),
    (["--batch", "8", "3"], "--batch 3: no case of the variants named has it"),
    (["--hidden", "64"], "--variant split-grid-barrier-512: no case with these --hidden, --batch and --dtype"),
])
def test_a_filter_that_times_nothing_is_refused_before_anything_runs(variants, tmp_path, capsys, filters, message):
    with pytest.raises(SystemExit) as stop:
        variants.main(["--out", str(tmp_path / "out"), "--device", "cpu", "--variant", "current",
                       "split-grid-barrier-512", *filters])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bidirectional_run_times_bidirectional_layers(variants, tmp_path, device):
    if device == "cuda":
        pytest.skip("on a GPU the script times real sizes: .ci/gpu runs it")
    assert variants.main(["--out", str(tmp_path), "--device", "cpu", "--seq-len", "2", "--hidden", "64", "--batch",
                          "8", "--dtype", "float32", "--variant", "current", "one-stream", "--bidirectional"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "variants.csv")))
    assert [(r["variant"], r["bidirectional"], r["plan"].split("(")[0]) for r in rows] == [
        ("current", "True", "fma"), ("one-stream", "True", "fma")]
    assert all(float(r["triton_rel_err"]) < 1e-5 and not r.get("error") for r in rows)


def test_the_summary_gives_each_variants_time_as_a_ratio_to_todays_on_the_same_case(variants, tmp_path):
    """summary.txt, what a lease's reader decides a default by: each variant's time per step and peak memory over
    today's ("current") on the same (dtype, H, B), forward and forward+backward, both errors beside; a failed case
    says so, today's form's too, and a case where today's form has no times says there is nothing to compare with."""
    case = {"dtype": "float32", "hidden": 2048}
    rows = [{"variant": "current", **case, "batch": 8, "triton_fwd_us_per_step": 10.0, "triton_fb_us_per_step": 20.0,
             "triton_fwd_peak_mib": 100.0, "triton_fb_peak_mib": 300.0, "triton_rel_err": 1e-6},
            {"variant": "faster", **case, "batch": 8, "triton_fwd_us_per_step": 8.0, "triton_fb_us_per_step": 25.0,
             "triton_fwd_peak_mib": 150.0, "triton_fb_peak_mib": 300.0, "triton_rel_err": 2e-6},
            {"variant": "broken", **case, "batch": 8, "error": "RuntimeError: no"},
            {"variant": "current", **case, "batch": 64, "error": "RuntimeError: today's"},
            {"variant": "faster", **case, "batch": 64, "triton_fwd_us_per_step": 1.0, "triton_fb_us_per_step": 1.0}]
    lines = [line.split() for line in variants.summary(rows).splitlines()[1:]]
    assert lines == [["faster", "float32", "2048", "8", "0.800", "1.250", "1.500", "1.000", "2.00e-06", "1.00e-06"],
                     ["broken", "float32", "2048", "8", "failed:", "RuntimeError:", "no"],
                     ["current", "float32", "2048", "64", "failed:", "RuntimeError:", "today's"],
                     "faster float32 2048 64 ran; no times of today's form there to compare with".split()]
    assert variants.main(["--out", str(tmp_path), "--device", "cpu", "--seq-len", "2", "--hidden", "64",
                          "--batch", "8", "--variant", "current", "fp32-tf32x3"]) == 0
    written = (tmp_path / "summary.txt").read_text().splitlines()
    assert written[1].split()[:8] == ["fp32-tf32x3", "float32", "64", "8"] + ["n/a"] * 4  # no times on a CPU


def test_the_gpu_stages_name_only_variants_and_switches_that_exist(variants):
    """.ci/gpu's stages, read as text: every --variant they time is in VARIANTS, every kernels.dispatch switch they
    set exists and is given a value of its type, and the exchanges they loop over are the split kernels' (one may be
    named the shell's $e), so that a lease is not spent on a name that is not there."""
    stages = (SCRIPT.parent / "gpu").read_text()
    named = {name for line in re.findall(r"--variant ((?:[\w-]+ ?)+)", stages) for name in line.split()}
    assert named and named <= set(variants.VARIANTS), named - set(variants.VARIANTS)
    switches = re.findall(r"dispatch\.(\w+) = ([^;\"]+)", stages)
    assert {name for name, _ in switches} == {"SPLIT_CLUSTERS", "SPLIT_CLUSTER_EXCHANGE"}
    looped = re.findall(r"for e in ([\w -]+); do", stages)
    assert looped and all(set(values.split()) <= set(dsmem.EXCHANGES) for values in looped), looped
    for name, value in switches:
        value = "'l2'" if value.strip() == "'$e'" else value  # one of the looped exchanges
        assert type(ast.literal_eval(value)) is type(getattr(dispatch, name)), (name, value)



def test_the_cases_are_compiled_in_other_processes_first(variants, tmp_path, device, capfd):
    """--compile-workers: every case's Triton calls made once in spawned processes before the timed run, which then
    writes the same table; a case that fails there is reported, not raised (the timed run records it)."""
    if device == "cuda":
        pytest.skip("on a GPU the script times real sizes: .ci/gpu runs it")
    assert variants.main(["--out", str(tmp_path), "--device", "cpu", "--seq-len", "2", "--hidden", "64", "--batch",
                          "8", "--dtype", "float32", "--variant", "current", "fp32-tf32x3",
                          "--compile-workers", "2"]) == 0
    assert "compiled 2 cases in 2 processes in " in capfd.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "variants.csv")))
    assert [r["plan"].split("(")[0] for r in rows] == ["fma", "resident"] and not any(r.get("error") for r in rows)
    assert variants.compile_case(("current", "no-such-dtype", 64, 8, 2, "cpu", False)).startswith("AttributeError")
    assert variants.default_compile_workers("cpu") == 0 and 1 <= variants.default_compile_workers("cuda") <= 8


def test_a_failed_case_fails_the_step(variants, tmp_path, monkeypatch):
    """A lease reads each step's exit code in steps.txt: one failed case makes it 1, the other cases kept."""
    timed = variants.time_case

    def time_case(variant, *rest):
        if variant == "fp32-tf32x3":
            raise RuntimeError("no")
        return timed(variant, *rest)
    monkeypatch.setattr(variants, "time_case", time_case)
    assert variants.main(["--out", str(tmp_path), "--device", "cpu", "--seq-len", "2", "--hidden", "64",
                          "--batch", "8", "--variant", "current", "fp32-tf32x3"]) == 1
    written = (tmp_path / "summary.txt").read_text().splitlines()
    assert written[1].split() == ["fp32-tf32x3", "float32", "64", "8", "failed:", "RuntimeError:", "no"]
