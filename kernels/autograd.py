"""Autograd Function for one layer and one direction of the Elman RNN, on the Triton kernels.

Forward: XW = X W_ih^T + (b_ih + b_hh) as one GEMM over all T*B rows, then the recurrence kernel.
Saved for backward: X and the weights (already alive) and the hidden states Y = [h_1..h_T]
(the layer's output, T x B x H in the I/O dtype). No pre-activation is stored.

Backward: the recurrence kernel gives DA = dL/da_t for every t and dL/dh_0; then, with H_prev the
states entering each step (h_0 then Y shifted by one step in processing order)::

    dU = sum_t da_t^T h_{t-1},   dW_ih = DA^T X,   db_ih = db_hh = sum_{t,b} da_t,   dX = DA W_ih
"""
from __future__ import annotations

import torch

from .dispatch import KernelPlan, recurrence_backward, recurrence_forward
from .launch import accumulator_dtype
from .runtime import require_runtime


def states(plan: KernelPlan, xw, h0, w_hh, nonlinearity: str, reverse: bool) -> torch.Tensor:
    """The recurrence kernel's h_t for all t; an empty batch launches nothing."""
    if xw.shape[1] == 0:
        return torch.empty_like(xw)
    return recurrence_forward(plan, xw, h0.contiguous(), w_hh, nonlinearity, reverse)


def backprop(plan: KernelPlan, y, dy, w_hh, nonlinearity: str, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence kernel's (dL/da_t for all t, dL/dh_0 in the accumulator dtype); an empty batch launches nothing."""
    if y.shape[1] == 0:
        return torch.empty_like(y), y.new_zeros(y.shape[1:], dtype=accumulator_dtype(y.dtype))
    return recurrence_backward(plan, y, dy.contiguous(), w_hh, nonlinearity, reverse)


class ElmanRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity: str, reverse: bool, plan: KernelPlan):
        require_runtime(x.device)
        T, B, _ = x.shape
        H = w_hh.shape[0]
        x_rows = x.reshape(T * B, x.shape[-1])
        xw = x_rows @ w_ih.t() if b_ih is None else torch.addmm(b_ih + b_hh, x_rows, w_ih.t())
        y = states(plan, xw.view(T, B, H), h0, w_hh.contiguous(), nonlinearity, reverse)
        ctx.save_for_backward(x, h0, w_ih, w_hh, y)
        ctx.has_bias, ctx.nonlinearity, ctx.reverse, ctx.plan = b_ih is not None, nonlinearity, reverse, plan
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h0, w_ih, w_hh, y = ctx.saved_tensors
        T, B, H = y.shape
        da, dh0 = backprop(ctx.plan, y, dy, w_hh.contiguous(), ctx.nonlinearity, ctx.reverse)
        da_rows = da.view(T * B, H)
        # The step that consumed h_0 is t = 0 forward, t = T-1 in reverse; the others consumed y shifted by one.
        first, rest, prev = (T - 1, slice(0, T - 1), slice(1, T)) if ctx.reverse else (0, slice(1, T), slice(0, T - 1))
        d_w_hh = da[first].t() @ h0 + da[rest].reshape(-1, H).t() @ y[prev].reshape(-1, H)
        d_w_ih = da_rows.t() @ x.reshape(T * B, x.shape[-1])
        d_x = (da_rows @ w_ih).view_as(x)
        d_bias = da_rows.sum(0, dtype=accumulator_dtype(da.dtype)).to(da.dtype) if ctx.has_bias else None
        return d_x, dh0.to(h0.dtype), d_w_ih, d_w_hh, d_bias, d_bias, None, None, None
