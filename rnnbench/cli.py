"""The `rnnbench` command: run a scenario, profile one of its cases, rebuild a report, compare two runs,
list what is here.

Usage errors (a bad scenario, a missing run folder) print one line naming the file, the key path
and what was expected, and exit with code 2; no traceback. EXIT_CODES lists every exit code.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import signal
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import torch
import yaml

from rnnbench import __version__, exchange, launches, measure, report, runner, targets
from rnnbench import profile as profiling
from rnnbench.backends import BACKENDS, first_line
from rnnbench.environment import capture
from rnnbench.results import (
    CSV_NAME,
    ENV_NAME,
    JOB_COLUMNS,
    SCENARIO_NAME,
    RunFolder,
    describe_job,
    job_outcomes,
    load_frame,
)
from rnnbench.schema import (
    CASE_FIELDS,
    DTYPES,
    MODES,
    SAFE_NAME_RULE,
    SCHEMA_HELP,
    Case,
    ScenarioError,
    cpu_sweep_text,
    is_safe_name,
    load_scenario,
    parse_scenario,
)


class UsageError(Exception):
    """A mistake in how rnnbench was called; printed as one line, exit code 2."""


EXIT_USAGE, EXIT_UNITS_FAILED, EXIT_BROKEN_PIPE = 2, 3, 128 + signal.SIGPIPE
EXIT_CODES = """\
exit codes:
  0    done: every job was measured or skipped for a stated reason (a backend unavailable here,
       cuDNN's sequence limit, the host-bound cap, the Triton interpreter's size cap)
  1    an internal error of rnnbench (it prints a traceback)
  2    a usage error: a bad scenario file or argument, a missing run folder, a --metric not in the runs
  3    run: at least one job failed (an exception, out of memory, a wrong output, a crash); every
       other job was measured, and the report lists the failures; or a CUDA error left the GPU
       unusable, and --resume runs the jobs after it in a new process
  128+N  run: stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP); what was measured is kept,
       and --resume runs the rest, the job that was cut short included
  141  the reader of the output went away (e.g. `rnnbench list | head -3`)"""
RUN_EPILOG = f"""\
Without a CUDA GPU the scenario's `cpu:` sweep (smaller shapes) is used, with a banner that says
so; Triton then runs in its CPU interpreter, only up to a size cap, and PyTorch and BLAS use
timing.cpu_threads threads (1 by default) for every backend. Results go to
OUT/<scenario name>/<run id>/: results.csv (long format, a row per backend, mode, dtype, case and
metric with p20/p50/p80 and an error column, written as each job finishes; timings whose p80/p20
exceeds {measure.NOISY_SPREAD:g} are marked "noisy" in the note column), jobs.csv (each job's wall time
and, on CUDA, the GPU memory before it), results.json, report.md and PNG plots. An interrupted run
(Ctrl-C, SIGTERM, SIGHUP) continues with --resume. A time estimate is printed at the start (for an
H100 or H200: rnnbench/estimate.py).

{SCHEMA_HELP}
{EXIT_CODES}"""


SWEEPS = ("auto", "full", "cpu")


class RenamedOption(argparse.Action):
    """An option's old spelling: it still works, and says its new name (const) on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"rnnbench: {option_string} is now {self.const} (the old spelling will go)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_old_sweep_spelling(parser) -> None:
    """--profile full|cpu was renamed --sweep: it collided with `rnnbench profile`."""
    parser.add_argument("--profile", dest="sweep", choices=SWEEPS, action=RenamedOption, const="--sweep",
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # --sweep's default stands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnbench", description="Benchmark the Triton Elman-RNN kernels against "
                                     "cuDNN, eager PyTorch and torch.compile: speed, memory and gradient stability.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rnnbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and write results, report and plots",
                         description="Run a scenario file and write its results, report and plots.",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("scenario", help="scenario YAML file, e.g. scenarios/long_seq.yaml")
    run.add_argument("--sweep", choices=SWEEPS, default="auto",
                     help="which sweep: cpu when no CUDA GPU is present (auto, the default), the full one, or cpu")
    add_old_sweep_spelling(run)
    run.add_argument("--out", default="results", help="root folder of the results (default: results)")
    run.add_argument("--run-id", help="name of the run folder: letters, digits, '-', '_', '.' "
                                      "(default: date-time, -cpu for the cpu sweep)")
    run.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                     help="continue an interrupted run: RUN_DIR, or the latest run of this scenario under --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    rep = sub.add_parser("report", help="rebuild report.md, results.json and the plots from results.csv",
                         description="Rebuild report.md, results.json and the PNG plots of a run folder from its "
                                     "results.csv.")
    rep.add_argument("run_dir", help="a run folder, e.g. results/long_seq/20250101-120000")

    cmp_ = sub.add_parser("compare", help="what changed between two runs",
                          description="Print a markdown table of every metric present in both runs, with the ratio B/A "
                                      "and whether B is better (lower latency, higher throughput, ...), largest change "
                                      "first, then rows present in one run only, environment changes and, where B's "
                                      "scenario (else A's) sets targets, each target tallied on both runs.")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--metric", help="only this metric, e.g. latency (an error if neither run has it)")
    cmp_.add_argument("--threshold", type=float, default=0.0,
                      help="only rows whose ratio differs from 1 by at least this much (e.g. 0.05)")

    add_profile_parser(sub)
    add_exchange_parser(sub)

    lst = sub.add_parser("list", help="scenarios and backends, with their availability here",
                         description="List the scenarios (with their job counts) and the backends (with whether they "
                                     "can run here).")
    lst.add_argument("--scenarios", default="scenarios", help="folder of scenario files (default: scenarios)")
    return parser


PROFILE_EPILOG = """\
Writes into RUN_DIR/profile/ (RUN_DIR: --run-dir, or a new OUT/<scenario>/<date>-profile[-cpu]/):
  trace_<backend>.json   Chrome/Perfetto trace of one call (ui.perfetto.dev, chrome://tracing)
  kernels.csv            every kernel: backend, name, group, calls, total/mean time, share
  profile.json           launch accounting, host/wall/device time, compile facts, GPU efficiency
  profile.md             the "Where the time goes" section on its own, with where_time_goes.png
and, when RUN_DIR holds a run (results.csv), rebuilds its report.md with that section.
Groups: input projection, recurrence (per step, or the persistent kernel), backward GEMMs, other.
Without a CUDA GPU the scenario's cpu: sweep is used; times are CPU time and launches are counted
from the dispatched ops that would launch a kernel on a GPU (Triton in its interpreter).

--case: a 0-based index into the scenario's cases (default 0: the first case of the active sweep),
or key=value pairs that change the first case, e.g. --case seq_len=4096,batch=8 (keys: seq_len or T,
batch or B, hidden or H, input_size or I, layers or L; input_size follows hidden unless given)."""
CASE_ALIASES = {"T": "seq_len", "B": "batch", "H": "hidden", "I": "input_size", "L": "layers"}


def add_profile_parser(sub) -> None:
    prof = sub.add_parser("profile", help="profile one case per backend: traces, kernel table, launches per step",
                          description="Run one case of a scenario once per backend under torch.profiler and show "
                                      "where the time goes: kernel groups, launches per time step, host vs device "
                                      "time, the Triton kernels' compile facts and, on a GPU, efficiency against the "
                                      "device's peak.",
                          epilog=PROFILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    prof.add_argument("scenario", help="scenario YAML file, e.g. scenarios/long_seq.yaml")
    prof.add_argument("--case", default="0", help="case index or key=value,... (default 0; see below)")
    prof.add_argument("--backend", action="append", metavar="NAME",
                      help=f"backend to profile, repeatable or comma-separated (default: the scenario's); "
                           f"one of {', '.join(BACKENDS)}")
    prof.add_argument("--dtype", choices=DTYPES, help="default: the scenario's first dtype")
    prof.add_argument("--mode", choices=MODES, help="default: forward+backward if the scenario has it")
    add_old_sweep_spelling(prof)
    prof.add_argument("--sweep", choices=SWEEPS, default="auto",
                      help="the scenario's sweep to take the case from: cpu without a CUDA GPU (auto), full, or cpu")
    prof.add_argument("--out", default="results", help="root folder of new profile folders (default: results)")
    prof.add_argument("--run-id", help="name of the new folder (default: <date-time>-profile, -cpu without a GPU)")
    prof.add_argument("--run-dir", help="put the profile into this existing run folder instead, next to its results")
    prof.add_argument("--nvtx", action="store_true",
                      help="wrap each backend's call and every Triton launch in NVTX ranges (CUDA only), for nsys/ncu")
    prof.add_argument("--no-compile-facts", action="store_true",
                      help="skip the compile audit of the Triton kernels (a few seconds per plan)")
    prof.add_argument("--no-progress", action="store_true", help="no progress lines")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def add_exchange_parser(sub) -> None:
    exch = sub.add_parser("exchange", help="time the split tier's per-step exchange alone (CUDA GPU)",
                          description=exchange.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exch.add_argument("--hidden", type=positive_int, nargs="+", default=list(exchange.HIDDEN),
                      help=f"hidden sizes (default: {' '.join(map(str, exchange.HIDDEN))})")
    exch.add_argument("--batch", type=positive_int, nargs="+", default=list(exchange.BATCH),
                      help=f"batch sizes (default: {' '.join(map(str, exchange.BATCH))})")
    exch.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    exch.add_argument("--steps", type=positive_int, default=2048, help="time steps per call (default: 2048)")
    exch.add_argument("--csv", metavar="FILE", help="also write the rows to this CSV file")
    exch.add_argument("--at-most-us", type=positive_float, metavar="US",
                      help="hold each row's exchange to this bound in µs a step, and tally the rows that meet it "
                           "(issue 8: --hidden 1024 --at-most-us 1)")


def device_here() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_sweep(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    return "full" if device.type == "cuda" else "cpu"


def banner(scenario, device: torch.device) -> str | None:
    if scenario.sweep != "cpu":
        return None
    where = "no CUDA GPU found" if device.type == "cpu" else "--sweep cpu"
    clock = measure.cpu_clock(scenario.timing.cpu_threads)[1]
    return (f"*** {where}: running {cpu_sweep_text(scenario.data)} — {len(runner.plan(scenario))} jobs, timed by "
            f"{clock}, Triton in its CPU interpreter up to a size cap. These are not GPU numbers. ***")


def new_run_id(args, suffix: str) -> str:
    """--run-id, checked like a scenario name (it becomes a folder), or the date-time and suffix."""
    if args.run_id is None:
        return datetime.now().strftime("%Y%m%d-%H%M%S") + suffix
    if not is_safe_name(args.run_id):
        raise UsageError(f"--run-id {args.run_id!r}: expected {SAFE_NAME_RULE}")
    return args.run_id


def run_folder(args, scenario) -> tuple[RunFolder, bool]:
    """The run folder and whether it already holds a run to continue."""
    root = Path(args.out) / scenario.name
    if args.resume == "latest":
        runs = sorted(p for p in root.glob("*") if (p / CSV_NAME).exists()) if root.is_dir() else []
        if not runs:
            raise UsageError(f"--resume: no run of '{scenario.name}' under {root} to continue")
        return RunFolder(max(runs, key=lambda p: p.stat().st_mtime)), True
    if args.resume:
        if not (Path(args.resume) / CSV_NAME).exists():
            raise UsageError(f"--resume {args.resume}: no {CSV_NAME} there to continue")
        return RunFolder(args.resume), True
    folder = RunFolder(root / new_run_id(args, "-cpu" if scenario.sweep == "cpu" else ""))
    if folder.csv.exists():
        raise UsageError(f"{folder.path} already holds a run; continue it with --resume {folder.path} or pick another "
                         f"--run-id")
    return folder, False


def check_same_scenario(folder: RunFolder, scenario) -> None:
    stored = parse_scenario(yaml.safe_load(folder.scenario_text()), str(folder.path), scenario.sweep)
    if stored != scenario:
        raise UsageError(f"{folder.path} was started from a different scenario (or sweep) than "
                         f"{scenario.source}; start a new run instead of resuming")


def cmd_run(args) -> int:
    device = device_here()
    scenario = load_scenario(args.scenario, choose_sweep(args.sweep, device))
    folder, resuming = run_folder(args, scenario)
    if resuming:
        check_same_scenario(folder, scenario)
    else:
        env = capture(device, scenario, args.scenario)
        env.update(scenario=scenario.name, baselines=list(scenario.baselines))
        folder.create(Path(args.scenario).read_text(), env)
    message = banner(scenario, device)
    if message:
        print(message, flush=True)
    print(f"{'resuming' if resuming else 'writing'} {folder.path}", flush=True)
    ctx = runner.Context(scenario, device, folder)
    try:
        ran = runner.run(ctx, progress=not args.no_progress)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM/SIGHUP as runner.Interrupted
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"\ninterrupted by {signal.Signals(signum).name}; what was measured is in {folder.csv}. Continue with:\n"
              f"  rnnbench run {args.scenario} --resume {folder.path}", file=sys.stderr)
        return 128 + signum
    except runner.DeviceFailed as err:
        print(f"\nrnnbench: the GPU can run nothing more in this process, {err}; what was measured is in "
              f"{folder.csv}. Continue in a new process with:\n  rnnbench run {args.scenario} --resume {folder.path}",
              file=sys.stderr)
        return EXIT_UNITS_FAILED
    path = report.build(folder.path)
    outcomes = job_outcomes(folder.rows())
    counts = Counter(outcome for outcome, _ in outcomes.values())
    print(f"ran {ran} jobs now; of all {len(outcomes)}: {counts['measured']} measured, {counts['skipped']} skipped "
          f"for a stated reason, {counts['failed']} failed")
    print_targets(folder, scenario)
    print(f"report: {path}")
    failed = [(key, reason) for key, (outcome, reason) in outcomes.items() if outcome == "failed"]
    if failed:
        key, reason = failed[0]
        job = describe_job(dict(zip(JOB_COLUMNS, key)))
        print(f"rnnbench: {len(failed)} of {len(outcomes)} jobs failed, e.g. {job}: {reason} (all in the report's "
              f"failures section)", file=sys.stderr)
        return EXIT_UNITS_FAILED
    return 0


def cmd_report(args) -> int:
    if not (Path(args.run_dir) / CSV_NAME).exists():
        raise UsageError(f"{args.run_dir}: no {CSV_NAME} there; expected a run folder written by `rnnbench run`")
    path = report.build(args.run_dir)
    folder = RunFolder(args.run_dir)
    print_targets(folder, report.run_scenario(folder))
    print(f"report: {path}")
    return 0


def print_targets(folder: RunFolder, scenario) -> None:
    """A line per target of the run's scenario (None: it no longer parses): how many rows met it
    (rnnbench/targets.py); first, for a run on the CPU, that these are not the timings the targets are for."""
    if scenario is None or not scenario.targets:
        return
    if folder.environment().get("device") == "cpu":
        print("targets, counted on CPU timings (the Triton interpreter and PyTorch on a CPU); they are for a GPU:")
    for line in targets.summary_lines(load_frame(folder.path), scenario.targets):
        print(line)


def cmd_compare(args) -> int:
    for run in (args.run_a, args.run_b):
        if not (Path(run) / CSV_NAME).exists():
            raise UsageError(f"{run}: no {CSV_NAME} there; expected a run folder written by `rnnbench run`")
    try:
        print(report.compare(args.run_a, args.run_b, args.metric, args.threshold), end="")
    except ValueError as err:  # a --metric in neither run
        raise UsageError(str(err)) from None
    return 0


def cmd_list(args) -> int:
    device = device_here()
    folder = Path(args.scenarios)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder of scenarios (use --scenarios DIR)")
    print(f"Scenarios in {folder} (jobs: full sweep / cpu sweep):")
    for path in sorted(folder.glob("*.yaml")):
        try:
            full, cpu = (load_scenario(path, p) for p in ("full", "cpu"))
            print(f"  {path.name:<22} {full.name:<14} {len(runner.plan(full)):>5} / {len(runner.plan(cpu)):<4} "
                  f"{full.description}")
        except ScenarioError as err:
            print(f"  {path.name:<22} INVALID: {err}")
    print(f"\nBackends on this machine ({device.type}):")
    labels = {name: backend.label(device) for name, backend in BACKENDS.items()}
    name_width, label_width = max(map(len, labels)), max(map(len, labels.values()))
    for name, backend in BACKENDS.items():
        reason = backend.unavailable(device)
        state = f"unavailable: {reason}" if reason else "available"
        print(f"  {name:<{name_width}} {labels[name]:<{label_width}} {state}")
    return 0


def parse_case(spec: str, scenario) -> Case:
    """--case: an index into the scenario's cases, or key=value pairs applied to the first case."""
    cases = scenario.cases
    if spec.strip().isdigit():
        index = int(spec)
        if not cases:
            raise UsageError(f"--case {spec}: {scenario.source} has no sweep cases; give the shape, "
                             f"e.g. --case seq_len=256,batch=4,hidden=64")
        if index >= len(cases):
            raise UsageError(f"--case {spec}: {scenario.source} ({scenario.sweep} sweep) has {len(cases)} "
                             f"cases, numbered 0 to {len(cases) - 1}")
        return cases[index]
    values = dataclasses.asdict(cases[0]) if cases else {}
    given = {}
    for item in spec.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        key = CASE_ALIASES.get(key, key)
        if not sep or key not in CASE_FIELDS or not value.isdigit() or int(value) < 1:
            raise UsageError(f"--case {spec}: expected an index or key=value pairs with keys {', '.join(CASE_FIELDS)} "
                             f"(or T, B, H, I, L) and integer values >= 1, got {item!r}")
        given[key] = int(value)
    if "hidden" in given and "input_size" not in given and values.get("input_size") == values.get("hidden"):
        given["input_size"] = given["hidden"]
    values.update(given)
    missing = [k for k in ("seq_len", "batch", "hidden") if k not in values]
    if missing:
        raise UsageError(f"--case {spec}: {scenario.source} has no sweep cases to start from; give "
                         f"{', '.join(missing)}")
    values.setdefault("input_size", values["hidden"])
    return Case(**values)


def parse_backends(given: list[str] | None, scenario) -> list[str]:
    if not given:
        return scenario.ordered_backends()
    names = [n.strip() for item in given for n in item.split(",") if n.strip()]
    for name in names:
        if name not in BACKENDS:
            raise UsageError(f"--backend {name}: unknown backend; expected one of {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def profile_folder(args, scenario) -> tuple[Path, bool]:
    """The folder the profile goes into and whether it is an existing run folder."""
    if args.run_dir:
        if not Path(args.run_dir).is_dir():
            raise UsageError(f"--run-dir {args.run_dir}: no such folder")
        ran_on = RunFolder(args.run_dir).environment().get("device")
        if ran_on and ran_on != device_here().type:
            raise UsageError(f"--run-dir {args.run_dir}: that run was on {ran_on}, this machine profiles on "
                             f"{device_here().type}; profile into a new folder instead (leave out --run-dir)")
        return Path(args.run_dir), True
    folder = Path(args.out) / scenario.name / new_run_id(args, "-profile" + ("-cpu" if scenario.sweep == "cpu" else ""))
    if (folder / profiling.PROFILE_DIR / profiling.PROFILE_JSON).exists():
        raise UsageError(f"{folder} already holds a profile; pick another --run-id")
    return folder, False


def default_mode(scenario) -> str:
    return "forward+backward" if "forward+backward" in scenario.modes else scenario.modes[0]


def cmd_profile(args) -> int:
    device = device_here()
    scenario = load_scenario(args.scenario, choose_sweep(args.sweep, device))
    case = parse_case(args.case, scenario)
    backends = parse_backends(args.backend, scenario)
    folder, existing = profile_folder(args, scenario)
    notes = []
    if case.seq_len < launches.MIN_SEQ_LEN:
        notes.append(f"T={case.seq_len} is below {launches.MIN_SEQ_LEN}: the per-step grouping (recurrence vs the "
                     f"rest) may take per-layer work for per-step work")
    if args.nvtx and device.type != "cuda":
        notes.append("--nvtx asked for, but NVTX ranges need CUDA: none were emitted")
    if not existing:
        folder.mkdir(parents=True, exist_ok=True)
        env = capture(device, scenario, args.scenario)
        (folder / ENV_NAME).write_text(json.dumps(env | {"scenario": scenario.name}, indent=2))
        (folder / SCENARIO_NAME).write_text(Path(args.scenario).read_text())
    if device.type == "cpu":
        print("*** no CUDA GPU found: CPU profiler only (CPU time, launches counted from the ops, Triton in its "
              "interpreter); GPU-only parts are marked as such. ***", flush=True)
    dtype = args.dtype or scenario.dtypes[0]
    if not args.backend:  # the scenario's backends that serve this dtype (cudnn-fp16: bfloat16 only)
        backends = [b for b in backends if BACKENDS[b].serves(dtype)]
    request = profiling.Request(scenario, case, dtype, args.mode or default_mode(scenario), backends, device,
                                folder / profiling.PROFILE_DIR, nvtx=args.nvtx, compile_facts=not args.no_compile_facts,
                                command=shlex.join(["rnnbench", *args.argv]), notes=notes)
    spec = ",".join(f"{k}={v}" for k, v in dataclasses.asdict(case).items())
    print(f"writing {request.out}", flush=True)
    with measure.pinned_threads(device, scenario.timing.cpu_threads):
        data = profiling.run(request, args.scenario, spec, progress=not args.no_progress)
    run = RunFolder(folder)
    md = report.write_profile_md(folder, run.environment(), run.scenario_text())
    print(f"profile: {md}")
    if (folder / CSV_NAME).exists():
        print(f"report: {report.build(folder)}")
    for note in notes:
        print(f"note: {note}")
    if data["ncu_command"]:
        print(f"Nsight Compute on the persistent kernel{'' if device.type == 'cuda' else ' (on a GPU machine)'}:\n"
              f"  {data['ncu_command']}")
    return 0


def cmd_exchange(args) -> int:
    """One row per shape; a shape the split tier does not serve here is skipped with its reason."""
    device = device_here()
    if device.type != "cuda":
        raise UsageError("exchange needs a CUDA GPU: the split tier's programs exchange state while resident "
                         "at the same time, which the Triton interpreter cannot do")
    from tqdm import tqdm
    from triton.errors import TritonError
    rows, failed = [], 0
    shapes = [(hidden, batch) for hidden in args.hidden for batch in args.batch]
    # a bar on stderr where it is a terminal: each shape compiles and times three kernels
    for hidden, batch in tqdm(shapes, unit="shape", desc="exchange", disable=None, leave=False):
        try:
            rows.append(exchange.exchange_row(hidden, batch, getattr(torch, args.dtype), args.steps, device))
        except ValueError as err:  # the split tier does not serve this shape here
            tqdm.write(f"H={hidden} B={batch}: skipped: {err}", file=sys.stderr)
        except (RuntimeError, TritonError) as err:  # a launch's, a barrier's, Triton's (out of resources, a compile)
            failed += 1
            tqdm.write(f"H={hidden} B={batch}: failed: {type(err).__name__}: {first_line(err)}", file=sys.stderr)
    print(exchange.exchange_table(rows, args.at_most_us))
    if args.at_most_us is not None:
        print(exchange.bound_tally(rows, args.at_most_us))
    if args.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    return EXIT_UNITS_FAILED if failed else 0


COMMANDS = {"run": cmd_run, "profile": cmd_profile, "exchange": cmd_exchange, "report": cmd_report,
            "compare": cmd_compare, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return code
    except (ScenarioError, UsageError) as err:
        print(f"rnnbench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `rnnbench list | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: no second error at exit
        return EXIT_BROKEN_PIPE
