"""Speed targets a scenario sets (`targets:`), checked row by row against a run's latencies.

A target holds one backend to the fastest of one or more backends (`over`), in each row (mode, dtype, case) its
`where` selects, as a speedup or as a ratio of times:

    at_least:  ratio = theirs / the backend's p50 latency   met when ratio >= at_least
    at_most:   ratio = the backend's / theirs                met when ratio <= at_most

where theirs is the smallest p50 latency among the backends of `over` that ran in the row, or, with `at`, in the row
whose case has those fields changed: `over: triton, at: {batch: 8}, at_most: 1.5` holds the backend's time at this
row's batch to 1.5x its own at batch 8. "The fastest of them that ran" is how a target says "the fastest cuDNN path a
user could choose": `over: [cudnn, cudnn-fp16]` in a bfloat16 row is cuDNN in bfloat16 or in float16, whichever was
faster there. A row without the backend's latency, or any of theirs, is not measured and counts neither way. The
report (report.py) has a section for them, its speedup plots a grey bar per row (plots.py); `rnnbench run` and
`rnnbench report` print a line per target, `rnnbench compare` a table of both runs' lines.

A run that timed each call both ways (`timing: {cuda_graphs: both}`) also has each call's replays from a CUDA graph
(REPLAYED: the GPU's work without the host's, per step): the report and the lines count every target on them too, in
the same rows. Per-step times at one sequence length give the ratios latencies give.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from rnnbench.schema import Case, Target

Latencies = dict[tuple[str, str, Case, str], float]  # (mode, dtype, case, backend) -> p50 latency
REPLAYED = "graph_time_per_step"  # the metric of a call's replays from a CUDA graph, beside its own latency


@dataclass(frozen=True)
class TargetRow:
    """One row a target selects: the ratio as the target states it and whom it compares with, or why it was not
    measured."""
    mode: str
    dtype: str
    case: Case
    ratio: float | None = None
    compared_with: str = ""
    not_measured: str = ""

    def met(self, target: Target) -> bool:
        if self.ratio is None:
            return False
        return self.ratio >= target.at_least if target.at_least is not None else self.ratio <= target.at_most


def target_rows(bench: pd.DataFrame, target: Target, metric: str = "latency") -> list[TargetRow]:
    """The rows of a run's bench results (results.csv, kind "bench") that the target selects, by mode, dtype and
    case, counted on the metric's p50 (the latency, or REPLAYED)."""
    records = bench[bench.metric == metric].to_dict("records")
    p50: Latencies = {}
    for r in records:
        if r["error"] == "" and isinstance(r["p50"], (int, float)) and math.isfinite(r["p50"]) and r["p50"] > 0:
            p50[(r["mode"], r["dtype"], Case.from_row(r), r["backend"])] = float(r["p50"])
    rows = sorted(dict.fromkeys((r["mode"], r["dtype"], Case.from_row(r)) for r in records))
    return [_row(p50, target, *row) for row in rows if target.selects(*row)]


def _row(p50: Latencies, target: Target, mode: str, dtype: str, case: Case) -> TargetRow:
    reference = target.reference(case)
    ours = p50.get((mode, dtype, case, target.backend))
    if ours is None:
        return TargetRow(mode, dtype, case, not_measured=f"{target.backend} has no latency here")
    theirs = {b: p50[(mode, dtype, reference, b)] for b in target.over if (mode, dtype, reference, b) in p50}
    if not theirs:
        where = f" at {reference.label}" if reference != case else " here"
        return TargetRow(mode, dtype, case, not_measured=f"none of {', '.join(target.over)} has a latency{where}")
    fastest = min(theirs, key=theirs.get)
    ratio = theirs[fastest] / ours if target.at_least is not None else ours / theirs[fastest]
    return TargetRow(mode, dtype, case, ratio, fastest + (f" at {reference.label}" if reference != case else ""))


def describe(target: Target) -> str:
    """The target in words: "triton at least 1.5x faster than the fastest of cudnn, cudnn-fp16 (hidden 64, 128)",
    "triton taking at most 1.5x the time of triton at batch 8 (hidden 2048; batch 64)"."""
    over = target.over[0] if len(target.over) == 1 else "the fastest of " + ", ".join(target.over)
    over += "".join(f" at {key} {value}" for key, value in target.at)
    where = "; ".join(f"{key} {', '.join(map(str, values))}" for key, values in target.where)
    goal = (f"at least {target.at_least:g}x faster than {over}" if target.at_least is not None
            else f"taking at most {target.at_most:g}x the time of {over}")
    return f"{target.backend} {goal}" + (f" ({where})" if where else "")


def tally(target: Target, rows: list[TargetRow]) -> str:
    """"met in 3 of 12 rows (2 not measured); the worst 1.03x: forward bfloat16 T=... (cudnn-fp16)"."""
    if not rows:
        return "no row of this run is one it selects"
    measured = [row for row in rows if row.ratio is not None]
    text = f"met in {sum(row.met(target) for row in measured)} of {len(measured)} rows"
    if len(rows) > len(measured):
        text += f" ({len(rows) - len(measured)} not measured)"
    if measured:
        worst = (min if target.at_least is not None else max)(measured, key=lambda row: row.ratio)
        text += f"; the worst {worst.ratio:.3g}x: {worst.mode} {worst.dtype} {worst.case.label} ({worst.compared_with})"
    return text


def replayed(bench: pd.DataFrame) -> bool:
    """Whether the run timed its calls' replays beside the calls (REPLAYED rows)."""
    return bool((bench.metric == REPLAYED).any())


def summary_lines(frame: pd.DataFrame, targets: tuple[Target, ...]) -> list[str]:
    """A line per target for the end of `rnnbench run` and `rnnbench report`: its name and tally; and its tally on the
    replays, where the run has them."""
    bench = frame[frame.kind == "bench"]
    with_replays = replayed(bench)
    lines = []
    for target in targets:
        lines.append(f"target {target.name}: {tally(target, target_rows(bench, target))}")
        if with_replays:
            lines.append(f"target {target.name}, replayed from CUDA graphs: "
                         f"{tally(target, target_rows(bench, target, REPLAYED))}")
    return lines
