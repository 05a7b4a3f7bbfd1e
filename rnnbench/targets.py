"""Speed targets a scenario sets (`targets:`), checked row by row against a run's latencies.

A target holds one backend to a speedup over the fastest of one or more others, in each row (mode, dtype, case) its
`where` selects:

    ratio = min over the backends of `over` that ran in the row (their p50 latency) / the backend's p50 latency

and the row meets it when ratio >= at_least. "The fastest of them that ran" is how a target says "the fastest cuDNN
path a user could choose": `over: [cudnn, cudnn-fp16]` in a bfloat16 row is cuDNN in bfloat16 or in float16,
whichever was faster there. A row where the backend, or every one of `over`, has no latency is not measured, and
counts neither way. The report (report.py) has a section for them; `rnnbench run` and `rnnbench report` print a line
per target, `rnnbench compare` a table of both runs' lines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from rnnbench.schema import Case, Target


@dataclass(frozen=True)
class TargetRow:
    """One row a target selects: the ratio and which of `over` was fastest, or why it was not measured."""
    mode: str
    dtype: str
    case: Case
    ratio: float | None = None
    fastest: str = ""
    not_measured: str = ""

    def met(self, target: Target) -> bool:
        return self.ratio is not None and self.ratio >= target.at_least


def target_rows(bench: pd.DataFrame, target: Target) -> list[TargetRow]:
    """The rows of a run's bench results (results.csv, kind "bench") that the target selects, by mode, dtype and
    case."""
    latency = bench[bench.metric == "latency"]
    latency = latency.assign(case=[Case.from_row(r) for r in latency.to_dict("records")])
    return [_row(group, target, mode, dtype, case)
            for (mode, dtype, case), group in latency.groupby(["mode", "dtype", "case"])
            if target.selects(mode, dtype, case)]


def _row(case_rows: pd.DataFrame, target: Target, mode: str, dtype: str, case: Case) -> TargetRow:
    p50 = {r.backend: float(r.p50) for r in case_rows.itertuples()
           if r.error == "" and isinstance(r.p50, (int, float)) and math.isfinite(r.p50) and r.p50 > 0}
    if target.backend not in p50:
        return TargetRow(mode, dtype, case, not_measured=f"{target.backend} has no latency here")
    theirs = {b: p50[b] for b in target.over if b in p50}
    if not theirs:
        return TargetRow(mode, dtype, case, not_measured=f"none of {', '.join(target.over)} has a latency here")
    fastest = min(theirs, key=theirs.get)
    return TargetRow(mode, dtype, case, theirs[fastest] / p50[target.backend], fastest)


def describe(target: Target) -> str:
    """The target in words: "triton at least 1.5x faster than the fastest of cudnn, cudnn-fp16 (hidden 64, 128)"."""
    over = target.over[0] if len(target.over) == 1 else "the fastest of " + ", ".join(target.over)
    where = "; ".join(f"{key} {', '.join(map(str, values))}" for key, values in target.where)
    return f"{target.backend} at least {target.at_least:g}x faster than {over}" + (f" ({where})" if where else "")


def tally(target: Target, rows: list[TargetRow]) -> str:
    """"met in 3 of 12 rows (2 not measured); the least 1.03x: forward bfloat16 T=... (over cudnn-fp16)"."""
    if not rows:
        return "no row of this run is one it selects"
    measured = [row for row in rows if row.ratio is not None]
    text = f"met in {sum(row.met(target) for row in measured)} of {len(measured)} rows"
    if len(rows) > len(measured):
        text += f" ({len(rows) - len(measured)} not measured)"
    if measured:
        least = min(measured, key=lambda row: row.ratio)
        text += f"; the least {least.ratio:.3g}x: {least.mode} {least.dtype} {least.case.label} (over {least.fastest})"
    return text


def summary_lines(frame: pd.DataFrame, targets: tuple[Target, ...]) -> list[str]:
    """A line per target for the end of `rnnbench run`: its name and tally."""
    bench = frame[frame.kind == "bench"]
    return [f"target {target.name}: {tally(target, target_rows(bench, target))}" for target in targets]
