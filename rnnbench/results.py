"""The long-format results table and the run folder that holds it.

One row per backend, mode, dtype, case and metric (plus the spectral radius and time step for the
stability study), with p20/p50/p80 and an error column, as in Liger-Kernel's benchmark CSV.
Single-valued metrics (memory, errors, speedup) fill p50 only; the column `unit` is the
measurement unit (ms, MiB, ...). Rows are appended and flushed as each *job* (a backend on one case,
dtype and mode) finishes, so an interrupted run keeps what it measured; a job is identified by
JOB_COLUMNS, which is how `--resume` knows what is done.
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

from rnnbench.schema import CASE_FIELDS, Case

JOB_COLUMNS = ["kind", "backend", "mode", "dtype", *CASE_FIELDS, "radius"]
COLUMNS = ["scenario", *JOB_COLUMNS[:2], "label", *JOB_COLUMNS[2:], "step", "metric", "unit",
           "p20", "p50", "p80", "error", "note", "device", "timestamp"]

CSV_NAME, JSON_NAME, ENV_NAME, SCENARIO_NAME, INFLIGHT_NAME, JOBS_NAME = (
    "results.csv", "results.json", "environment.json", "scenario.yaml", "inflight.json", "jobs.csv")
# jobs.csv: a line per job run, with its wall time and, on CUDA, the memory before it (MiB; see
# measure.cuda_memory): memory held across jobs shows there.
MEMORY_COLUMNS = ["allocated_mib", "reserved_mib", "free_mib", "total_mib"]
JOB_LOG_COLUMNS = [*JOB_COLUMNS, "started", "seconds", "outcome", *MEMORY_COLUMNS]


@dataclass(frozen=True)
class Job:
    """One piece of work whose rows are written together: a backend on one case, dtype and mode
    (kind "bench"), in the stability study at one T and spectral radius (kind "stability"), or
    training on one task at one T (kind "training"; mode names the task, radius U's at the start)."""
    kind: str
    backend: str
    mode: str
    dtype: str
    case: Case
    radius: float | None = None

    def key(self) -> tuple[str, ...]:
        """The job's JOB_COLUMNS as they read back from the CSV (all strings)."""
        values = (self.kind, self.backend, self.mode, self.dtype, *(getattr(self.case, c) for c in CASE_FIELDS),
                  "" if self.radius is None else f"{self.radius:g}")
        return tuple(map(str, values))

    def describe(self) -> str:
        return describe_job(dict(zip(JOB_COLUMNS, self.key())))


def job_key(row: dict) -> tuple[str, ...]:
    """The key of the job a results row belongs to (as strings, as the CSV reads back)."""
    return tuple(str(row[c]) for c in JOB_COLUMNS)


def describe_job(row: dict) -> str:
    """A job in words, for progress and error lines, from its key columns (a row or Job.key())."""
    radius = row["radius"]
    return (f"{row['kind']} {row['backend']} {row['dtype']} {row['mode']} {Case.from_row(row).label}"
            + (f" rho={radius}" if radius else ""))


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

    def log_job(self, job: Job, started: str, seconds: float, outcome: str, memory: dict[str, float]) -> None:
        """Appends the job's line to jobs.csv (created with its header on first use)."""
        path = self.path / JOBS_NAME
        fresh = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, JOB_LOG_COLUMNS)
            if fresh:
                writer.writeheader()
            writer.writerow(dict(zip(JOB_COLUMNS, job.key())) | {"started": started, "seconds": round(seconds, 3),
                                                                  "outcome": outcome} | memory)

    def job_log(self) -> pd.DataFrame:
        """jobs.csv as a DataFrame (empty for a run written before it existed)."""
        path = self.path / JOBS_NAME
        if not path.exists():
            return pd.DataFrame(columns=JOB_LOG_COLUMNS)
        return pd.read_csv(path, dtype={"radius": str}, keep_default_na=False,
                           na_values={c: [""] for c in MEMORY_COLUMNS})

    def rows(self) -> list[dict]:
        """The rows on disk; a last line cut short by a crash is dropped (and the file repaired)."""
        with self.csv.open(newline="") as f:
            lines = f.read().splitlines(keepends=True)
        good = [line for line in lines if line.endswith("\n") and len(next(csv.reader([line]))) == len(COLUMNS)]
        if len(good) != len(lines):
            self.csv.write_text("".join(good))
        return list(csv.DictReader(good))

    def done(self) -> set[tuple]:
        return {job_key(row) for row in self.rows()}

    def environment(self) -> dict:
        path = self.path / ENV_NAME
        return json.loads(path.read_text()) if path.exists() else {}

    def scenario_text(self) -> str:
        return (self.path / SCENARIO_NAME).read_text()

    # a job that kills the process (a hard crash) must not kill every resumed run too
    def mark_inflight(self, job: Job | None) -> None:
        path = self.path / INFLIGHT_NAME
        if job is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps({"key": list(job.key()), "job": job.describe()}))

    def inflight(self) -> dict | None:
        path = self.path / INFLIGHT_NAME
        return json.loads(path.read_text()) if path.exists() else None


# Which way is better for each metric (names or name prefixes); grad_norm, a property of the
# weights, has no better direction.
LOWER_IS_BETTER = ("latency", "time_per_step", "graph_time_per_step", "host_time", "peak_memory", "activation_memory",
                   "rel_err_", "nonfinite", "eval_loss", "time_per_train_step")
HIGHER_IS_BETTER = ("tokens_per_s", "tflops", "speedup", "eval_accuracy")


def better(metric: str) -> str:
    """"lower", "higher" or "" (no better direction)."""
    if metric.startswith(LOWER_IS_BETTER):
        return "lower"
    return "higher" if metric.startswith(HIGHER_IS_BETTER) else ""


# The error column of a job that was not measured for a known, stated reason starts with one of
# these (a backend unavailable here, a case beyond what a backend attempts, a metric this device
# cannot give); any other error is a failure: an exception, out of memory, a crash.
KNOWN_REASONS = ("unavailable: ", "skipped: ", "not measured: ")


def is_failure(error: str) -> bool:
    return bool(error) and not error.startswith(KNOWN_REASONS)


# The note of a speedup over a baseline other than the scenario's first (that one did not run):
# "fallback baseline <backend>: <why the first did not run>".
FALLBACK_NOTE = "fallback baseline "


def fallback_note(backend: str, why: str) -> str:
    return f"{FALLBACK_NOTE}{backend}: {why}"


def fallback_baseline(note: str) -> tuple[str, str] | None:
    """(backend, why) of a fallback_note among a row's notes ("; "-separated), or None."""
    for part in note.split("; "):
        if part.startswith(FALLBACK_NOTE):
            backend, _, why = part[len(FALLBACK_NOTE):].partition(": ")
            return backend, why
    return None


def job_outcomes(rows: list[dict]) -> dict[tuple, tuple[str, str]]:
    """(outcome, reason) of every job in rows, by job key: "failed" with its first failure,
    "skipped" when every row has a known reason (the first one), else "measured"."""
    outcomes: dict[tuple, tuple[str, str]] = {}
    for row in rows:
        key = job_key(row)
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


def load_frame(run_dir: str | Path) -> pd.DataFrame:
    """results.csv as a DataFrame with numeric columns parsed and blanks as NaN / ""."""
    frame = pd.read_csv(Path(run_dir) / CSV_NAME, dtype={"radius": str, "error": str, "note": str, "label": str})
    for column in ("error", "note", "label", "radius"):
        frame[column] = frame[column].fillna("")
    return frame
