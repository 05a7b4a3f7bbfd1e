"""The split tier's barrier status read by the host (kernels/barrier_status.py): at once, or later with
WAIT_FOR_STATUS off. The deferred reads are driven here by stand-in events, since the CPU has none; on a GPU,
tests/test_gpu.py runs a layer that way."""
import pytest
import torch

from kernels import barrier_status, split
from kernels.barrier_status import check_barriers, read_status
from kernels.runtime import interpreting


class Event:
    """A CUDA event as check_barriers uses it: done or not, and whether the host waited on it."""

    def __init__(self, done: bool):
        self.done, self.waited = done, False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited = self.done = True


@pytest.fixture
def unread(monkeypatch):
    """An empty list of unread statuses, which the test fills."""
    entries = []
    monkeypatch.setattr(barrier_status, "_UNREAD", entries)
    return entries


def status(timed_out: bool) -> torch.Tensor:
    return torch.tensor([int(timed_out)], dtype=torch.int32)


@pytest.mark.parametrize("wait", [True, False])
def test_a_status_off_the_gpu_is_read_at_once(wait, monkeypatch, unread):
    monkeypatch.setattr(barrier_status, "WAIT_FOR_STATUS", wait)
    read_status(status(False))
    with pytest.raises(RuntimeError, match="split-H barrier timed out: not all programs were resident at once"):
        read_status(status(True))
    assert unread == []


def test_without_waiting_only_the_statuses_the_gpu_is_done_with_are_read(unread):
    pending, clean = (Event(False), status(True)), (Event(True), status(False))
    unread += [pending, clean]
    check_barriers(wait=False)
    assert unread == [pending] and not pending[0].waited  # a timeout not yet known to the host
    pending[0].done = True
    with pytest.raises(RuntimeError, match="in an earlier split call; kernels.barrier_status.WAIT_FOR_STATUS = True"):
        check_barriers(wait=False)
    assert unread == []  # raised once, then forgotten
    check_barriers(wait=False)


def test_waiting_reads_every_unread_status(unread):
    entries = [(Event(False), status(False)), (Event(True), status(False))]
    unread += entries
    check_barriers()
    assert unread == [] and all(event.waited for event, _ in entries)
    unread.append((Event(False), status(True)))
    with pytest.raises(RuntimeError, match="barrier timed out"):
        check_barriers()


@pytest.mark.skipif(not interpreting(), reason="interpreter-only: one program per SM is the interpreter's rule")
def test_a_split_call_first_reads_the_earlier_calls_statuses(unread):
    """A split launch with the barrier raises an earlier call's timeout that the GPU has finished, before launching
    anything; a clean one it reads and forgets."""
    T, B, H = 3, 5, 16
    xw, h0, u = torch.zeros(T, B, H), torch.zeros(B, H), torch.zeros(H, H)
    config = split.SplitBlocks(BLOCK_B=16, BLOCK_N=16, BLOCK_H=16, K_SPLIT=1, num_warps=4, ONE_TILE=True)
    unread.append((Event(True), status(False)))
    assert split.split_forward(xw, h0, u, False, config, "tanh", use_barrier=True)[0].shape == (T, B, H)
    assert unread == []
    unread.append((Event(True), status(True)))
    with pytest.raises(RuntimeError, match="in an earlier split call"):
        split.split_forward(xw, h0, u, False, config, "tanh", use_barrier=True)


def test_what_no_call_read_is_reported_at_exit(unread, capsys):
    """At interpreter exit (atexit) the statuses left unread are read, and a timeout among them reported on stderr:
    no later call would raise it."""
    unread.append((Event(False), status(False)))
    barrier_status._report_at_exit()
    assert unread == [] and capsys.readouterr().err == ""
    unread.append((Event(False), status(True)))
    barrier_status._report_at_exit()
    assert unread == [] and "at exit: split-H barrier timed out" in capsys.readouterr().err


@pytest.fixture
def captured(monkeypatch):
    """An empty list of the statuses of calls captured into CUDA graphs, which the test fills."""
    entries = []
    monkeypatch.setattr(barrier_status, "_CAPTURED", entries)
    return entries


def test_the_statuses_of_captured_calls_are_read_by_check_barriers_alone_and_kept(unread, captured, capsys):
    """A call captured into a CUDA graph leaves its status where each replay writes it: check_barriers() reads it
    (and keeps it: the graph may be replayed again), not a split call's first look (check_barriers(wait=False),
    which must not sync), nor the report at exit (a graph never replayed has not written it)."""
    clean, timed_out = status(False), status(True)
    captured.append(clean)
    check_barriers()
    captured.append(timed_out)
    check_barriers(wait=False)
    barrier_status._report_at_exit()
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError, match="barrier timed out.*in a split call replayed from a CUDA graph"):
        check_barriers()
    assert captured == [clean, timed_out]
    timed_out.zero_()  # as the next replay would leave it
    check_barriers()


def test_a_failed_capture_lets_go_of_the_statuses_it_kept(captured):
    """barrier_status.capture() around a CUDA graph's capture (rnnbench's measure.graph_replay): where the capture
    raises, the statuses of the calls captured in it go, since no replay will write them; those kept before stay,
    and a capture that succeeds keeps its own."""
    earlier, failed, succeeded = status(False), status(True), status(False)
    captured.append(earlier)
    with pytest.raises(ValueError, match="capture-unsafe"):
        with barrier_status.capture():
            captured.append(failed)
            raise ValueError("a capture-unsafe call")
    assert captured == [earlier]
    check_barriers()  # the failed capture's status, never written, is not read
    with barrier_status.capture():
        captured.append(succeeded)
    assert captured == [earlier, succeeded]
