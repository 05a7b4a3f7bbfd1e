"""Scenario validation: every error path gives one message with file, key path and expectation,
exit code 2 and no traceback; valid files expand to the right cases; the shipped scenarios load."""
from pathlib import Path

import pytest
import yaml

from rnnbench.cli import main
from rnnbench.runner import plan
from rnnbench.schema import Case, ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
VALID = {"name": "t", "backends": ["eager", "cudnn"], "sweep": {"seq_len": [8, 4], "batch": 2, "hidden": 4}}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


DELETE = object()
TARGET = {"name": "faster", "backend": "eager", "over": "cudnn", "at_least": 1.5}


def target(**changes) -> list[dict]:
    """targets: with one target, TARGET with these changes (DELETE drops a key)."""
    return [{k: v for k, v in {**TARGET, **changes}.items() if v is not DELETE}]


ERRORS = [
    # (scenario, key path, words the message must contain)
    (with_(backend=["eager"]), "backend", "unknown key; expected one of: name, description, backends"),
    (with_(sweep__seqlen=[4]), "sweep.seqlen", "unknown key; expected one of: seq_len, batch"),
    (with_(timing__warmup=1), "timing.warmup", "unknown key; expected one of: warmup_ms, rep_ms, min_reps"),
    (with_(stability__radius=[1.0]), "stability.radius", "unknown key"),
    (with_(cpu__name="x"), "cpu.name", "unknown key"),
    (with_(seed="abc"), "seed", "expected an integer >= 0, got 'abc' (str)"),
    (with_(seed=-1), "seed", "expected an integer >= 0, got -1"),
    (with_(sweep__seq_len=[16, "x"]), "sweep.seq_len[1]", "expected an integer >= 1, got 'x' (str)"),
    (with_(sweep__batch=True), "sweep.batch[0]", "expected an integer >= 1, got True (bool)"),
    (with_(sweep__hidden=0), "sweep.hidden[0]", "expected an integer >= 1, got 0"),
    (with_(allow_tf32="yes"), "allow_tf32", "expected true or false, got 'yes' (str)"),
    (with_(timing__rep_ms=-5), "timing.rep_ms", "expected a number > 0, got -5"),
    (with_(timing__cuda_graphs=1), "timing.cuda_graphs", "expected true, false or both, got 1 (int)"),
    (with_(timing__cuda_graphs="yes"), "timing.cuda_graphs", "expected true, false or both, got 'yes' (str)"),
    (with_(dtypes="float32"), "dtypes", "expected a list, got 'float32' (str)"),
    (with_(dtypes=["float8"]), "dtypes[0]", "expected one of float32, float16, bfloat16, float64"),
    (with_(modes=["backward"]), "modes[0]", "expected one of forward, forward+backward"),
    (with_(metrics=["speed", "speed"]), "metrics", "expected distinct values"),
    (with_(nonlinearity="gelu"), "nonlinearity", "expected one of tanh, relu"),
    (with_(description=3), "description", "expected a string, got 3 (int)"),
    (with_(sweep=[8, 16]), "sweep", "expected a mapping with keys seq_len"),
    (with_(sweep__batch=[]), "sweep.batch", "expected a non-empty list, got an empty one"),
    (with_(sweep={"cases": []}), "sweep.cases", "expected a non-empty list, got an empty one"),
    (with_(sweep={"cases": [{"seq_len": 4, "batch": 2}]}), "sweep.cases[0].hidden", "missing; expected an integer"),
    (with_(sweep={"cases": [{"seq_len": 4, "batch": 2, "hidden": 4, "heads": 2}]}), "sweep.cases[0].heads",
     "unknown key"),
    (with_(sweep__hidden=DELETE), "sweep.hidden", "missing; expected an integer or a list of integers"),
    (with_(sweep=DELETE), "sweep", "missing; expected a mapping of the cases"),
    (with_(backends=["eager", "tritonn"]), "backends[1]",
     "expected one of triton, triton-stepwise, cudnn, cudnn-fp16, eager, compile"),
    (with_(backends=[]), "backends", "expected a non-empty list"),
    (with_(backends=DELETE), "backends", "missing; expected a list of backends"),
    (with_(baseline="triton"), "baseline", "expected one of the scenario's backends (eager, cudnn), got 'triton'"),
    (with_(cpu__baseline="compile"), "cpu.baseline", "got 'compile'"),
    (with_(baseline=["cudnn", "triton"]), "baseline[1]", "expected one of the scenario's backends (eager, cudnn), "
                                                         "got 'triton'"),
    (with_(baseline=["cudnn", "tritonn"]), "baseline[1]", "expected one of triton, "),
    (with_(baseline=[]), "baseline", "expected a non-empty list"),
    (with_(cpu__sweep={"seq_len": 2, "batch": 1, "hidden": ["big"]}), "cpu.sweep.hidden[0]",
     "expected an integer >= 1, got 'big'"),
    (with_(cpu__sweep={"batch": 1, "hidden": 2}), "cpu.sweep.seq_len", "missing"),
    (with_(name=DELETE), "name", "missing; expected a string"),
    (with_(stability__seq_lens=[8, 16], stability__curve_seq_len=12), "stability.curve_seq_len",
     "expected one of stability.seq_lens [8, 16], got 12"),
    (with_(stability__spectral_radii=[0.5, "one"]), "stability.spectral_radii[1]", "expected a number > 0"),
    ([1, 2], "", "expected a mapping with keys name, description"),
    # targets: each a map naming backends of the scenario, rows chosen by dtypes, modes and case fields
    (with_(targets={"name": "x"}), "targets", "expected a list, got {'name': 'x'} (dict)"),
    (with_(targets=target(at_least=DELETE)), "targets[0].at_least",
     "expected either at_least (a speedup) or at_most (a ratio of times), got neither"),
    (with_(targets=target(at_most=2)), "targets[0].at_least", "expected either at_least (a speedup) or at_most (a "
                                                              "ratio of times), not both"),
    (with_(targets=target(at={"batch": [8]})), "targets[0].at.batch", "expected an integer >= 1, got [8] (list)"),
    (with_(targets=target(at={"dtypes": "float32"})), "targets[0].at.dtypes",
     "unknown key; expected one of: seq_len, batch, hidden, input_size, layers"),
    (with_(targets=target(over=DELETE)), "targets[0].over", "missing; expected a backend or a list"),
    (with_(targets=target(at_least=0)), "targets[0].at_least", "expected a number > 0, got 0"),
    (with_(targets=target(over=["cudnn", "cuda"])), "targets[0].over[1]", "expected one of triton, "),
    (with_(targets=target(over="triton")), "targets[0].over",
     "expected one of the scenario's backends (eager, cudnn), got 'triton'"),
    (with_(targets=target(over=["cudnn", "eager"])), "targets[0].over",
     "expected backends other than the one held to the target (eager)"),
    (with_(targets=target(over="eager", at={})), "targets[0].over",
     "or an `at` that compares it with its own other rows"),
    (with_(targets=target(backend="compile")), "targets[0].backend",
     "expected one of the scenario's backends (eager, cudnn), got 'compile'"),
    (with_(targets=target(where={"hidden_size": 4})), "targets[0].where.hidden_size",
     "unknown key; expected one of: dtypes, modes, seq_len, batch, hidden, input_size, layers"),
    (with_(targets=target(where={"dtypes": "fp8"})), "targets[0].where.dtypes[0]",
     "expected one of float32, float16"),
    (with_(targets=target(where={"hidden": [4, "big"]})), "targets[0].where.hidden[1]",
     "expected an integer >= 1, got 'big'"),
    (with_(cpu__targets=target(extra=1)), "cpu.targets[0].extra",
     "unknown key; expected one of: name, backend, over, at_least, at_most, at, where"),
    # the name becomes the results folder: nothing that climbs out of the results root or hides
    (with_(name="../../etc/evil"), "name", "expected letters, digits, '-', '_' and '.'"),
    (with_(name="a/b"), "name", "got 'a/b'"),
    (with_(name="a\\b"), "name", "got 'a\\\\b'"),
    (with_(name="a..b"), "name", "with no '..'"),
    (with_(name=".hidden"), "name", "starting with a letter or digit"),
    (with_(name="-rf"), "name", "got '-rf'"),
    (with_(name=""), "name", "got ''"),
    (with_(name="smoke test"), "name", "got 'smoke test'"),
]


@pytest.mark.parametrize("data,keypath,words", ERRORS, ids=[e[1] or "top" for e in ERRORS])
def test_schema_errors_name_file_keypath_and_expectation(tmp_path, capsys, data, keypath, words):
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path, "cpu")  # the cpu sweep also validates (and applies) the cpu: section
    assert err.value.keypath == keypath
    assert str(err.value).startswith(f"{path}: {keypath}: " if keypath else f"{path}: ")
    assert words in str(err.value)

    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().splitlines() == [f"rnnbench: error: {err.value}"]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data,keypath", [
    (with_(cpu__baseline="compile"), "cpu.baseline"),
    (with_(cpu__stability={"seq_lens": [8], "curve_seq_len": 16}), "cpu.stability.curve_seq_len"),
    (with_(sweep=DELETE, metrics=["stability"], cpu__metrics=["speed"]), "sweep"),
], ids=["baseline", "curve_seq_len", "sweep"])
def test_the_full_sweep_refuses_a_broken_cpu_section_too(tmp_path, capsys, data, keypath):
    """What a GPU machine runs (the full sweep) checks the cpu: section as well, with the CPU's message."""
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as on_cpu:
        load_scenario(path, "cpu")
    with pytest.raises(ScenarioError) as on_gpu:
        load_scenario(path, "full")
    assert on_gpu.value.keypath == on_cpu.value.keypath == keypath
    assert str(on_gpu.value) == str(on_cpu.value)
    assert main(["run", str(path), "--sweep", "full", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"rnnbench: error: {on_cpu.value}"


def test_cuda_graphs_are_off_unless_the_timing_asks(tmp_path):
    assert not load_scenario(write(tmp_path, VALID)).timing.cuda_graphs
    timing = load_scenario(write(tmp_path, with_(timing__cuda_graphs=True, timing__rep_ms=50))).timing
    assert timing.cuda_graphs is True and timing.rep_ms == 50
    assert load_scenario(write(tmp_path, with_(timing__cuda_graphs="both"))).timing.cuda_graphs == "both"


@pytest.mark.parametrize("name", ["long_seq", "long_seq.v2-1", "A100_run.3"])
def test_plain_names_are_accepted(tmp_path, name):
    assert load_scenario(write(tmp_path, with_(name=name))).name == name


def test_run_id_is_checked_like_a_name(tmp_path, capsys):
    path = write(tmp_path, VALID)
    assert main(["run", str(path), "--out", str(tmp_path / "out" / "a" / "b"), "--run-id", "../../x"]) == 2
    assert capsys.readouterr().err.strip() == ("rnnbench: error: --run-id '../../x': expected letters, digits, '-', "
                                               "'_' and '.', starting with a letter or digit, with no '..'")
    assert not (tmp_path / "out").exists()


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = write(tmp_path, "name: t\nbackends: [eager\nsweep: {}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 3" in err and "not valid YAML" in err and "Traceback" not in err


def test_missing_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read the scenario file" in capsys.readouterr().err


def test_grid_is_the_product_and_defaults_apply(tmp_path):
    data = with_(sweep={"seq_len": [8, 4], "batch": [2, 1], "hidden": 4, "layers": [1, 2]})
    sc = load_scenario(write(tmp_path, data), "full")
    expected = {Case(t, b, 4, 4, l) for t in (8, 4) for b in (2, 1) for l in (1, 2)}
    assert set(sc.cases) == expected and len(sc.cases) == 8
    assert sc.baseline == "eager" and sc.dtypes == ("float32",) and sc.modes == ("forward", "forward+backward")
    assert sc.ordered_backends() == ["eager", "cudnn"]


def test_explicit_cases_and_cpu_sweep_override(tmp_path):
    data = with_(sweep={"cases": [{"seq_len": 9, "batch": 3, "hidden": 5, "input_size": 7}]},
                 baseline="cudnn", cpu__sweep={"seq_len": 2, "batch": 1, "hidden": 3}, cpu__dtypes=["bfloat16"])
    path = write(tmp_path, data)
    full, cpu = load_scenario(path, "full"), load_scenario(path, "cpu")
    assert full.cases == (Case(9, 3, 5, 7, 1),) and full.dtypes == ("float32",)
    assert cpu.cases == (Case(2, 1, 3, 3, 1),) and cpu.dtypes == ("bfloat16",)
    assert cpu.ordered_backends() == ["cudnn", "eager"]


def test_baselines_in_order_of_preference_run_first(tmp_path):
    sc = load_scenario(write(tmp_path, with_(backends=["eager", "cudnn", "triton", "cudnn-fp16"],
                                             baseline=["cudnn", "triton"])), "full")
    assert sc.baselines == ("cudnn", "triton") and sc.baseline == "cudnn"
    # the float16 cuDNN reference runs right after the first baseline: bfloat16 speedups need its time
    assert sc.ordered_backends() == ["cudnn", "cudnn-fp16", "triton", "eager"]
    assert load_scenario(write(tmp_path, with_(baseline="cudnn")), "full").baselines == ("cudnn",)


def test_stability_only_scenario_needs_no_sweep(tmp_path):
    sc = load_scenario(write(tmp_path, with_(sweep=DELETE, metrics=["stability"])), "full")
    assert sc.cases == () and all(u.kind == "stability" for u in plan(sc))


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_load_and_have_small_cpu_sweeps(path):
    full, cpu = load_scenario(path, "full"), load_scenario(path, "cpu")
    assert "cpu" in full.data, "every shipped scenario needs a cpu: section"
    assert len(plan(cpu)) <= 60
    assert all(c.seq_len * c.hidden <= 256 * 32 for c in cpu.cases)


def test_headline_scenario_spans_1k_to_64k():
    sc = load_scenario(ROOT / "scenarios" / "long_seq.yaml", "full")
    lengths = {c.seq_len for c in sc.cases}
    assert min(lengths) == 1024 and max(lengths) >= 65536
    assert len({c.batch for c in sc.cases}) >= 2 and len({c.hidden for c in sc.cases}) >= 2


def test_run_help_documents_the_schema(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for key in ("backends*", "baseline", "dtypes", "modes", "sweep*", "timing", "metrics", "seed", "stability",
                "cpu", "spectral_radii", "--resume"):
        assert key in out
