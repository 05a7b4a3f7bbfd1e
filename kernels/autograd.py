"""Autograd Function for one layer and one direction of the Elman RNN, on the Triton kernels.

Forward: XW = X W_ih^T + (b_ih + b_hh) as one GEMM over all T*B rows, then the recurrence kernel
gives the states Y = [h_1..h_T] (the layer's output, T x B x H in the I/O dtype). No pre-activation
is stored.

Backward: the recurrence kernel gives DA = dL/da_t for every t and dL/dh_0 from Y and dY; then,
with H_prev the states entering each step (h_0 then Y shifted by one step in processing order)::

    dU = sum_t da_t^T h_{t-1},   dW_ih = DA^T X,   db_ih = db_hh = sum_{t,b} da_t,   dX = DA W_ih

Saved for the backward, besides X, h_0 and the weights (alive anyway):

- by default, all of Y: T x B x H;
- with checkpoint=True (checkpointed BPTT), only the state entering each segment of S = ceil(sqrt(T))
  steps: (ceil(T / S) - 1) x B x H, under sqrt(T) B H. The backward walks the segments from the last
  processed to the first. For each it recomputes the segment's XW from X and its states from the
  checkpoint with the forward kernel, runs the backward kernel on the segment with the dL/dh that
  the later segment sends into it (its dL/dh_0) added to dy at the segment's last step, and adds the
  segment's share of the sums above. Extra cost: the input GEMM and the forward recurrence once
  more; transient memory: one segment's XW, states, dy and DA. Rounding differs slightly: dL/dh
  crosses a segment boundary in the I/O dtype (the kernel carries it in fp32 within a segment), and
  each segment's share of the weight gradients is rounded to it before the fp32 sum. In bf16 the two
  modes' gradients differ by about 3e-3 relative (T=256, CPU), both well within bf16's error.

Both are the same loop: without checkpointing there is one segment whose states are saved, and its
weight gradients are the GEMMs' results as they are (fp32 inside the GEMMs, rounded once to the I/O
dtype), with no fp32 buffers to add them into: five launches after the backward kernel (segment_grads).
On a GPU every launch costs host time on each call, which a short sequence does not hide.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from .dispatch import KernelPlan, recurrence_backward, recurrence_forward
from .launch import accumulator_dtype
from .runtime import require_runtime


def segments(T: int, checkpoint: bool) -> list[tuple[int, int]]:
    """The backward's time ranges [start, stop), ascending: all of T, or S = ceil(sqrt(T)) steps each."""
    size = math.isqrt(T - 1) + 1 if checkpoint else T
    return [(start, min(start + size, T)) for start in range(0, T, size)]


def checkpoint_steps(T: int, reverse: bool) -> list[int]:
    """Time indices of the states checkpoint=True keeps, ascending: the one each segment starts from,
    except the first processed one, which starts from h_0 (the reverse direction enters from above)."""
    pieces = segments(T, True)
    return [stop for _, stop in pieces[:-1]] if reverse else [start - 1 for start, _ in pieces[1:]]


def input_projection(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor | None,
                     b_hh: torch.Tensor | None) -> torch.Tensor:
    """XW = X W_ih^T + b_ih + b_hh for x [T, B, I], as one GEMM: [T, B, H]."""
    rows = x.reshape(-1, x.shape[-1])
    xw = rows @ w_ih.t() if b_ih is None else torch.addmm(b_ih + b_hh, rows, w_ih.t())
    return xw.view(*x.shape[:-1], w_ih.shape[0])


def states(plan: KernelPlan, xw, h0, w_hh, nonlinearity: str, reverse: bool) -> torch.Tensor:
    """The recurrence kernel's h_t for all t; an empty batch launches nothing."""
    if xw.shape[1] == 0:
        return torch.empty_like(xw)
    return recurrence_forward(plan, xw, h0.contiguous(), w_hh, nonlinearity, reverse)


def backprop(plan: KernelPlan, y, dy, w_hh, nonlinearity: str, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence kernel's (dL/da_t for all t, dL/dh_0 in the accumulator dtype); an empty batch launches
    nothing."""
    if y.shape[1] == 0:
        return torch.empty_like(y), y.new_zeros(y.shape[1:], dtype=accumulator_dtype(y.dtype))
    return recurrence_backward(plan, y, dy.contiguous(), w_hh, nonlinearity, reverse)


class ElmanRecurrence(torch.autograd.Function):
    """apply(x [T, B, I], h0 [B, H], w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, plan, checkpoint=False)
    -> h_t for all t [T, B, H]."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity: str, reverse: bool, plan: KernelPlan,
                checkpoint: bool = False):
        require_runtime(x.device)
        y = states(plan, input_projection(x, w_ih, b_ih, b_hh), h0, w_hh.contiguous(), nonlinearity, reverse)
        kept = y[checkpoint_steps(len(y), reverse)] if checkpoint else y  # a copy: y's storage is not kept
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, kept)
        ctx.nonlinearity, ctx.reverse, ctx.plan, ctx.checkpoint = nonlinearity, reverse, plan, checkpoint
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, h0, w_ih, w_hh, b_ih, b_hh, kept = ctx.saved_tensors
        w_hh = w_hh.contiguous()
        acc = accumulator_dtype(dy.dtype)
        d_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        todo = segments(dy.shape[0], ctx.checkpoint)
        # The state each segment starts from, in time order: h_0 for the first processed.
        entering = [h0] if not ctx.checkpoint else [*kept, h0] if ctx.reverse else [h0, *kept]
        carry = None  # dL/dh of the state the later segment started from, in the accumulator dtype
        sums = None  # (dW_ih, dU, db): one segment's as they are, several segments' summed in the accumulator dtype
        for k in (range(len(todo)) if ctx.reverse else reversed(range(len(todo)))):  # last processed first
            start, stop = todo[k]
            if ctx.checkpoint:
                xw = input_projection(x[start:stop], w_ih, b_ih, b_hh)
                y = states(ctx.plan, xw, entering[k], w_hh, ctx.nonlinearity, ctx.reverse)
            else:
                y = kept
            dy_seg = dy[start:stop]
            if carry is not None:  # into the segment's last processed step
                dy_seg = dy_seg.clone()
                dy_seg[0 if ctx.reverse else -1] += carry.to(dy_seg.dtype)
            da, carry = backprop(ctx.plan, y, dy_seg, w_hh, ctx.nonlinearity, ctx.reverse)
            share = segment_grads(da, x[start:stop], entering[k], y, w_ih, ctx.reverse, d_x[start:stop])
            sums = share if sums is None else tuple(total.to(acc).add_(part) for total, part in zip(sums, share))
        d_w_ih, d_w_hh, d_bias = sums
        d_bias = d_bias.to(dy.dtype) if b_ih is not None else None
        return (d_x, carry.to(h0.dtype), d_w_ih.to(w_ih.dtype), d_w_hh.to(w_hh.dtype), d_bias, d_bias,
                None, None, None, None)


def segment_grads(da, x, entering, y, w_ih, reverse: bool, d_x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One segment's share of (dW_ih, dU, db), each rounded once to da's dtype (the GEMMs and the sum accumulate in
    fp32), from its DA, X, entering state and states Y; its dX = DA W_ih written into d_x. Few launches: on a GPU
    the host's time per op, not the GPU's, is what these small products cost."""
    H, I = da.shape[-1], x.shape[-1]
    # The segment's first processed step consumed `entering`; the others consumed y shifted by one.
    first, rest, prev = (-1, slice(0, -1), slice(1, None)) if reverse else (0, slice(1, None), slice(0, -1))
    da_rows = da.view(-1, H)
    d_w_hh = torch.addmm(da[first].t() @ entering, da[rest].reshape(-1, H).t(), y[prev].reshape(-1, H))
    torch.mm(da_rows, w_ih, out=d_x.view(-1, I))
    return da_rows.t() @ x.reshape(-1, I), d_w_hh, da_rows.sum(0)
