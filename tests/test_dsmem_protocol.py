"""The two exchanges of kernels/dsmem.py, as protocols, run under random schedules on the CPU.

The kernels' PTX only runs on a GPU, but the argument that makes them correct (two slots; pull: one cluster barrier
per step; push: bulk copies counted on one mbarrier per slot, waited for with the phase parity of the step) does
not need one. Each program of a cluster is a Python generator that performs the kernel's steps in its order; every
bulk copy is an event of its own, reading its source and landing at times of the scheduler's choosing; the
scheduler interleaves all of them at random. The model checks what the GPU would get wrong silently: every read of
the state sees the previous step's values, no copy reads a source already overwritten, no copy lands in a phase
other than its own, nothing is in flight from or to a program when it exits, and nobody waits forever. Broken
variants (one slot, the wrong parity, no final barrier) must fail, so that the model is known to catch what it
claims to.
"""
import random

import pytest

# ---- the hardware, as the protocols use it ---------------------------------------------------------------------------


class MBarrier:
    """One arrival expected per phase (mbarrier.init count 1): a phase completes once that arrival and all the bytes
    announced with it have come, in either order (the byte count may go negative first)."""

    def __init__(self):
        self.phase_bit, self.pending, self.tx, self.completed = 0, 1, 0, 0

    def _maybe_complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phase_bit ^= 1
            self.pending, self.completed = 1, self.completed + 1

    def arrive_expect_tx(self, nbytes):
        self.tx += nbytes
        self.pending -= 1
        self._maybe_complete()

    def complete_tx(self, nbytes, phase):
        assert phase == self.completed, f"a copy for phase {phase} landed in phase {self.completed}"
        self.tx -= nbytes
        self._maybe_complete()

    def try_wait_parity(self, parity):
        return self.phase_bit != parity


class ClusterBarrier:
    """barrier.cluster: arrive and wait split; a wait returns once every program has arrived as often as it has."""

    def __init__(self, programs):
        self.arrivals = [0] * programs

    def can_pass(self, waits_so_far):
        return min(self.arrivals) > waits_so_far


# ---- the protocols: one generator per program, yielding a predicate whenever it must wait ---------------------------

def value(step, column):
    return ("h", step, column)


def pull_program(p, cluster, state, steps, slot_of, barrier, exited, final_barrier=True):
    """dsmem-pull (split.publish_state, group_wait, meet_cluster): write own slot, arrive; wait, read the others."""
    waits = 0
    for s in range(steps):
        if s:
            yield lambda w=waits: barrier.can_pass(w)  # cluster_wait
            waits += 1
            for q in range(cluster):
                assert q not in exited, f"program {p} read the shared memory of program {q}, which exited"
                assert state[q][slot_of(s - 1)][q] == value(s - 1, q), f"program {p} step {s} read stale column {q}"
        state[p][slot_of(s)][p] = value(s, p)  # put_state
        barrier.arrivals[p] += 1  # cluster_arrive
    if final_barrier:
        yield lambda w=waits: barrier.can_pass(w)  # meet_cluster at the end: the last arrival's wait
    exited.add(p)


def push_program(p, cluster, state, steps, slot_of, parity_of, mbarriers, copies, done, final_barrier=True):
    """dsmem-push: write own slot, copy it to the others (a later step reads it); wait for the slot's phase, read."""
    for s in range(steps):
        if s:
            slot = slot_of(s - 1)
            mbarriers[p][slot].arrive_expect_tx(cluster - 1)  # thread 0, a byte per column for the model
            yield lambda b=mbarriers[p][slot], par=parity_of(s - 1): b.try_wait_parity(par)
            for q in range(cluster):
                assert state[p][slot][q] == value(s - 1, q), f"program {p} step {s} read stale column {q}"
        state[p][slot_of(s)][p] = value(s, p)
        if s + 1 < steps:  # send_state
            copies.extend({"src": p, "dst": q, "slot": slot_of(s), "step": s, "phase": s // 2, "data": None}
                          for q in range(cluster) if q != p)
    done[p] = True
    if final_barrier:
        yield lambda: all(done)  # meet_cluster at the end


def run(protocol, cluster, steps, seed, slots=2, parity_of=lambda s: (s // 2) % 2, final_barrier=True):
    """Runs the cluster's programs and its copies in a random interleaving until all programs have exited."""
    rng = random.Random(seed)
    slot_of = (lambda s: s % 2) if slots == 2 else (lambda s: 0)
    state = [[[None] * cluster for _ in range(2)] for _ in range(cluster)]
    copies, done = [], [False] * cluster
    if protocol == "pull":
        barrier, exited = ClusterBarrier(cluster), set()
        programs = [pull_program(p, cluster, state, steps, slot_of, barrier, exited, final_barrier)
                    for p in range(cluster)]
    else:
        mbarriers = [[MBarrier(), MBarrier()] for _ in range(cluster)]
        programs = [push_program(p, cluster, state, steps, slot_of, parity_of, mbarriers, copies, done,
                                 final_barrier) for p in range(cluster)]
    waiting = [next(program, None) for program in programs]  # each runs to its first wait
    while any(w is not None for w in waiting):
        runnable = [("program", p) for p, w in enumerate(waiting) if w is not None and w()]
        runnable += [("copy", i) for i in range(len(copies))]
        assert runnable, "deadlock: every program waits and no copy is in flight"
        kind, i = rng.choice(runnable)
        if kind == "program":
            waiting[i] = next(programs[i], None)
            assert waiting[i] is not None or not any(i in (c["src"], c["dst"]) for c in copies), \
                f"program {i} exited with a copy from or to its shared memory in flight"
        elif copies[i]["data"] is None:  # the copy reads its source
            copy = copies[i]
            copy["data"] = state[copy["src"]][copy["slot"]][copy["src"]]
            assert copy["data"] == value(copy["step"], copy["src"]), "a copy read a source already overwritten"
        else:  # it lands and counts on the receiver's mbarrier of the slot
            copy = copies.pop(i)
            state[copy["dst"]][copy["slot"]][copy["src"]] = copy["data"]
            mbarriers[copy["dst"]][copy["slot"]].complete_tx(1, copy["phase"])


@pytest.mark.parametrize("protocol", ["pull", "push"])
@pytest.mark.parametrize("cluster,steps", [(2, 1), (2, 7), (3, 6), (8, 9)])
def test_the_dsmem_exchanges_hold_under_random_schedules(protocol, cluster, steps):
    for seed in range(150):
        run(protocol, cluster, steps, seed)


@pytest.mark.parametrize("protocol", ["pull", "push"])
def test_one_slot_is_caught(protocol):
    """With one slot a program can overwrite the state before another has read it (or, push, before its copy has
    read it): some schedule shows it."""
    with pytest.raises(AssertionError, match="stale|overwritten|phase"):
        for seed in range(300):
            run(protocol, 3, 6, seed, slots=1)


def test_the_wrong_parity_is_caught():
    """Waiting for the parity of the slot's use count + 1 (push) passes the wait before the data is in."""
    with pytest.raises(AssertionError, match="stale"):
        for seed in range(300):
            run("push", 3, 6, seed, parity_of=lambda s: (s // 2 + 1) % 2)


@pytest.mark.parametrize("protocol,message", [("pull", "which exited"), ("push", "exited with a copy")])
def test_exiting_without_the_final_barrier_is_caught(protocol, message):
    """Without meet_cluster at the end, a program can exit while another still reads its slots (pull) or while its
    last copies are in flight (push)."""
    with pytest.raises(AssertionError, match=message):
        for seed in range(300):
            run(protocol, 3, 6, seed, final_barrier=False)
