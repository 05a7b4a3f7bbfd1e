"""The long-format results table and the run folder that holds it.

One row per backend, mode, dtype, case and metric (plus the spectral radius and time step for the
stability study), with p20/p50/p80 and an error column, as in Liger-Kernel's benchmark CSV.
Single-valued metrics (memory, errors, speedup) fill p50 only. Rows are appended and flushed as
each unit of work finishes, so an interrupted run keeps what it measured; a unit is identified by
UNIT_COLUMNS, which is how `--resume` knows what is done.
"""
from __future__ import annotations

import csv
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
    (kind "bench"), or in the stability study at one T and spectral radius (kind "stability")."""
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
        radius = "" if self.radius is None else f" rho={self.radius:g}"
        return f"{self.kind} {self.backend} {self.dtype} {self.mode} {self.case.label}{radius}"


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
        """Writes rows at once and forces them to disk."""
        with self.csv.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerows(rows)
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


def unit_key_strings(unit: Unit) -> tuple:
    """The unit key as it reads back from the CSV (all strings)."""
    return tuple(str(v) for v in unit.key())


def load_frame(run_dir: str | Path) -> pd.DataFrame:
    """results.csv as a DataFrame with numeric columns parsed and blanks as NaN / ""."""
    frame = pd.read_csv(Path(run_dir) / CSV_NAME, dtype={"radius": str, "error": str, "note": str, "label": str})
    for column in ("error", "note", "label", "radius"):
        frame[column] = frame[column].fillna("")
    return frame
