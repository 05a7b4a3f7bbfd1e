"""The split tier's per-step exchange, timed alone.

Every step of the split tier (kernels/split.py) each program reads the whole previous state through
L2, writes its slice of the new one and meets the other programs at a grid barrier (or at a
cluster's barrier: 16-bit H = 512 from sm_90, the other sizes with the switch
kernels.dispatch.SPLIT_CLUSTERS; through the cluster's shared memory with SPLIT_CLUSTER_EXCHANGE:
the plan column says which). The same kernel is timed three
ways at each shape (kernels.split.STEP_WORKS):

- full: the layer's step;
- exchange: the product compiled out, so its time per step is the cost of the exchange and the
  barrier. It is an upper bound: to keep the state's reads, that kernel sums the state over the
  warps, which can cost more than the product it replaces (on the H200 at H = 512, B = 64: 3.27 us
  per step against 2.78 for the full kernel);
- barrier: the state's read compiled out too, which leaves each step's input, its stores and the
  barrier: what the barrier costs, apart from reading the state.

Side by side they say how much of a split step is synchronisation, and how much of that is the
barrier rather than the read of the state.

    rnnbench exchange [--hidden 512 1024 2048] [--batch 1 8 64 256] [--dtype bfloat16] [--steps 2048]
                      [--at-most-us 1.0]

With --at-most-us each row's exchange is held to that bound, and a last line tallies the rows that meet it: issue 8's
target is `--hidden 1024 --at-most-us 1` (barrier plus exchange, at most 1 us a step at H = 1024). The exchange
column is an upper bound (above), so a row that meets the bound meets it.

It needs a CUDA GPU: the exchange is between programs resident at the same time, which the Triton
interpreter cannot have (it runs programs one after another).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from rnnbench.report import md_table

HIDDEN = (512, 1024, 2048)
BATCH = (1, 8, 64, 256)


def us_per_step(call: Callable[[], object], steps: int) -> float:
    """Median time of one call over its steps, in microseconds (CUDA events, L2 flushed between calls)."""
    import triton.testing
    return triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median") * 1e3 / steps


def exchange_row(hidden: int, batch: int, dtype: torch.dtype, steps: int, device: torch.device) -> dict:
    """Time per step of the split forward kernel at one shape: whole, without its product, and without the
    state's read either (STEP_WORKS)."""
    from kernels import plan_for
    from kernels.barrier_status import check_barriers
    from kernels.runtime import device_facts
    from kernels.split import STEP_WORKS, split_forward, split_grid
    plan = plan_for(hidden, batch, dtype, device, kernel="split")
    blocks = plan.config.forward
    gen = torch.Generator(device=device).manual_seed(0)
    xw = torch.randn(steps, batch, hidden, generator=gen, device=device).to(dtype)
    h0 = torch.zeros(batch, hidden, device=device, dtype=dtype)
    u = (torch.randn(hidden, hidden, generator=gen, device=device) * 0.9 / hidden ** 0.5).to(dtype)
    try:
        full, exchange, barrier = (us_per_step(partial(split_forward, xw, h0, u, False, blocks, "tanh", work=work),
                                               steps) for work in STEP_WORKS)
    finally:  # the calls return without reading their barriers' status: this shape's, read here, fail its own row
        check_barriers()  # a timeout raised here wins over the timing's error, kept as its context: it explains it
    slices, groups = split_grid(batch, hidden, blocks, device_facts(device)[0], device)
    return {"hidden": hidden, "batch": batch, "dtype": str(dtype).removeprefix("torch."),
            "programs": f"{slices}x{groups}",
            "full_us_per_step": full, "exchange_us_per_step": exchange, "barrier_us_per_step": barrier,
            "exchange_share": exchange / full,
            "plan": plan.name}


def exchange_table(rows: list[dict], at_most_us: float | None = None) -> str:
    """The rows as a markdown table; with a bound, a column that says whether each row's exchange meets it."""
    header = ["H", "B", "dtype", "programs (slices x groups)", "full kernel µs/step", "exchange only µs/step",
              "barrier only µs/step", "exchange share"]
    cells = [[r["hidden"], r["batch"], r["dtype"], r["programs"], f"{r['full_us_per_step']:.2f}",
              f"{r['exchange_us_per_step']:.2f}", f"{r['barrier_us_per_step']:.2f}", f"{r['exchange_share']:.0%}"]
             for r in rows]
    if at_most_us is not None:
        header.append(f"exchange ≤ {at_most_us:g} µs")
        for row, line in zip(rows, cells):
            line.append("met" if row["exchange_us_per_step"] <= at_most_us else "not met")
    return md_table(header, cells)


def bound_tally(rows: list[dict], at_most_us: float) -> str:
    """"exchange at most 1 µs a step: met in 1 of 2 rows; the worst 1.48 µs at H=1024 B=64" (the bound's line)."""
    text = f"exchange at most {at_most_us:g} µs a step: "
    if not rows:
        return text + "no row was timed"
    worst = max(rows, key=lambda r: r["exchange_us_per_step"])
    met = sum(r["exchange_us_per_step"] <= at_most_us for r in rows)
    return (text + f"met in {met} of {len(rows)} rows; the worst {worst['exchange_us_per_step']:.2f} µs at "
            f"H={worst['hidden']} B={worst['batch']}")
