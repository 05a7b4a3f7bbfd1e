"""PNG plots of a results table: latency, speedup and memory against the swept size, the gradient
error against T and the ||dL/dh_t|| curve. Every title carries the device name; an axis whose values
span a decade or more is logarithmic."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402

from rnnbench.backends import BACKENDS  # noqa: E402
from rnnbench.results import CASE_COLUMNS  # noqa: E402

AXIS_NAMES = {"seq_len": "sequence length T", "batch": "batch size B", "hidden": "hidden size H",
              "input_size": "input size I", "layers": "layers L"}
COLORS = {name: f"C{i}" for i, name in enumerate([*BACKENDS, "reference"])}
COLORS["reference"] = "black"


def slug(*parts: str) -> str:
    return "_".join(p.replace("forward+backward", "fwd_bwd").replace(".", "p") for p in parts)


def sweep_axis(bench: pd.DataFrame) -> str:
    """The case column with the most distinct values (seq_len on a tie): the x axis of speed plots."""
    return max(CASE_COLUMNS, key=lambda c: (bench[c].nunique(), c == "seq_len"))


def _scale(ax, values: pd.Series, axis: str) -> None:
    positive = values[values > 0]
    if len(positive) and positive.max() >= 10 * positive.min():
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _grid(n: int, width: float = 5.0, height: float = 3.8):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, out: Path, name: str, title: str, rect=(0, 0, 1, 1)) -> tuple[str, str]:
    fig.suptitle(title)
    fig.tight_layout(rect=rect)
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return title, name


def _facets(frame: pd.DataFrame, by: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per combination of the `by` columns that take more than one value."""
    varying = [c for c in by if frame[c].nunique() > 1]
    if not varying:
        return [("", frame)]
    return [(" ".join(f"{c}={v}" for c, v in zip(varying, key if isinstance(key, tuple) else (key,))), group)
            for key, group in frame.groupby(varying)]


def speed_figure(bench: pd.DataFrame, metrics: dict[str, str], ylabel: str, out: Path, name: str,
                 title: str, hline: float | None = None) -> tuple[str, str] | None:
    """One panel per combination of the other case columns; a line per backend (and per metric,
    dashed for the second); the p20-p80 band shaded where there is one."""
    rows = bench[bench.metric.isin(list(metrics)) & bench.p50.notna()]
    if rows.empty:
        return None
    x = sweep_axis(bench)
    facets = _facets(rows, [c for c in CASE_COLUMNS if c != x])
    fig, axes = _grid(len(facets))
    for ax, (facet, group) in zip(axes, facets):
        for (backend, metric), line in group.groupby(["backend", "metric"], sort=False):
            line = line.sort_values(x)
            style = "-" if metric == next(iter(metrics)) else "--"
            ax.plot(line[x], line.p50, style, marker="o", color=COLORS.get(backend), label=f"{backend} {metrics[metric]}".strip())
            if line.p20.notna().all():
                ax.fill_between(line[x], line.p20, line.p80, color=COLORS.get(backend), alpha=0.15)
        if hline is not None:
            ax.axhline(hline, color="grey", linewidth=0.8)
        _scale(ax, group[x], "x")
        _scale(ax, group.p50, "y")
        ax.set(title=facet, xlabel=AXIS_NAMES[x], ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out, name, title, rect=(0, 0.5 / fig.get_figheight(), 1, 1))


def stability_error_figure(study: pd.DataFrame, dtype: str, out: Path, device: str) -> tuple[str, str] | None:
    """Relative error vs T, a panel per spectral radius: solid = worst gradient, dashed = output."""
    rows = study[(study.dtype == dtype) & study.metric.str.startswith("rel_err") & study.p50.notna()]
    if rows.empty:
        return None
    rows = rows.assign(what=rows.metric.where(rows.metric == "rel_err_output", "rel_err_grad"))
    worst = rows.groupby(["radius", "backend", "what", "seq_len"], as_index=False).p50.max()
    radii = sorted(worst.radius.unique(), key=float)
    fig, axes = _grid(len(radii))
    for ax, radius in zip(axes, radii):
        for (backend, what), line in worst[worst.radius == radius].groupby(["backend", "what"]):
            line = line.sort_values("seq_len")
            kind = "output" if what == "rel_err_output" else "worst gradient"
            ax.plot(line.seq_len, line.p50, "--" if kind == "output" else "-", marker="o",
                    color=COLORS.get(backend), label=f"{backend} {kind}")
        _scale(ax, worst.seq_len, "x")
        ax.set_yscale("log")
        ax.set(title=f"spectral radius {radius}", xlabel=AXIS_NAMES["seq_len"], ylabel="relative error vs float64")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out, f"stability_error_{dtype}.png", f"Relative error vs float64 reference ({dtype}) — {device}")


def grad_norm_figure(study: pd.DataFrame, out: Path, device: str) -> tuple[str, str] | None:
    """||dL/dh_t|| against t (loss at the last step), a panel per spectral radius."""
    rows = study[(study.metric == "grad_norm") & study.p50.notna()]
    if rows.empty:
        return None
    radii = sorted(rows.radius.unique(), key=float)
    fig, axes = _grid(len(radii))
    for ax, radius in zip(axes, radii):
        for (backend, dtype), line in rows[rows.radius == radius].groupby(["backend", "dtype"]):
            line = line.sort_values("step")
            ref = backend == "reference"
            ax.plot(line.step, line.p50, color=COLORS.get(backend), linewidth=2.5 if ref else 1.2,
                    linestyle="-" if ref or dtype == "float32" else "--", label=f"{backend} {dtype}")
        ax.set_yscale("log")
        ax.set(title=f"spectral radius {radius}", xlabel="time step t (loss at the last step)",
               ylabel="||dL/dh_t||")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out, "grad_norm.png", f"Gradient norm through time (BPTT) — {device}")


def make_plots(frame: pd.DataFrame, out: Path, device: str) -> list[tuple[str, str]]:
    """Writes every plot the data supports into out; returns (title, file name) pairs."""
    made = []
    bench = frame[frame.kind == "bench"]
    for (mode, dtype), group in bench.groupby(["mode", "dtype"], sort=False):
        where = f"({mode}, {dtype}) — {device}"
        made += [
            speed_figure(group, {"latency": ""}, "latency p50 (ms), p20-p80 shaded", out,
                         slug("latency", mode, dtype) + ".png", f"Latency {where}"),
            speed_figure(group, {"speedup": ""}, "speedup vs baseline (x)", out,
                         slug("speedup", mode, dtype) + ".png", f"Speedup over the baseline {where}", hline=1.0),
            speed_figure(group, {"peak_memory": "peak", "activation_memory": "saved for backward"}, "memory (MiB)",
                         out, slug("memory", mode, dtype) + ".png", f"Memory {where}"),
        ]
    study = frame[frame.kind == "stability"]
    made += [stability_error_figure(study, dtype, out, device) for dtype in study.dtype.unique() if dtype != "float64"]
    made.append(grad_norm_figure(study, out, device))
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
    case = profile["case"]
    title = (f"Where the time goes: {profile['mode']}, {profile['dtype']}, T={case['seq_len']} B={case['batch']} "
             f"H={case['hidden']} — {profile['device_name']}")
    return _save(fig, out, name, title, rect=(0, 0.5 / fig.get_figheight(), 1, 1))
