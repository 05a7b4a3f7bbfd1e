"""The training metric: the task generators against their definitions, the same start for every
backend, learning on an easy setting, divergence recorded as a result, clipping, mixed precision with
fp32 master weights, the rows, report and plots of a run, and the schema's errors for bad keys."""
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from rnnbench import training
from rnnbench.cli import main
from rnnbench.results import RunFolder
from rnnbench.runner import plan, seeded_rnn
from rnnbench.schema import load_scenario, parse_scenario
from rnnbench.tasks import Adding, Copy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def here(device, monkeypatch) -> torch.device:
    """The tests' device (the Triton interpreter's CPU without a GPU), with cuDNN's fp32 TF32 off as in a
    run, so that fp32 backends agree to fp32 accuracy."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    return torch.device(device)


def scenario(backends=("cudnn",), dtypes=("float32",), **settings):
    return parse_scenario({"name": "t", "backends": list(backends), "dtypes": list(dtypes), "metrics": ["training"],
                           "training": {"batch": 8, "hidden": 16, "eval_batch": 16, **settings}}, "t.yaml", "full")


def measurements(unit, sc, device) -> dict:
    """metric -> [p50 per step] for per-step metrics, p50 for the others."""
    out: dict = {}
    for m in training.run(unit, sc, device, seeded_rnn(unit.case, sc.nonlinearity, sc.seed)):
        if m.step is None:
            out[m.metric] = m.values[1]
        else:
            out.setdefault(m.metric, []).append(m.values[1])
    return out


# ---- the tasks --------------------------------------------------------------------------------

def test_adding_batch_marks_one_value_in_each_half_and_targets_their_sum():
    T, B = 11, 64
    batch = Adding().batch(T, B, torch.Generator().manual_seed(3))
    values, markers = batch.x[..., 0], batch.x[..., 1]
    assert batch.x.shape == (T, B, 2) and ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers[:T // 2].sum(0) == 1).all() and (markers[T // 2:].sum(0) == 1).all()
    for b in range(B):
        marked = [values[t, b].item() for t in range(T) if markers[t, b] == 1]
        assert batch.target[b].item() == pytest.approx(sum(marked), abs=1e-6)
    again = Adding().batch(T, B, torch.Generator().manual_seed(3))
    assert torch.equal(again.x, batch.x) and not torch.equal(Adding().batch(T, B, torch.Generator().manual_seed(4)).x,
                                                             batch.x)


def test_copy_batch_shows_the_symbols_then_blanks_then_the_marker():
    T, B, task = 12, 5, Copy(length=3, alphabet=4)
    batch = task.batch(T, B, torch.Generator().manual_seed(0))
    assert batch.x.shape == (T, B, 6) and (batch.x.sum(-1) == 1).all()  # one-hot at every step
    ids = batch.x.argmax(-1)
    assert torch.equal(ids[:3], batch.target) and ((batch.target >= 0) & (batch.target < 4)).all()
    blank, marker = 4, 5
    assert (ids[T - 4] == marker).all()
    assert (ids[3:T - 4] == blank).all() and (ids[T - 3:] == blank).all()  # the recall window is blank too
    assert task.min_seq_len() == 7


def test_chance_levels_and_accuracy_follow_the_definitions():
    adding = Adding(tolerance=0.04)
    batch = adding.batch(50, 20000, torch.Generator().manual_seed(0))
    # always predicting 1 scores Var(u1 + u2) = 1/6
    assert adding.loss(torch.ones(20000, 1), batch.target).item() == pytest.approx(adding.chance_loss, rel=0.03)
    assert adding.accuracy((batch.target + 0.03)[:, None], batch.target) == 1.0
    assert adding.accuracy((batch.target + 0.05)[:, None], batch.target) == 0.0
    copy = Copy(length=3, alphabet=8)
    target = torch.randint(0, 8, (3, 10))
    assert copy.loss(torch.zeros(3, 10, 8), target).item() == pytest.approx(math.log(8))  # uniform guess
    assert copy.accuracy(torch.nn.functional.one_hot(target, 8).float(), target) == 1.0


# ---- the units and their start --------------------------------------------------------------

def test_plan_has_a_unit_per_task_clip_length_radius_dtype_and_backend():
    sc = scenario(backends=("cudnn", "eager"), dtypes=("float32", "bfloat16"), tasks=["adding", "copy"],
                  seq_lens=[8, 9], clip=[None, 1.0], radii=[None, 1.5], copy_length=3)
    units = plan(sc)
    assert len(units) == 2 * 2 * 2 * 2 * 2 * 2 and all(u.kind == "training" for u in units)
    assert {u.mode for u in units} == {"adding", "adding clip=1", "copy", "copy clip=1"}
    assert {u.case.input_size for u in units if u.mode.startswith("copy")} == {8 + 2}
    assert [u.case.seq_len for u in units] == sorted(u.case.seq_len for u in units)  # shorter first
    assert {u.radius for u in units} == {None, 1.5}


def test_every_backend_starts_from_the_same_weights_and_sees_the_same_batches(here):
    sc = scenario(backends=("cudnn", "triton", "eager"), tasks=["copy"], seq_lens=[7], steps=2, copy_length=3,
                  radii=[1.2])
    units = plan(sc)
    source = seeded_rnn(units[0].case, "tanh", 0)
    head = training.initial_weights(source, 8, 1.2, 0)
    u = source.weight_hh_l0.detach().double()
    assert torch.linalg.eigvals(u).abs().max().item() == pytest.approx(1.2)
    states = []
    for backend in ("cudnn", "triton", "eager"):
        model = training.build_model(backend, source, head, Copy(3, 8), here, training.PRECISIONS["float32"])
        states.append([p.detach().cpu() for p in model.parameters()])
    assert all(torch.equal(a, b) for other in states[1:] for a, b in zip(states[0], other))
    first = [measurements(unit, sc, here) for unit in units]
    for other in first[1:]:  # the same weights and data give the same loss and gradient, step by step
        assert other["loss"] == pytest.approx(first[0]["loss"], rel=1e-5)
        assert other["param_grad_norm"] == pytest.approx(first[0]["param_grad_norm"], rel=1e-4)


@pytest.mark.parametrize("backend", ["cudnn", "triton"])
def test_the_loss_falls_on_an_easy_setting(backend, here):
    sc = scenario(backends=(backend,), tasks=["copy"], seq_lens=[7], steps=30, optimizer="adam", lr=0.03,
                  copy_length=3, eval_batch=64)
    got = measurements(plan(sc)[0], sc, here)
    assert sum(got["loss"][-5:]) < 0.75 * sum(got["loss"][:5])
    assert got["eval_loss"] < got["chance_loss"] and got["eval_accuracy"] > 3 / 8  # chance: 1/8
    assert got["time_per_train_step"] > 0 and "diverged_at_step" not in got


def test_a_diverging_run_is_recorded_where_it_diverged_and_not_evaluated(here):
    sc = scenario(tasks=["adding"], seq_lens=[10], steps=40, lr=100.0, radii=[1.5])
    got = measurements(plan(sc)[0], sc, here)
    step = got["diverged_at_step"]
    assert len(got["loss"]) == step + 1 and not math.isfinite(got["loss"][-1])
    assert all(math.isfinite(v) for v in got["loss"][:-1])
    assert "eval_loss" not in got and "eval_accuracy" not in got


def train_one_step(clip, device):
    """(recorded gradient norm, ||θ_1 - θ_0||) of one plain SGD step with lr = 1, from weights whose
    gradient norm is well above 0.5."""
    sc = scenario(tasks=["adding"], seq_lens=[12], steps=1, lr=1.0, radii=[1.5])
    unit = plan(sc)[0]
    source = seeded_rnn(unit.case, "tanh", 0)
    head = training.initial_weights(source, 1, 1.5, 0)
    model = training.build_model("cudnn", source, head, Adding(), device, training.PRECISIONS["float32"])
    before = [p.detach().clone() for p in model.parameters()]
    history = training.train(model, sc.training, 12, training.PRECISIONS["float32"], device, 0, clip)
    moved = torch.linalg.vector_norm(torch.cat([(p.detach() - b).flatten()
                                                for p, b in zip(model.parameters(), before)]))
    return history.grad_norm[0], moved.item()


def test_clipping_bounds_the_update_and_the_norm_is_recorded_before_clipping(here):
    norm, moved = train_one_step(None, here)
    assert moved == pytest.approx(norm, rel=1e-4)  # SGD with lr 1 moves by the gradient: the recorded norm is its norm
    assert norm > 1.0
    clipped_norm, clipped_moved = train_one_step(0.5, here)
    assert clipped_norm == pytest.approx(norm, rel=1e-6)  # the same gradient, recorded before clipping
    assert clipped_moved == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("backend", ["cudnn", "triton"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_trains_fp32_master_weights_to_finite_losses(backend, dtype, here):
    sc = scenario(backends=(backend,), dtypes=(dtype,), tasks=["copy"], seq_lens=[7], steps=4, optimizer="adam",
                  lr=0.03, copy_length=3)
    unit = plan(sc)[0]
    precision = training.PRECISIONS[dtype]
    source = seeded_rnn(unit.case, "tanh", 0)
    head = training.initial_weights(source, 8, None, 0)
    model = training.build_model(backend, source, head, Copy(3, 8), here, precision)
    history = training.train(model, sc.training, 7, precision, here, 0, clip=1.0)
    assert all(math.isfinite(v) for v in history.loss) and history.diverged_at is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    reference = training.build_model(backend, source, head, Copy(3, 8), here, training.PRECISIONS["float32"])
    fp32 = training.train(reference, sc.training, 7, training.PRECISIONS["float32"], here, 0, clip=1.0)
    assert history.loss[0] == pytest.approx(fp32.loss[0], rel=2e-2)  # the same start, within 16-bit rounding
    rows = measurements(unit, sc, here)
    assert ("amp_skipped_steps" in rows) == (dtype == "float16")  # GradScaler with float16 only


# ---- a run: rows, report, plots, exit code -------------------------------------------------------

RUN = {"name": "train", "backends": ["cudnn", "triton"], "metrics": ["training"],
       "training": {"tasks": ["adding", "copy"], "seq_lens": [7], "batch": 4, "hidden": 8, "steps": 3, "copy_length": 3,
                    "clip": [None, 1.0], "eval_batch": 8}}


def run_scenario(tmp_path, data) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress"]) == 0
    return tmp_path / "out" / data["name"] / "r"


def test_a_training_run_writes_loss_rows_a_report_section_and_loss_plots(tmp_path):
    run_dir = run_scenario(tmp_path, RUN)
    frame = pd.read_csv(run_dir / "results.csv", keep_default_na=False)
    loss = frame[frame.metric == "loss"]
    assert set(loss.backend) == {"cudnn", "triton"}
    for _, unit in loss.groupby(["backend", "mode"]):
        assert sorted(unit.step.astype(int)) == [0, 1, 2]
    assert set(frame.kind) == {"training"} and set(frame.error) == {""}
    finals = set(frame[frame.step == ""].metric)
    assert {"time_per_train_step", "eval_loss", "eval_accuracy", "chance_loss"} <= finals
    report = (run_dir / "report.md").read_text()
    assert "## Training" in report and "### copy: cross-entropy, chance level 2.079" in report
    assert "| 7 | adding clip=1 | nn.RNN init | float32 | triton |" in report
    for name in ("training_loss_adding.png", "training_loss_copy.png", "training_param_grad_norm_copy.png",
                 "training_input_grad_ratio_adding.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in report


def test_a_diverged_unit_is_a_result_with_exit_code_0(tmp_path):
    data = {**RUN, "backends": ["cudnn"], "training": {**RUN["training"], "tasks": ["adding"], "clip": [None],
                                                       "lr": 1e4, "steps": 20, "radii": [1.5]}}
    run_dir = run_scenario(tmp_path, data)
    rows = RunFolder(run_dir).rows()
    diverged = [r for r in rows if r["metric"] == "diverged_at_step"]
    assert len(diverged) == 1 and not diverged[0]["error"]
    assert "diverged at step " in (run_dir / "report.md").read_text()


def test_the_training_scenario_loads_with_the_story_and_a_small_cpu_profile():
    full, cpu = (load_scenario(ROOT / "scenarios" / "training.yaml", p) for p in ("full", "cpu"))
    assert full.metrics == ("training",) and set(full.training.seq_lens) == {100, 1000, 10000}
    assert set(full.training.tasks) == {"adding", "copy"} and None in full.training.clip
    assert len(full.training.radii) > 1
    assert {"float16"} <= set(full.dtypes) and {"cudnn", "triton"} <= set(full.backends)
    from rnnbench.backends import INTERPRETER_MAX_WORK  # every Triton unit of the cpu profile runs in the interpreter
    assert max(cpu.training.seq_lens) * cpu.training.hidden <= INTERPRETER_MAX_WORK and cpu.training.steps <= 20


# ---- schema ---------------------------------------------------------------------------------------

BAD_TRAINING = [
    ({"tasks": ["bogus"]}, "training.tasks[0]", "expected one of adding, copy, got 'bogus'"),
    ({"steps": 0}, "training.steps", "expected an integer >= 1, got 0"),
    ({"clip": [None, -1]}, "training.clip[1]", "expected a number > 0 or null, got -1"),
    ({"radii": "big"}, "training.radii", "expected a list, got 'big'"),
    ({"optimizer": "rmsprop"}, "training.optimizer", "expected one of sgd, adam, got 'rmsprop'"),
    ({"learning_rate": 0.1}, "training.learning_rate", "unknown key; expected one of: tasks, seq_lens"),
    ({"tasks": ["copy"], "seq_lens": [100, 20]}, "training.seq_lens[1]",
     "expected an integer >= 21 (the copy task's shortest sequence), got 20"),
]


@pytest.mark.parametrize("settings,keypath,message", BAD_TRAINING, ids=[k for _, k, _ in BAD_TRAINING])
def test_bad_training_keys_give_one_line_and_exit_2(tmp_path, capsys, settings, keypath, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "backends": ["cudnn"], "metrics": ["training"],
                                    "cpu": {"training": settings}}))  # a mistake in cpu: fails on any machine
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"rnnbench: error: {path}: cpu.{keypath}: {message}")


# ---- plots ----------------------------------------------------------------------------------------

def training_frame() -> pd.DataFrame:
    """Rows of two units (adding at T=10 and 20) for cudnn and triton: triton's gradient reach underflows
    to 0 at step 2 and its loss is NaN at step 3, where it diverged; cudnn trains 4 steps."""
    from rnnbench.results import COLUMNS
    rows = []

    def row(backend, seq_len, metric, value, step=None):
        rows.append({"scenario": "s", "kind": "training", "backend": backend, "label": "", "mode": "adding",
                     "dtype": "float32", "seq_len": seq_len, "batch": 4, "hidden": 8, "input_size": 2, "layers": 1,
                     "radius": "1.5", "step": step, "metric": metric, "unit": "", "p20": None, "p50": value,
                     "p80": None, "error": "", "note": "", "device": "cpu", "timestamp": ""})
    for seq_len in (10, 20):
        for backend, steps in (("cudnn", 4), ("triton", 4 if seq_len == 10 else 3)):
            for step in range(steps):
                diverged = backend == "triton" and seq_len == 20 and step == 2
                row(backend, seq_len, "loss", math.nan if diverged else 0.5 / (step + 1), step)
                row(backend, seq_len, "input_grad_ratio", 0.0 if diverged else 10.0 ** -step, step)
                row(backend, seq_len, "param_grad_norm", 1.0 + step, step)
            row(backend, seq_len, "chance_loss", 1 / 6)
        row("triton", 20, "diverged_at_step", 2)
    return pd.DataFrame(rows, columns=COLUMNS)


def test_training_plots_have_a_panel_per_setting_and_t_and_say_what_they_leave_out(tmp_path, monkeypatch):
    from matplotlib import pyplot as plt

    from rnnbench import plots
    kept = {}

    def keep(fig, out, name, title, rect=None):  # the figures, not their files
        kept[name] = fig
        return title, name
    monkeypatch.setattr(plots, "_save", keep)
    made = plots.training_figures(training_frame(), tmp_path, "CPU", {"cudnn": "cudnn", "triton": "triton"})
    assert [name for _, name in made] == ["training_loss_adding.png", "training_param_grad_norm_adding.png",
                                          "training_input_grad_ratio_adding.png"]
    loss_axes = kept["training_loss_adding.png"].axes
    assert [ax.get_title().split("\n")[0] for ax in loss_axes] == ["T=10, adding, float32, U radius 1.5",
                                                                   "T=20, adding, float32, U radius 1.5"]
    assert "all 2 lines coincide" in loss_axes[0].get_title()
    assert "diverged: triton at step 2" in loss_axes[1].get_title()
    assert "not drawn: triton: NaN/inf at 1" in loss_axes[1].get_title()
    assert any(line.get_label() == "chance level" for line in loss_axes[0].get_lines())
    ratio = kept["training_input_grad_ratio_adding.png"].axes[1]
    assert "not drawn: triton: 0 at 1 steps" in ratio.get_title() and ratio.get_yscale() == "log"
    assert ratio.get_xlim() == (0, 3)  # every step trained, drawn or not
    plt.close("all")
