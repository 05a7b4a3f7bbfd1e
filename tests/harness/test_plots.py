"""Plots read at a glance: titles whole, x ticks at the swept values without overlapping labels,
coinciding lines named, the baseline on the speedup axis, the legend below the panels, the targets' bars."""
import itertools

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from rnnbench import plots
from rnnbench.backends import display_name
from rnnbench.results import COLUMNS
from rnnbench.schema import Target

BACKENDS = ["cudnn", "triton", "eager"]
NAMES = {b: display_name(b, "cpu") for b in BACKENDS}
DEVICE = "a very long device name that would not fit on one line above a single panel (x86_64)"


def bench_frame(seq_lens=(16, 64, 256)) -> pd.DataFrame:
    """Rows of a CPU run: latency differs per backend, speedup against cudnn, activation memory
    the same for every backend (the lines coincide)."""
    rows = []
    for (i, backend), t in itertools.product(enumerate(BACKENDS), seq_lens):
        latency = 0.01 * t * (1 + i)
        values = {"latency": (latency * 0.9, latency, latency * 1.1), "speedup": (None, 1 / (1 + i), None),
                  "activation_memory": (None, t * 0.001, None)}
        for metric, (p20, p50, p80) in values.items():
            rows.append({"scenario": "s", "kind": "bench", "backend": backend, "label": "", "mode": "forward+backward",
                         "dtype": "float32", "seq_len": t, "batch": 4, "hidden": 32, "input_size": 32, "layers": 1,
                         "radius": "", "step": None, "metric": metric, "unit": "", "p20": p20, "p50": p50, "p80": p80,
                         "error": "", "note": "", "device": "cpu", "timestamp": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """make_plots on bench_frame, keeping every figure (drawn, not closed) by title."""
    kept = {}
    real_save = plots._save

    def keep(fig, out, name, title, rect=(0, 0, 1, 1)):
        result = real_save(fig, out, name, title, rect)
        fig.canvas.draw()
        kept[title.split(" (")[0]] = (fig, out / name)
        return result
    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    plots.make_plots(bench_frame(), tmp_path, DEVICE, NAMES, "cudnn")
    yield kept
    plt.close("all")


def test_every_speed_plot_is_made(figures):
    assert set(figures) == {"Latency", "Speedup over PyTorch CPU RNN", "Memory"}


def test_titles_are_whole_in_the_saved_image(figures):
    for fig, path in figures.values():
        image = matplotlib.image.imread(path)[..., :3]
        border = np.concatenate([image[:8].reshape(-1, 3), image[:, :8].reshape(-1, 3), image[:, -8:].reshape(-1, 3)])
        assert (border > 0.99).all(), f"{path.name}: something is drawn at the image's edge (cut off)"
        title = fig._suptitle
        assert "\n" in title.get_text()  # wrapped, not cut: the device name is longer than the panel
        assert title.get_window_extent().width <= fig.bbox.width


def test_the_speedup_axis_names_the_baseline(figures):
    fig, _ = figures["Speedup over PyTorch CPU RNN"]
    assert fig.axes[0].get_ylabel() == "speedup over cudnn\n(x; > 1 is faster)"


def test_x_ticks_are_the_swept_values_and_their_labels_do_not_overlap():
    swept = [64, 128, 256, 384, 512, 768, 1024, 2048]  # hidden_sweep.yaml
    fig, (ax,) = plots._grid(1)
    ax.plot(swept, swept)
    plots.swept_x(ax, pd.Series(swept))
    fig.canvas.draw()
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == swept
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == ["64", "128", "256", "384", "512", "768", "1k", "2k"]
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    assert not [t for t in ax.get_xminorticklabels() if t.get_text()]
    plt.close(fig)


def test_short_numbers():
    assert [plots.short_number(v) for v in (1024, 65536, 1000, 2000, 0.05, 3e-7, 250000.0)] == \
        ["1k", "64k", "1000", "2000", "0.05", "3e-07", "2.5e+05"]


def test_coinciding_lines_are_named_above_the_panel_and_keep_their_markers(figures):
    fig, _ = figures["Memory"]
    ax = fig.axes[0]
    assert ax.get_title() == "all 3 lines coincide"
    markers = [line.get_marker() for line in ax.get_lines() if line.get_label() in NAMES.values()]
    sizes = [line.get_markersize() for line in ax.get_lines() if line.get_label() in NAMES.values()]
    assert len(set(markers)) == 3 and sizes == sorted(sizes, reverse=True)  # drawn later = smaller, on top
    lines = {"a": pd.Series([1.0, 2.0]), "b": pd.Series([1.0, 2.0005]), "c": pd.Series([1.0, 2.1])}
    assert plots.coinciding(lines) == [["a", "b"]]
    fig, (ax,) = plots._grid(1)
    plots.panel_title(ax, "batch=4", lines)
    assert ax.get_title() == "batch=4\nsame values: a, b"
    plt.close(fig)


def test_the_legend_sits_below_the_panels_with_no_empty_band(figures):
    for name, (fig, _) in figures.items():
        (legend,) = fig.legends
        box, lowest_axes = legend.get_window_extent(), min(ax.get_window_extent().y0 for ax in fig.axes)
        assert box.y1 < lowest_axes, name  # it covers no line
        assert box.y0 < 0.05 * fig.bbox.height, name  # and nothing but margin lies below it


def hidden_sweep_frame(input_size) -> pd.DataFrame:
    """Latency rows of a sweep over H at two batch sizes, the input size given by input_size(H)."""
    rows = []
    for (i, backend), batch, hidden in itertools.product(enumerate(BACKENDS), (8, 64), (64, 128, 256)):
        rows.append({"scenario": "s", "kind": "bench", "backend": backend, "label": "", "mode": "forward",
                     "dtype": "float32", "seq_len": 16, "batch": batch, "hidden": hidden,
                     "input_size": input_size(hidden), "layers": 1, "radius": "", "step": None, "metric": "latency",
                     "unit": "ms", "p20": None, "p50": hidden * batch * (1 + i) * 1e-3, "p80": None, "error": "",
                     "note": "", "device": "cpu", "timestamp": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.mark.parametrize("input_size, xlabel", [
    (lambda h: h, "hidden size H = input size I"),  # the race: the input size left to its default, H
    (lambda h: 2 * h, "hidden size H\n(input size I following it)"),
])
def test_a_column_moving_with_the_x_axis_makes_no_panels(monkeypatch, tmp_path, input_size, xlabel):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, name, title, rect=None: drawn.append(fig) or (title, name))
    plots.speed_figure(hidden_sweep_frame(input_size), {"latency": ""}, "latency", tmp_path, "l.png", "Latency", NAMES)
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes if ax.has_data()] == ["batch=8", "batch=64"]
    assert all(ax.get_xlabel() == xlabel and len(ax.get_lines()) == 3 for ax in fig.axes if ax.has_data())
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [3, 3, 3]  # every H on one line
    plt.close(fig)


def test_a_column_swept_on_its_own_still_makes_panels(monkeypatch, tmp_path):
    frame = pd.concat([hidden_sweep_frame(lambda h: 32), hidden_sweep_frame(lambda h: 48)])  # I apart from H
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, name, title, rect=None: drawn.append(fig) or (title, name))
    plots.speed_figure(frame, {"latency": ""}, "latency", tmp_path, "l.png", "Latency", NAMES)
    (fig,) = drawn
    titles = [ax.get_title() for ax in fig.axes if ax.has_data()]
    assert titles == ["batch=8 input_size=32", "batch=8 input_size=48", "batch=64 input_size=32",
                      "batch=64 input_size=48"]
    assert {ax.get_xlabel() for ax in fig.axes if ax.has_data()} == {"hidden size H"}
    plt.close(fig)


def speedup_panel(monkeypatch, tmp_path, *targets: Target):
    """The speedup figure's panel of make_plots on bench_frame (T = 16, 64, 256), with these targets."""
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out, name, title, rect=None: drawn.setdefault(name, fig) and None)
    plots.make_plots(bench_frame(), tmp_path, DEVICE, NAMES, "cudnn", targets)
    (fig,) = [fig for name, fig in drawn.items() if name.startswith("speedup")]
    return fig.axes[0]


def bars(ax) -> list[tuple[list, list]]:
    return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines() if line.get_marker() == "_"]


def test_a_speedup_target_is_a_bar_at_each_row_it_selects(monkeypatch, tmp_path):
    target = Target("t", "triton", ("cudnn",), at_least=1.5, where=(("seq_len", (64, 256)),))
    ax = speedup_panel(monkeypatch, tmp_path, target)
    assert bars(ax) == [([64, 256], [1.5, 1.5])]
    assert f"target for {NAMES['triton']}" in ax.get_legend_handles_labels()[1]
    plt.close("all")


def test_the_axis_reaches_a_bar_above_every_line(monkeypatch, tmp_path):
    ax = speedup_panel(monkeypatch, tmp_path, Target("t", "triton", ("cudnn",), at_least=50))
    assert bars(ax) == [([16, 64, 256], [50, 50, 50])] and ax.get_ylim()[1] >= 50  # the lines stay below 1.1
    plt.close("all")


@pytest.mark.parametrize("target", [
    Target("over a backend with no line here", "triton", ("eager",), at_least=1.5),
    Target("over one with a line and one without", "triton", ("cudnn", "eager"), at_least=1.5),
    Target("a ratio of times", "triton", ("cudnn",), at_most=1.5),
    Target("against other rows", "triton", ("cudnn",), at_least=1.5, at=(("batch", 8),)),
    Target("selecting no row", "triton", ("cudnn",), at_least=1.5, where=(("dtypes", ("bfloat16",)),)),
])
def test_a_target_the_plot_cannot_be_read_against_has_no_bar(monkeypatch, tmp_path, target):
    assert bars(speedup_panel(monkeypatch, tmp_path, target)) == []
    plt.close("all")
