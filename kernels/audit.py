"""Compile audit: every kernel configuration the dispatcher can pick, compiled for real GPUs on a
machine without one.

For each configuration and target (sm_80, sm_90) it runs Triton's full pipeline (triton.compile
with a GPUTarget, no device needed) on the keywords the launcher passes (each tier's
launch_keywords), specialised as the JIT specialises a typical launch (16-byte aligned tensors,
T and H multiples of 16, the forward direction, whose forward kernels get t_step = 1 as a constant:
_typical_integers; h_0 and b_hh given, h_0 copied into the states' frame (frames.py), no dL/dh_n:
absent_in_a_typical_launch), and reports:

- registers per thread and spills: from the cubin, via the cuobjdump shipped in the triton wheel.
  Triton kernels make no calls, so any stack frame (STACK) or LOCAL memory means spilled registers;
- shared memory (metadata.shared) within the target's per-block limit;
- persistent kernels (fma, resident and split), whose speed is set by what each time step does:
  - U hoisted: U, or the program's slice of it, is loaded from global memory before the time loop
    and never inside it (TTGIR: its loads come before the first scf.for);
  - t i64: every step's offset t * B * H into the [T, B, H] tensors is a 64-bit product, so that T * B * H
    may pass 2^31 elements (kernels/offsets.py, on the TTIR; "NO" where one is computed in 32 bits or none
    was found);
  - U in: where U lives during the loop, "registers" or "shared" (TTGIR: "shared" when an op in the
    time loop reads a shared-memory buffer allocated before the loop and never written in it), or
    "regs+L1" for the fma tier at BLOCK_H = 256, which holds half of U in registers and reads the other
    half from global memory every step (its loads, named streamed_u, are in the loop; each SM's L1
    keeps those rows). No persistent configuration may hold it in shared memory;
  - U L1/step: the bytes of U the program loads from global memory per step (the time loop's
    evict_last loads, LDG.*.EL: only U's streamed half is loaded so); 0 where U is all in registers.
    Reported, not checked: shared memory is what the re-read check below is about;
  - smem/step: shared-memory bytes the program reads per time step, counted from the SASS of the
    time loop: LDS and LDSM bytes of every warp, plus the operands wgmma reads through shared-memory
    descriptors (per warpgroup). Split kernels, and fma and resident kernels with BLOCK_H >= 128, fail
    the audit when this exceeds what reading h needs (each warp, or warpgroup with wgmma, reading the
    batch tile's h, or its K chunk of it, once per pass of the product; in the split tier also the
    sum of the warps' partial products, and the step's input tiles read by every warp, which all hold
    that sum; in the fma tier, whose threads hold whole columns of U, every thread reading all of h
    (a broadcast: one address per warp); in a split kernel by FMA each k of each batch row read by
    the lanes that share it, and every lane reading back its columns' sums) by more than half of the
    U bytes the program holds: that is U being re-read every step;
  - wf/step and conf/step: the wavefronts the time loop's shared-memory accesses take per time step, over
    all warps (the cycles they hold the SM's shared-memory pipe: smem/step counts bytes, which reads 4
    bytes wide and 16 bytes wide take alike), and of those the bank conflicts, the wavefronts beyond the
    fewest their bytes need (kernels/banks.py, which works the addresses out from the PTX; smem_wavefronts
    and bank_conflicts in the JSON); reported, not checked. The conflicts are exactly Nsight Compute's counts
    on an H200 where both were taken; the wavefronts are a floor: a warp-wide broadcast 16-byte read took
    about 2 there (1 here), and ptxas may merge the PTX's accesses into wider ones;
  - bar/step: CTA barriers (BAR.SYNC, BAR.ARV, BAR.RED: bar.sync and friends in PTX) in the SASS of
    the time loop, each one a point where every warp waits for the slowest; reported, not checked.
  - mma/step and waits/step: the tensor-core MMA instructions of the time loop (HGMMA: wgmma; HMMA:
    mma.sync) and the waits for wgmma groups (WARPGROUP.DEPBAR), which put the MMAs' latency on the
    step's serial chain; reported, not checked.
  - instr/step: the instructions of the time loop (loop_instructions in the JSON): what one step
    issues per warp, the speedometer of changes that leave the other columns alone; reported, not checked.
  - stall/step: the cycles one warp takes to issue a step when nothing waits on memory or a barrier: the
    stall count ptxas writes into each instruction's control bits (the cycles before the warp's next issue,
    which cover fixed latencies such as an FFMA's result), summed over the time loop (stall_cycles in the
    JSON); reported, not checked. How it compares with the cycles Nsight Compute counted on an H200 (stall
    reasons "selected" + "wait"): results/variants/20261127-h200/ncu/README.md.
    The JSON also lists every barrier-like instruction of the loop by opcode (barrier_kinds): BAR.*,
    the mbarrier operations SYNCS.*, the warpgroup fences of wgmma WARPGROUP.* (which wait for
    the warp's own wgmma, not for other warps), the cluster barrier's UCGABAR_ARV and UCGABAR_WAIT, and the
    memory fences MEMBAR.* (MEMBAR.ALL.GPU, from a gpu- or cluster-scope release, which orders every earlier memory
    operation of the thread first and so may wait an L2 round trip for those in flight: inferred, not measured), and,
    in the JSON only, the loop's L2 prefetches
    (prefetch_per_step: CCTL.*.PF*, from prefetch.global.L2);
- in place: for kernels that store each step's output over that step's input (dispatch.Tier.in_place: the fma
  forward over xw, the resident kernels in fragment order over their copies), that their time loop is one straight
  line (no branch inside it, no barrier under a predicate: straight_line) that orders every load from global memory
  before a CTA barrier that precedes the next store (output_over_input), and that the first step, peeled out of the
  loop, does the same (first_step_ordered); "NO" fails;
- split kernels: the grid barrier's release arrival and acquire poll are in the PTX.

Run it as `python -m kernels.audit` (prints the table, exits 1 on any failure); the test suite runs it too.
`--fp32-product` audits the resident kernels with another fp32 product than the default
(resident.FP32_PRODUCT), `--split-inputs-in-step` the split kernels with each step's input read in
the step instead of a step ahead (split.INPUTS_AHEAD off), `--split-inputs-before-arrival` with those loads before
the program's arrival at the barrier (split.INPUTS_AFTER_ARRIVAL off), `--split-tile-loop-stages N` the split
kernels' tile loop software-pipelined over N stages (dispatch.SPLIT_TILE_LOOP_STAGES), and
`--l2-prefetch-steps N` the resident kernels with their step inputs prefetched into L2 N steps ahead
(prefetch.L2_PREFETCH_STEPS), `--portable-tanh` the fp32 forward kernels with tanh's portable form
(activations.FTZ_TANH_ON off), `--fma-chains-in-runs` the fma kernels with each of their product's
chains summing a run of consecutive k (fma.INTERLEAVED_CHAINS off), `--product-to-io-layout
all|fp32|none` the resident and split kernels with the product converted into their step tiles'
layout in those dtypes (layouts.PRODUCT_TO_IO_LAYOUT), `--split-tl-sum` the split kernels with their
warps' partial products summed by Triton's tl.sum (split.IN_THREAD_SUM off), so that the
variants a GPU will time can be compared here first.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from .banks import shared_accesses
from .offsets import time_offset_problems

SHARED_LIMIT = {80: 166912, 90: 232448}  # max dynamic shared memory per block: A100, H100
SM_COUNT = {80: 108, 90: 132}  # A100, H100 SXM: bounds which split configurations the dispatcher can pick
TRITON_DTYPE = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float64": "fp64"}
ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}
PERSISTENT_TIERS = ("fma", "resident", "split")  # U (or its slice) is held on chip for the whole time loop
U_LOAD = re.compile(r"%resident_u\S* = tt\.load ")  # the loads of U keep their Python name in the TTGIR
STREAMED_U_LOAD = re.compile(r"%streamed_u\S* = tt\.load ")  # the fma tier's per-step loads of U's other half
RE_READ_LIMIT = 0.5     # smem/step beyond h, as a fraction of U's bytes, above which U counts as re-read
RE_READ_MIN_BLOCK_H = 128
# Passes of a product over h per step, by DOT_PRECISION: 3xTF32's three dots; the resident one-dot
# products' four (h's two TF32 parts, read twice: stacked in one-dot-k, by twice the M tiles in one-dot-m).
PASSES = {"tf32x3": 3, "one-dot-k": 4, "one-dot-m": 4}


@dataclass
class AuditRow:
    kernel: str
    dtype: str
    config: str
    arch: int
    tier: str = ""
    registers: int = -1
    spill_bytes: int = -1        # STACK + LOCAL per thread from cuobjdump
    shared: int = -1
    shared_limit: int = 0
    u_hoisted: str = "n/a"       # "yes" / "NO" for persistent kernels
    offsets_i64: str = "n/a"     # "yes" / "NO" for persistent kernels: each step's offset t*B*H an i64 product
    u_in: str = "n/a"            # "registers" / "shared" for persistent kernels
    smem_per_step: int = -1      # shared-memory bytes read per time step (persistent kernels)
    h_allowance: int = 0         # of which reading h may take (see h_allowance)
    smem_wavefronts: int = -1    # shared-memory wavefronts per time step, all warps (persistent kernels; banks.py)
    bank_conflicts: int = -1     # of which bank conflicts: beyond the fewest the accesses' bytes need (conf/step)
    bar_per_step: int = -1       # CTA barriers (BAR.*) in the time loop's SASS (persistent kernels)
    barrier_kinds: str = ""      # every barrier-like opcode in the time loop with its count (barrier_kinds)
    mma_per_step: int = -1       # tensor-core MMA instructions (HGMMA, HMMA) in the time loop's SASS
    waits_per_step: int = -1     # waits for wgmma groups (WARPGROUP.DEPBAR) in the time loop's SASS
    loop_instructions: int = -1  # instructions in the time loop's SASS (instr/step)
    stall_cycles: int = -1       # the stall counts of the time loop's instructions, summed (stall/step)
    prefetch_per_step: int = -1  # L2 prefetches (CCTL.*.PF*) in the time loop's SASS (JSON only)
    u_l1_per_step: int = -1      # bytes of U loaded from global memory per time step (evict_last LDG)
    u_bytes: int = 0             # U's bytes in the program (fma, resident: BLOCK_H^2; split: its slice)
    in_place: str = "n/a"        # "yes" / "NO" for kernels that store their output over their input: output_over_input
    barrier_atomics: str = "n/a" # "yes" / "NO" for split kernels: the group barrier's release and acquire in the PTX
                                 # (and a cluster exchange's or K split's own: CLUSTER_EXCHANGE_PTX, K_SPLIT_PTX)
    block_h: int = 0
    num_warps: int = 0
    plan: str = ""               # KernelPlan.name
    nonlinearity: str = ""
    error: str = ""

    @property
    def u_re_read(self) -> bool:
        """A persistent kernel (fma, resident: with BLOCK_H >= 128) that reads more than RE_READ_LIMIT of its
        U bytes (split: its slice's) per step beyond h: U is being streamed from shared memory."""
        checked = self.tier == "split" or (self.tier in ("fma", "resident") and self.block_h >= RE_READ_MIN_BLOCK_H)
        return (checked and self.smem_per_step >= 0
                and self.smem_per_step - self.h_allowance > RE_READ_LIMIT * self.u_bytes)

    @property
    def status(self) -> str:
        """'ok' or 'FAIL'."""
        failed = (self.error or self.spill_bytes != 0 or self.shared > self.shared_limit or self.u_re_read
                  or "NO" in (self.u_hoisted, self.offsets_i64, self.barrier_atomics, self.in_place)
                  or self.u_in == "shared")
        return "FAIL" if failed else "ok"


@dataclass(frozen=True)
class AuditJob:
    kernel: str          # the @triton.jit function's name
    tier: str
    dtype: str           # torch dtype name, e.g. "torch.bfloat16"
    keywords: dict       # its launch keywords (constexprs and compile options), as the launcher passes them
    arch: int            # 80 or 90
    plan: str            # KernelPlan.name the configuration belongs to
    nonlinearity: str
    u_bytes: int         # U's bytes held by one program (0 for the stepwise kernel)


def _dispatchable_plans(arch: int):
    """(dtype, plan) for every configuration the dispatcher can pick on compute capability arch."""
    from .dispatch import (
        FMA_CONFIGS,
        RESIDENT_CONFIGS,
        SPLIT_CONFIGS,
        SUPPORTED_DTYPES,
        KernelPlan,
        plan_for,
        resident_served,
        split_configs,
        stepwise_configs,
    )
    from .split import split_slices
    plans = [(dt, plan_for(block_h, 1, dt, kernel="fma")) for dt, block_h in FMA_CONFIGS]
    plans += [(dt, plan_for(block_h, 1, dt, kernel="resident")) for dt, block_h in RESIDENT_CONFIGS
              if resident_served(dt, block_h, arch)]
    plans += [(dt, KernelPlan("split", cfg)) for dt, block_h in SPLIT_CONFIGS
              for cfg in split_configs(dt, block_h, arch) if split_slices(block_h, cfg.forward) <= SM_COUNT[arch]]
    plans += [(dt, KernelPlan("stepwise", cfg)) for dt in SUPPORTED_DTYPES for cfg in stepwise_configs(dt)]
    return plans


def _u_bytes(tier: str, blocks, dtype) -> int:
    if tier == "fma":  # held in fma.HELD_DTYPE whatever the I/O dtype
        from .fma import HELD_DTYPE
        return blocks.BLOCK_H * blocks.BLOCK_H * HELD_DTYPE.itemsize
    if tier == "resident":
        return blocks.BLOCK_H * blocks.BLOCK_H * dtype.itemsize
    if tier == "split":
        return blocks.BLOCK_N * blocks.BLOCK_H * dtype.itemsize
    return 0


def audit_jobs(plan: str | None = None, dtype: str | None = None, nonlinearity: str | None = None,
               arch: int | None = None) -> list[AuditJob]:
    """Every configuration the dispatcher can pick, optionally only those of one plan name, dtype
    ("bfloat16" or "torch.bfloat16"), nonlinearity or arch."""
    from .activations import ACTIVATION_CODES
    from .dispatch import TIERS
    jobs = []
    for target in (80, 90):
        for act in ACTIVATION_CODES:
            for dt, p in _dispatchable_plans(target):
                tier = TIERS[p.tier]
                for backward, (kernel, blocks) in enumerate(zip(tier.kernels, (p.config.forward, p.config.backward))):
                    keywords = tier.launch_keywords(blocks, act, dt, interpreted=False, backward=bool(backward))
                    # the resident launchers convert the tiles where fragment order would pad too much
                    # (fragments.within_padding_bound), and every launcher chooses whether to prefetch
                    # (prefetch.prefetch_distance)
                    forms = [keywords] + ([tier.launch_keywords(blocks, act, dt, interpreted=False,
                                                                backward=bool(backward), fragment_order=False)]
                                          if keywords.get("FRAGMENTS") else [])
                    forms = [form for keys in forms for form in [keys] + (
                        [keys | {"L2_PREFETCH_STEPS": 0}] if keys.get("L2_PREFETCH_STEPS") else [])]
                    # the fma forward reads U itself at a typical H, a copy of it elsewhere (fma.reads_u_itself)
                    forms += [keys | {"U_ITSELF": False} for keys in forms if keys.get("U_ITSELF")]
                    jobs += [AuditJob(kernel.__name__, p.tier, str(dt), form, target, p.name, act,
                                      _u_bytes(p.tier, blocks, dt)) for form in forms]
    wanted = dtype if dtype is None or dtype.startswith("torch.") else f"torch.{dtype}"
    return [j for j in jobs if (plan is None or j.plan == plan) and (wanted is None or j.dtype == wanted)
            and (nonlinearity is None or j.nonlinearity == nonlinearity) and (arch is None or j.arch == arch)]


def _kernel(tier: str, name: str):
    from .dispatch import TIERS
    return next(k for k in TIERS[tier].kernels if k.__name__ == name)


def _pointer_type(arg: str, dtype: str, constexprs: dict) -> str:
    if arg in ("counter_ptr", "status_ptr"):
        return "*i32"
    fma_copy = arg.endswith("_fp32_ptr") or (arg == "ut_ptr" and not constexprs["U_ITSELF"])
    if (arg == "dh0_ptr" and dtype != "torch.float64") or fma_copy:
        return "*fp32"  # the accumulator dtype; the fma tier's copy of U, fp32 in every I/O dtype
    return f"*{TRITON_DTYPE[dtype]}"


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    sig = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            sig[arg] = "constexpr"
        elif arg.endswith("_ptr"):
            sig[arg] = _pointer_type(arg, dtype, constexprs)
        elif arg == "pin":
            sig[arg] = "fp32"
        else:
            sig[arg] = "i32"
    return sig


def _typical_integers(fn) -> tuple[dict, tuple[str, ...]]:
    """(the integer arguments the JIT compiles as constants, those it marks as multiples of 16) at a typical launch:
    the forward direction, T and H multiples of 16. Triton specialises every integer argument equal to 1 into a
    constant and marks every one divisible by 16 (native_specialize_impl): a forward launch's t_step = 1 is a
    constant and its t_first = 0 a multiple of 16; its backward runs t_step = -1 from t_first = T - 1, neither
    specialised."""
    forward = "t_step" in fn.arg_names and "forward" in fn.__name__
    return ({"t_step": 1} if forward else {}), ("T", "H") + (("t_first",) if forward else ())


def _aligned(fn, signature: dict, multiples_of_16: tuple[str, ...]) -> dict:
    """The JIT's specialisation of a typical launch: pointers 16-byte aligned, these integers multiples of 16."""
    return {(fn.arg_names.index(arg),): [["tt.divisibility", 16]] for arg, ty in signature.items()
            if ty.startswith("*") or (arg in multiples_of_16 and ty == "i32")}


def _nvidia_tool(name: str, cubin: bytes, *args: str) -> str:
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, *args, f.name], capture_output=True, text=True, check=True).stdout


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, bytes spilled: stack frame and local memory) of a compiled kernel."""
    out = _nvidia_tool("cuobjdump", cubin, "--dump-resource-usage")
    usage = {k: int(v) for k, v in re.findall(r"(REG|STACK|LOCAL):(\d+)", out)}
    return usage["REG"], usage["STACK"] + usage["LOCAL"]


TIME_LOOP = re.compile(r"scf\.for \S+ = \S+ to %T step")  # the kernels' `for s in range(..., T)`


def _time_loop(ttgir: str) -> tuple[str, str]:
    """(the TTGIR before the time loop, the text of its body), the body found by matching braces."""
    start = TIME_LOOP.search(ttgir).start()
    open_at = ttgir.index("{\n", start)  # the region's brace ends the line; types hold braces too
    depth = 0
    for i in range(open_at, len(ttgir)):
        depth += {"{": 1, "}": -1}.get(ttgir[i], 0)
        if depth == 0:
            return ttgir[:start], ttgir[open_at:i]
    raise ValueError("unbalanced TTGIR")


def u_hoisted(ttgir: str) -> bool:
    """U's block load comes before the time loop and none is inside it.

    U's loads are recognised by name (U_LOAD). Counting other loads would not work: the pipeliner
    moves per-step loads in front of the loop.
    """
    before, body = _time_loop(ttgir)
    return bool(U_LOAD.search(before)) and not U_LOAD.search(body)


ALLOC = re.compile(r"(%[\w.]+) = ttg\.local_alloc")


def offsets_i64(ttir: str) -> str:
    """"yes" where the kernel reads and writes at step t (at least two timed addresses) through 64-bit offsets only
    (offsets.time_offset_problems), else "NO"."""
    checked, problems = time_offset_problems(ttir)
    return "yes" if checked >= 2 and not problems else "NO"


def u_location(ttgir: str) -> str:
    """'shared' when an op in the time loop (TIME_LOOP) reads a shared-memory buffer (ttg.local_alloc)
    allocated before the loop and never written inside it: a loop-invariant operand, i.e. U, re-read
    every step; 'registers' otherwise. Views of a buffer (ttg.memdesc_*) count as the buffer."""
    before, body = _time_loop(ttgir)
    root = dict(re.findall(r"(%[\w.]+) = ttg\.memdesc_\w+ (%[\w.]+)", ttgir))

    def buffer(name: str) -> str:
        while name in root:
            name = root[name]
        return name
    # MLIR reuses a name in sibling regions: one the loop allocates itself is its own per-step buffer, even
    # when a loop before it (a split kernel's first tile loop) allocated a buffer of that name.
    allocated = set(re.findall(ALLOC, before)) - set(re.findall(ALLOC, body))
    written = {buffer(n) for n in re.findall(r"ttg\.(?:local_store|async_copy_global_to_local) \S+, (%[\w.]+)", body)}
    read = {buffer(n) for n in re.findall(r"ttg\.local_load (%[\w.]+)", body)}
    read |= {buffer(n) for pair in re.findall(r"ttng\.warp_group_dot (%[\w.]+), (%[\w.]+)", body) for n in pair}
    if read & (allocated - written):
        return "shared"
    return "regs+L1" if STREAMED_U_LOAD.search(body) else "registers"


# ---- SASS of the time loop ---------------------------------------------------------------------

_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LANE_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}  # per lane, LDS and LDG; plain: 4
_MMA_ITEMSIZE = {"BF16": 2, "F16": 2, "TF32": 4, "E4M3": 1, "E5M2": 1}


# An instruction's line and the next, which holds the second 64-bit word of its encoding: the control bits
_SASS_CONTROL = re.compile(r"/\*([0-9a-f]{4,})\*/[^\n]*;\s*/\* 0x[0-9a-f]{16} \*/\s*\n\s*/\* (0x[0-9a-f]{16}) \*/")


def _sass_instructions(sass: str) -> list[tuple[int, str]]:
    """(address, text) of each instruction of a SASS listing."""
    return [(int(a, 16), text) for a, text in _SASS_LINE.findall(sass)]


def _loop_span(instructions: list[tuple[int, str]]) -> tuple[int, int] | None:
    """(first, last) address of the outermost loop, the widest backward branch, of (address, text) instructions."""
    spans = []
    for address, text in instructions:
        target = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if target and int(target.group(1), 16) < address:
            spans.append((int(target.group(1), 16), address))
    return max(spans, key=lambda span: span[1] - span[0]) if spans else None


_JUMP = re.compile(r"\b(?:BRA|BRX|JMP|JMX|CALL)\b(?:.*?(0x[0-9a-f]+))?")
_PREDICATE = re.compile(r"^@!?U?P\w+\s+")  # an instruction's guard, e.g. "@!P0 "
_PREDICATED_BARRIER = re.compile(r"@!?U?P\w+\s+BAR\b")  # a CTA barrier that some threads may not take


def straight_line(sass: str) -> bool:
    """Whether a SASS listing's time loop (the outermost) runs every instruction of a step, in order: no branch
    inside it but its own back edge (no inner loop, no forward branch that could skip a barrier) and no CTA barrier
    under a predicate. Only such a loop can output_over_input read as one sequence. False where there is no loop.
    A jump out of the loop just before the back edge is the back edge's condition in another form (sm_80 leaves
    loops by a CALL.REL.NOINC to the EXIT after them)."""
    instructions = _sass_instructions(sass)
    span = _loop_span(instructions)
    if span is None:
        return False
    body = [text.strip() for address, text in instructions if span[0] <= address < span[1]]  # the back edge aside
    exit_jump = _JUMP.search(body[-1]) if body else None
    if exit_jump and exit_jump.group(1) and int(exit_jump.group(1), 16) > span[1]:
        body = body[:-1]
    return not any(_JUMP.search(text) or _PREDICATED_BARRIER.match(text) for text in body)


def time_loop(sass: str) -> list[str]:
    """The instructions of the outermost loop (the widest backward branch), predicates stripped."""
    instructions = _sass_instructions(sass)
    span = _loop_span(instructions)
    if span is None:
        return []
    return [_PREDICATE.sub("", text) for address, text in instructions if span[0] <= address <= span[1]]


def stall_cycles(sass: str) -> int:
    """The stall counts ptxas wrote into the control bits of the time loop's instructions (bits 105-108 of the
    128-bit encoding from Volta on: the cycles the warp waits before issuing its next instruction), summed."""
    span = _loop_span(_sass_instructions(sass))
    if span is None:
        return 0
    return sum((int(word, 16) >> 41) & 0xF for address, word in _SASS_CONTROL.findall(sass)
               if span[0] <= int(address, 16) <= span[1])


def compiled_sass(compiled) -> str:
    """A compiled kernel's SASS listing (its cubin, by the cuobjdump in the triton wheel)."""
    return _nvidia_tool("cuobjdump", compiled.asm["cubin"], "-sass")


def compiled_time_loop(compiled) -> list[str]:
    """time_loop of a compiled kernel."""
    return time_loop(compiled_sass(compiled))


def lane_bytes(opcode_parts: list[str]) -> int:
    """Bytes one lane moves with a load whose opcode, split at its dots, is these parts (its width suffix)."""
    return next((_LANE_BYTES[p] for p in opcode_parts[1:] if p in _LANE_BYTES), 4)


def shared_bytes_per_warp(instruction: str) -> int:
    """Shared-memory bytes one warp reads with this instruction (LDS: 32 lanes x width; LDSM: 128 bytes
    per 8x8 16-bit matrix); 0 for anything else."""
    opcode = instruction.split()[0]
    parts = opcode.split(".")
    if parts[0] == "LDS":
        return 32 * lane_bytes(parts)
    if parts[0] == "LDSM":
        return 128 * (int(parts[-1]) if parts[-1].isdigit() else 1)
    return 0


def wgmma_shared_bytes(instruction: str) -> int:
    """Bytes one warpgroup's wgmma (HGMMA.MxNxK) reads through shared-memory descriptors: B always,
    A too when its operand is a descriptor rather than registers."""
    match = re.match(r"HGMMA\.(\d+)x(\d+)x(\d+)(\S*)\s+\S+,\s*(\S+)", instruction)
    if not match:
        return 0
    m, n, k = (int(match.group(i)) for i in (1, 2, 3))
    itemsize = next((size for name, size in _MMA_ITEMSIZE.items() if f".{name}" in match.group(4)), 2)
    a_in_shared = match.group(5).startswith("gdesc")
    return (n * k + (m * k if a_in_shared else 0)) * itemsize


def smem_per_step(loop: list[str], num_warps: int) -> int:
    """Shared-memory bytes the program reads in one pass of the time loop (time_loop's instructions)."""
    per_warp = sum(shared_bytes_per_warp(i) for i in loop)
    per_warpgroup = sum(wgmma_shared_bytes(i) for i in loop)
    return per_warp * num_warps + per_warpgroup * max(1, num_warps // 4)


def h_allowance(loop: list[str], num_warps: int, h_bytes: int, passes: int, k_split: int = 1,
                partial_bytes: int = 0, tile_bytes: int = 0) -> int:
    """What reading h may take per step: the batch tile's h once per MMA issuer (a warp; a warpgroup
    with wgmma, which reads its right operand through a descriptor) and per pass of the product
    (3 for 3xTF32). When the product's K is split over the warps (split tier), each reads its chunk
    of h, and the k_split fp32 partial products (partial_bytes each) are summed through shared memory:
    Triton's cross-warp reduction reads them back in two rounds. Every warp then holds the whole sum,
    so the step's input tiles (tile_bytes in all: xw; h and dy backward) reach each of them through
    shared memory."""
    issuers = max(1, num_warps // 4) if any(i.startswith("HGMMA") for i in loop) else num_warps
    return h_bytes * issuers * passes // k_split + (k_split * (2 * partial_bytes + tile_bytes) if k_split > 1 else 0)


def tile_loads(ttgir: str, block_n: int, block_b: int) -> int:
    """Loads of [block_n, block_b] tiles in the time loop (TIME_LOOP): a split kernel's per-step inputs."""
    return len(re.findall(rf"= tt\.load .*: tensor<{block_n}x{block_b}x!tt\.ptr", _time_loop(ttgir)[1]))


# CTA barriers, mbarrier operations, wgmma fences, the cluster barrier, memory fences
BARRIER_OPCODES = ("BAR", "SYNCS", "WARPGROUP", "UCGABAR_ARV", "UCGABAR_WAIT", "MEMBAR")


def cta_barriers(loop: list[str]) -> int:
    """CTA-wide barriers (BAR.SYNC, BAR.ARV, BAR.RED, ...: PTX bar/barrier) among these instructions."""
    return sum(i.split()[0].split(".")[0] == "BAR" for i in loop)


def barrier_kinds(loop: list[str]) -> str:
    """Every barrier-like instruction (BARRIER_OPCODES) among these, as 'OPCODE xN' by first appearance."""
    counts: dict[str, int] = {}
    for i in loop:
        opcode = i.split()[0]
        if opcode.split(".")[0] in BARRIER_OPCODES:
            counts[opcode] = counts.get(opcode, 0) + 1
    return ", ".join(f"{opcode} x{n}" for opcode, n in counts.items())


def mma_instructions(loop: list[str]) -> int:
    """Tensor-core MMA instructions among these: HGMMA (wgmma) and HMMA (mma.sync)."""
    return sum(i.split()[0].split(".")[0] in ("HGMMA", "HMMA") for i in loop)


def wgmma_waits(loop: list[str]) -> int:
    """Waits for committed wgmma groups (WARPGROUP.DEPBAR: wgmma.wait_group) among these."""
    return sum(i.split()[0].startswith("WARPGROUP.DEPBAR") for i in loop)


def streamed_u_bytes(loop: list[str], num_warps: int) -> int:
    """Bytes the program loads per pass of the time loop with evict_last global loads (LDG.*.EL*), which only
    the loads of U's streamed half use: 32 lanes x width x warps."""
    per_warp = 0
    for i in loop:
        parts = i.split()[0].split(".")
        if parts[0] == "LDG" and "EL" in parts:
            per_warp += 32 * lane_bytes(parts)
    return per_warp * num_warps


def l2_prefetches(loop: list[str]) -> int:
    """L2 prefetches (CCTL.E.PF2 and the like: prefetch.global.L2) among these."""
    return sum(i.split()[0].startswith("CCTL") and ".PF" in i.split()[0] for i in loop)


# A cluster's release arrivals: all the thread's memory operations (barrier.cluster_arrive), or only its own shared
# memory's, all that the distributed-shared-memory exchanges pass on (barrier.cluster_arrive_shared)
RELEASE_ARRIVAL = r"\bbarrier\.cluster\.arrive\.release\b"
SHARED_RELEASE_ARRIVAL = (r"\bfence\.release\.sync_restrict::shared::cta\.cluster;\s*"
                          r"barrier\.cluster\.arrive\.relaxed\b")
WAIT_ACQUIRE = r"\bbarrier\.cluster\.wait\.acquire\b"
REMOTE_READS = [r"\bmapa\.shared::cluster\b", r"\bld\.shared::cluster\b"]
# What each of a cluster's exchanges (split.SplitBlocks.EXCHANGE) must have in the PTX beside the cluster's acquire
CLUSTER_EXCHANGE_PTX = {
    "l2": [RELEASE_ARRIVAL],  # the state through global memory, which only the full release covers
    "dsmem-pull": [f"({RELEASE_ARRIVAL}|{SHARED_RELEASE_ARRIVAL})", *REMOTE_READS],
    "dsmem-push": [r"\bcp\.async\.bulk\.shared::cluster\.shared::cta\.mbarrier::complete_tx::bytes\b",
                   r"\bmbarrier\.arrive\.expect_tx\b", r"\bmbarrier\.try_wait\.parity\b"],  # copies, their count
}
# What a K split over a cluster (split.SplitBlocks.K_CLUSTER) must have: each tile's partial products released,
# acquired and read from the cluster's shared memory (dsmem.sum_partials)
K_SPLIT_PTX = [f"({RELEASE_ARRIVAL}|{SHARED_RELEASE_ARRIVAL})", WAIT_ACQUIRE, *REMOTE_READS]


def output_over_input(loop: list[str]) -> bool:
    """Whether a kernel may store each step's output over that step's input (dispatch.Tier.in_place): in its time
    loop, one straight line of instructions (straight_line, which the audit checks first), every load from global
    memory (LDG; the fma tier's streamed U, LDG.*.EL, aside) is followed by a CTA barrier that waits (BAR.SYNC,
    BAR.RED) before the next store to global memory (STG), going round the loop. A load that its thread has issued
    before such a barrier has its value before any thread passes it (PTX's bar.sync orders the memory accesses before
    it), so no store after the barrier can reach it, whichever thread loaded the element and whichever stores it.
    The first step, peeled out of the loop, is first_step_ordered's."""
    marks = _memory_marks(loop)
    # round the loop from each load, up to the load itself
    return not any(_store_before_barrier(marks[i + 1:] + marks[:i]) for i, mark in enumerate(marks) if mark == "load")


def _store_before_barrier(after: list[str]) -> bool:
    """Whether these marks (_memory_marks), which follow a load, reach a store before a waiting barrier."""
    return "store" in after and "barrier" not in after[:after.index("store")]


def _memory_marks(instructions: list[str]) -> list[str]:
    """"load" (LDG; the fma tier's streamed U, LDG.*.EL, aside), "store" (STG) and "barrier" (a CTA barrier that
    waits: BAR.SYNC, BAR.RED), in order, of instructions with their predicates stripped."""
    marks = [("load" if op.startswith("LDG") and ".EL" not in op else "store" if op.startswith("STG")
              else "barrier" if op.startswith(("BAR.SYNC", "BAR.RED")) else None)
             for op in (instruction.split()[0] for instruction in instructions if instruction.split())]
    return [m for m in marks if m]


def first_step_ordered(sass: str) -> bool:
    """Whether a kernel's first step, peeled out of its time loop, orders its loads as output_over_input orders the
    loop's: on every path from the kernel's entry, every load from global memory is followed by a waiting CTA barrier
    before the next store. The walk takes both ways at each guarded branch (e.g. step 1's input loaded only where
    T > 1, or the loop skipped where T = 1, to the code after it), so a branch around a load alone passes and one
    that skips the barrier between a load and a store fails; it goes round the loop and out of it, and ends at an
    EXIT. A jump to an address not in the listing fails, as does a barrier under a predicate. False where there is
    no time loop."""
    instructions = _sass_instructions(sass)
    if _loop_span(instructions) is None:
        return False
    at = {address: index for index, (address, _) in enumerate(instructions)}
    paths, walked = [(0, False)], set()  # (instruction index, a load waits for a barrier)
    while paths:
        index, pending = paths.pop()
        if index >= len(instructions) or (index, pending) in walked:
            continue
        walked.add((index, pending))
        text = instructions[index][1].strip()
        if _PREDICATED_BARRIER.match(text):
            return False
        bare = _PREDICATE.sub("", text)
        guarded, mark = bare != text, (_memory_marks([bare]) or [None])[0]
        if mark == "store" and pending:
            return False
        pending = mark == "load" or (pending and mark != "barrier")
        jump = _JUMP.search(bare)
        if jump:
            if not jump.group(1) or int(jump.group(1), 16) not in at:
                return False
            paths.append((at[int(jump.group(1), 16)], pending))
        if guarded or not (jump or bare.startswith("EXIT")) or bare.startswith("CALL"):  # a call returns
            paths.append((index + 1, pending))
    return True


def barrier_atomics(ptx: str, cluster: bool = False, exchange: str = "l2", k_split: bool = False) -> bool:
    """The grid barrier's arrival (a gpu-scope release add, e.g. red.global.gpu.release.add) and its
    poll (a gpu-scope acquire load or atomic, e.g. ld.global.gpu.acquire) are in the PTX; for a group that is a
    cluster, the cluster barrier's acquire wait instead, with the release arrival and whatever else its exchange
    needs (CLUSTER_EXCHANGE_PTX); with k_split also the K split's sum over the cluster (K_SPLIT_PTX)."""
    if k_split and not all(re.search(pattern, ptx) for pattern in K_SPLIT_PTX):
        return False
    if cluster:
        return bool(re.search(WAIT_ACQUIRE, ptx)
                    and all(re.search(pattern, ptx) for pattern in CLUSTER_EXCHANGE_PTX[exchange]))
    release_add = re.search(r"\b(red|atom)\.\S*\bgpu\.release\.add", ptx)
    acquire_poll = re.search(r"\b(ld|atom)\.\S*\bgpu\.acquire\b", ptx)
    return bool(release_add and acquire_poll)


# ---- one compile -------------------------------------------------------------------------------

def absent_in_a_typical_launch() -> tuple[str, ...]:
    """The kernels' optional tensors that a typical launch passes as None, compiled so: dL/dh_n, where the loss reads
    the layer's output and not h_n (the harness's, a sequence model's), and b_hh where the input GEMM adds it
    (dispatch.B_HH_IN_KERNEL off)."""
    from .dispatch import B_HH_IN_KERNEL
    return ("dhn_ptr",) + (() if B_HH_IN_KERNEL else ("b_hh_ptr",))


HIDDEN_FROM_LABEL = ("DOT_PRECISION", "UPCAST_DOT", "ACC_DTYPE", "WORK")


def compile_for(fn, dtype: str, keywords: dict, arch: int, absent: tuple[str, ...] | None = None,
                pointers: dict[str, str] | None = None):
    """triton.compile of fn with these launch keywords for sm_<arch>, specialised as a typical launch, or with the
    optional tensors `absent` names passed as None and the others given; pointers: pointer arguments' types other
    than a typical launch's (e.g. {"dh0_ptr": "*bf16"})."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .launch import COMPILE_OPTIONS
    constexprs = {k: v for k, v in keywords.items() if k not in COMPILE_OPTIONS}
    absent = absent_in_a_typical_launch() if absent is None else absent
    constexprs |= {arg: None for arg in absent if arg in fn.arg_names}
    constants, multiples_of_16 = _typical_integers(fn)
    constexprs |= constants
    signature = _signature(fn, dtype, constexprs) | (pointers or {})
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs,
                    attrs=_aligned(fn, signature, multiples_of_16))
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={k: v for k, v in keywords.items() if k in COMPILE_OPTIONS})


def time_loop_facts(compiled, keywords: dict, dtype: str, tier: str = "resident", in_place: bool = False) -> dict:
    """What a persistent kernel does per time step: u_hoisted, offsets_i64, u_in, smem_per_step, h_allowance,
    smem_wavefronts, bank_conflicts, bar_per_step, barrier_kinds, mma_per_step, waits_per_step, loop_instructions,
    stall_cycles, prefetch_per_step, u_l1_per_step and, where it stores its output over its input (in_place),
    whether its loop and its peeled first step allow that (output_over_input, first_step_ordered)."""
    ttgir = compiled.asm["ttgir"]
    sass = compiled_sass(compiled)
    loop = time_loop(sass)
    warps = keywords["num_warps"]
    itemsize = ITEMSIZE[TRITON_DTYPE[dtype]]
    block_n, block_b = keywords.get("BLOCK_N", 0), keywords.get("BLOCK_B", 1)  # fma: one batch row
    h_bytes = block_b * keywords["BLOCK_H"] * itemsize
    passes = PASSES.get(keywords.get("DOT_PRECISION"), 1)
    tile_bytes = tile_loads(ttgir, block_n, block_b) * block_n * block_b * itemsize if block_n else 0
    if tier == "fma":  # whole columns a thread: every lane reads all of h (a broadcast), and nothing is summed across;
        # h in fma.HELD_DTYPE whatever the I/O dtype
        from .fma import HELD_DTYPE
        h_bytes, k_split, partial_bytes = 32 * keywords["BLOCK_H"] * HELD_DTYPE.itemsize, 1, 0
    elif keywords.get("FMA"):  # split by FMA: K over the warps and 8 lanes, 4 columns a thread (the rest of the
        # warp's lanes along n read each k of h), every lane reading back its 4 columns' sums of every row
        lanes_n = block_n // 4
        h_bytes, k_split, partial_bytes = lanes_n * h_bytes, warps, 32 * 4 * block_b * lanes_n
    else:
        k_split, partial_bytes = keywords.get("K_SPLIT", 1), block_n * block_b * 4
    accesses = shared_accesses(compiled.asm["ptx"], warps)
    return {"u_hoisted": "yes" if u_hoisted(ttgir) else "NO", "offsets_i64": offsets_i64(compiled.asm["ttir"]),
            "u_in": u_location(ttgir), "smem_per_step": smem_per_step(loop, warps),
            "smem_wavefronts": sum(a.wavefronts for a in accesses),
            "bank_conflicts": sum(a.conflicts for a in accesses),
            "bar_per_step": cta_barriers(loop), "barrier_kinds": barrier_kinds(loop),
            "mma_per_step": mma_instructions(loop), "waits_per_step": wgmma_waits(loop),
            "loop_instructions": len(loop), "stall_cycles": stall_cycles(sass),
            "prefetch_per_step": l2_prefetches(loop),
            "u_l1_per_step": streamed_u_bytes(loop, warps),
            "in_place": ("yes" if straight_line(sass) and output_over_input(loop)
                         and first_step_ordered(sass) else "NO") if in_place else "n/a",
            "h_allowance": h_allowance(loop, warps, h_bytes, passes, k_split, partial_bytes, tile_bytes)}


def compile_one(job: AuditJob) -> AuditRow:
    from .dispatch import TIERS
    keywords = job.keywords
    label = ",".join(f"{k}={v}" for k, v in keywords.items() if k not in HIDDEN_FROM_LABEL)
    row = AuditRow(job.kernel, TRITON_DTYPE[job.dtype], label, job.arch, tier=job.tier,
                   shared_limit=SHARED_LIMIT[job.arch], block_h=keywords.get("BLOCK_H", 0),
                   num_warps=keywords["num_warps"], plan=job.plan, nonlinearity=job.nonlinearity, u_bytes=job.u_bytes)
    try:
        compiled = compile_for(_kernel(job.tier, job.kernel), job.dtype, keywords, job.arch)
        row.registers, row.spill_bytes = resource_usage(compiled.asm["cubin"])
        row.shared = compiled.metadata.shared
        if job.tier in PERSISTENT_TIERS:
            in_place = TIERS[job.tier].in_place(keywords, "backward" in job.kernel)
            facts = time_loop_facts(compiled, keywords, job.dtype, job.tier, in_place)
            for key, value in facts.items():
                setattr(row, key, value)
        if job.tier == "split":
            cluster, k_split = keywords.get("CLUSTER", 1) > 1, keywords.get("K_CLUSTER", 1) > 1
            met = barrier_atomics(compiled.asm["ptx"], cluster, keywords["EXCHANGE"], k_split)
            row.barrier_atomics = "yes" if met else "NO"
    except Exception as exc:  # one broken configuration must not hide the others
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    return row


def shared_access_listing(job: AuditJob) -> str:
    """Each shared-memory access of a persistent kernel's time loop with its wavefronts (banks.py): where its bank
    conflicts are, by PTX line."""
    compiled = compile_for(_kernel(job.tier, job.kernel), job.dtype, job.keywords, job.arch)
    accesses = shared_accesses(compiled.asm["ptx"], job.keywords["num_warps"])
    lines = [f"{job.kernel} {TRITON_DTYPE[job.dtype]} sm_{job.arch} {job.nonlinearity} {job.plan}",
             f"  {'PTX line':>8} {'wavefronts':>10} {'fewest':>6} {'conflicts':>9}  instruction"]
    lines += [f"  {a.line:>8} {a.wavefronts:>10} {a.ideal:>6} {a.conflicts:>9}  {a.text}"
              + ("  (address not computed)" if a.unknown else "") for a in accesses]
    return "\n".join(lines)


def run_audit(jobs: list[AuditJob], workers: int = 2) -> list[AuditRow]:
    """Every job compiled and read, in order, on this many processes; a bar on stderr where it is a terminal."""
    from tqdm import tqdm
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(compile_one, jobs), total=len(jobs), unit="kernel", desc="compile audit",
                         disable=None, leave=False))


def format_table(rows: list[AuditRow]) -> str:
    header = (f"{'kernel':<26} {'dtype':<5} {'arch':<5} {'regs':>4} {'spill':>5} {'shared':>7} {'U hoisted':<9} "
              f"{'t i64':<5} {'U in':<9} {'smem/step':>9} {'wf/step':>7} {'conf/step':>9} {'bar/step':>8} "
              f"{'mma/step':>8} {'waits/step':>10} "
              f"{'instr/step':>10} {'stall/step':>10} "
              f"{'U bytes':>7} {'U L1/step':>9} "
              f"{'in place':<8} {'barrier':<7} {'status':<6} config")
    lines = [header, "-" * len(header)]

    def count(n: int) -> str:
        return f"{n}" if n >= 0 else "n/a"
    for r in rows:
        lines.append(f"{r.kernel:<26} {r.dtype:<5} sm_{r.arch:<2} {r.registers:>4} {r.spill_bytes:>5} {r.shared:>7} "
                     f"{r.u_hoisted:<9} {r.offsets_i64:<5} {r.u_in:<9} {count(r.smem_per_step):>9} "
                     f"{count(r.smem_wavefronts):>7} {count(r.bank_conflicts):>9} "
                     f"{count(r.bar_per_step):>8} "
                     f"{count(r.mma_per_step):>8} {count(r.waits_per_step):>10} {count(r.loop_instructions):>10} "
                     f"{count(r.stall_cycles):>10} "
                     f"{r.u_bytes or 'n/a':>7} {count(r.u_l1_per_step):>9} "
                     f"{r.in_place:<8} {r.barrier_atomics:<7} {r.status:<6} {r.config}"
                     + (f"  [{r.error}]" if r.error else ""))
    failed = sum(r.status == "FAIL" for r in rows)
    lines.append(f"{len(rows)} configurations: {len(rows) - failed} ok, {failed} failed")
    return "\n".join(lines)


@dataclass(frozen=True)
class KernelSwitch:
    """A module default the kernels read at launch, which the audit can set from its command line."""
    option: str     # the audit's command-line option
    module: object  # the kernels module holding it
    name: str       # its attribute there
    argument: dict  # how argparse reads it: {"action": "store_true"/"store_false"} for a flag, else type and choices
    help: str

    @property
    def flag_sets(self) -> bool | None:
        """The value a flag sets (True for store_true, False for store_false); None for an option with a value."""
        return {"store_true": True, "store_false": False}.get(self.argument.get("action"))


def kernel_switches() -> tuple[KernelSwitch, ...]:
    """Every kernel switch: what the variants a GPU will time change, so that they can be audited first."""
    from . import activations, dispatch, dsmem, fma, layouts, prefetch, resident, split
    return (
        KernelSwitch("--fp32-product", resident, "FP32_PRODUCT", {"choices": resident.FP32_PRODUCTS},
                     "the resident kernels' fp32 product (default: resident.FP32_PRODUCT)"),
        KernelSwitch("--resident-fragments", resident, "FRAGMENT_IO", {"action": "store_true"},
                     "the 16-bit resident kernels' per-step tensors in the MMA accumulator's fragment order, not "
                     "loaded and stored in their own layout and converted via shared memory (resident.FRAGMENT_IO)"),
        KernelSwitch("--b-hh-summed", dispatch, "B_HH_IN_KERNEL", {"action": "store_false"},
                     "the fma, resident and split kernels without b_hh, which the input GEMM adds as b_ih + b_hh, "
                     "not each step in the kernel (dispatch.B_HH_IN_KERNEL off)"),
        KernelSwitch("--l2-prefetch-steps", prefetch, "L2_PREFETCH_STEPS", {"type": int, "metavar": "N"},
                     "the resident and fma kernels' L2 prefetch distance (default: prefetch.L2_PREFETCH_STEPS)"),
        KernelSwitch("--product-to-io-layout", layouts, "PRODUCT_TO_IO_LAYOUT",
                     {"choices": layouts.PRODUCT_TO_IO_LAYOUT_CHOICES},
                     "the dtypes whose resident and split kernels convert each step's product into the layout of "
                     "its input and output tiles, not those tiles into its layout (default: "
                     "layouts.PRODUCT_TO_IO_LAYOUT)"),
        KernelSwitch("--portable-tanh", activations, "FTZ_TANH_ON", {"action": "store_false"},
                     "fp32 forward kernels with tanh's portable form, with its denormal range checks, not the same "
                     "maths by inline PTX without them (activations.FTZ_TANH_ON off)"),
        KernelSwitch("--fma-u-copied", fma, "READ_U_ITSELF", {"action": "store_false"},
                     "the fma forward reading a copy of U^T made for it, not U where it lies (fma.READ_U_ITSELF off)"),
        KernelSwitch("--fma-chains-in-runs", fma, "INTERLEAVED_CHAINS", {"action": "store_false"},
                     "the fma kernels' product summed in chains of consecutive k, not interleaved "
                     "(fma.INTERLEAVED_CHAINS off)"),
        KernelSwitch("--split-inputs-in-step", split, "INPUTS_AHEAD", {"action": "store_false"},
                     "the split kernels with each step's input read in the step, not a step ahead "
                     "(split.INPUTS_AHEAD off)"),
        KernelSwitch("--split-inputs-before-arrival", split, "INPUTS_AFTER_ARRIVAL", {"action": "store_false"},
                     "the split kernels' inputs a step ahead loaded before the program's arrival at the group "
                     "barrier, not after it (split.INPUTS_AFTER_ARRIVAL off)"),
        KernelSwitch("--split-tl-sum", split, "IN_THREAD_SUM", {"action": "store_false"},
                     "the split kernels with their warps' partial products summed by Triton's tl.sum over the "
                     "warps, not in each thread (split.IN_THREAD_SUM off)"),
        KernelSwitch("--split-tile-loop-stages", dispatch, "SPLIT_TILE_LOOP_STAGES", {"type": int, "metavar": "N"},
                     "software-pipeline stages of the split kernels' tile loop (default: "
                     "dispatch.SPLIT_TILE_LOOP_STAGES)"),
        KernelSwitch("--split-looped-block-b", dispatch, "SPLIT_LOOPED_BLOCK_B", {"type": int, "metavar": "N"},
                     "batch tile rows of the split programs that run several tiles per step, from sm_90 (default: "
                     "dispatch.SPLIT_LOOPED_BLOCK_B)"),
        KernelSwitch("--split-clusters", dispatch, "SPLIT_CLUSTERS", {"action": "store_true"},
                     "the split tier's batch groups as thread-block clusters where it has such configurations "
                     "(dispatch.SPLIT_CLUSTERS on; sm_90)"),
        KernelSwitch("--split-cluster-exchange", dispatch, "SPLIT_CLUSTER_EXCHANGE", {"choices": dsmem.EXCHANGES},
                     "with --split-clusters, how the clusters exchange the state (default: "
                     "dispatch.SPLIT_CLUSTER_EXCHANGE; dsmem-pull, dsmem-push: in distributed shared memory)"),
        KernelSwitch("--split-k-cluster", dispatch, "SPLIT_K_CLUSTER", {"type": int, "metavar": "N"},
                     "the split kernels' K split over clusters of N programs where their programs run several batch "
                     "tiles (default: dispatch.SPLIT_K_CLUSTER; 1: none; sm_90)"),
    )


def switch_arguments() -> list[str]:
    """The arguments with which an audit in another process sees this process's kernel switches
    (kernel_switches): main sets them."""
    arguments = []
    for switch in kernel_switches():
        value = getattr(switch.module, switch.name)
        if switch.flag_sets is None:
            arguments += [switch.option, str(value)]
        elif value == switch.flag_sets:
            arguments.append(switch.option)
    return arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles (default: CPU count)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--plan",
                        help="only the configuration of this KernelPlan.name, e.g. as TritonRNN.last_plans shows")
    parser.add_argument("--dtype", help="only this dtype (float32, bfloat16, float16, float64)")
    parser.add_argument("--nonlinearity", choices=["tanh", "relu"], help="only this activation")
    parser.add_argument("--arch", type=int, choices=sorted(SHARED_LIMIT), help="only this target")
    parser.add_argument("--shared-accesses", action="store_true",
                        help="also list each shared-memory access of the persistent kernels' time loops with its "
                             "wavefronts and bank conflicts (kernels/banks.py); best with --plan")
    switches = kernel_switches()
    for switch in switches:  # absent: None, the module's default stays
        parser.add_argument(switch.option, dest=switch.name, default=None, help=switch.help, **switch.argument)
    args = parser.parse_args(argv)
    for switch in switches:  # read by launch_keywords and split_configs as audit_jobs builds the jobs
        if getattr(args, switch.name) is not None:
            setattr(switch.module, switch.name, getattr(args, switch.name))
    selected = audit_jobs(args.plan, args.dtype, args.nonlinearity, args.arch)
    if not selected:
        parser.error("no dispatchable configuration matches --plan/--dtype/--nonlinearity/--arch")
    rows = run_audit(selected, args.jobs)
    print(format_table(rows))
    if args.shared_accesses:
        for job in selected:
            if job.tier in PERSISTENT_TIERS:
                print("\n" + shared_access_listing(job))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) | {"status": r.status, "u_re_read": r.u_re_read} for r in rows], f, indent=1)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    from .runtime import interpreting
    if interpreting():  # interpreted kernels cannot be compiled: start again without the interpreter
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        os.execve(sys.executable, [sys.executable, "-m", "kernels.audit", *sys.argv[1:]], env)
    sys.exit(main())
