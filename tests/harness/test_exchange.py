"""`rnnbench exchange`: the split tier's per-step exchange timed alone (a CUDA GPU measures it)."""
import csv

import pytest
import torch
from triton.runtime.errors import OutOfResources

from rnnbench import exchange
from rnnbench.cli import main


def test_without_a_gpu_it_says_why_and_exits_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    assert main(["exchange", "--hidden", "512", "--batch", "8"]) == 2
    err = capsys.readouterr().err
    assert "exchange needs a CUDA GPU" in err and "interpreter" in err and "Traceback" not in err


def test_bad_sizes_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["exchange", "--batch", "0"])
    assert exit_.value.code == 2 and "expected an integer >= 1, got 0" in capsys.readouterr().err


@pytest.mark.gpu
def test_times_the_kernel_whole_without_its_product_and_without_the_states_read(tmp_path, capsys):
    out = tmp_path / "exchange.csv"
    assert main(["exchange", "--hidden", "512", "1024", "--batch", "8", "--steps", "256", "--csv", str(out),
                 "--at-most-us", "1000"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["hidden"], r["batch"]) for r in rows] == [("512", "8"), ("1024", "8")]
    for r in rows:
        assert all(float(r[f"{work}_us_per_step"]) > 0 for work in ("full", "exchange", "barrier"))
        assert r["plan"].startswith("split(")
    out = capsys.readouterr().out
    assert "exchange only µs/step" in out and "barrier only µs/step" in out
    assert "exchange at most 1000 µs a step: met in 2 of 2 rows" in out


ROWS = [{"hidden": 1024, "batch": batch, "dtype": "bfloat16", "programs": "8x1", "full_us_per_step": full,
         "exchange_us_per_step": exchange_us, "barrier_us_per_step": 0.5, "exchange_share": exchange_us / full,
         "plan": "split"}
        for batch, full, exchange_us in ((8, 2.0, 0.9), (64, 3.0, 1.48))]


def test_a_bound_marks_each_row_and_is_tallied_by_its_worst_row():
    table = exchange.exchange_table(ROWS, at_most_us=1.0)
    assert "exchange ≤ 1 µs" in table.splitlines()[0]
    assert [line.rstrip(" |").rsplit("| ", 1)[-1] for line in table.splitlines()[2:]] == ["met", "not met"]
    assert exchange.bound_tally(ROWS, 1.0) == ("exchange at most 1 µs a step: met in 1 of 2 rows; "
                                               "the worst 1.48 µs at H=1024 B=64")
    assert exchange.bound_tally(ROWS, 1.5).startswith("exchange at most 1.5 µs a step: met in 2 of 2 rows")
    assert exchange.bound_tally([], 1.0) == "exchange at most 1 µs a step: no row was timed"


def test_without_a_bound_the_table_has_no_bound_column():
    assert "≤" not in exchange.exchange_table(ROWS) and "met" not in exchange.exchange_table(ROWS)


@pytest.mark.parametrize("bound", ["0", "-1", "inf", "nan"])
def test_a_bound_that_is_not_a_positive_number_is_a_usage_error(bound, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["exchange", "--at-most-us", bound])
    assert exit_.value.code == 2 and f"expected a number > 0, got {bound}" in capsys.readouterr().err


def test_each_shape_is_timed_skipped_with_its_reason_or_counted_failed(monkeypatch, tmp_path, capsys):
    """The command's loop, with the GPU's part stood in for: a shape the split tier does not serve is skipped, one that
    fails is named and makes the exit code 3 (EXIT_UNITS_FAILED), the others are tabled, written and held to the
    bound."""
    from rnnbench import cli

    def row(hidden, batch, dtype, steps, device):
        if batch == 1:
            raise ValueError("not served here")
        if hidden == 2048:
            raise RuntimeError("boom")
        if hidden == 4096:
            raise OutOfResources(232448, 196608, "shared memory")
        return next(r for r in ROWS if r["batch"] == batch)
    monkeypatch.setattr(cli, "device_here", lambda: torch.device("cuda"))
    monkeypatch.setattr(exchange, "exchange_row", row)
    out = tmp_path / "rows.csv"
    assert main(["exchange", "--hidden", "1024", "2048", "4096", "--batch", "1", "8", "64", "--at-most-us", "1",
                 "--csv", str(out)]) == 3
    printed = capsys.readouterr()
    assert "H=1024 B=1: skipped: not served here" in printed.err
    assert "H=2048 B=8: failed: RuntimeError: boom" in printed.err
    assert "H=4096 B=64: failed: OutOfResources: out of resource: shared memory" in printed.err  # Triton's own
    assert printed.out.splitlines()[-1] == ("exchange at most 1 µs a step: met in 1 of 2 rows; "
                                            "the worst 1.48 µs at H=1024 B=64")
    assert [r["batch"] for r in csv.DictReader(out.open())] == ["8", "64"]
