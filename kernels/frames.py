"""States framed by h_0: the layer's states stored one step into a buffer whose extra step holds h_0, so that the
backward's dU is one GEMM.

The backward's recurrent weight gradient sums over the states entering each step, h_0 for the first processed step
and y shifted by one in processing order for the others::

    dU = sum_t da_t^T h_{t-1} = DA^T H_prev,   H_prev[t] = h_{t-1} (forward),  h_{t+1} (reverse; h_T = h_0)

Where y [T, B, H] lies in a [T + 1, B, H] buffer with h_0 in the step just before y's first processed step (step 0's
place minus one forward, step T - 1's plus one reverse), H_prev is a [T, B, H] view of that buffer (entering) and dU
one GEMM over all T * B rows; otherwise it is two, h_0's term and the rest, and on a GPU every launch costs host time
on every call. The kernels that write y (fma.py and resident.py, given h0_copy_ptr) store h_0 into that step as they
load it, so the frame costs no launch of its own.

y's place in the buffer starts on a 16-byte boundary, as a tensor of its own would (Triton specialises a kernel on its
pointers' alignment; cuBLAS, which writes xw there when y is written over it, picks its kernels by it too): forward, the
h_0 step sits in front of y and whatever padding that boundary takes before it.
"""
import torch
import triton
import triton.language as tl

from .launch import cdiv

ALIGNMENT = 16  # bytes: y's start in a frame, as torch's allocations give a tensor's


def framed_empty(T: int, B: int, H: int, dtype: torch.dtype, device: torch.device, reverse: bool) -> torch.Tensor:
    """An uninitialised [T, B, H] tensor for y, contiguous, one step into a buffer that holds one more step where h_0
    goes (slot): before step 0 forward, after step T - 1 reverse."""
    step = B * H
    front = 0 if reverse else cdiv(step * dtype.itemsize, ALIGNMENT) * ALIGNMENT // dtype.itemsize  # >= step
    buffer = torch.empty(front + T * step + (step if reverse else 0), dtype=dtype, device=device)
    return buffer.as_strided((T, B, H), (step, H, 1), front)  # one op: each costs host time on every call


def empty_states(like: torch.Tensor, framed: bool, reverse: bool) -> torch.Tensor:
    """An uninitialised tensor for the states of a forward from xw `like` ([T, B, H]): in a frame (framed_empty) where
    framed, else of its own."""
    return framed_empty(*like.shape, like.dtype, like.device, reverse) if framed else torch.empty_like(like)


def entering(y: torch.Tensor, reverse: bool) -> torch.Tensor:
    """The [T, B, H] view of the states entering each step, in time order, of a y made by framed_empty: h_0 (the
    slot), then y shifted by one step against the processing order."""
    step = y.shape[1] * y.shape[2]
    return y.as_strided(y.shape, y.stride(), y.storage_offset() + (step if reverse else -step))


def slot(y: torch.Tensor, reverse: bool) -> torch.Tensor:
    """The [B, H] step of y's frame (framed_empty) that holds h_0: the state entering y's first processed step."""
    T, B, H = y.shape
    return y.as_strided((B, H), (H, 1), y.storage_offset() + (T * B * H if reverse else -B * H))


@triton.jit
def copy_state(ptrs, h0, mask):
    """Store h_0, as a kernel loaded it, into its step of y's frame (a forward kernel's h0_copy_ptr), once a launch.
    After a CTA barrier: the step is not xw's, but the compile audit asks of a kernel that writes y over xw that a
    barrier follow its loads before any store (audit.first_step_ordered), and cannot tell the two apart."""
    tl.debug_barrier()
    tl.store(ptrs, h0, mask=mask)
