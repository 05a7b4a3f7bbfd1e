"""A second CUDA stream for launches that can share the GPU with the current stream's.

The persistent kernels of the fma and resident tiers run one program per batch row or tile, so at the batch
sizes they serve they leave most SMs idle (B = 8 in the fma tier: 8 programs on an H100's 132 SMs). Two of
their launches with no data between them can then run at once, on two streams, each at about its own speed:

- a bidirectional layer's two directions (driver.stacked_forward, layer.py): the reverse direction is issued
  on the side stream first, then the forward one on the current stream; autograd runs each op's backward on
  the stream its forward ran on, so their backward kernels share the GPU too;
- checkpointed BPTT's recomputation of the next segment beside the backward of the current one
  (recompute.ahead).

Only for tiers whose programs never wait for one another (dispatch.Tier.overlaps): the split tier's grid
barrier needs every program of a launch resident at once, so two of its launches, each holding SMs the
other's programs wait for, could both stall. Not yet timed on a GPU: `bash .ci/gpu streams`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .runtime import interpreting

if TYPE_CHECKING:  # dispatch imports the tiers, which import the driver, which imports this
    from .dispatch import KernelPlan

# Whether launches that may share the GPU go to a second stream (side_stream); off: all in order on one.
OVERLAP = True


def side_stream(plan: KernelPlan, device: torch.device) -> torch.cuda.Stream | None:
    """A second CUDA stream where the plan's tier lets two launches share the GPU; None (stay on the current
    stream) on a CPU, in the interpreter, or for the split and step kernels."""
    if not OVERLAP or device.type != "cuda" or interpreting() or not plan.overlaps:
        return None
    return torch.cuda.Stream(device)  # from torch's pool: no stream is created per call


class Beside:
    """`with Beside(stream):` issues the block's work on `stream`, after what the current stream had issued
    before it; join(tensors) then makes the current stream wait for that work (only that: later work on `stream`
    may go on) and keeps the tensors' memory from the side stream's reuse while the current stream reads them.
    With stream None it changes nothing: the block runs in order on the current stream."""

    def __init__(self, stream: torch.cuda.Stream | None):
        self.stream = stream
        self.current = None if stream is None else torch.cuda.current_stream(stream.device)
        self.done: torch.cuda.Event | None = None

    def __enter__(self) -> Beside:
        if self.stream is not None:
            self.stream.wait_stream(self.current)
            self.context = torch.cuda.stream(self.stream)
            self.context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.stream is not None:
            self.context.__exit__(*exc)
            self.done = self.stream.record_event()

    def join(self, *tensors: torch.Tensor) -> None:
        if self.done is None:
            return
        self.current.wait_event(self.done)
        for tensor in tensors:
            tensor.record_stream(self.current)
