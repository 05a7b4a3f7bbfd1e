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
    from kernels.runtime import device_facts
    from kernels.split import STEP_WORKS, split_forward, split_grid
    plan = plan_for(hidden, batch, dtype, device, kernel="split")
    blocks = plan.config.forward
    gen = torch.Generator(device=device).manual_seed(0)
    xw = torch.randn(steps, batch, hidden, generator=gen, device=device).to(dtype)
    h0 = torch.zeros(batch, hidden, device=device, dtype=dtype)
    u = (torch.randn(hidden, hidden, generator=gen, device=device) * 0.9 / hidden ** 0.5).to(dtype)
    full, exchange, barrier = (us_per_step(partial(split_forward, xw, h0, u, False, blocks, "tanh", work=work), steps)
                               for work in STEP_WORKS)
    slices, groups = split_grid(batch, hidden, blocks, device_facts(device)[0], device)
    return {"hidden": hidden, "batch": batch, "dtype": str(dtype).removeprefix("torch."),
            "programs": f"{slices}x{groups}",
            "full_us_per_step": full, "exchange_us_per_step": exchange, "barrier_us_per_step": barrier,
            "exchange_share": exchange / full,
            "plan": plan.name}


def exchange_table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    header = ["H", "B", "dtype", "programs (slices x groups)", "full kernel µs/step", "exchange only µs/step",
              "barrier only µs/step", "exchange share"]
    return md_table(header, [[r["hidden"], r["batch"], r["dtype"], r["programs"], f"{r['full_us_per_step']:.2f}",
                              f"{r['exchange_us_per_step']:.2f}", f"{r['barrier_us_per_step']:.2f}",
                              f"{r['exchange_share']:.0%}"] for r in rows])
