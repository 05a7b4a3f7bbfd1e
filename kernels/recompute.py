"""Checkpointed BPTT's segments, and the order in which the backward recomputes their states.

With checkpoint=True (autograd.py) the forward keeps only the state entering each segment of

    S = max(ceil(sqrt(T)), SEGMENT_MIN_STEPS) steps:   ceil(T / S) - 1 states, fewer than sqrt(T)

and the backward walks the segments from the last processed to the first. For each it needs the segment's
states again: the forward kernel recomputes them from the kept entering state (XW from X first).

That recomputation needs X, the weights and the kept state only, not the backward of the segment after it.
So `ahead` issues segment k+1's recomputation (in backward order) before segment k's backward, on a GPU on a
second stream (streams.py): the forward kernel of one segment runs beside the backward kernel of the other,
and a segment can take about the longer of the two instead of their sum (not yet timed: `bash .ci/gpu
streams`). At most two segments' recomputed states are alive at once; on a CPU the same order runs on the
one stream.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from .streams import Beside

# The shortest segment. A segment costs the host about 11 launches (fp32, fma tier, counted on a CPU; tens of us
# each on a GPU machine: the H200 host of 2026-11-26 took 2.35 ms for one forward+backward call of 23 launches),
# while its steps cost the GPU about 0.9 us each at H = 128 (the race, results/race/20261127-h200): segments of
# ceil(sqrt(T)) steps, 64 at T = 4096, would leave the GPU waiting for the host. 256 steps bring a segment's GPU
# work near its host time and keep fewer states (T / S < sqrt(T)); one segment's transient tensors grow to S
# steps. Set by that arithmetic, not timed: `bash .ci/gpu streams` times it against the square root's.
SEGMENT_MIN_STEPS = 256


def segments(T: int, checkpoint: bool) -> list[tuple[int, int]]:
    """The backward's time ranges [start, stop), ascending: all of T, or S = max(ceil(sqrt(T)),
    SEGMENT_MIN_STEPS) steps each."""
    size = max(math.isqrt(T - 1) + 1, SEGMENT_MIN_STEPS) if checkpoint else T
    return [(start, min(start + size, T)) for start in range(0, T, size)]


def checkpoint_steps(pieces: list[tuple[int, int]], reverse: bool) -> list[int]:
    """Time indices of the states checkpoint=True keeps for these segments, ascending: the one each segment
    starts from, except the first processed one, which starts from h_0 (the reverse direction enters from above)."""
    return [stop for _, stop in pieces[:-1]] if reverse else [start - 1 for start, _ in pieces[1:]]


def ahead(order: list[int], recompute: Callable[[int], torch.Tensor],
          stream: torch.cuda.Stream | None) -> Iterator[tuple[int, torch.Tensor]]:
    """(k, recompute(k)) for each segment k in order, ready on the current stream, each next segment's
    recompute issued before the current one is yielded (on `stream`, beside what the caller issues for it; after
    what the caller issued before, so at most one segment runs ahead)."""
    def issue(k: int) -> tuple[Beside, torch.Tensor]:
        with Beside(stream) as block:
            return block, recompute(k)

    pending = issue(order[0])
    for i, k in enumerate(order):
        block, states = pending
        if i + 1 < len(order):
            pending = issue(order[i + 1])
        block.join(states)
        yield k, states
