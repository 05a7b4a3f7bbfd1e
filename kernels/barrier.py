"""Grid-wide barrier for the split-H tier: every program of a group waits, once per step, until all
of them have written the step.

Every program adds 1 to the group's counter (release: its stores of that step become visible
first), then spins until the counter reaches (step + 1) * programs (acquire: the other programs'
stores are visible after it). The counter only grows, so it never needs resetting within a launch;
the launcher zeroes it. Pattern as in PyTorch Inductor's x_grid_barrier; scalar atomics are issued
once per program, so each poll's result reaches the program's other warps through shared memory and
a CTA barrier. A step flag per program, polled by every warp at once, saved 3 CTA barriers per step
but was no faster on an H200 (kernels/split.py).

It only terminates if all programs of the group are resident at once: the launcher refuses grids
larger than the SM count and launches cooperatively. The spin is bounded: after MAX_SPINS polls the
program records the failure in status_ptr, raises the counter to LOST, past every target of the
launch, and goes on. So a barrier that cannot be met becomes an error raised by the launcher after
one bound's wait, not a hung GPU, nor T of them: every later barrier of the group passes at its
first poll. The launcher keeps each launch's targets below LOST (split.launch_steps), so a counter at
LOST or above means a barrier gave up, and stays below 2^31 even then.

cluster_barrier is the alternative where a group's programs are one thread-block cluster (sm_90; the
split launcher's CLUSTER): the hardware's cluster barrier, with release and acquire at cluster scope,
which covers the global-memory stores of the step. No counter, no polling, no co-residency to check:
a cluster's CTAs are scheduled together or not at all. Where only shared memory passes between a cluster's
programs (dsmem.py), cluster_arrive_shared releases just that, without waiting for global memory.
"""
import triton
import triton.language as tl

MAX_SPINS = tl.constexpr(1 << 24)  # ~seconds of polling: far beyond any real step, short enough to report
LOST = tl.constexpr(1 << 30)  # a counter value past every target: the group's barriers have given up


@triton.jit
def grid_barrier(counter_ptr, status_ptr, target):
    """Wait until *counter_ptr >= target after adding this program's arrival."""
    grid_arrive(counter_ptr)
    grid_wait(counter_ptr, status_ptr, target)


@triton.jit
def grid_arrive(counter_ptr):
    """This program's arrival at the grid barrier: once every thread of it has issued its stores of the step, one
    release add. A release orders every earlier memory operation of the program before the arrival, loads as well
    as stores (SASS: MEMBAR.ALL.GPU, then the add), so a load meant for a later step is best issued after it, where
    its latency overlaps the wait (split.py's inputs loaded ahead)."""
    tl.debug_barrier()  # every thread of this program has issued its stores of the step
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")


@triton.jit
def grid_wait(counter_ptr, status_ptr, target):
    """The rest of grid_barrier after grid_arrive: poll until *counter_ptr >= target (acquire), bounded."""
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    spins = 0
    while (arrived < target) & (spins < MAX_SPINS):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if arrived < target:  # given up: reported, and the group's later barriers pass at once
        tl.atomic_max(status_ptr, 1, sem="relaxed")  # read by the launcher after the kernel
        tl.atomic_max(counter_ptr, LOST, sem="relaxed")  # nothing to publish: only its value counts
    tl.debug_barrier()  # no thread reads the step's results before the acquire above


@triton.jit
def cluster_barrier():
    """Wait until every thread of this program's cluster has arrived: what each wrote before is then visible
    to all of them (barrier.cluster with release and acquire semantics; every thread executes it)."""
    cluster_arrive()
    cluster_wait()


@triton.jit
def cluster_arrive():
    """This thread's arrival at its cluster's barrier, with release semantics: its memory operations so far are
    visible to each thread of the cluster once that thread's cluster_wait returns. Returns at once; every thread
    arrives once per phase (.aligned)."""
    tl.inline_asm_elementwise("barrier.cluster.arrive.release.aligned; mov.b32 $0, 0;", "=r", [], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def cluster_arrive_shared():
    """cluster_arrive releasing only this thread's accesses to its own CTA's shared memory, which is all that the
    cluster's distributed-shared-memory exchanges need released: a restricted release fence
    (fence.release.sync_restrict::shared::cta.cluster), then a relaxed arrival. cluster_arrive's full release orders
    every earlier memory operation of the thread before the arrival and compiles to MEMBAR.ALL.GPU, which can only
    meet that by waiting for those still in flight: an L2 round trip where a global store (the step's output) or a
    load issued ahead (the next step's input) is still out. This fence compiles to MEMBAR.ALL.CTA (compile audit,
    sm_90). How long either waits on a GPU is not measured."""
    tl.inline_asm_elementwise("fence.release.sync_restrict::shared::cta.cluster; "
                              "barrier.cluster.arrive.relaxed.aligned; mov.b32 $0, 0;", "=r", [], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def cluster_wait():
    """Wait until every thread of the cluster has arrived at the current phase of its barrier (acquire)."""
    tl.inline_asm_elementwise("barrier.cluster.wait.acquire.aligned; mov.b32 $0, 0;", "=r", [], dtype=tl.int32,
                              is_pure=False, pack=1)
