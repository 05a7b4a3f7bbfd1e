"""The split tier's barrier status: whether a launch's barrier gave up (barrier.py), read by the host.

Each split call's launches share a one-word status that a barrier sets when its bounded spin ends
without every program having arrived (or, with the dsmem-push exchange, when a step's state never
came). Reading it is a host sync. Two ways, by WAIT_FOR_STATUS:

- off (the default): the status is copied into pinned host memory behind the call's launches, and read
  once the GPU is past it: by each later split call as it starts (raising there, for the earlier
  call), or by check_barriers(), which waits for all of them. What no call read by the time Python
  exits is read then, and a timeout among it written to stderr. A timeout is reported as CUDA reports
  a kernel's fault: by a later call, not the one that had it. The host prepares the next call's
  launches while the GPU runs this one's, as it does for the fma and resident tiers;
- on: each call reads it before returning, so a timeout raises in the call that had it; the host then
  prepares the next call's work only after the GPU has finished this one's, and the GPU waits through
  that preparation. On an H200 (the race of 2026-11-28, bf16 H = 512, B = 8, T = 1024) a plain call
  so took 2.14 us a step against 1.11 replayed from a CUDA graph, which has no host work; the form
  without the wait is not timed yet (.ci/gpu_variants.py split-status-waited times this one beside it).

A barrier gives up only where the launch's programs are not all resident at once, which the cooperative
launch and the clusters' count (runtime.co_resident_clusters) rule out unless another process takes
SMs: a fault, not a result, so it need not stop the host at every call. rnnbench reads every status
after each job (check_barriers), so a job whose barrier gave up reports that error, not its figures.

Off the GPU (the interpreter) the status is read at once either way: nothing runs ahead of the host.

A split call captured into a CUDA graph (torch.cuda.graph, torch.cuda.make_graphed_callables) cannot read it
either way: no host sync may happen while a stream is captured. Its status tensor, which each replay clears and
the barrier sets, is kept instead, and check_barriers() reads it once the device is done: call that after a
replay to learn whether a barrier gave up in it. Each replay clears what the one before left, so a timeout in
an earlier replay is lost unless it is read before the next (rnnbench times many replays and then reads the
last one's, so it would not report a timeout in an earlier one). Capture inside `capture()`: where the capture
fails, the statuses it kept, which no replay will ever write, are let go.
"""
from __future__ import annotations

import atexit
import contextlib
import sys

import torch

from .runtime import capturing

WAIT_FOR_STATUS = False
# Statuses not read yet (WAIT_FOR_STATUS off): the event recorded behind each one's copy, and the copy
_UNREAD: list[tuple[torch.cuda.Event, torch.Tensor]] = []
# The statuses of split calls captured into CUDA graphs, on the device: each replay clears and writes its own
_CAPTURED: list[torch.Tensor] = []

TIMED_OUT = ("split-H barrier timed out: not all programs were resident at once, or (dsmem-push) a step's state "
             "never arrived")


def read_status(status: torch.Tensor) -> None:
    """A split call's status [1] int32 after its launches: raise now if it is set (WAIT_FOR_STATUS, or off CUDA),
    or leave it to be read once the GPU has copied it out, or (captured into a CUDA graph) once replays have set it
    (check_barriers)."""
    if capturing(status.device):
        _CAPTURED.append(status)
        return
    if WAIT_FOR_STATUS or status.device.type != "cuda":
        if status.item():
            raise RuntimeError(TIMED_OUT)
        return
    copy = torch.empty(1, dtype=status.dtype, pin_memory=True)
    copy.copy_(status, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(status.device))  # the copy's stream, whatever the current device
    _UNREAD.append((copied, copy))


def check_barriers(wait: bool = True) -> None:
    """Raise if a split call whose status was left unread had a barrier time out: any such call (wait: a host
    sync on each), or those the GPU has finished (not wait: what each split call does first). Those read are
    forgotten. With wait, the calls captured into CUDA graphs too, as their last replays left their statuses (a
    sync of each device first; before a graph's first replay its calls' statuses are not yet written); those are
    kept, since a graph may be replayed again."""
    _read_unread(wait)
    if wait:
        for device in {status.device for status in _CAPTURED if status.is_cuda}:
            torch.cuda.synchronize(device)
        if any(status.item() for status in _CAPTURED):
            raise RuntimeError(f"{TIMED_OUT} (in a split call replayed from a CUDA graph)")


@contextlib.contextmanager
def capture():
    """Around a CUDA graph's capture: where the capture raises, the statuses of the split calls captured in it are let
    go, since no replay will write them (read, they would be garbage: a false timeout in every later check)."""
    kept = len(_CAPTURED)
    try:
        yield
    except BaseException:
        del _CAPTURED[kept:]
        raise


def forget_captured() -> None:
    """Let go of the captured calls' statuses, for graphs that will not be replayed again: each keeps a block of its
    graph's memory pool, and so the pool, alive."""
    _CAPTURED.clear()


def _read_unread(wait: bool) -> None:
    """check_barriers' part for the statuses left unread (WAIT_FOR_STATUS off)."""
    read, unread = [], []
    for entry in _UNREAD:
        (read if wait or entry[0].query() else unread).append(entry)
    _UNREAD[:] = unread
    for copied, _ in read:
        copied.synchronize()
    if any(copy.item() for _, copy in read):
        raise RuntimeError(f"{TIMED_OUT} (in an earlier split call; kernels.barrier_status.WAIT_FOR_STATUS = True "
                           "raises in the call itself)")


@atexit.register
def _report_at_exit() -> None:
    """Read what no split call read (WAIT_FOR_STATUS off): a timeout there would otherwise go unreported. Not the
    captured calls' statuses: a graph never replayed has not written them."""
    try:
        _read_unread(wait=True)
    except RuntimeError as err:
        print(f"kernels.barrier_status, at exit: {err}", file=sys.stderr)
