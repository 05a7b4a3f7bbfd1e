"""Grid-wide barriers for the split-H tier: every program of a group waits, once per step, until all
of them have written the step. Two forms, from acquire/release operations on global memory:

- counter (the default): every program adds 1 to the group's counter (release: its stores of that
  step become visible first), then spins until the counter reaches (step + 1) * programs (acquire:
  the other programs' stores are visible after it). The counter only grows, so it never needs
  resetting within a launch; the launcher zeroes it. Pattern as in PyTorch Inductor's
  x_grid_barrier; scalar atomics are issued once per program, so each poll's result reaches the
  program's other warps through shared memory and a CTA barrier.
- step flags (split.STEP_FLAGS): every program writes the step number into its own flag (release),
  then every warp polls all the group's flags at once, one per lane (acquire loads), until the
  least of them reaches the step. No program waits on another's atomic, and a poll needs no CTA
  barrier. Lane j's acquire of program j's flag is followed by a CTA barrier before any thread of
  the program reads program j's stores, which orders those reads after program j's release.

Either only terminates if all programs of the group are resident at once: the launcher refuses
grids larger than the SM count and launches cooperatively. The spin is bounded: after MAX_SPINS
polls the program records the failure in status_ptr and goes on, so a barrier that cannot be met
becomes an error raised by the launcher, not a hung GPU.
"""
import triton
import triton.language as tl

MAX_SPINS = tl.constexpr(1 << 24)  # ~seconds of polling: far beyond any real step, short enough to report


@triton.jit
def grid_barrier(counter_ptr, status_ptr, target):
    """Wait until *counter_ptr >= target after adding this program's arrival."""
    tl.debug_barrier()  # every thread of this program has issued its stores of the step
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    spins = 0
    while (arrived < target) & (spins < MAX_SPINS):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if arrived < target:
        tl.atomic_max(status_ptr, 1)
    tl.debug_barrier()  # no thread reads the step's results before the acquire above


@triton.jit
def least_flag(flags_ptr, programs, MAX_PROGRAMS: tl.constexpr, INLINE_PTX: tl.constexpr):
    """The smallest of the group's first `programs` flags, each read with acquire semantics: one
    ld.acquire.gpu per lane (INLINE_PTX), or an atomic add of 0 where inline PTX cannot run (interpreter).
    Every warp reads them all, 32 at a time, so the minimum is a reduction within the warp (REDUX)."""
    LANES: tl.constexpr = min(MAX_PROGRAMS, 32)
    least = tl.full((), 2**31 - 1, tl.int32)
    for chunk in tl.static_range(MAX_PROGRAMS // LANES):
        which = chunk * LANES + tl.arange(0, LANES)
        flags = flags_ptr + tl.where(which < programs, which, 0)  # lanes past the group re-read flag 0
        if INLINE_PTX:
            seen = tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [flags],
                                             dtype=tl.int32, is_pure=False, pack=1)
        else:
            seen = tl.atomic_add(flags, 0, sem="acquire", scope="gpu")
        least = tl.minimum(least, tl.min(seen, axis=0))
    return least


@triton.jit
def flag_barrier(flags_ptr, status_ptr, step, MAX_PROGRAMS: tl.constexpr, INLINE_PTX: tl.constexpr):
    """Write step into this program's flag (flags_ptr[program_id(0)]), then wait until the group's
    num_programs(0) flags all hold step or more."""
    programs = tl.num_programs(0)
    tl.debug_barrier()  # every thread of this program has issued its stores of the step
    tl.atomic_xchg(flags_ptr + tl.program_id(0), step, sem="release", scope="gpu")
    least = least_flag(flags_ptr, programs, MAX_PROGRAMS, INLINE_PTX)
    spins = 0
    while (least < step) & (spins < MAX_SPINS):
        least = least_flag(flags_ptr, programs, MAX_PROGRAMS, INLINE_PTX)
        spins += 1
    if least < step:
        tl.atomic_max(status_ptr, 1)
    tl.debug_barrier()  # lane j acquired program j's flag before any thread reads program j's stores


@triton.jit
def step_barrier(sync_ptr, status_ptr, step, STEP_FLAGS: tl.constexpr, MAX_PROGRAMS: tl.constexpr,
                 INLINE_PTX: tl.constexpr):
    """Wait until every program of this program's group (program_id(1); num_programs(0) programs, at most
    MAX_PROGRAMS) has met step 1, 2, ... so far: sync_ptr holds a counter per group ([groups]) or, with
    STEP_FLAGS, a flag per program ([groups, MAX_PROGRAMS]), zeroed by the launcher."""
    group = tl.program_id(1)
    if STEP_FLAGS:
        flag_barrier(sync_ptr + group * MAX_PROGRAMS, status_ptr, step, MAX_PROGRAMS, INLINE_PTX)
    else:
        grid_barrier(sync_ptr + group, status_ptr, step * tl.num_programs(0))
