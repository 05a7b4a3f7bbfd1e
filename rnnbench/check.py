"""The forward check of a bench job: does the timed call compute the Elman RNN?

Every step of the backend's output y is recomputed in float64 from the backend's own previous
state, inputs and parameters: y'_t = act(x_t W_ih^T + b_ih + b_hh + y_{t-1} W_hh^T), with y_{-1} = h0.
The relative error sqrt(sum_t ||y_t - y'_t||^2) / sqrt(sum_t ||y'_t||^2) is what a single step loses
(the rounding of the I/O dtype, TF32), so it does not grow with T the way a whole-sequence error
does (the stability study measures that growth); a wrong kernel is off by order 1.

The steps are taken in chunks of at most CHUNK_ELEMENTS values per float64 tensor, so the check
never holds T*B*H float64 elements (at T=65536, B=64, H=512 that would be 16 GiB). It needs each
layer's input, so a stack of layers is not checked.
"""
from __future__ import annotations

import torch

from rnnbench.backends import Prepared

CHUNK_ELEMENTS = 2 ** 22  # 32 MiB per float64 tensor of a chunk
# Largest step error a correct backend shows, per I/O dtype: a few roundings of one step's output
# (float16 keeps 11 bits, bfloat16 8) with room to spare; a wrong result is off by order 1.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
TF32_TOLERANCE = 5e-3  # float32 with TF32 allowed: 10-bit mantissas in the products


def tolerance(dtype: str, allow_tf32: bool) -> float:
    return TF32_TOLERANCE if dtype == "float32" and allow_tf32 else TOLERANCE[dtype]


def step_error(prepared: Prepared, x: torch.Tensor, h0: torch.Tensor, nonlinearity: str) -> float:
    """The relative step error of one forward call of prepared on x [T, B, I] from h0 [1, B, H]."""
    with torch.no_grad():
        y, _ = prepared.fn(x, h0)
        params = prepared.params
        bias = params["bias_ih_l0"] + params["bias_hh_l0"] if "bias_ih_l0" in params else None
        return relative_step_error(y, x, h0[0], params["weight_ih_l0"], params["weight_hh_l0"], bias, nonlinearity)


def relative_step_error(y: torch.Tensor, x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                        bias: torch.Tensor | None, nonlinearity: str, chunk_elements: int = CHUNK_ELEMENTS) -> float:
    """See the module docstring; y [T, B, H], x [T, B, I], h0 [B, H], in any dtype and device."""
    steps = max(1, chunk_elements // (y.shape[1] * max(y.shape[2], x.shape[2])))
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    w_ih_t, w_hh_t = w_ih.double().t(), w_hh.double().t()
    bias = torch.zeros((), dtype=torch.float64, device=y.device) if bias is None else bias.double()
    error = torch.zeros((), dtype=torch.float64, device=y.device)
    norm = torch.zeros_like(error)
    last = h0.double()
    for start in range(0, y.shape[0], steps):
        got = y[start:start + steps].double()
        before = torch.cat([last[None], got[:-1]])
        expected = act(x[start:start + steps].double() @ w_ih_t + bias + before @ w_hh_t)
        error += (got - expected).square().sum()
        norm += expected.square().sum()
        last = got[-1]
    return (error / norm.clamp_min(1e-300)).sqrt().item()
