"""The test helpers that GPU tests lean on and the CPU never runs in them (tests/helpers.py)."""
import torch

from helpers import where_it_departs


def test_a_failed_sequence_comparison_says_where_it_departs():
    """where_it_departs names the steps over the bound (the first, the worst) and, at the first, the batch rows and
    hidden units that are off: here rows 3 and 4 of units 10-11 from t = 5, worst at t = 7."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(9, 6, 16, generator=g)
    got = ref.clone()
    got[5:, 3:5, 10:12] += 1.0
    got[7, 3:5, 10:12] += 2.0
    text = where_it_departs(got, ref, 0.01)
    assert text.startswith("4 of 9 steps over 1.00e-02, the first t = 5, worst t = 7 (")
    assert text.endswith("at t = 5: batch rows [3, 4] (2), units [10, 11] (2)")
    assert where_it_departs(ref * (1 + 1e-4), ref, 0.01).startswith("no step alone over 1.00e-02; worst t = ")
