"""PNG plots of a results table: latency, speedup and memory against the swept size, the gradient
error against T and the ||dL/dh_t|| curve, and the training curves (loss, gradient norms) per step.
A speedup plot marks the scenario's speed targets (targets.py) it can be read against: a grey bar at the speedup
the target asks of its backend, at each x it selects, where the plot draws a line over every backend the target
compares with (a target is met where all of its backend's lines over them clear the bar: its ratio is over the
fastest of them).

Made to be read at a glance: every title carries the device name and wraps instead of being cut;
an axis whose values span a decade or more is logarithmic, with the x ticks at the swept values
and plain numbers as labels; each backend has its own hollow marker, larger for those drawn first,
so lines that coincide stay visible, and the panel names the backends whose values coincide; the
legend sits below the panels, never over a line."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from rnnbench.backends import BACKENDS, FP16_REFERENCE  # noqa: E402
from rnnbench.results import fallback_baseline  # noqa: E402
from rnnbench.schema import CASE_FIELDS, Case, Target  # noqa: E402

AXIS_NAMES = {"seq_len": "sequence length T", "batch": "batch size B", "hidden": "hidden size H",
              "input_size": "input size I", "layers": "layers L"}
COLORS = {name: f"C{i}" for i, name in enumerate([*BACKENDS, "reference"])}
COLORS["reference"] = "black"
MARKERS = dict(zip([*BACKENDS, "reference"], "osD^vPX"))
COINCIDE_RTOL = 1e-3  # lines closer than this everywhere are named as coinciding
PANEL_SIZE = (5.0, 3.6)  # inches per panel
LEGEND_FONT = 8
NOTE_WIDTH = 70  # characters per line of a panel's "same values" note


def slug(*parts: str) -> str:
    return "_".join(p.replace("forward+backward", "fwd_bwd").replace(".", "p") for p in parts)


def sweep_axis(bench: pd.DataFrame) -> str:
    """The case column with the most distinct values (seq_len on a tie): the x axis of speed plots."""
    return max(CASE_FIELDS, key=lambda c: (bench[c].nunique(), c == "seq_len"))


# ---- axes -------------------------------------------------------------------------------------

def x_label(rows: pd.DataFrame, x: str, moving: list[str]) -> str:
    """The x axis's name and the columns that move with it: "hidden size H = input size I" where they are equal."""
    same = [c for c in moving if (rows[c] == rows[x]).all()]
    other = [AXIS_NAMES[c] for c in moving if c not in same]
    label = " = ".join(AXIS_NAMES[c] for c in [x, *same])
    return label + (f"\n({', '.join(other)} following it)" if other else "")


def short_number(value: float, _pos=None) -> str:
    """A tick label: 65536 -> 64k (multiples of 1024, as sequence lengths are quoted), 2000, 0.05, 3e-07."""
    if 1024 <= value < 1e9 and value == int(value) and int(value) % 1024 == 0:
        return f"{int(value) // 1024}k"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 else f"{value:.2g}"


def is_log(values: pd.Series) -> bool:
    positive = values[values > 0]
    return bool(len(positive)) and positive.max() >= 10 * positive.min()


def swept_x(ax, values: pd.Series) -> None:
    """x axis: logarithmic across a decade or more; ticks at the swept values only, plain labels,
    turned when there are many."""
    ticks = sorted(values.dropna().unique())
    if is_log(values):
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(short_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(ticks) > 6:
        ax.tick_params(axis="x", labelrotation=35)


def value_y(ax, values: pd.Series, always_log: bool = False) -> None:
    """y axis: logarithmic across a decade or more (or always), labels on major ticks only: at 1, 2
    and 5 of each decade over less than three decades, at the decades beyond."""
    positive = values[values > 0]
    if not (always_log or is_log(values)) or not len(positive):
        return
    ax.set_yscale("log")
    decades = math.log10(positive.max() / positive.min()) if len(positive) else 0
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    if decades < 3:
        ax.yaxis.set_major_formatter(FuncFormatter(short_number))
    ax.yaxis.set_minor_formatter(NullFormatter())


# ---- lines ------------------------------------------------------------------------------------

def draw_line(ax, x, y, backend: str, rank: int, label: str, style: str = "-") -> None:
    """One backend's line with its own hollow marker; earlier ranks get larger markers so a line
    drawn on top of another leaves the other's markers showing."""
    ax.plot(x, y, style, marker=MARKERS.get(backend, "o"), markersize=max(11 - 2 * rank, 4), markerfacecolor="none",
            markeredgewidth=1.4, color=COLORS.get(backend), label=label, zorder=2 + rank)


def coinciding(lines: dict[str, pd.Series]) -> list[list[str]]:
    """Groups of line labels whose values agree within COINCIDE_RTOL at the same x everywhere
    (each line a Series indexed by x)."""
    groups: list[list[str]] = []
    for label, line in lines.items():
        for group in groups:
            other = lines[group[0]]
            if line.index.equals(other.index) and np.allclose(line.values, other.values, rtol=COINCIDE_RTOL, atol=0):
                group.append(label)
                break
        else:
            groups.append([label])
    return [g for g in groups if len(g) > 1]


def panel_title(ax, facet: str, lines: dict[str, pd.Series]) -> None:
    """The panel's title, with the lines that coincide named under it (in the title, not over the lines)."""
    notes = [textwrap.fill("same values: " + ", ".join(group), NOTE_WIDTH) if len(group) < len(lines)
             else f"all {len(lines)} lines coincide" for group in coinciding(lines)]
    ax.set_title("\n".join([facet, *notes]).strip("\n"), fontsize=9)


# ---- figures ----------------------------------------------------------------------------------

def _grid(n: int):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _legend_below(fig, axes) -> None:
    """One legend for the figure, below the panels: it never covers a line."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        entry_width = max(map(len, entries)) * LEGEND_FONT * 0.55 / 72 + 0.7  # inches: text and marker
        per_row = max(1, int(fig.get_figwidth() / entry_width))
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), per_row),
                   fontsize=LEGEND_FONT, frameon=False)


def _save(fig, out: Path, name: str, title: str, rect=(0, 0, 1, 1)) -> tuple[str, str]:
    """Saves with the title wrapped to the figure's width, and the bounding box grown to whatever
    was drawn, so no title or legend is cut."""
    width_chars = int(fig.get_figwidth() * 72 / (plt.rcParams["font.size"] * 1.2 * 0.55))
    fig.suptitle(textwrap.fill(title, width=max(width_chars, 30)))
    if fig.get_layout_engine() is None:
        fig.tight_layout(rect=rect)
    fig.savefig(out / name, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return title, name


def follows(frame: pd.DataFrame, x: str, column: str) -> bool:
    """Whether `column` takes one value at each value of `x`: it moves with the x axis (the input size
    where a sweep leaves it to the hidden size's default), so it makes no panels of its own."""
    return bool((frame.groupby(x)[column].nunique() <= 1).all())


def _facets(frame: pd.DataFrame, by: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per combination of the `by` columns that take more than one value."""
    varying = [c for c in by if frame[c].nunique() > 1]
    if not varying:
        return [("", frame)]
    return [(" ".join(f"{c}={v}" for c, v in zip(varying, key if isinstance(key, tuple) else (key,))), group)
            for key, group in frame.groupby(varying)]


def target_bars(ax, group: pd.DataFrame, x: str, metric: str, targets: tuple[Target, ...],
                names: dict[str, str]) -> list[float]:
    """Each target's speedup as a grey bar at the x of every row of the panel it selects; returns their levels."""
    levels = []
    for target in targets:
        rows = group[(group.backend == target.backend) & (group.metric == metric)].to_dict("records")
        xs = [r[x] for r in rows if target.selects(r["mode"], r["dtype"], Case.from_row(r))]
        if xs:
            ax.plot(xs, [target.at_least] * len(xs), linestyle="none", marker="_", markersize=20, markeredgewidth=2.5,
                    color="0.55", zorder=1, label=f"target for {names.get(target.backend, target.backend)}")
            levels.append(target.at_least)
    return levels


def speed_figure(bench: pd.DataFrame, metrics: dict[str, str], ylabel: str, out: Path, name: str,
                 title: str, names: dict[str, str], hline: float | None = None,
                 targets: tuple[Target, ...] = ()) -> tuple[str, str] | None:
    """One panel per combination of the other case columns; a line per backend (and per metric,
    dashed for the second); the p20-p80 band shaded where there is one; targets' bars (target_bars)."""
    rows = bench[bench.metric.isin(list(metrics)) & bench.p50.notna()]
    if rows.empty:
        return None
    x = sweep_axis(bench)
    present = [m for m in metrics if m in set(rows.metric)]
    if len(present) == 1:  # one metric: the axis says which, the legend only names backends
        ylabel = ", ".join(filter(None, [ylabel, metrics[present[0]]]))
        metrics = {present[0]: ""}
    moving = [c for c in CASE_FIELDS if c != x and rows[c].nunique() > 1 and follows(rows, x, c)]
    facets = _facets(rows, [c for c in CASE_FIELDS if c != x and c not in moving])
    fig, axes = _grid(len(facets))
    for ax, (facet, group) in zip(axes, facets):
        lines = {}
        for rank, ((backend, metric), line) in enumerate(group.groupby(["backend", "metric"], sort=False)):
            line = line.sort_values(x)
            label = f"{names.get(backend, backend)} {metrics[metric]}".strip()
            draw_line(ax, line[x], line.p50, backend, rank, label, "-" if metric == present[0] else "--")
            if line.p20.notna().all():
                ax.fill_between(line[x], line.p20, line.p80, color=COLORS.get(backend), alpha=0.15, linewidth=0)
            lines[label] = pd.Series(line.p50.values, index=line[x].values)
        if hline is not None:
            ax.axhline(hline, color="grey", linewidth=0.8)
        levels = pd.Series(target_bars(ax, group, x, present[0], targets, names), dtype=float)
        swept_x(ax, group[x])
        value_y(ax, pd.concat([group.p50, group.p20.dropna(), group.p80.dropna(), levels]))
        ax.set(xlabel=x_label(group, x, moving), ylabel=ylabel)
        ax.grid(True, which="major", alpha=0.3)
        panel_title(ax, facet, lines)
    _legend_below(fig, axes)
    return _save(fig, out, name, title)


def stability_error_figure(study: pd.DataFrame, dtype: str, out: Path, device: str,
                           names: dict[str, str]) -> tuple[str, str] | None:
    """Relative error vs T, a panel per spectral radius: solid = worst gradient, dashed = output."""
    rows = study[(study.dtype == dtype) & study.metric.str.startswith("rel_err") & study.p50.notna()]
    if rows.empty:
        return None
    rows = rows.assign(what=rows.metric.where(rows.metric == "rel_err_output", "rel_err_grad"))
    worst = rows.groupby(["radius", "backend", "what", "seq_len"], as_index=False, sort=False).p50.max()
    radii = sorted(worst.radius.unique(), key=float)
    fig, axes = _grid(len(radii))
    for ax, radius in zip(axes, radii):
        lines = {}
        panel = worst[worst.radius == radius]
        for rank, ((backend, what), line) in enumerate(panel.groupby(["backend", "what"], sort=False)):
            line = line.sort_values("seq_len")
            kind = "output" if what == "rel_err_output" else "worst gradient"
            label = f"{names.get(backend, backend)} {kind}"
            draw_line(ax, line.seq_len, line.p50, backend, rank // 2, label, "--" if kind == "output" else "-")
            lines[label] = pd.Series(line.p50.values, index=line.seq_len.values)
        swept_x(ax, panel.seq_len)
        value_y(ax, panel.p50, always_log=True)
        ax.set(xlabel=AXIS_NAMES["seq_len"], ylabel="relative error vs float64")
        ax.grid(True, which="major", alpha=0.3)
        panel_title(ax, f"spectral radius {radius}", lines)
    _legend_below(fig, axes)
    return _save(fig, out, f"stability_error_{dtype}.png", f"Relative error vs float64 reference ({dtype}) — {device}")


def grad_norm_figure(study: pd.DataFrame, out: Path, device: str, names: dict[str, str]) -> tuple[str, str] | None:
    """||dL/dh_t|| against t (loss at the last step), a panel per spectral radius."""
    rows = study[(study.metric == "grad_norm") & study.p50.notna()]
    if rows.empty:
        return None
    radii = sorted(rows.radius.unique(), key=float)
    fig, axes = _grid(len(radii))
    for ax, radius in zip(axes, radii):
        lines = {}
        panel = rows[rows.radius == radius]
        for (backend, dtype), line in panel.groupby(["backend", "dtype"], sort=False):
            line = line.sort_values("step")
            ref = backend == "reference"
            label = f"{names.get(backend, backend)} {dtype}"
            ax.plot(line.step, line.p50, color=COLORS.get(backend), linewidth=3 if ref else 1.2,
                    linestyle="-" if ref or dtype == "float32" else "--", label=label, zorder=1 if ref else 2)
            lines[label] = pd.Series(line.p50.values, index=line.step.values)
        value_y(ax, panel.p50, always_log=True)
        ax.set(xlabel="time step t (loss at the last step)", ylabel="||dL/dh_t||")
        ax.grid(True, which="major", alpha=0.3)
        panel_title(ax, f"spectral radius {radius}", lines)
    _legend_below(fig, axes)
    return _save(fig, out, "grad_norm.png", f"Gradient norm through time (BPTT) — {device}")


def readable_targets(group: pd.DataFrame, speedups: pd.DataFrame, baseline: str,
                     targets: tuple[Target, ...]) -> tuple[Target, ...]:
    """The targets a speedup plot of these rows can be read against: speedups in the same row (at_least, no `at`),
    whose backends of `over` that ran here all have a line on it (over the baseline; bfloat16 also over cuDNN
    float16)."""
    drawn = {baseline} | ({FP16_REFERENCE} if (speedups.metric == "speedup_fp16").any() else set())
    ran = set(group[group.metric == "latency"].backend)
    return tuple(target for target in targets if target.at_least is not None and not target.at
                 and set(target.over) & ran and set(target.over) & ran <= drawn)


def speedup_axes(bench: pd.DataFrame, baseline: str) -> tuple[dict[str, str], str]:
    """The speedup metrics of a plot with their legend labels, and the y-axis label."""
    if (bench.metric == "speedup_fp16").any():  # bfloat16: a dashed line over cuDNN float16 beside each
        return {"speedup": f"over {baseline}", "speedup_fp16": f"over {FP16_REFERENCE}"}, "speedup (x; > 1 is faster)"
    return {"speedup": ""}, f"speedup over {baseline}\n(x; > 1 is faster)"


TRAINING_CURVES = {"loss": ("loss", "Training loss"),
                   "param_grad_norm": ("‖dL/dθ‖ before clipping", "Gradient norm"),
                   "input_grad_ratio": ("‖dL/dx_1‖ / ‖dL/dx_T‖", "Gradient reaching the first step")}


def training_figures(training: pd.DataFrame, out: Path, device: str, names: dict[str, str]) -> list[tuple[str, str]]:
    """Per task and curve (TRAINING_CURVES): a panel per setting (clipping, U's radius and dtype: a
    row each) and T (a column each), a line per backend against the training step. Loss panels show
    the chance level dashed; a panel names the backends that diverged, and where."""
    made = []
    units = dict(list(training.groupby(["mode", "radius", "dtype", "seq_len"], sort=False)))
    curves = training[training.step.notna()]
    task_of = curves["mode"].str.split().str[0]  # "copy clip=1" -> copy
    for task, rows in curves.groupby(task_of, sort=False):
        settings = list(rows.groupby(["mode", "radius", "dtype"], sort=False).groups)
        seq_lens = sorted(rows.seq_len.unique())
        for metric, (ylabel, what) in TRAINING_CURVES.items():
            fig, axes = plt.subplots(len(settings), len(seq_lens), squeeze=False, layout="constrained",
                                     figsize=(PANEL_SIZE[0] * len(seq_lens), PANEL_SIZE[1] * len(settings)))
            for setting, row_axes in zip(settings, axes):
                for seq_len, ax in zip(seq_lens, row_axes):
                    if (*setting, seq_len) in units:
                        _training_panel(ax, units[(*setting, seq_len)], metric, ylabel, names)
                    else:  # every backend failed or was skipped at this T: the failures section says why
                        ax.set_visible(False)
            _legend_below(fig, list(axes.flat))
            made.append(_save(fig, out, f"training_{metric}_{task}.png", f"{what}: {task} task — {device}"))
    return made


def _training_panel(ax, unit: pd.DataFrame, metric: str, ylabel: str, names: dict[str, str]) -> None:
    """One setting and T: a line per backend of `metric` against the step. Values a logarithmic axis
    cannot show (NaN, inf; 0 for the gradient curves) are left out, and the title counts them."""
    curve = unit[(unit.metric == metric) & unit.step.notna()]
    log = metric != "loss"  # the gradient curves span many decades; the loss only sometimes (value_y decides)
    lines, left_out = {}, []
    for rank, (backend, line) in enumerate(curve.groupby("backend", sort=False)):
        line = line.sort_values("step")
        shown = np.isfinite(line.p50) & ((line.p50 > 0) if log else True)
        label = names.get(backend, backend)
        # the first backend's line wider, so one drawn on top of it leaves it showing; dots where points are few
        ax.plot(line.step[shown], line.p50[shown], color=COLORS.get(backend), linewidth=2.6 if rank == 0 else 1.2,
                marker="o" if shown.sum() <= 20 else None, markersize=3, label=label, zorder=2 + rank)
        lines[label] = pd.Series(line.p50.values, index=line.step.values)
        zeros, other = int((line.p50 == 0).sum()) if log else 0, int((~np.isfinite(line.p50)).sum())
        if zeros or other:
            counts = [f"0 at {zeros} steps" if zeros else "", f"NaN/inf at {other}" if other else ""]
            left_out.append(f"{label}: " + ", ".join(filter(None, counts)))
    chance = unit[unit.metric == "chance_loss"].p50
    if metric == "loss" and len(chance):
        ax.axhline(chance.iloc[0], color="grey", linestyle="--", linewidth=0.8, label="chance level")
    value_y(ax, curve.p50[np.isfinite(curve.p50) & (curve.p50 > 0)], always_log=log)
    if curve.step.max() > 0:
        ax.set_xlim(0, curve.step.max())  # every step trained, drawn or not
    ax.set(xlabel="training step", ylabel=ylabel)
    ax.grid(True, which="major", alpha=0.3)
    first = unit.iloc[0]
    facet = f"T={first['seq_len']}, {first['mode']}, {first['dtype']}" + \
        (f", U radius {first['radius']}" if first["radius"] else "")
    diverged = [f"{names.get(r.backend, r.backend)} at step {int(r.p50)}"
                for r in unit[unit.metric == "diverged_at_step"].itertuples()]
    notes = [facet] + (["diverged: " + ", ".join(diverged)] if diverged else []) + \
        (["not drawn: " + "; ".join(left_out)] if left_out else [])
    panel_title(ax, "\n".join(notes), lines)


def make_plots(frame: pd.DataFrame, out: Path, device: str, names: dict[str, str],
               baseline: str, targets: tuple[Target, ...] = ()) -> list[tuple[str, str]]:
    """Writes every plot the data supports into out; returns (title, file name) pairs. names: the
    backends' display names; baseline: the first baseline (speedups over a fallback baseline are
    left out of the plots: a line must not change what it is compared with); targets: the scenario's."""
    made = []
    bench = frame[frame.kind == "bench"]
    for (mode, dtype), group in bench.groupby(["mode", "dtype"], sort=False):
        where = f"({mode}, {dtype}) — {device}"
        over_first = group[~group.note.map(lambda note: fallback_baseline(note) is not None)]
        made += [
            speed_figure(group, {"latency": ""}, "latency p50 (ms), p20-p80 shaded", out,
                         slug("latency", mode, dtype) + ".png", f"Latency {where}", names),
            speed_figure(over_first, *speedup_axes(over_first, baseline), out, slug("speedup", mode, dtype) + ".png",
                         f"Speedup over {names.get(baseline, baseline)} {where}", names, hline=1.0,
                         targets=readable_targets(group, over_first, baseline, targets)),
            speed_figure(group, {"peak_memory": "peak", "activation_memory": "saved for backward"}, "memory (MiB)",
                         out, slug("memory", mode, dtype) + ".png", f"Memory {where}", names),
        ]
    study = frame[frame.kind == "stability"]
    made += [stability_error_figure(study, dtype, out, device, names)
             for dtype in study.dtype.unique() if dtype != "float64"]
    made.append(grad_norm_figure(study, out, device, names))
    made += training_figures(frame[frame.kind == "training"], out, device, names)
    return [m for m in made if m is not None]


GROUP_COLORS = {"input projection": "C0", "recurrence": "C3", "backward GEMMs": "C2", "other": "0.6"}


def where_time_goes_figure(profile: dict, out: Path, name: str) -> tuple[str, str] | None:
    """Left: a stacked bar per backend of its time by kernel group (share of its total, the total
    written at the bar's end). Right: kernel launches per time step, log scale."""
    from rnnbench.launches import GROUPS
    ran = [r for r in profile["backends"] if r["status"] == "ok"]
    if not ran:
        return None
    names = [r["backend"] for r in ran]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(ran) + 2.2), gridspec_kw={"width_ratios": [3, 2]})
    start = [0.0] * len(ran)
    for group in GROUPS:
        totals = [sum(r["time_us_by_group"].values()) or 1.0 for r in ran]
        shares = [100 * r["time_us_by_group"][group] / t for r, t in zip(ran, totals)]
        left.barh(names, shares, left=start, color=GROUP_COLORS[group], label=group)
        start = [s + v for s, v in zip(start, shares)]
    for i, r in enumerate(ran):
        left.text(101, i, f"{sum(r['time_us_by_group'].values()) / 1e3:.3g} ms", va="center", fontsize=8)
    gpu = profile["device"] == "cuda"
    left.set(xlim=(0, 118), xlabel=f"share of {'GPU kernel' if gpu else 'CPU op (no GPU)'} time (%)")
    left.invert_yaxis()
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncols=len(GROUPS), fontsize=9, frameon=False)
    per_step = [r["launches_per_step"] for r in ran]
    right.barh(names, per_step, color="0.35")
    for i, value in enumerate(per_step):
        right.text(value, i, f" {value:.3g}", va="center", fontsize=8)
    if max(per_step) >= 10 * min(per_step) > 0:
        right.set(xscale="log", xlim=(min(per_step) / 3, max(per_step) * 5))
    else:
        right.set(xlim=(0, max(per_step) * 1.3))
    right.set(xlabel="kernel launches per time step" + ("" if gpu else " (counted, not timed)"))
    right.invert_yaxis()
    right.set_yticklabels([])
    title = (f"Where the time goes: {profile['mode']}, {profile['dtype']}, {Case(**profile['case']).label} — "
             f"{profile['device_name']}")
    return _save(fig, out, name, title, rect=(0, 0.5 / fig.get_figheight(), 1, 1))
