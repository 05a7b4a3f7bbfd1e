"""The long-format results table and the run folder that holds it.

One row per backend, mode, dtype, case and metric (plus the spectral radius and time step for the
stability study), with p20/p50/p80 and an error column, as in Liger-Kernel's benchmark CSV.
Single-valued metrics (memory, errors, speedup) fill p50 only. Rows are appended and flushed as
each unit of work finishes, so an interrupted run keeps what it measured; a unit is identified by
UNIT_COLUMNS, which is how `--resume` knows what is done.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

CASE_COLUMNS = ["seq_len", "batch", "hidden", "input_size", "layers"]
UNIT_COLUMNS = ["kind", "backend", "mode", "dtype", *CASE_COLUMNS, "radius"]
COLUMNS = ["scenario", *UNIT_COLUMNS[:2], "label", *UNIT_COLUMNS[2:], "step", "metric", "unit",
           "p20", "p50", "p80", "error", "note", "device", "timestamp"]

CSV_NAME, JSON_NAME, ENV_NAME, SCENARIO_NAME, INFLIGHT_NAME = (
    "results.csv", "results.json", "environment.json", "scenario.yaml", "inflight.json")


@dataclass(frozen=True)
class Unit:
    """One piece of work whose rows are written together: a backend on one case, dtype and mode
    (kind "bench"), in the stability study at one T and spectral radius (kind "stability"), or
    training on one task at one T (kind "training"; mode names the task, radius U's at the start)."""
    kind: str
    backend: str
    mode: str
    dtype: str
    case: object
    radius: float | None = None

    def key(self) -> tuple:
        return (self.kind, self.backend, self.mode, self.dtype, *(getattr(self.case, c) for c in CASE_COLUMNS),
                "" if self.radius is None else f"{self.radius:g}")

    def describe(self) -> str:
        return describe_unit(self.kind, self.backend, self.mode, self.dtype, self.case.label,
                             "" if self.radius is None else f"{self.radius:g}")


def describe_unit(kind: str, backend: str, mode: str, dtype: str, case_label: str, radius: str) -> str:
    """A unit in words, for progress and error lines."""
    return f"{kind} {backend} {dtype} {mode} {case_label}" + (f" rho={radius}" if radius else "")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """results/<scenario>/<run-id>/: results.csv grows row by row; the rest is written around it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.csv = self.path / CSV_NAME

    def create(self, scenario_text: str, environment: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SCENARIO_NAME).write_text(scenario_text)
        (self.path / ENV_NAME).write_text(json.dumps(environment, indent=2))
        with self.csv.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    def append(self, rows: list[dict]) -> None:
        """Writes rows in one write (an interrupt lands before or after it, never between rows)
        and forces them to disk."""
        text = io.StringIO()
        csv.DictWriter(text, COLUMNS).writerows(rows)
        with self.csv.open("a", newline="") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict]:
        """The rows on disk; a last line cut short by a crash is dropped (and the file repaired)."""
        with self.csv.open(newline="") as f:
            lines = f.read().splitlines(keepends=True)
        good = [line for line in lines if line.endswith("\n") and len(next(csv.reader([line]))) == len(COLUMNS)]
        if len(good) != len(lines):
            self.csv.write_text("".join(good))
        return list(csv.DictReader(good))

    def done(self) -> set[tuple]:
        return {tuple(row[c] for c in UNIT_COLUMNS) for row in self.rows()}

    def environment(self) -> dict:
        path = self.path / ENV_NAME
        return json.loads(path.read_text()) if path.exists() else {}

    def scenario_text(self) -> str:
        return (self.path / SCENARIO_NAME).read_text()

    # a unit that kills the process (a hard crash) must not kill every resumed run too
    def mark_inflight(self, unit: Unit | None) -> None:
        path = self.path / INFLIGHT_NAME
        if unit is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps({"key": list(map(str, unit.key())), "unit": unit.describe()}))

    def inflight(self) -> dict | None:
        path = self.path / INFLIGHT_NAME
        return json.loads(path.read_text()) if path.exists() else None


# Which way is better for each metric (names or name prefixes); grad_norm, a property of the
# weights, has no better direction.
LOWER_IS_BETTER = ("latency", "time_per_step", "peak_memory", "activation_memory", "rel_err_", "nonfinite",
                   "eval_loss", "time_per_train_step")
HIGHER_IS_BETTER = ("tokens_per_s", "tflops", "speedup", "eval_accuracy")


def better(metric: str) -> str:
    """"lower", "higher" or "" (no better direction)."""
    if metric.startswith(LOWER_IS_BETTER):
        return "lower"
    return "higher" if metric.startswith(HIGHER_IS_BETTER) else ""


# The error column of a unit that was not measured for a known, stated reason starts with one of
# these (a backend unavailable here, a case beyond what a backend attempts, a metric this device
# cannot give); any other error is a failure: an exception, out of memory, a crash.
KNOWN_REASONS = ("unavailable: ", "skipped: ", "not measured: ")


def is_failure(error: str) -> bool:
    return bool(error) and not error.startswith(KNOWN_REASONS)


def unit_outcomes(rows: list[dict]) -> dict[tuple, tuple[str, str]]:
    """(outcome, reason) of every unit in rows, by unit key: "failed" with its first failure,
    "skipped" when every row has a known reason (the first one), else "measured"."""
    outcomes: dict[tuple, tuple[str, str]] = {}
    for row in rows:
        key = tuple(row[c] for c in UNIT_COLUMNS)
        outcome, reason = outcomes.get(key, ("skipped", ""))
        if outcome == "failed":
            continue
        if is_failure(row["error"]):
            outcomes[key] = ("failed", row["error"])
        elif not row["error"] or outcome == "measured":
            outcomes[key] = ("measured", "")
        else:
            outcomes[key] = ("skipped", reason or row["error"])
    return outcomes


def unit_key_strings(unit: Unit) -> tuple:
    """The unit key as it reads back from the CSV (all strings)."""
    return tuple(str(v) for v in unit.key())


def load_frame(run_dir: str | Path) -> pd.DataFrame:
    """results.csv as a DataFrame with numeric columns parsed and blanks as NaN / ""."""
    frame = pd.read_csv(Path(run_dir) / CSV_NAME, dtype={"radius": str, "error": str, "note": str, "label": str})
    for column in ("error", "note", "label", "radius"):
        frame[column] = frame[column].fillna("")
    return frame
