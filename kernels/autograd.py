"""Autograd Function for one layer and one direction of the Elman RNN, on the Triton kernels.

Forward: XW = X W_ih^T + b_ih as one GEMM over all T*B rows, then the recurrence kernel gives the states
Y = [h_1..h_T] (the layer's output, T x B x H in the I/O dtype) with b_hh added to each step's input, and h_n, the
state after the last processed step, with storage of its own (dispatch.biases: where the kernels do not add b_hh,
the GEMM adds b_ih + b_hh). No pre-activation is stored.

Backward: the recurrence kernel gives DA = dL/da_t for every t and dL/dh_0 from Y, dY and dL/dh_n (added to dY's last
processed step; None where the loss does not read h_n: ctx.set_materialize_grads(False); and dY None where it reads
h_n alone, which the fma, resident and split kernels take as zeros without reading any); then, with H_prev the
states entering each step (h_0 then Y shifted by one step in processing order)::

    dU = sum_t da_t^T h_{t-1},   dW_ih = DA^T X,   db_ih = db_hh = sum_{t,b} da_t,   dX = DA W_ih

dU is one GEMM over all T * B rows where h_0 is None (its term is zero) or framed: where h_0 is given and a backward may
want dU (grad enabled, U not frozen), the fma and resident forward kernels write Y into a buffer one step longer and
copy h_0 into that step (frames.py), so that H_prev is one view of it; else, and for the split and step tiers, it is
two GEMMs, h_0's term and the rest.

Only the gradients autograd asks for (ctx.needs_input_grad) are made: no dX GEMM nor its T x B x I buffer for an
input that needs none (a model's first layer, fed data), no weight GEMM for a frozen weight, no cast of dL/dh_0 for
an h_0 that needs none (hx=None), nor for one that does where the fma and resident kernels write it in h_0's dtype
(Tier.makes_dh0; a 16-bit decoder's hx, an encoder's h_n). The backward kernel runs whatever is asked: every gradient
needs DA.

Saved for the backward, besides X, h_0 and the weights (alive anyway):

- by default, all of Y: T x B x H (with h_0 beside it, in its frame), and on the fma tier the backward kernel's
  operand, U by columns in fp32, which the forward kernel writes (no copy's launch in the backward: fma.py);
- with checkpoint=True (checkpointed BPTT), only the state entering each segment (recompute.py: segments of
  max(ceil(sqrt(T)), SEGMENT_MIN_STEPS) steps): fewer than sqrt(T) B H, none where one segment covers T.
  The backward walks the segments from the last processed to the first. For each it recomputes the
  segment's XW from X and its states from the checkpoint with the forward kernel (on a GPU one segment
  ahead, beside the backward kernel: recompute.ahead), runs the backward kernel on the segment with the
  dL/dh that the later segment sends into it (its dL/dh_0) as the segment's dL/dh_n, and adds the segment's
  share of the sums above into fp32 sums. Extra cost: the input GEMM and the forward recurrence once more;
  transient memory: two segments' states, one segment's XW, dy and DA. Rounding differs slightly: the step
  kernel takes dy plus that dL/dh rounded to the I/O dtype (the fma, resident and split kernels add it in
  fp32), and in 16-bit each segment's share of the weight gradients is rounded to it before the fp32 sum. In bf16
  the two modes' gradients differ by about 3e-3 relative (T=256, CPU), both well within bf16's error.

Both are the same loop: without checkpointing there is one segment whose states are saved, and its
weight gradients are the GEMMs' results as they are (fp32 inside the GEMMs, rounded once to the I/O
dtype), with no fp32 buffers to add them into: four launches after the backward kernel, dX, dW_ih, dU and db
(GradientOperands.products; five where h_0, given, is not framed).
On a GPU every launch costs host time on each call, which a short sequence does not hide: hence the
segments' floor (recompute.py), and a checkpointed segment's 11 launches in the fma tier in fp32 (the GEMMs add
into the sums themselves; U's layouts made once per backward; 17 before), about 15 in bf16 (rnnbench profile's
count on a CPU, where an fp32 sum's add of a bf16 share counts a conversion too).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import frames
from .dispatch import (
    KernelPlan,
    biases,
    empty_backward_operand,
    frames_states,
    recurrence_backward,
    recurrence_forward,
    recurrence_operand,
)
from .launch import accumulator_dtype
from .recompute import ahead, checkpoint_steps, segments
from .runtime import require_runtime
from .streams import side_stream


def input_projection(x: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor | None, framed: bool = False,
                     reverse: bool = False) -> torch.Tensor:
    """XW = X W_ih^T + bias (dispatch.biases' first) for x [T, B, I], as one GEMM: [T, B, H]; framed: in a frame for
    a direction's states with h_0 (frames.framed_empty), which the forward kernel writes them over."""
    T, B, _ = x.shape
    rows, H = x.reshape(-1, x.shape[-1]), w_ih.shape[0]
    if not framed:
        xw = rows @ w_ih.t() if bias is None else torch.addmm(bias, rows, w_ih.t())
        return xw.view(T, B, H)
    xw = frames.framed_empty(T, B, H, x.dtype, x.device, reverse)
    if bias is None:
        torch.mm(rows, w_ih.t(), out=xw.view(-1, H))
    else:
        torch.addmm(bias, rows, w_ih.t(), out=xw.view(-1, H))
    return xw


def states(plan: KernelPlan, xw, h0, w_hh, b_hh, nonlinearity: str, reverse: bool, operand=None,
           framed: bool = False, backward_operand=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence kernel's (h_t for all t, h_n) with b_hh (dispatch.biases' second, if any) added to every step's
    xw (operand: dispatch.recurrence_operand's, if made), from xw, which the caller made for this call alone: h_t may
    be written over it; framed (framed_with's): in a frame holding h0, xw made in it (input_projection's framed);
    backward_operand (dispatch.empty_backward_operand's) filled by the kernel. An empty batch launches nothing."""
    if xw.shape[1] == 0:
        return torch.empty_like(xw), xw.new_empty(xw.shape[1:])
    return recurrence_forward(plan, xw, None if h0 is None else h0.contiguous(), w_hh, nonlinearity, reverse, operand,
                              xw_spare=True, b_hh=b_hh, framed=framed, backward_operand=backward_operand)


def framed_with(plan: KernelPlan, h0: torch.Tensor | None, du_wanted: bool) -> bool:
    """Whether a direction's states from h0 (None: zeros, whose term of dU is none) are written in a frame holding it,
    so that dU is one GEMM (frames.py): where a backward will want dU and the plan's tier writes one (the frame's
    views cost host time on every call: none for inference)."""
    return du_wanted and h0 is not None and frames_states(plan)


def backprop(plan: KernelPlan, y, dy, dh_n, w_hh, nonlinearity: str, reverse: bool, operand=None,
             dh0_wanted: bool = True, dh0_dtype=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence kernel's (dL/da_t for all t, dL/dh_0 in the accumulator dtype, or in dh0_dtype where the kernel
    writes it (dispatch.recurrence_backward), or, where not dh0_wanted, possibly None) from dy (None: zeros, where the
    loss reads h_n alone) and dh_n, the gradient of the state after the last processed step (None: none; operand as in
    states); an empty batch launches nothing."""
    if y.shape[1] == 0:
        return torch.empty_like(y), y.new_zeros(y.shape[1:], dtype=accumulator_dtype(y.dtype))
    return recurrence_backward(plan, y, None if dy is None else dy.contiguous(), w_hh, nonlinearity, reverse, operand,
                               dh0_wanted, dh_n=None if dh_n is None else dh_n.contiguous(), dh0_dtype=dh0_dtype)


class ElmanRecurrence(torch.autograd.Function):
    """apply(x [T, B, I], h0 [B, H] or None (zeros), w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, plan,
    checkpoint=False, grad_enabled=True) -> (h_t for all t [T, B, H], h_n [B, H]: the state after the last processed
    step, its own storage). grad_enabled: torch.is_grad_enabled() where apply is called (forward runs without grad, so
    cannot tell): whether a backward may follow."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity: str, reverse: bool, plan: KernelPlan,
                checkpoint: bool = False, grad_enabled: bool = True):
        require_runtime(x.device)
        gemm_bias, kernel_bias = biases(plan, b_ih, b_hh)
        ctx.framed = framed = framed_with(plan, h0, grad_enabled and ctx.needs_input_grad[3])
        # U as the backward kernel takes it, written by the forward kernel where it can and a backward will run: no
        # launch of its own. Not with checkpointing, whose backward makes its own (it keeps only the states it must)
        backward = grad_enabled and any(ctx.needs_input_grad[:6])
        u_backward = empty_backward_operand(plan, x.device) if backward and not checkpoint and x.shape[1] else None
        xw = input_projection(x, w_ih, gemm_bias, framed, reverse)
        y, h_n = states(plan, xw, h0, w_hh.contiguous(), kernel_bias, nonlinearity, reverse, framed=framed,
                        backward_operand=u_backward)
        ctx.pieces = segments(len(y), checkpoint)  # fixed here: the kept states are the segments' entries
        kept = y[checkpoint_steps(ctx.pieces, reverse)] if checkpoint else y  # a copy: y's storage is not kept
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, kept, u_backward)
        ctx.nonlinearity, ctx.reverse, ctx.plan, ctx.checkpoint = nonlinearity, reverse, plan, checkpoint
        ctx.set_materialize_grads(False)  # an output the loss does not read gets None, not a tensor of zeros
        return y, h_n

    @staticmethod
    def backward(ctx, dy, dh_n):
        # dy is None where the loss reads h_n alone: the kernels then read no dy (no T x B x H tensor of zeros).
        # The gradients below are not differentiable again. Under create_graph=True once_differentiable marks them so
        # (differentiating them raises) only where an incoming gradient requires grad; where none does (a loss linear
        # in the output, then a gradient penalty), a second-order term through the layer would silently be zero. So
        # there the incoming gradient counts as requiring grad.
        if torch.is_grad_enabled():
            if dy is not None:
                dy = dy.detach().requires_grad_()
            else:
                dh_n = dh_n.detach().requires_grad_()
        return gradients(ctx, dy, dh_n)


@once_differentiable
def gradients(ctx, dy, dh_n):
    """ElmanRecurrence's backward: the gradients of its inputs, from dy = dL/dh_t for all t (None where the loss reads
    h_n alone) and dh_n = dL/dh_n (None where the loss does not read h_n)."""
    x, h0, w_ih, w_hh, b_ih, b_hh, kept, u_backward = ctx.saved_tensors
    w_hh = w_hh.contiguous()
    need_x, need_h0, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad[:6]
    wanted = (need_w_ih, need_w_hh, need_b_ih or need_b_hh)  # the weight gradients' GEMMs and sum to run
    d_x = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else None
    pieces = ctx.pieces
    order = list(range(len(pieces))) if ctx.reverse else list(reversed(range(len(pieces))))  # last processed first
    # The state each segment starts from, in time order: h_0 for the first processed.
    entering = [h0] if not ctx.checkpoint else [*kept, h0] if ctx.reverse else [h0, *kept]
    # Whether each segment's states are in a frame with the state entering it (frames.py): as the forward wrote them,
    # or as recomputed here for dU
    framed = [framed_with(ctx.plan, state, need_w_hh) for state in entering] if ctx.checkpoint else [ctx.framed]
    segment_states = recomputed(ctx, order, entering, framed, x, w_ih, w_hh, b_ih, b_hh) if ctx.checkpoint else [
        (order[0], kept)]
    # dL/dh of the state after the segment's last processed step: h_n's for the first, then the state the later
    # segment started from (in the accumulator dtype)
    carry = dh_n
    sums = None if len(pieces) == 1 else zero_sums(w_ih, w_hh, accumulator_dtype(x.dtype), wanted)
    # U as the backward launcher takes it: once, if the forward kernel did not write it
    operand = recurrence_operand(ctx.plan, w_hh, backward=True) if u_backward is None else u_backward
    for done, (k, y) in enumerate(segment_states, start=1):
        start, stop = pieces[k]
        # dL/dh of the state entering it: for the next segment (in the accumulator dtype), or dL/dh_0 from the last
        # where h_0 needs it (in its dtype where the kernel writes it: no cast's launch)
        last = done == len(pieces)
        da, carry = backprop(ctx.plan, y, None if dy is None else dy[start:stop], carry, w_hh, ctx.nonlinearity,
                             ctx.reverse, operand, dh0_wanted=need_h0 or not last,
                             dh0_dtype=h0.dtype if last and need_h0 else None)
        share = GradientOperands(da, x[start:stop], entering[k], y, ctx.reverse, framed[k])
        if need_x:
            torch.mm(share.da_rows, w_ih, out=d_x[start:stop].view(-1, x.shape[-1]))  # dX = DA W_ih
        sums = share.products(wanted) if sums is None else share.add_into(sums)
    d_w_ih, d_w_hh, d_bias = (None if total is None else total.to(dtype)
                              for total, dtype in zip(sums, (w_ih.dtype, w_hh.dtype, x.dtype)))
    return (d_x, carry.to(h0.dtype) if need_h0 else None, d_w_ih, d_w_hh, d_bias if need_b_ih else None,
            d_bias if need_b_hh else None, None, None, None, None, None)


def recomputed(ctx, order: list[int], entering: list[torch.Tensor], framed: list[bool], x, w_ih, w_hh, b_ih, b_hh):
    """(k, segment k's states) for each segment k in order, each recomputed from the state entering it (in a frame
    with it where framed[k]: frames.py): XW by the input GEMM, then the forward kernel (on a GPU one segment ahead of
    the caller's backward: recompute.ahead)."""
    gemm_bias, kernel_bias = biases(ctx.plan, b_ih, b_hh)  # these and U's operand once for every segment
    operand = recurrence_operand(ctx.plan, w_hh, backward=False)

    def recompute(k: int) -> torch.Tensor:
        start, stop = ctx.pieces[k]
        xw = input_projection(x[start:stop], w_ih, gemm_bias, framed[k], ctx.reverse)
        return states(ctx.plan, xw, entering[k], w_hh, kernel_bias, ctx.nonlinearity, ctx.reverse, operand,
                      framed[k])[0]
    return ahead(order, recompute, side_stream(ctx.plan, x.device))


def zero_sums(w_ih: torch.Tensor, w_hh: torch.Tensor, dtype: torch.dtype,
              wanted: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
    """Zeros for (dW_ih, dU, db) in the accumulator dtype, which several segments' shares are added into; None for
    each one not wanted."""
    shapes = (w_ih.shape, w_hh.shape, w_hh.shape[:1])
    return tuple(torch.zeros(shape, dtype=dtype, device=w_hh.device) if want else None
                 for shape, want in zip(shapes, wanted))


class GradientOperands:
    """One segment's operands of its share of the weight gradients: dW_ih = DA^T X, dU = DA^T H_prev, db = the sum
    of DA's rows, with H_prev its entering state then its own states shifted by one step in processing order. Few
    launches: on a GPU the host's time per op, not the GPU's, is what these small products cost."""

    def __init__(self, da, x, entering, y, reverse: bool, framed: bool = False):
        H = da.shape[-1]
        self.da_rows = da.view(-1, H)
        self.w_ih_pairs = [(self.da_rows.t(), x.reshape(-1, x.shape[-1]))]
        if framed:  # y in a frame holding `entering` (frames.py): H_prev is one view of it, dU one GEMM
            self.w_hh_pairs = [(self.da_rows.t(), frames.entering(y, reverse).reshape(-1, H))]
            return
        # The segment's first processed step consumed `entering` (None: zeros, which add nothing); the others consumed
        # y shifted by one.
        first, rest, prev = (-1, slice(0, -1), slice(1, None)) if reverse else (0, slice(1, None), slice(0, -1))
        self.w_hh_pairs = [(da[first].t(), entering)] if entering is not None else []
        if len(y) > 1:
            self.w_hh_pairs.append((da[rest].reshape(-1, H).t(), y[prev].reshape(-1, H)))

    def products(self, wanted: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
        """(dW_ih, dU, db) in DA's dtype, each rounded once (the GEMMs and the sum accumulate in fp32); None for each
        one not wanted."""
        w_ih, w_hh, bias = wanted
        return (product_sum(self.w_ih_pairs) if w_ih else None, self.d_w_hh() if w_hh else None,
                self.da_rows.sum(0) if bias else None)

    def d_w_hh(self) -> torch.Tensor:
        """dU's share in DA's dtype: zeros where a one-step segment started from zeros (h_0 None)."""
        H = self.da_rows.shape[1]
        return product_sum(self.w_hh_pairs) if self.w_hh_pairs else self.da_rows.new_zeros(H, H)

    def add_into(self, sums: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...]:
        """sums (dW_ih, dU, db in the accumulator dtype, None where not wanted) plus this share, in place."""
        d_w_ih, d_w_hh, d_b = sums
        if d_w_ih is not None:
            add_products(d_w_ih, self.w_ih_pairs)
        if d_w_hh is not None:
            add_products(d_w_hh, self.w_hh_pairs)
        if d_b is not None:
            d_b.add_(self.da_rows.sum(0, dtype=d_b.dtype))
        return sums


def product_sum(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sum of a @ b over pairs, one GEMM each, in their dtype."""
    (a, b), *rest = pairs
    total = a @ b
    for a, b in rest:
        total = total.addmm_(a, b)
    return total


def add_products(total: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """total += sum of a @ b over pairs (none: nothing), in place: the GEMMs add into total where the dtypes agree
    (fp32, fp64), else (16-bit operands, an fp32 total) their sum in the operands' dtype is added."""
    if not pairs:
        return total
    if total.dtype == pairs[0][0].dtype:
        for a, b in pairs:
            total.addmm_(a, b)
        return total
    return total.add_(product_sum(pairs))
