"""`rnnbench exchange`: the split tier's per-step exchange timed alone (a CUDA GPU measures it)."""
import csv

import pytest
import torch

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
    assert main(["exchange", "--hidden", "512", "1024", "--batch", "8", "--steps", "256", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["hidden"], r["batch"]) for r in rows] == [("512", "8"), ("1024", "8")]
    for r in rows:
        assert all(float(r[f"{work}_us_per_step"]) > 0 for work in ("full", "exchange", "barrier"))
        assert r["plan"].startswith("split(")
    out = capsys.readouterr().out
    assert "exchange only µs/step" in out and "barrier only µs/step" in out
