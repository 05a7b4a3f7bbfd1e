""".ci/gpu, the stages a GPU lease runs, checked here by its dry run so that a lease is not spent on a broken
script: stages run in the order given, one pack each, steps that no longer fit the budget are skipped, and bad
arguments stop it before anything runs."""
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from helpers import load_gpu_variants

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "gpu"
PACKING = int(re.search(r"^PACKING=(\d+)", SCRIPT.read_text(), re.MULTILINE).group(1))  # seconds kept back to pack
PYTEST = ".ci/gpu_pytest.py"  # what its test steps run pytest through
STEP = re.compile(r"^== ([\w-]+)/([\w-]+)(?: \((\d+)s\): .*|: skipped, .*)$")


def run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env={"OUT": str(out),
                          "PATH": "/usr/bin:/bin"}, timeout=60)


def steps(text: str) -> list[tuple[str, str, int | None]]:
    """(stage, step, time limit or None where skipped) of each step a run lists."""
    found = [STEP.match(line) for line in text.splitlines() if line.startswith("== ")]
    assert all(found), text
    return [(m[1], m[2], int(m[3]) if m[3] else None) for m in found]


def stages() -> list[str]:
    usage = run(Path("unused"), "--help").stderr  # the usage line, before anything is written
    return usage.split("stages:")[1].split()


def test_every_stage_has_steps_within_a_device_command(tmp_path):
    names = stages()
    assert {"quick", "defaults", "stepwise"} <= set(names)
    for stage in names:
        listed = steps(run(tmp_path, "--dry-run", "--budget", "100000", stage).stdout)
        assert listed and {s for s, _, _ in listed} == {stage}, stage
        assert all(limit <= 570 for _, _, limit in listed), stage


def test_stages_run_in_order_each_packed_with_its_steps(tmp_path):
    result = run(tmp_path, "--dry-run", "stepwise", "defaults")
    assert result.returncode == 0, result.stderr
    listed = steps(result.stdout)
    order = [stage for stage, _, _ in listed]
    assert order == sorted(order, key=["stepwise", "defaults"].index) and set(order) == {"stepwise", "defaults"}
    assert (tmp_path / "steps.txt").read_text() == result.stdout
    for stage in ("stepwise", "defaults"):
        with tarfile.open(tmp_path / f"{stage}.tar.gz") as pack:
            own = pack.extractfile(f"{stage}/steps.txt").read().decode()
        assert steps(own) == [s for s in listed if s[0] == stage]


def test_steps_are_cut_to_the_budget_and_skipped_once_it_is_spent(tmp_path):
    own = [limit for _, _, limit in steps(run(tmp_path, "--dry-run", "--budget", "100000", "defaults").stdout)]
    cut = [limit for _, _, limit in steps(run(tmp_path, "--dry-run", "--budget", "100", "defaults").stdout)]
    assert max(own) > 100 and len(cut) == len(own)
    for limit, was in zip(cut, own):  # PACKING s of the budget kept back to pack, a second or two spent getting there
        assert 100 - PACKING - 2 <= limit <= 100 - PACKING if was > 100 - PACKING else limit == was
    result = run(tmp_path, "--dry-run", "--budget", str(PACKING + 25), "defaults")  # under 30 s left for a step
    assert result.returncode == 0
    assert all(limit is None for _, _, limit in steps(result.stdout))
    assert (tmp_path / "defaults.tar.gz").exists()  # even an empty stage is packed, with its skipped steps


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown stage 'nope'"),
    (["--budget", "ten", "quick"], "--budget wants a whole number of seconds (got 'ten')"),
    ([], "no stage given"),
    (["quick", "nope"], "unknown stage 'nope'"),
])
def test_bad_arguments_stop_before_anything_runs(tmp_path, args, message):
    result = run(tmp_path, "--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr and "usage: bash .ci/gpu" in result.stderr
    assert not result.stdout and not list(tmp_path.iterdir())


def steps_running(program: str, stage: str) -> dict[str, list[str]]:
    """The arguments that follow `program` (PYTEST, .ci/gpu_variants.py) in each of a stage's steps that run it, as
    its dry run lists them."""
    steps = {}
    with tempfile.TemporaryDirectory() as out:
        listed = run(Path(out), "--dry-run", "--budget", "100000", stage).stdout.splitlines()
    for line in listed:
        if line.startswith("== ") and f" {program} " in line:  # "== STAGE/STEP (LIMITs): COMMAND", one line each
            step, command = line.removeprefix("== ").split(": ", 1)
            argv = shlex.split(command)
            steps[step.split("/")[1].split()[0]] = argv[argv.index(program) + 1:]
    return steps


def collected(args: list[str]) -> list[str]:
    """The test ids pytest selects with a test step's arguments (its own -q dropped: twice, it lists only files; and
    PYTEST's own --workers)."""
    if args[:1] == ["--workers"]:
        args = args[2:]
    args = [a for a in args if a != "-q"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args], capture_output=True,
                          text=True, cwd=SCRIPT.parents[1], timeout=300)
    return [line for line in proc.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("stage", ["quick", "defaults", "wide", "clusters", "dsmem", "dsmem-quick", "stepwise",
                                   "variants", "untimed", "streams", "k-cluster", "fragments", "fma-16bit",
                                   "split-sum", "fma-chains", "graphs", "fragment-limit", "ends"])
def test_each_test_step_selects_tests_and_defaults_leaves_the_switched_off_forms_alone(stage):
    """A renamed test can fall out of a stage's -k filter, or into one: every test step selects some tests, and the
    defaults stage, which checks today's defaults, none of the forms that are off (clusters, DSMEM)."""
    steps = steps_running(PYTEST, stage)
    assert steps, stage
    for name, args in steps.items():
        ids = collected(args)
        assert ids, (stage, name)
        if stage == "defaults":
            assert not [i for i in ids if "cluster" in i or "dsmem" in i], (name, ids)


def test_each_variants_step_times_something_for_each_variant_and_filter_value_it_names():
    """A step of .ci/gpu_variants.py whose filters (--hidden, --batch, --dtype) leave a variant no case, or name a
    value that no case of its variants has, would be refused on the lease: each step's arguments, read by the
    script's own parser, plan cases (that the variants it names exist is test_gpu_variants_script's check)."""
    variants = load_gpu_variants()
    seen = 0
    for stage in stages():
        for name, argv in steps_running(".ci/gpu_variants.py", stage).items():
            try:
                variants.planned_cases(variants.build_parser().parse_args(argv))
            except ValueError as err:
                pytest.fail(f"{stage}/{name}: {err}")
            seen += 1
    assert seen >= 10


def test_the_untimed_stage_tests_and_times_what_the_last_lease_left_open():
    """`untimed`, the lease command after `fragments`: the clusters' stress tests (16-bit H = 512's clusters are a
    default never stressed on a GPU) and the status left unread (the default); and it times
    each form the last lease left untimed beside today's: H = 512 at the grid barrier, the split calls with their host
    sync, H = 256's clusters; and the cost of a layer call apart from its steps."""
    steps = steps_running(PYTEST, "untimed")
    own = " ".join(collected(steps["cluster-tests"]))
    for test in ("test_split_cluster_barrier_under_load_matches_stepwise[512-fill]",
                 "test_a_split_call_leaves_its_barrier_status_unread", "test_layer_matches_cudnn"):
        assert test in own, test
    assert "dsmem" not in own  # the dsmem stage's
    variants = load_gpu_variants()
    parsed = [variants.build_parser().parse_args(argv)
              for argv in steps_running(".ci/gpu_variants.py", "untimed").values()]
    assert {"split-grid-barrier-512", "split-status-waited", "split-clusters"} <= {v for a in parsed for v in a.variant}
    # the cost of a call itself: a sequence so short that the host's time per call, not the GPU's, shows
    assert any(a.seq_len <= 16 and {128, 512} <= set(a.hidden) for a in parsed)


def test_the_quick_dsmem_stage_stresses_both_exchanges_at_h512_before_timing_them(tmp_path):
    """`dsmem-quick`, for what a lease has left after `untimed`: both DSMEM exchanges' stress tests at H = 512 (one
    tile, and the batch that fills the clusters), and nothing else, so that they fit their step."""
    ids = collected(steps_running(PYTEST, "dsmem-quick")["dsmem-tests"])
    assert sorted(i.split("[")[1] for i in ids) == ["dsmem-pull-512-8]", "dsmem-pull-512-fill]", "dsmem-push-512-8]",
                                                   "dsmem-push-512-fill]"]
    listed = [(name, limit) for stage, name, limit in steps(run(tmp_path, "--dry-run", "dsmem-quick").stdout)]
    assert [name for name, _ in listed] == ["dsmem-tests", "exchange-dsmem-pull", "exchange-dsmem-push"]
    assert sum(limit for _, limit in listed) <= 210


def test_the_arrival_stage_times_the_split_inputs_either_side_of_the_barriers_arrival(tmp_path):
    """`arrival`: `rnnbench exchange`, then the layer beside the variant, with split.INPUTS_AFTER_ARRIVAL on (today's)
    and off, a switch that exists, in the steps' time."""
    from kernels import split
    result = run(tmp_path, "--dry-run", "arrival")
    listed = steps(result.stdout)
    assert [name for _, name, _ in listed] == ["exchange-inputs-after-arrival", "exchange-inputs-before-arrival",
                                               "arrival-layer"]
    assert sum(limit for _, _, limit in listed) <= 300
    assert all(f"split.INPUTS_AFTER_ARRIVAL = {on};" in result.stdout for on in (True, False))
    assert split.INPUTS_AFTER_ARRIVAL is True
    layer_args = steps_running(".ci/gpu_variants.py", "arrival")["arrival-layer"]
    layer = load_gpu_variants().build_parser().parse_args(layer_args)
    assert layer.variant == ["current", "split-inputs-before-arrival"]


def test_every_profile_step_names_a_case_backends_and_dtype_that_rnnbench_takes(tmp_path):
    """Each `rnnbench profile` a stage runs (alone, or under Nsight Compute) parses: its scenario loads, its --case,
    --backend and --dtype are ones the CLI accepts, and it writes into the stage's folder (an absolute --out), not the
    repository's results/; a typo would cost a lease's step."""
    from rnnbench import cli
    from rnnbench.schema import load_scenario
    listed = run(tmp_path, "--dry-run", "--budget", "100000", *stages()).stdout.splitlines()
    commands = [shlex.split(line.split(": ", 1)[1]) for line in listed
                if line.startswith("== ") and " profile " in line]
    assert len(commands) >= 10
    for argv in commands:
        args = cli.build_parser().parse_args(argv[argv.index("profile"):])
        scenario = load_scenario(SCRIPT.parents[1] / args.scenario, "full")
        case = cli.parse_case(args.case, scenario)
        assert cli.parse_backends(args.backend, scenario) and case.seq_len >= 1, argv
        assert args.dtype in (None, "float32", "float16", "bfloat16"), argv
        assert Path(args.out).is_absolute(), argv


def test_every_switched_cli_step_sets_switches_that_exist_and_passes_arguments_rnnbench_takes(tmp_path):
    """Each step that runs rnnbench with kernel switches set (cli_with, exchange_with) assigns attributes its modules
    have, and passes the CLI arguments it parses: a misspelt switch would otherwise run today's form unnoticed."""
    import kernels
    from rnnbench import cli
    listed = run(tmp_path, "--dry-run", "--budget", "100000", *stages()).stdout.splitlines()
    switched = [re.search(r"main\\n(.*); sys\.exit\(main\(sys\.argv\[1:\]\)\)' (.*)$", line) for line in listed
                if "from rnnbench.cli import main" in line]
    assert len(switched) >= 10 and all(switched)
    for found in switched:
        for assignment in found[1].replace("\\'", "'").split("; "):
            target, value = (part.strip() for part in assignment.split(" = "))
            module, name = target.split(".")
            assert hasattr(getattr(kernels, module), name), assignment
            compile(value, "<switch>", "eval")
        cli.build_parser().parse_args(shlex.split(found[2]))


def test_the_streams_stage_tests_then_times_the_overlaps_and_checkpointing(tmp_path):
    """`streams`: the GPU test of both overlaps in both tiers that use them, then bidirectional layers against the
    same in order, and runs of triton against triton-checkpoint from scenarios the stage writes (valid ones): the
    default, in order on one stream, and in the square root's segments, each switch one that exists."""
    from kernels import recompute, streams
    from rnnbench.schema import load_scenario
    ids = collected(steps_running(PYTEST, "streams")["streams-tests"])
    assert sorted(i.split("[")[1] for i in ids) == ["fma]", "resident]"]
    variants = load_gpu_variants()
    bidirectional = variants.build_parser().parse_args(steps_running(".ci/gpu_variants.py", "streams")["bidirectional"])
    assert bidirectional.bidirectional and bidirectional.variant == ["current", "one-stream"]
    result = run(tmp_path, "--dry-run", "streams")
    assert sum(limit for _, _, limit in steps(result.stdout)) <= 570
    with tarfile.open(tmp_path / "streams.tar.gz") as pack:
        pack.extractall(tmp_path / "pack", filter="data")
    for name, cases in (("checkpoint-gpu", 8), ("checkpoint-4096", 2)):
        scenario = load_scenario(tmp_path / "pack" / "streams" / f"{name}.yaml", "full")
        assert set(scenario.backends) == {"triton", "triton-checkpoint"} and len(scenario.cases) == cases
        assert scenario.modes == ("forward+backward",) and {"float32", "bfloat16"} == set(scenario.dtypes)
        assert [(t.backend, t.over, t.at_most) for t in scenario.targets] == [("triton-checkpoint", ("triton",), 1.35)]
    for module, switch in ((streams, "OVERLAP = False"), (recompute, "SEGMENT_MIN_STEPS = 1")):
        assert f"{module.__name__.split('.')[-1]}.{switch}" in result.stdout
        assert hasattr(module, switch.split(" =")[0])


def test_every_test_step_runs_pytest_through_the_parallel_runner(tmp_path):
    """.ci/gpu_pytest.py compiles in worker processes, runs failures again alone (tests/test_gpu_pytest_script.py)."""
    listed = run(tmp_path, "--dry-run", "--budget", "100000", *stages()).stdout.splitlines()
    tests = [line for line in listed if "pytest" in line]
    assert len(tests) >= 10 and all(f"python3 {PYTEST} " in line for line in tests), tests
