"""Scenario files: the YAML schema, its validation and the sweep (full or cpu) a run uses.

A scenario says which backends to compare on which shapes and what to measure. Every mistake in a
file is reported as one `ScenarioError` naming the file, the key path (e.g. `sweep.seq_len[2]`) and
what was expected; the CLI turns it into one line on stderr and exit code 2.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rnnbench.backends import BACKENDS, FP16_REFERENCE
from rnnbench.tasks import TASK_NAMES, make_task

DTYPES = ("float32", "float16", "bfloat16", "float64")
MODES = ("forward", "forward+backward")
METRICS = ("speed", "memory", "stability", "training")
OPTIMIZERS = ("sgd", "adam")

SCHEMA_HELP = """\
Scenario schema (YAML; keys marked * are required, the rest have the defaults shown):
  name*            str    names the results folder: letters, digits, '-', '_', '.'
  description      str    one line shown by `rnnbench list` and in the report ("")
  backends*        list   of: triton, triton-stepwise, triton-checkpoint, cudnn, cudnn-fp16, eager,
                          compile
  baseline         str    backend the speedups are measured against (first backend), or a list:
         or list          the first of them that ran for a case, dtype and mode (e.g. [cudnn,
                          triton-stepwise]: cuDNN refuses seq_len > 65535)
  dtypes           list   of: float32, float16, bfloat16, float64 ([float32])
  modes            list   of: forward, forward+backward (both); forward runs under no_grad
  nonlinearity     str    tanh or relu (tanh)
  allow_tf32       bool   let cuDNN/cuBLAS use TF32 for float32 (false)
  metrics          list   of: speed, memory, stability, training ([speed, memory])
  seed             int    seeds the weights and inputs of every case (0)
  sweep*           map    (* with the speed or memory metric) the cases, either a grid (every combination of the lists):
                            seq_len*, batch*, hidden*: int or list of ints
                            input_size: ints (= hidden), layers: ints (1)
                          or an explicit list:  cases: [{seq_len: .., batch: .., hidden: ..}, ...]
  timing           map    warmup_ms (25), rep_ms (100): least time spent warming up and measuring
                          each case (on CPU both go on, up to 10x, until the calls agree);
                          min_reps (5): fewest timed calls (CPU); cpu_threads (1): threads
                          of PyTorch and BLAS on CPU, the same for every backend; cuda_graphs
                          (false): on CUDA, each call captured into a CUDA graph once warm and
                          its replays timed, the GPU's time without the host's (Python, launches);
                          both: the calls timed as usual, then their replays beside them
                          (graph_time_per_step)
  stability        map    seq_lens ([64, 256, 1024]): T values for the error-vs-T study
                          batch (4), hidden (64): its shape (one layer, input_size = hidden)
                          spectral_radii ([0.5, 0.9, 1.0, 1.1]): spectral radius of U
                          curve_seq_len (largest of seq_lens): T of the ||dL/dh_t|| curve
                          input_scale (0.01): std of the inputs; small keeps tanh out of
                          saturation so radii > 1 show exploding gradients
  training         map    tasks ([adding]): adding and/or copy, generated on the fly
                          seq_lens ([100]), batch (32), hidden (128): the model's shape (one layer)
                          steps (200): optimizer steps; optimizer: sgd or adam (sgd); lr (0.01)
                          clip ([null]): gradient norms to clip to (clip_grad_norm_'s rule), null = none
                          radii ([null]): spectral radius of U at initialisation, null = nn.RNN's
                          eval_batch (256): held-out batch for the final loss and accuracy
                          copy_length (10), copy_alphabet (8): symbols to recall, from how many
                          adding_tolerance (0.04): a sum within this of the target counts as right
                          dtypes float16 and bfloat16 train fp32 weights under autocast (float16
                          with a GradScaler)
  targets          list   speedups the report checks row by row (none), each a map:
                            name*: shown in the report; backend*: the backend held to it;
                            over*: a backend or a list, the fastest of them that ran in the row;
                            at_least: their p50 latency / the backend's, or at_most: the
                            backend's / theirs (one of the two); at: case fields whose values
                            give the rows of `over` instead (e.g. {batch: 8}; `over` may then be
                            the backend itself); where: which rows, by dtypes, modes, seq_len,
                            batch, hidden, input_size, layers (a value or a list each; all rows
                            if absent)
  cpu              map    any of the keys above except name/description, replacing them when
                          no CUDA GPU is present (the "cpu sweep": smaller shapes)
"""


# A scenario name and a --run-id become folder names under the results root: nothing that could
# climb out of it or hide (no path separators, no "..", no leading dot or dash).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAFE_NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit, with no '..'"


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


def cpu_sweep_text(data: dict) -> str:
    """What the cpu sweep of the scenario `data` (its YAML mapping) runs, in words."""
    if "cpu" in data:
        return "the scenario's smaller `cpu:` sweep"
    return "the scenario's full sweep (it has no `cpu:` section)"


class ScenarioError(ValueError):
    """A scenario file that cannot be used: says where (file and key path) and what was expected."""

    def __init__(self, source: str, keypath: str, message: str):
        self.source, self.keypath = source, keypath
        where = f"{source}: {keypath}: " if keypath else f"{source}: "
        super().__init__(where + message)


@dataclass(frozen=True, order=True)
class Case:
    """One shape of the sweep."""
    seq_len: int
    batch: int
    hidden: int
    input_size: int
    layers: int = 1

    @property
    def label(self) -> str:
        """The case in tables, plots and progress lines."""
        return f"T={self.seq_len} B={self.batch} H={self.hidden} I={self.input_size} L={self.layers}"

    @classmethod
    def from_row(cls, row: Mapping) -> Case:
        """The case of a results row (CSV strings or numbers), or of any mapping with the case fields."""
        return cls(*(int(row[name]) for name in CASE_FIELDS))


CASE_FIELDS = tuple(f.name for f in fields(Case))  # also the case columns of results.csv


@dataclass(frozen=True)
class Timing:
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_reps: int = 5
    cpu_threads: int = 1  # more threads than free cores makes CPU timings swing (measure.pinned_threads)
    # On CUDA, time each call replayed from a CUDA graph: the GPU's work, not the host's; "both": as usual, and the
    # replays beside (graph_time_per_step)
    cuda_graphs: bool | str = False


@dataclass(frozen=True)
class Stability:
    seq_lens: tuple[int, ...] = (64, 256, 1024)
    batch: int = 4
    hidden: int = 64
    spectral_radii: tuple[float, ...] = (0.5, 0.9, 1.0, 1.1)
    curve_seq_len: int | None = None
    input_scale: float = 0.01

    @property
    def curve_len(self) -> int:
        return self.curve_seq_len or max(self.seq_lens)


@dataclass(frozen=True)
class Training:
    """The training metric's settings (rnnbench/training.py runs them, rnnbench/tasks.py defines the tasks)."""
    tasks: tuple[str, ...] = ("adding",)
    seq_lens: tuple[int, ...] = (100,)
    batch: int = 32
    hidden: int = 128
    steps: int = 200
    optimizer: str = "sgd"
    lr: float = 0.01
    clip: tuple[float | None, ...] = (None,)
    radii: tuple[float | None, ...] = (None,)
    eval_batch: int = 256
    copy_length: int = 10
    copy_alphabet: int = 8
    adding_tolerance: float = 0.04


@dataclass(frozen=True)
class Target:
    """A speed target (rnnbench/targets.py checks it), in every row (mode, dtype, case) that `where` selects, against
    the fastest of `over` that ran in that row, or (at) in the row with these case fields changed: the backend's p50
    latency at least at_least times below theirs (a speedup), or at most at_most times theirs (a time ratio)."""
    name: str
    backend: str
    over: tuple[str, ...]
    at_least: float | None = None
    where: tuple[tuple[str, tuple], ...] = ()  # (dtypes, modes or a case field; the values it may take)
    at_most: float | None = None
    at: tuple[tuple[str, int], ...] = ()  # (a case field, its value in the rows compared with)

    def selects(self, mode: str, dtype: str, case: Case) -> bool:
        values = {"dtypes": dtype, "modes": mode, **{name: getattr(case, name) for name in CASE_FIELDS}}
        return all(values[key] in allowed for key, allowed in self.where)

    def reference(self, case: Case) -> Case:
        """The case whose rows of `over` a row of this case is compared with."""
        return dataclasses.replace(case, **dict(self.at))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    backends: tuple[str, ...]
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]
    nonlinearity: str
    allow_tf32: bool
    metrics: tuple[str, ...]
    seed: int
    cases: tuple[Case, ...]
    timing: Timing
    stability: Stability
    baselines: tuple[str, ...]
    training: Training = field(default_factory=Training)
    targets: tuple[Target, ...] = ()
    sweep: str = "full"
    source: str = field(default="", compare=False)
    data: dict = field(default_factory=dict, compare=False)

    @property
    def baseline(self) -> str:
        """The first baseline: the one speedups are against wherever it ran."""
        return self.baselines[0]

    def ordered_backends(self) -> list[str]:
        """The first baseline, the float16 cuDNN reference if present, the other baselines, then the
        others in file order: speedups need the times of those that come first (the reference is
        cuDNN as well, so it stops where the first baseline does and needs no fallback)."""
        fp16 = [FP16_REFERENCE] if FP16_REFERENCE in self.backends else []
        first = list(dict.fromkeys([self.baselines[0], *fp16, *self.baselines[1:]]))
        return first + [b for b in self.backends if b not in first]


# ---- small typed readers: each returns the value or raises ScenarioError at `at` ----------------

def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, at: str, message: str):
        raise ScenarioError(self.source, at, message)

    def mapping(self, value, at: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.fail(at, f"expected a mapping with keys {', '.join(allowed)}, got {_describe(value)}")
        for key in value:
            if key not in allowed:
                self.fail(_join(at, str(key)), f"unknown key; expected one of: {', '.join(allowed)}")
        return value

    def string(self, value, at: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or (choices is not None and value not in choices):
            expected = f"one of {', '.join(choices)}" if choices else "a string"
            self.fail(at, f"expected {expected}, got {_describe(value)}")
        return value

    def boolean(self, value, at: str) -> bool:
        if not isinstance(value, bool):
            self.fail(at, f"expected true or false, got {_describe(value)}")
        return value

    def boolean_or_both(self, value, at: str) -> bool | str:
        if not (isinstance(value, bool) or value == "both"):
            self.fail(at, f"expected true, false or both, got {_describe(value)}")
        return value

    def positive_int(self, value, at: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(at, f"expected an integer >= {minimum}, got {_describe(value)}")
        return value

    def positive_float(self, value, at: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(at, f"expected a number > 0, got {_describe(value)}")
        return float(value)

    def positive_float_or_null(self, value, at: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(at, f"expected a number > 0 or null, got {_describe(value)}")
        return float(value)

    def listing(self, value, at: str, item, scalar_ok: bool = False) -> tuple:
        """A non-empty list whose items pass `item(value, at)`; a bare scalar if scalar_ok."""
        if scalar_ok and not isinstance(value, (list, dict)):
            value = [value]
        if not isinstance(value, list):
            self.fail(at, f"expected a list, got {_describe(value)}")
        if not value:
            self.fail(at, "expected a non-empty list, got an empty one")
        items = tuple(item(v, f"{at}[{i}]") for i, v in enumerate(value))
        if len(set(items)) != len(items):
            self.fail(at, f"expected distinct values, got {list(items)}")
        return items


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


# ---- the schema ------------------------------------------------------------------------------

SETTING_KEYS = ("backends", "baseline", "dtypes", "modes", "nonlinearity", "allow_tf32", "metrics", "seed",
                "sweep", "timing", "stability", "training", "targets")
TOP_KEYS = ("name", "description") + SETTING_KEYS + ("cpu",)
TIMING_KEYS = ("warmup_ms", "rep_ms", "min_reps", "cpu_threads", "cuda_graphs")
STABILITY_KEYS = ("seq_lens", "batch", "hidden", "spectral_radii", "curve_seq_len", "input_scale")
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(Training))
TARGET_KEYS = ("name", "backend", "over", "at_least", "at_most", "at", "where")
WHERE_KEYS = ("dtypes", "modes") + CASE_FIELDS


def _backend_name(r: _Reader):
    return lambda v, at: r.string(v, at, tuple(BACKENDS))


def _read_sweep(r: _Reader, raw, at: str) -> tuple[Case, ...]:
    if isinstance(raw, dict) and "cases" in raw:
        r.mapping(raw, at, ("cases",))
        return r.listing(raw["cases"], _join(at, "cases"), lambda v, a: _read_case(r, v, a))
    grid = r.mapping(raw, at, CASE_FIELDS + ("cases",))
    lists = {}
    for key in CASE_FIELDS:
        if key in grid:
            lists[key] = r.listing(grid[key], _join(at, key), r.positive_int, scalar_ok=True)
        elif key in ("seq_len", "batch", "hidden"):
            r.fail(_join(at, key), "missing; expected an integer or a list of integers")
    combos = []
    for values in itertools.product(*lists.values()):
        case = dict(zip(lists, values))
        case.setdefault("input_size", case["hidden"])
        combos.append(Case(**case))
    return tuple(sorted(combos))


def _read_case(r: _Reader, raw, at: str) -> Case:
    case = r.mapping(raw, at, CASE_FIELDS)
    for key in ("seq_len", "batch", "hidden"):
        if key not in case:
            r.fail(_join(at, key), "missing; expected an integer")
    values = {k: r.positive_int(v, _join(at, k)) for k, v in case.items()}
    values.setdefault("input_size", values["hidden"])
    return Case(**values)


def _read_timing(r: _Reader, raw, at: str) -> Timing:
    raw = r.mapping(raw, at, TIMING_KEYS)
    readers = {"min_reps": r.positive_int, "cpu_threads": r.positive_int, "cuda_graphs": r.boolean_or_both}
    values = {k: readers.get(k, r.positive_float)(v, _join(at, k)) for k, v in raw.items()}
    return Timing(**values)


def _read_stability(r: _Reader, raw, at: str) -> Stability:
    raw = r.mapping(raw, at, STABILITY_KEYS)
    readers = {"seq_lens": lambda v, a: r.listing(v, a, r.positive_int),
               "spectral_radii": lambda v, a: r.listing(v, a, r.positive_float),
               "batch": r.positive_int, "hidden": r.positive_int, "curve_seq_len": r.positive_int,
               "input_scale": r.positive_float}
    return Stability(**{k: readers[k](v, _join(at, k)) for k, v in raw.items()})


def _read_training(r: _Reader, raw, at: str) -> Training:
    raw = r.mapping(raw, at, TRAINING_KEYS)
    readers = {"tasks": lambda v, a: r.listing(v, a, lambda x, b: r.string(x, b, TASK_NAMES)),
               "seq_lens": lambda v, a: r.listing(v, a, r.positive_int), "batch": r.positive_int,
               "hidden": r.positive_int, "steps": r.positive_int,
               "optimizer": lambda v, a: r.string(v, a, OPTIMIZERS), "lr": r.positive_float,
               "clip": lambda v, a: r.listing(v, a, r.positive_float_or_null),
               "radii": lambda v, a: r.listing(v, a, r.positive_float_or_null),
               "eval_batch": r.positive_int, "copy_length": r.positive_int,
               "copy_alphabet": lambda v, a: r.positive_int(v, a, minimum=2), "adding_tolerance": r.positive_float}
    training = Training(**{k: readers[k](v, _join(at, k)) for k, v in raw.items()})
    for task in training.tasks:  # each task says how short a sequence it can use
        shortest = make_task(task, training).min_seq_len()
        for i, seq_len in enumerate(training.seq_lens):
            if seq_len < shortest:
                r.fail(_join(at, f"seq_lens[{i}]"), f"expected an integer >= {shortest} (the {task} task's shortest "
                                                    f"sequence), got {seq_len}")
    return training


def _read_target(r: _Reader, raw, at: str) -> Target:
    raw = r.mapping(raw, at, TARGET_KEYS)
    expected = {"name": "a string", "backend": "a backend", "over": "a backend or a list of backends"}
    for key, what in expected.items():
        if key not in raw:
            r.fail(_join(at, key), f"missing; expected {what}")
    if ("at_least" in raw) == ("at_most" in raw):
        r.fail(_join(at, "at_least"), "expected either at_least (a speedup) or at_most (a ratio of times), "
                                      + ("not both" if "at_least" in raw else "got neither"))
    over = r.listing(raw["over"], _join(at, "over"), _backend_name(r), scalar_ok=True)
    if raw["backend"] in over and not raw.get("at"):  # an empty `at` would compare each row with itself
        r.fail(_join(at, "over"), f"expected backends other than the one held to the target ({raw['backend']}), "
                                  "or an `at` that compares it with its own other rows")
    where = r.mapping(raw.get("where", {}), _join(at, "where"), WHERE_KEYS)
    readers = {"dtypes": lambda v, a: r.string(v, a, DTYPES), "modes": lambda v, a: r.string(v, a, MODES)}
    bound = {key: r.positive_float(raw[key], _join(at, key)) for key in ("at_least", "at_most") if key in raw}
    return Target(r.string(raw["name"], _join(at, "name")), _backend_name(r)(raw["backend"], _join(at, "backend")),
                  over, where=tuple((key, r.listing(value, _join(_join(at, "where"), key),
                                                    readers.get(key, r.positive_int), scalar_ok=True))
                                    for key, value in where.items()),
                  at=tuple((key, r.positive_int(value, _join(_join(at, "at"), key)))
                           for key, value in r.mapping(raw.get("at", {}), _join(at, "at"), CASE_FIELDS).items()),
                  **bound)


def _read_settings(r: _Reader, raw: dict, at: str) -> dict:
    """Validates the setting keys present in raw (top level or the cpu: section); returns parsed values."""
    readers = {
        "backends": lambda v, a: r.listing(v, a, _backend_name(r)),
        "baseline": lambda v, a: (_backend_name(r)(v, a),) if isinstance(v, str) else r.listing(v, a, _backend_name(r)),
        "dtypes": lambda v, a: r.listing(v, a, lambda x, b: r.string(x, b, DTYPES)),
        "modes": lambda v, a: r.listing(v, a, lambda x, b: r.string(x, b, MODES)),
        "nonlinearity": lambda v, a: r.string(v, a, ("tanh", "relu")),
        "allow_tf32": r.boolean,
        "metrics": lambda v, a: r.listing(v, a, lambda x, b: r.string(x, b, METRICS)),
        "seed": lambda v, a: r.positive_int(v, a, minimum=0),
        "sweep": lambda v, a: _read_sweep(r, v, a),
        "timing": lambda v, a: _read_timing(r, v, a),
        "stability": lambda v, a: _read_stability(r, v, a),
        "training": lambda v, a: _read_training(r, v, a),
        "targets": lambda v, a: r.listing(v, a, lambda x, b: _read_target(r, x, b)),
    }
    return {k: readers[k](v, _join(at, k)) for k, v in raw.items() if k in readers}


DEFAULTS = {"description": "", "dtypes": ("float32",), "modes": MODES, "nonlinearity": "tanh",
            "allow_tf32": False, "metrics": ("speed", "memory"), "seed": 0, "timing": Timing(),
            "stability": Stability(), "training": Training()}


def _combine(r: _Reader, top: dict, chosen: dict) -> dict:
    """The values of one sweep: defaults, then the top level, then `chosen` (the cpu: section or
    nothing), checked across keys; errors name the key path where the value came from."""
    values = {**DEFAULTS, **top, **chosen}

    def at(key: str) -> str:
        return "cpu." + key if key in chosen else key

    if "backends" not in values:
        r.fail("backends", "missing; expected a list of backends")
    if "sweep" not in values:
        if {"speed", "memory"} & set(values["metrics"]):
            r.fail("sweep", "missing; expected a mapping of the cases (needed by the speed and memory metrics)")
        values["sweep"] = ()
    values["baselines"] = values.pop("baseline", values["backends"][:1])
    def require_backend(name: str, where: str) -> None:
        if name not in values["backends"]:
            r.fail(where, f"expected one of the scenario's backends ({', '.join(values['backends'])}), got {name!r}")

    for i, name in enumerate(values["baselines"]):
        require_backend(name, at("baseline") + (f"[{i}]" if len(values["baselines"]) > 1 else ""))
    for i, target in enumerate(values.get("targets", ())):
        for key, names in (("backend", (target.backend,)), ("over", target.over)):
            for name in names:
                require_backend(name, f"{at('targets')}[{i}].{key}")
    stab = values["stability"]
    if stab.curve_seq_len is not None and stab.curve_seq_len not in stab.seq_lens:
        r.fail(at("stability") + ".curve_seq_len",
               f"expected one of stability.seq_lens {list(stab.seq_lens)}, got {stab.curve_seq_len}")
    values["cases"] = values.pop("sweep")
    return values


def parse_scenario(data: Any, source: str, sweep: str) -> Scenario:
    """A Scenario from the loaded YAML `data`; sweep is "full" or "cpu" (the cpu: section on top)."""
    r = _Reader(source)
    data = r.mapping(data, "", TOP_KEYS)
    top = _read_settings(r, data, "")
    if "name" not in data:
        r.fail("name", "missing; expected a string")
    top["name"] = r.string(data["name"], "name")
    if not is_safe_name(top["name"]):
        r.fail("name", f"expected {SAFE_NAME_RULE} (it names the results folder), got {top['name']!r}")
    if "description" in data:
        top["description"] = r.string(data["description"], "description")
    cpu = _read_settings(r, r.mapping(data["cpu"], "cpu", SETTING_KEYS), "cpu") if "cpu" in data else {}
    # both sweeps are checked whichever runs: a mistake in the cpu: section fails on a GPU box too
    sweeps = {"full": _combine(r, top, {}), "cpu": _combine(r, top, cpu)}
    return Scenario(**sweeps[sweep], sweep=sweep, source=source, data=data)


def load_scenario(path: str | Path, sweep: str = "full") -> Scenario:
    """Reads and validates a scenario file; every problem is a ScenarioError."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ScenarioError(source, "", f"cannot read the scenario file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(source, "", f"{where}not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_scenario(data, source, sweep)
