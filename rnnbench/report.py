"""report.md, results.json and the plots of a run folder, rebuilt from results.csv alone (plus the
environment.json written at the start of the run and the run log jobs.csv), and the comparison of
two runs. It reads the run folder only: nothing here runs a backend."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from rnnbench import profile as profiling
from rnnbench.backends import FP16_REFERENCE, display_name
from rnnbench.launches import ALGORITHM_NOTE, GROUPS, algorithm_of
from rnnbench.measure import (
    BUSY_NOTE,
    HOST_REPS,
    LONG_CALL_NOTE,
    NOISY_NOTE,
    NOISY_SPREAD,
    QUIET_WAIT_S,
    noise_note,
)
from rnnbench.plots import make_plots, where_time_goes_figure
from rnnbench.results import (
    FALLBACK_NOTE,
    JOB_COLUMNS,
    JSON_NAME,
    KNOWN_REASONS,
    SCENARIO_NAME,
    RunFolder,
    better,
    describe_job,
    fallback_baseline,
    is_failure,
    load_frame,
)
from rnnbench.schema import CASE_FIELDS, Case, Scenario, ScenarioError, Target, cpu_sweep_text, parse_scenario
from rnnbench.targets import REPLAYED, TargetRow, describe, replayed, tally, target_rows

CPU_BANNER = ("CPU sweep: no CUDA GPU was present, so this ran {sweep}, timed by {clock} while a canary "
              "found the machine quiet; peak memory "
              "needs CUDA and is not measured. It checks that everything works; it says nothing about GPU "
              "performance.")
NOISY = "⚠"
SPEED_TABLES = [("latency", "Latency (ms)"), ("time_per_step", "Time per step (us)"),
                (REPLAYED, "Time per step replayed from a CUDA graph (us): the GPU's work without the "
                            "host's, beside the calls' own above (timing.cuda_graphs: both)"),
                ("host_time", "Host time per call (ms): until a call returns, the GPU idle when it starts. Near "
                              "the latency, the GPU waited for the host (short sequences: Python and launches), or "
                              "the call waits for its kernels (split calls that read their barriers' status: "
                              "kernels.barrier_status.WAIT_FOR_STATUS)"),
                ("tokens_per_s", "Throughput (tokens/s)"), ("tflops", "TFLOP/s"),
                ("peak_memory", "Peak memory (MiB, above inputs and weights)"),
                ("activation_memory", "Activation memory saved for backward (MiB)"),
                ("rel_err_step", "Step check: relative error of each step recomputed in float64 from the "
                                 "backend's own state (rnnbench/check.py)")]
MEASUREMENT_NOTES = (NOISY_NOTE, LONG_CALL_NOTE, FALLBACK_NOTE)  # about one value, not about the backend


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(row: pd.Series, spread: bool) -> str:
    """A table cell: the p50 (with [p20-p80] where asked and present, marked when noisy or timed on a
    busy machine) or the error, shortened."""
    if row.error:
        return "✗ " + row.error.split(":")[0]
    text = fmt(row.p50)
    if spread and not pd.isna(row.p20):
        text += f" [{fmt(row.p20)}–{fmt(row.p80)}]"
        if noise_note(row.p20, row.p80) or busy(row):
            text += " " + NOISY
    return text


def pivot_table(rows: pd.DataFrame, index: list[str], columns: dict[str, str], spread: bool) -> str:
    """One markdown table: a row per combination of `index` (case columns shown as T= B= ...),
    a column per backend present, in the order and with the names of `columns` (backend -> name)."""
    backends = [b for b in columns if b in set(rows.backend)]
    lines = []
    for key, group in rows.groupby(index, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        first = group.iloc[0]
        label = [Case.from_row(first).label if c == "seq_len" else str(v) for c, v in zip(index, key)
                 if c not in CASE_FIELDS[1:]]
        by_backend = {r.backend: cell(r, spread) for r in group.itertuples()}
        lines.append(label + [by_backend.get(b, "") for b in backends])
    headers = [("case" if c == "seq_len" else c) for c in index if c not in CASE_FIELDS[1:]]
    return md_table(headers + [columns[b] for b in backends], lines)


# ---- the headline: speedups over the baselines ----------------------------------------------

def headline_section(bench: pd.DataFrame, baselines: list[str], columns: dict[str, str]) -> list[str]:
    """Per mode and dtype, a row per case: the baseline its speedups are over (with the algorithm
    cuDNN ran, or why the first baseline did not run) and each backend's speedup, for bfloat16 also
    over cuDNN in float16 ("a / b")."""
    speedup = bench[bench.metric.isin(["speedup", "speedup_fp16"])]
    if speedup.empty:
        return []
    first = columns.get(baselines[0], baselines[0])
    out = [f"## Headline: speedup over {first} (p50 latency ratio; > 1 is faster)",
           headline_legend(bench, baselines, columns)]
    algorithms, tiers = named_in_notes(bench, algorithm_of), named_in_notes(bench, kernel_tier)
    for (mode, dtype), group in speedup.groupby(["mode", "dtype"], sort=False):
        backends = [b for b in columns if b in set(group.backend)]
        rows = []
        for _, case_rows in group.groupby(list(CASE_FIELDS), sort=False):
            row0 = case_rows.iloc[0]
            case = Case.from_row(row0)
            cells = {r.backend: cell(r, spread=False) for r in case_rows[case_rows.metric == "speedup"].itertuples()}
            for r in case_rows[case_rows.metric == "speedup_fp16"].itertuples():
                fp16 = "—" if r.error.startswith(KNOWN_REASONS) else cell(r, spread=False)
                cells[r.backend] = f"{cells.get(r.backend, '')} / {fp16}"
            for backend, tier in tiers.get((mode, dtype, case), {}).items():
                if backend in cells:
                    cells[backend] += f" ({tier})"
            rows.append([case.label, baseline_cell(case_rows, baselines[0], algorithms.get((mode, dtype, case), {}),
                                                   columns)] + [cells.get(b, "") for b in backends])
        title = f"**{mode}, {dtype}**" + (f" — each cell: over the baseline / over {FP16_REFERENCE} (—: it did not run)"
                                          if (group.metric == "speedup_fp16").any() else "")
        out += [title, md_table(["case", "baseline", *[columns[b] for b in backends]], rows)]
    return out


def headline_legend(bench: pd.DataFrame, baselines: list[str], columns: dict[str, str]) -> str:
    """What the headline compares with, in words: the baselines, the float16 cuDNN reference, and
    where the first baseline could not run."""
    names = [columns.get(b, b) for b in baselines]
    text = (f"Each row's baseline is the first of {', '.join(names)} that ran for it." if len(names) > 1 else
            f"The baseline is {names[0]} in the row's dtype.")
    if "bfloat16" in set(bench.dtype):
        if FP16_REFERENCE in set(bench.backend):
            text += (f" bfloat16 rows also give the speedup over cuDNN in float16 ({FP16_REFERENCE}), the fastest "
                     f"cuDNN path a user could pick: cuDNN has no persistent bfloat16 kernel.")
        else:
            text += (f" bfloat16 speedups are over cuDNN in bfloat16, which has no persistent kernel; this run has "
                     f"no {FP16_REFERENCE} backend to compare with cuDNN in float16.")
    speedup = bench[bench.metric == "speedup"]
    fallbacks = pd.Series([fallback_baseline(n) for n in speedup.note]).dropna()
    for (name, why), count in fallbacks.value_counts(sort=False).items():
        text += f" Where {why}, {count} speedups are over {columns.get(name, name)} instead."
    for error, count in speedup[speedup.error != ""].error.value_counts(sort=False).items():
        text += f" No speedup in {count} rows: {error.removeprefix('not measured: ')}."
    return text


def baseline_cell(case_rows: pd.DataFrame, first: str, algorithms: dict[str, str], columns: dict[str, str]) -> str:
    """The baseline of one headline row: the first (with cuDNN's algorithm), a fallback and why, or none."""
    speedup = case_rows[case_rows.metric == "speedup"]
    for note in speedup.note:
        fallback = fallback_baseline(note)
        if fallback:
            return f"{columns.get(fallback[0], fallback[0])} — {fallback[1]}"
    for error in speedup.error:
        if error:
            return "none — " + error.removeprefix("not measured: ")
    named = [f"{columns.get(b, b)} ({algorithms[b]})" for b in (first, FP16_REFERENCE) if b in algorithms]
    return "; ".join(named) if first in algorithms else columns.get(first, first)


KERNEL_PLAN = re.compile(r"(\w+)\((.*)\)")  # a Triton kernel plan in a note: tier(KEY=value,...)


def kernel_tier(note: str) -> str:
    """The tiers of the Triton kernel plans a row's note names (a plan is "tier(KEY=value,...)"; "split, clusters of
    8" where its programs met at a cluster barrier), joined by " + "; "" where it names none."""
    tiers = []
    for part in note.split("; "):
        plan = KERNEL_PLAN.fullmatch(part)
        if plan:
            cluster = int(re.search(r"\bCLUSTER=(\d+)", plan.group(2))[1]) if "CLUSTER=" in plan.group(2) else 1
            tiers.append(plan.group(1) + (f", clusters of {cluster}" if cluster > 1 else ""))
    return " + ".join(dict.fromkeys(tiers))


def named_in_notes(bench: pd.DataFrame, read: Callable[[str], str | None]) -> dict[tuple, dict[str, str]]:
    """(mode, dtype, case) -> backend -> what read finds in its latency row's note, where it finds something: the
    cuDNN algorithm (algorithm_of) or the Triton kernels' tier (kernel_tier) that made the row's speedups."""
    found: dict[tuple, dict[str, str]] = {}
    for r in bench[bench.metric == "latency"].itertuples():
        named = read(r.note)
        if named:
            found.setdefault((r.mode, r.dtype, Case.from_row(r._asdict())), {})[r.backend] = named
    return found


def longest_sequence_section(bench: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    """Per backend, the longest T it was measured at (any dtype and mode) and why a longer one was not."""
    main = bench[bench.metric == ("latency" if (bench.metric == "latency").any() else "peak_memory")]
    if main.empty:
        return []
    rows = []
    for backend in [b for b in columns if b in set(main.backend)]:
        mine = main[main.backend == backend]
        ran = mine[mine.p50.notna() & (mine.error == "")]
        longest = int(ran.seq_len.max()) if not ran.empty else 0
        beyond = mine[(mine.seq_len > longest) & (mine.error != "")].sort_values("seq_len", kind="stable")
        first = beyond.iloc[0] if not beyond.empty else None
        why = ("" if first is None else
               f"T={int(first['seq_len'])} ({first['dtype']}, {first['mode']}): {first['error']}")
        rows.append([columns[backend], f"{longest:,}" if longest else "none", why])
    return ["## Longest sequence each backend ran", md_table(["backend", "longest T measured", "a longer T: why not"],
                                                              rows)]


def speed_sections(bench: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    """The longest sequence each backend ran, then a table per speed metric."""
    out = longest_sequence_section(bench, columns)
    index = ["seq_len", *CASE_FIELDS[1:]]
    for metric, title in SPEED_TABLES:
        rows = bench[bench.metric == metric]
        if rows.empty or rows.p50.isna().all():
            continue
        out.append(f"## {title}")
        for (mode, dtype), group in rows.groupby(["mode", "dtype"], sort=False):
            out += [f"**{mode}, {dtype}** — p50 [p20–p80]", pivot_table(group, index, columns, spread=True)]
        if metric == "latency":
            out += unsteady_notes(rows)
    return out


def busy(row) -> bool:
    """Whether a CPU timing was made on a machine that stayed busy (measure.Canary)."""
    return BUSY_NOTE in row.note


def unsteady_notes(latency: pd.DataFrame) -> list[str]:
    """What the ⚠ marks under the latency tables mean, with how many there are."""
    timed = [r for r in latency.itertuples() if not pd.isna(r.p20)]
    noisy, busy_ = sum(bool(noise_note(r.p20, r.p80)) for r in timed), sum(busy(r) for r in timed)
    out = []
    if noisy:
        out.append(f"{NOISY} noisy: {noisy} of these timings have p80/p20 > {NOISY_SPREAD:g} (marked in the note "
                   f"column of results.csv too). Other work on the machine is the usual cause; their p50 may move "
                   f"between runs.")
    if busy_:
        out.append(f"{NOISY} busy: {busy_} of these timings found no quiet stretch of the machine within "
                   f"{QUIET_WAIT_S:g} s and were timed anyway (note column); their p50 may move between runs.")
    return out


def stability_sections(study: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    errors = study[study.metric.str.startswith("rel_err") | (study.metric == "nonfinite")]
    if errors.empty:
        return []
    worst = errors.assign(metric=errors.metric.where(errors.metric != "rel_err_output", "output")
                          .where(~errors.metric.str.startswith("rel_err_grad"), "worst gradient"))
    worst = worst.sort_values("p50", na_position="first").drop_duplicates(
        ["backend", "dtype", "radius", "seq_len", "metric"], keep="last")
    out = ["## Gradient stability: relative error vs the float64 reference",
           "Output, worst gradient (max over the input and every parameter) and NaN/Inf count, "
           "per spectral radius of U and sequence length T."]
    for metric in ("output", "worst gradient", "nonfinite"):
        rows = worst[worst.metric == metric].sort_values(["radius", "seq_len"], key=_numeric, kind="stable")
        if not rows.empty:
            out += [f"**{metric}**", pivot_table(rows, ["dtype", "radius", "seq_len"], columns, spread=False)]
    return out


def checkpoint_section(bench: pd.DataFrame) -> list[str]:
    """triton-checkpoint (checkpointed BPTT) against triton, forward+backward: the activation memory
    saved for the backward and the time it costs."""
    pair = ("triton", "triton-checkpoint")
    rows = bench[(bench["mode"] == "forward+backward") & bench.metric.isin(["activation_memory", "latency"])
                 & bench.backend.isin(pair)]
    if set(rows.backend) != set(pair):
        return []
    p50 = rows.pivot_table(index=["dtype", *CASE_FIELDS], columns=["metric", "backend"], values="p50", sort=False)
    table = []
    for key, row in p50.iterrows():
        memory, latency = ([row.get((m, b), math.nan) for b in pair] for m in ("activation_memory", "latency"))
        table.append([key[0], Case(*key[1:]).label, fmt(memory[0]), fmt(memory[1]),
                      saved_ratio(*memory), fmt(latency[0]), fmt(latency[1]),
                      fmt(latency[1] / latency[0])])
    return ["## Checkpointed BPTT: memory saved and time overhead (triton-checkpoint vs triton)",
            "forward+backward; memory: p50 of activation_memory (saved for the backward); latency: p50. A bound on the "
            "overhead is a target of the scenario's (checkpoint.yaml: at most 1.35x on a GPU), counted under Targets.",
            md_table(["dtype", "case", "memory triton (MiB)", "memory checkpoint (MiB)", "memory saved (x)",
                      "latency triton (ms)", "latency checkpoint (ms)", "time overhead (x)"], table)]


TARGETS_INTRO = ("Set in the scenario (`targets:`). Each holds a backend to the fastest of other backends that ran in "
                 "the row (or in the row it names): a speedup, their p50 latency / the backend's, or a ratio of times, "
                 "the backend's / theirs (rnnbench/targets.py).")


def targets_section(bench: pd.DataFrame, scenario: Scenario | None, on_cpu: bool) -> list[str]:
    """Each of the scenario's targets: met in how many rows, and the ratio of every row it selects."""
    if scenario is None or not scenario.targets:
        return []
    out = ["## Targets", TARGETS_INTRO + (" These are CPU timings (the Triton interpreter and PyTorch on a CPU): the "
                                          "targets are for a GPU." if on_cpu else "")]
    with_replays = replayed(bench)
    for target in scenario.targets:
        rows = target_rows(bench, target)
        out.append(f"**{target.name}**: {describe(target)}: {tally(target, rows)}.")
        columns = ["mode", "dtype", "case", "compared with (the fastest)", "ratio", "met"]
        table = [[row.mode, row.dtype, row.case.label, row.compared_with, fmt(row.ratio), met_cell(target, row)]
                 for row in rows]
        if with_replays:  # the same rows on the calls' replays, beside
            replays = {(row.mode, row.dtype, row.case): row for row in target_rows(bench, target, REPLAYED)}
            out.append(f"Replayed from CUDA graphs (the GPU's work alone): {tally(target, list(replays.values()))}.")
            columns += ["replayed: compared with", "ratio", "met"]
            for line, row in zip(table, rows):
                again = replays.get((row.mode, row.dtype, row.case), TargetRow(row.mode, row.dtype, row.case,
                                                                              not_measured="not replayed"))
                line += [again.compared_with, fmt(again.ratio), met_cell(target, again)]
        if rows:
            out.append(md_table(columns, table))
    return out


def met_cell(target: Target, row: TargetRow) -> str:
    """A targets table's cell: yes, no, or why the row was not measured."""
    return row.not_measured or ("yes" if row.met(target) else "no")


def run_scenario(folder: RunFolder) -> Scenario | None:
    """The run's scenario as its folder keeps it, in the sweep that ran (environment.json: "sweep", before 2026-11-26
    "profile"), or None where it no longer parses (a run of an older schema)."""
    env = folder.environment()
    try:
        return parse_scenario(yaml.safe_load(folder.scenario_text()), SCENARIO_NAME,
                              env.get("sweep", env.get("profile", "full")))
    except (ScenarioError, yaml.YAMLError):
        return None


def saved_ratio(full: float, checkpointed: float) -> str:
    """full / checkpointed memory; "all" where checkpointing kept nothing (one segment: every state recomputed)."""
    if math.isnan(full) or math.isnan(checkpointed):
        return ""
    return fmt(full / checkpointed) if checkpointed else "all"


TRAINING_INTRO = (
    "Every backend trained the same model (its recurrent layer and a linear head) from the same initial weights on "
    "the same batches (rnnbench/training.py; optimizer, learning rate and steps in the scenario below). Eval loss "
    "and accuracy: on a held-out batch after the last step. ms per step: p50 of forward, loss, backward, clipping "
    "and update. Max ‖dL/dθ‖: the largest gradient norm, before clipping. ‖dL/dx_1‖ / ‖dL/dx_T‖ (median "
    "over the steps): how much of the loss's gradient reaches the first input step against the last; near 0, "
    "gradients vanish over the T steps; far above 1, they explode. Per-step curves are in the plots.")


def training_sections(training: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    """Per task, a row per unit (T, setting, U's radius, dtype, backend) with how its training ended."""
    if training.empty:
        return []
    out = ["## Training", TRAINING_INTRO]
    key = ["seq_len", "mode", "radius", "dtype", "backend"]
    for task, rows in training.groupby(training["mode"].str.split().str[0], sort=False):
        chance = rows[rows.metric == "chance_loss"]
        loss_name = chance.unit.iloc[0] if len(chance) else "loss"
        heading = f"### {task}: {loss_name}" + (f", chance level {fmt(chance.p50.iloc[0])}" if len(chance) else "")
        table = [_training_row(unit, columns) for _, unit in rows.groupby(key, sort=False)]
        out += [heading, md_table(["T", "setting", "U radius", "dtype", "backend", "eval loss", "eval accuracy",
                                   "ms per step", "max ‖dL/dθ‖", "‖dL/dx_1‖ / ‖dL/dx_T‖", "outcome"], table)]
    return out


def _training_row(unit: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    first = unit.iloc[0]
    once = unit[unit.step.isna()].set_index("metric").p50
    per_step = unit[unit.step.notna()]
    values = lambda metric: per_step[per_step.metric == metric].p50  # noqa: E731
    errors = [e for e in unit.error if e]
    if errors:
        outcome = errors[0]
    elif "diverged_at_step" in once:
        outcome = f"diverged at step {int(once['diverged_at_step'])} (loss not finite)"
    else:
        outcome = "trained"
    return [str(first.seq_len), first["mode"], first.radius or "nn.RNN init", first["dtype"],
            columns.get(first.backend, first.backend), fmt(once.get("eval_loss")), fmt(once.get("eval_accuracy")),
            fmt(once.get("time_per_train_step")), _finite_max(values("param_grad_norm")),
            fmt(values("input_grad_ratio").median()), outcome]


def _finite_max(values: pd.Series) -> str:
    """The largest finite value, and how many were not finite (float16: the steps GradScaler skipped)."""
    finite = values[values.map(math.isfinite)]
    other = len(values) - len(finite)
    return fmt(finite.max()) + (f" ({other} steps inf/NaN)" if other else "")


def _numeric(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce")


def backends_section(frame: pd.DataFrame) -> list[str]:
    """What each backend was here (e.g. the CPU stand-in for cuDNN) and its settings (TF32), then which kernel plan or
    cuDNN algorithm ran each case, a row each; the notes of single measurements (noisy timings) stay in their tables."""
    def settings(notes: pd.Series) -> str:
        parts = (part for note in notes for part in note.split("; "))
        return "; ".join(p for p in dict.fromkeys(parts)
                         if p and not p.startswith(MEASUREMENT_NOTES) and not _kernel_choice(p))
    rows = [[backend, group.label.iloc[0], settings(group.note)]
            for backend, group in frame.groupby("backend", sort=False)]
    return ["## Backends", md_table(["backend", "what ran", "notes"], rows)] + kernel_choices_section(frame)


def kernel_choices_section(frame: pd.DataFrame) -> list[str]:
    """A row per backend, kernel plan or cuDNN algorithm its notes name, and dtype: the modes and cases it ran (rows
    measured, not skipped nor failed)."""
    ran: dict[tuple[str, str, str], dict[str, dict[str, None]]] = {}
    for r in frame[(frame.note != "") & (frame.error == "")].itertuples():
        for part in r.note.split("; "):
            if _kernel_choice(part):
                cases = ran.setdefault((r.backend, part, r.dtype), {"modes": {}, "cases": {}})
                cases["modes"][r.mode] = None
                cases["cases"][Case.from_row(r._asdict()).label] = None
    if not ran:
        return []
    order = list(dict.fromkeys(frame.backend))
    rows = [[backend, choice.removeprefix(ALGORITHM_NOTE), dtype, ", ".join(cases["modes"]), "; ".join(cases["cases"])]
            for (backend, choice, dtype), cases in sorted(ran.items(), key=lambda item: order.index(item[0][0]))]
    return ["### Kernel plans and cuDNN algorithms, by case",
            md_table(["backend", "kernel plan or cuDNN algorithm", "dtype", "modes", "cases"], rows)]


def _kernel_choice(note_part: str) -> bool:
    """Whether a part of a note names a Triton kernel plan ("tier(KEY=value,...)") or a cuDNN algorithm."""
    return note_part.startswith(ALGORITHM_NOTE) or bool(KERNEL_PLAN.fullmatch(note_part))


def failures_section(frame: pd.DataFrame) -> list[str]:
    failed = frame[frame.error != ""].drop_duplicates([*JOB_COLUMNS, "error"])
    if failed.empty:
        return []
    rows = [["failed" if is_failure(r.error) else "skipped", r.backend, r.kind, r.mode, r.dtype,
             Case.from_row(r._asdict()).label, r.radius, r.metric, r.error] for r in failed.itertuples()]
    rows.sort(key=lambda row: row[0] != "failed")  # failures first
    return ["## Failures, skips and unavailable backends",
            md_table(["outcome", "backend", "kind", "mode", "dtype", "case", "radius", "metric", "reason"], rows)]


SLOWEST_JOBS = 5


def run_log_section(log: pd.DataFrame, columns: dict[str, str]) -> list[str]:
    """Where the run's time went (jobs.csv): per backend, and the slowest jobs; on CUDA, the memory
    held before the jobs (PyTorch's and the driver's view), which is near zero unless a job left
    memory behind."""
    if log.empty:
        return []
    log = log.assign(seconds=pd.to_numeric(log.seconds))
    per_backend = log.groupby("backend", sort=False).seconds.agg(["count", "sum", "max"])
    rows = [[columns.get(b, b), int(r["count"]), fmt(r["sum"]), fmt(r["max"])] for b, r in per_backend.iterrows()]
    slowest = log.sort_values("seconds", ascending=False).head(SLOWEST_JOBS)
    out = ["## Run log (jobs.csv)", f"{len(log)} jobs in {fmt(log.seconds.sum() / 60)} min of job time.",
           md_table(["backend", "jobs", "seconds", "slowest job (s)"], rows),
           md_table(["slowest jobs", "seconds", "outcome"],
                    [[describe_job_row(r), fmt(r["seconds"]), r["outcome"]] for _, r in slowest.iterrows()])]
    memory = log.dropna(subset=["free_mib"])
    if not memory.empty:
        gib = memory[["allocated_mib", "reserved_mib", "free_mib", "total_mib"]].astype(float) / 1024
        out.append(f"GPU memory before a job (GiB): allocated by PyTorch at most {fmt(gib.allocated_mib.max())}, "
                   f"reserved at most {fmt(gib.reserved_mib.max())}, driver free at least {fmt(gib.free_mib.min())} "
                   f"of {fmt(gib.total_mib.max())}. Memory neither free nor reserved is held outside PyTorch "
                   f"(cuDNN, cuBLAS, CUDA graphs, the context).")
    return out


def describe_job_row(row: pd.Series) -> str:
    return describe_job({c: str(row[c]) for c in JOB_COLUMNS})


def environment_section(env: dict, scenario_text: str) -> list[str]:
    rows = [[k, f"`{v}`" if v != "" else ""] for k, v in env.items()]
    return ["## Environment", md_table(["", ""], rows), "## Scenario", "```yaml\n" + scenario_text.strip() + "\n```"]


def build(run_dir: str | Path) -> Path:
    """Writes report.md, results.json and the PNG plots into run_dir; returns the report path."""
    folder = RunFolder(run_dir)
    frame = load_frame(folder.path)
    env = folder.environment()
    device = env.get("device_name", "unknown device")
    # the run order (baseline first); on CPU the cudnn column says it is PyTorch's CPU RNN
    columns = {b: display_name(b, env.get("device", "cuda")) for b in dict.fromkeys(frame.backend)}
    baselines = env.get("baselines") or [env.get("baseline", "the baseline")]  # "baseline": runs before 2026-11-26
    sweep = env.get("sweep", env.get("profile", "?"))
    scenario_text = folder.scenario_text()
    scenario = run_scenario(folder)
    plots = make_plots(frame, folder.path, device, columns, baselines[0], scenario.targets if scenario else ())
    name = frame.scenario.iloc[0] if len(frame) else folder.path.parent.name
    bench, study = frame[frame.kind == "bench"], frame[frame.kind == "stability"]
    parts = [f"# rnnbench: {name}", f"Device: **{device}**, sweep: **{sweep}**, "
             f"date: {env.get('date', '?')}, commit: `{env.get('git_commit', '?')}`"]
    on_cpu = env.get("device", "cuda") == "cpu"
    if sweep == "cpu" and on_cpu:  # a GPU given --sweep cpu times the GPU
        parts.append("> " + CPU_BANNER.format(sweep=cpu_sweep_text(yaml.safe_load(scenario_text)),
                                              clock=env.get("cpu_timing", "wall clock")))
    parts += backends_section(frame) + headline_section(bench, baselines, columns)
    parts += targets_section(bench, scenario, on_cpu) + speed_sections(bench, columns)
    parts += checkpoint_section(bench)
    parts += stability_sections(study, columns) + training_sections(frame[frame.kind == "training"], columns)
    data = profiling.load(folder.path)
    if data:
        parts += profile_section(data, folder.path, f"{profiling.PROFILE_DIR}/")
    if plots:
        parts.append("## Plots")
        parts += [f"### {title}\n![{title}]({file})" for title, file in plots]
    parts += failures_section(frame) + run_log_section(folder.job_log(), columns)
    parts += environment_section(env, scenario_text)
    report = folder.path / "report.md"
    report.write_text("\n\n".join(parts) + "\n")
    records = json.loads(frame.to_json(orient="records"))
    (folder.path / JSON_NAME).write_text(json.dumps({"environment": env, "scenario": scenario_text,
                                                     "rows": records}, indent=1))
    return report


# ---- where the time goes (rnnbench profile) ---------------------------------------------------

PROFILE_CPU_NOTE = ("No CUDA GPU: times are CPU time of the ops (Triton in its interpreter), and launches are "
                    "*counted*, not timed: the dispatched aten ops that would each launch a kernel on a GPU, and "
                    "the Triton kernel launches. GPU-only parts (GPU time, TFLOP/s and bandwidth against the peak, "
                    "the per-step floor, NVTX) are marked as such.")
TOP_KERNELS = 6


def _ms(value) -> str:
    return "GPU only" if value is None else fmt(value)


def profile_section(data: dict, run_dir: Path, prefix: str) -> list[str]:
    """The "Where the time goes" section from profile.json's data; writes its plot into the profile
    folder. prefix: the path from the markdown file to the profile folder ("profile/" or "")."""
    out_dir = Path(run_dir) / profiling.PROFILE_DIR
    case = data["case"]
    gpu = data["device"] == "cuda"
    parts = ["## Where the time goes",
             f"One {data['mode']} call of {Case(**case).label}, {data['dtype']}, {data['nonlinearity']}, per backend, "
             f"under "
             f"torch.profiler ({'GPU kernel time' if gpu else 'CPU time'}). Command: `{data.get('command', '')}`"]
    if not gpu:
        parts.append(f"> {PROFILE_CPU_NOTE}")
    parts += [f"> Note: {note}" for note in data.get("notes", [])]
    plot = where_time_goes_figure(data, out_dir, profiling.PLOT_NAME)
    if plot:
        parts.append(f"![{plot[0]}]({prefix}{plot[1]})")
    ran = [r for r in data["backends"] if r["status"] == "ok"]
    parts += _launch_table(ran, gpu) + _group_table(ran) + _top_kernels(ran, gpu) + _compile_facts_table(ran)
    parts += _efficiency_section(ran, data) + _profile_extras(data, prefix)
    return parts


def _launch_table(ran: list[dict], gpu: bool) -> list[str]:
    rows = [[r["backend"], r["note"] or r["label"], r["launches"], fmt(r["launches_per_step"]),
             r["recurrence_launches"], fmt(r["recurrence_launches_per_step"]), fmt(r["host_ms"]), fmt(r["wall_ms"]),
             _ms(r["device_ms"])] for r in ran]
    what = "GPU kernels" if gpu else "counted from the profiler's CPU events, not timed"
    return [f"### Launches per time step ({what})",
            "Eager PyTorch pays several launches per step, cuDNN's STANDARD algorithm about one per step, the "
            "persistent kernel one per sequence (1/T per step). Host: until the call returns on the CPU; wall: until "
            f"the device is done (unprofiled calls, median of {HOST_REPS}); device: time the GPU was busy with the "
            "kernels of the profiled call (their union; user ranges, memcpy and memset are not kernels).",
            md_table(["backend", "what ran", "launches", "per step", "recurrence launches", "recurrence per step",
                      "host ms", "wall ms", "device ms"], rows)]


def _group_table(ran: list[dict]) -> list[str]:
    rows = []
    for r in ran:
        total = sum(r["time_us_by_group"].values()) or 1.0
        rows.append([r["backend"]] + [f"{100 * r['time_us_by_group'][g] / total:.1f}% ({r['launches_by_group'][g]})"
                                      for g in GROUPS] + [fmt(total / 1e3)])
    return ["### Time by group (share of the time, launches in brackets)",
            md_table(["backend", *GROUPS, "total ms"], rows)]


def _top_kernels(ran: list[dict], gpu: bool) -> list[str]:
    unit = "GPU" if gpu else "CPU"
    parts = [f"### Top kernels ({unit} time; every kernel in `{profiling.PROFILE_DIR}/{profiling.KERNELS_CSV}`)"]
    for r in ran:
        rows = [[k["kernel"], k["group"], k["calls"], fmt(k["total_us"]), fmt(k["mean_us"]), f"{100 * k['share']:.1f}%"]
                for k in r["kernels"][:TOP_KERNELS]]
        parts += [f"**{r['backend']}**",
                  md_table(["kernel", "group", "calls", f"total {unit} us", f"mean {unit} us", "share"], rows)]
    return parts


def _l2_prefetch(config: str) -> str:
    """The L2 prefetch distance a kernel's audited form takes ('' for kernels without one): the resident and fma
    kernels are audited with and without it, as each launch chooses (kernels/prefetch.py)."""
    found = re.search(r"L2_PREFETCH_STEPS=(\d+)", config or "")
    return "" if found is None else (f"{found[1]} steps" if found[1] != "0" else "off")


def _per_step(facts: dict, key: str):
    """A time-loop figure of the audit ('' where the kernel has no time loop: -1, or absent)."""
    value = facts.get(key)
    return "" if value is None or value < 0 else value


def _compile_facts_table(ran: list[dict]) -> list[str]:
    rows = [[r["backend"], f["tier"], f["kernel"], f.get("pass", ""), _l2_prefetch(f.get("config")),
             f"sm_{f['arch']}", f.get("registers", ""), f.get("spill_bytes", ""), f.get("shared", ""),
             f.get("num_warps", ""), f.get("blocks_per_sm", ""),
             f"{100 * f['occupancy']:.0f}%" if "occupancy" in f else "", f.get("limiter", ""),
             *(_per_step(f, k) for k in ("loop_instructions", "stall_cycles", "bar_per_step", "smem_wavefronts",
                                         "bank_conflicts")),
             f.get("error") or f.get("status", "")]
            for r in ran for f in r.get("compile_facts", [])]
    if not rows:
        return []
    return ["### Compile facts of the Triton kernels that ran (kernels.audit; no GPU needed)",
            "The dispatcher's tier and configuration for this case, compiled for the target; occupancy = resident "
            "warps / 64 per SM, limited by registers, shared memory or warps (rnnbench/hardware.py). Per step of a "
            "persistent kernel's time loop, per warp: its instructions, the cycles it takes to issue them when "
            "nothing waits on memory (stall), its CTA barriers; over all warps, its shared-memory wavefronts (wf) "
            "and of those its bank conflicts (beyond the fewest the bytes need).",
            md_table(["backend", "tier", "kernel", "pass", "L2 prefetch", "arch", "regs/thread", "spill B", "shared B",
                      "warps", "blocks/SM", "occupancy", "limited by", "instr/step", "stall/step", "bar/step",
                      "wf/step", "conf/step", "audit"], rows)]


def _share(efficiency: dict, key: str) -> str:
    return f"{100 * efficiency[key]:.1f}%" if key in efficiency else "unknown GPU"


def _efficiency_section(ran: list[dict], data: dict) -> list[str]:
    title = "### Against the hardware"
    if data["device"] != "cuda":
        return [title, "GPU only: achieved TFLOP/s and bandwidth against the device's peak, and time per step "
                       "against the floor, need a CUDA GPU; not measured here."]
    floor = data.get("floor")
    rows = []
    for r in ran:
        e = r["efficiency"]
        rows.append([r["backend"], fmt(e["latency_ms"]), fmt(e["time_per_step_us"]),
                     fmt(e["time_per_step_us"] / floor["us_per_step"]) if floor else "",
                     fmt(e["tflops"]), _share(e, "tflops_share"), fmt(e["bandwidth_gbs"]),
                     _share(e, "bandwidth_share")])
    gpu = data.get("gpu")
    peaks = (f"Peaks: {gpu} datasheet (dense), see rnnbench/hardware.py." if gpu else
             f"{data['device_name']} is not in rnnbench/hardware.py's table of peaks: no share of peak.")
    floor_text = (f"Floor: {fmt(floor['us_per_step'])} us per step = {floor['what']}." if floor else
                  "Floor: none (the triton backend did not run a persistent plan here).")
    return [title, "Latency: p50 of triton.testing.do_bench; bandwidth counts compulsory bytes only (inputs and "
                   "outputs once), a lower bound. " + peaks + " " + floor_text,
            md_table(["backend", "latency ms", "us per step", "x floor", "TFLOP/s", "of peak", "GB/s", "of peak"],
                     rows)]


def _profile_extras(data: dict, prefix: str) -> list[str]:
    traces = ", ".join(f"[{r['backend']}]({prefix}{r['trace']})" for r in data["backends"] if r.get("trace"))
    parts = [f"Chrome/Perfetto traces (open in ui.perfetto.dev): {traces}"] if traces else []
    if data.get("ncu_command"):
        where = "" if data["device"] == "cuda" else " (on a GPU machine)"
        parts += [f"Nsight Compute on the persistent forward kernel{where}:", f"```\n{data['ncu_command']}\n```"]
    failed = [[r["backend"], r["status"], r["error"]] for r in data["backends"] if r["status"] != "ok"]
    if failed:
        parts += ["Not profiled:", md_table(["backend", "status", "reason"], failed)]
    return parts


def write_profile_md(run_dir: str | Path, environment: dict, scenario_text: str) -> Path:
    """profile/profile.md: the section on its own, with the environment and the scenario."""
    folder = Path(run_dir)
    data = profiling.load(folder)
    parts = [f"# rnnbench profile: {data['scenario']}"] + profile_section(data, folder, "")
    parts += environment_section(environment, scenario_text)
    path = folder / profiling.PROFILE_DIR / profiling.PROFILE_MD
    path.write_text("\n\n".join(parts) + "\n")
    return path


# ---- compare --------------------------------------------------------------------------------

KEY = [*JOB_COLUMNS, "metric"]


def compare(run_a: str | Path, run_b: str | Path, metric: str | None = None, threshold: float = 0.0) -> str:
    """Markdown: p50 of every (backend, mode, dtype, case, metric) in both runs, B/A ratio and whether
    B is better, sorted by the size of the change; rows only in one run and environment differences
    listed below. A metric in neither run is a ValueError."""
    a, b = (load_frame(r) for r in (run_a, run_b))
    targets = targets_compared(run_a, run_b, a, b)
    a, b = (f[f.step.isna()] for f in (a, b))
    if metric:
        present = sorted(set(a.metric) | set(b.metric))
        if metric not in present:
            raise ValueError(f"--metric {metric}: in neither run (the grad_norm curve is not compared); expected one "
                             f"of {', '.join(present)}")
        a, b = a[a.metric == metric], b[b.metric == metric]
    merged = a.merge(b, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    both = merged[merged._merge == "both"].copy()
    both["ratio"] = both.p50_b / both.p50_a
    both = both[(both.ratio - 1).abs().fillna(math.inf) >= threshold]
    both = both.reindex((both.ratio.apply(lambda r: abs(math.log(r)) if r and r > 0 else math.inf))
                        .sort_values(ascending=False).index)
    rows = [[r.backend, r.kind, r.mode, r.dtype, Case.from_row(r._asdict()).label, r.radius, r.metric,
             r.error_a or fmt(r.p50_a), r.error_b or fmt(r.p50_b), fmt(r.ratio), verdict(r.metric, r.ratio)]
            for r in both.itertuples()]
    out = [f"# {run_a} (A) vs {run_b} (B)", directions(sorted(set(both.metric))),
           md_table(["backend", "kind", "mode", "dtype", "case", "radius", "metric", "A p50", "B p50", "B/A", "B is"],
                    rows)]
    for side, label in (("left_only", "only in A"), ("right_only", "only in B")):
        only = merged[merged._merge == side]
        if len(only):
            which = sorted({f"{r.backend}/{r.metric}" for r in only.itertuples()})
            out.append(f"{len(only)} rows {label}: " + ", ".join(which))
    env_a, env_b = RunFolder(run_a).environment(), RunFolder(run_b).environment()
    changed = [[k, str(env_a.get(k, "")), str(env_b.get(k, ""))] for k in dict.fromkeys([*env_a, *env_b])
               if k != "date" and env_a.get(k) != env_b.get(k)]
    if changed:
        out += ["Environment differences:", md_table(["", "A", "B"], changed)]
    return "\n\n".join(out + targets) + "\n"


def targets_compared(run_a: str | Path, run_b: str | Path, frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> list[str]:
    """The targets of B's scenario (else A's), each tallied on both runs' latencies."""
    scenarios = [run_scenario(RunFolder(run)) for run in (run_b, run_a)]
    chosen = next((scenario for scenario in scenarios if scenario and scenario.targets), None)
    if chosen is None:
        return []
    benches = [frame[frame.kind == "bench"] for frame in (frame_a, frame_b)]
    rows = [[target.name] + [tally(target, target_rows(bench, target)) for bench in benches]
            for target in chosen.targets]
    source = "B's" if chosen is scenarios[0] else "A's"
    return [f"Targets ({source} scenario), on each run's latencies:", md_table(["target", "A", "B"], rows)]


def directions(metrics: list[str]) -> str:
    """One line saying which way is better for each metric shown."""
    by_way = {way: [m for m in metrics if better(m) == way] for way in ("lower", "higher", "")}
    parts = [f"{way} is better for {', '.join(names)}" for way, names in by_way.items() if way and names]
    if by_way[""]:
        parts.append(f"{', '.join(by_way[''])} has no better direction")
    return "B/A is the ratio of the p50s; " + ("; ".join(parts) or "no rows in both runs") + "."


def verdict(metric: str, ratio: float) -> str:
    """"better", "worse" or "same" for B against A, "" where the metric has no better direction."""
    way = better(metric)
    if not way or pd.isna(ratio):
        return ""
    if ratio == 1:
        return "same"
    return "better" if (ratio < 1) == (way == "lower") else "worse"
