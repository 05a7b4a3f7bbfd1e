"""Shared-memory bank conflicts of a persistent kernel's time loop, counted from its PTX without a GPU.

Shared memory serves a warp's access in wavefronts: 32 banks of 4-byte words, each bank giving one word per
wavefront, so an access takes as many wavefronts as the most distinct words any one bank holds among the
words its active lanes touch (lanes reading the same word share it: a broadcast). ldmatrix and stmatrix move
8x8 matrices of 16-bit elements, one 16-byte row per lane of an 8-lane group, one matrix after another. An
access whose words could fit fewer wavefronts than it takes has bank conflicts::

    wavefronts(access) = max over banks of |{word : word % 32 == bank}|     (per matrix for ldmatrix/stmatrix)
    ideal(access)      = ceil(distinct bytes / 128)                          (1 per matrix)
    conflicts          = wavefronts - ideal

Nsight Compute counts the same (l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_{ld,st}): on an H200 it
found 480 load and 480 store conflict wavefronts per program and step in the split forward kernel at
H = 1024, B = 16 (bf16) and 3840 of each at H = 2048, B = 64, most of its shared-memory traffic
(results/variants/20261127-h200/ncu/README.md); this model counts them from the PTX the audit compiles.

The addresses come from running the kernel's integer arithmetic for every thread of the program at once
(numpy arrays over the threads): %tid.x is each thread's index, the shared buffer starts at 0, and anything
read from memory or a parameter is unknown, as is whatever is computed from it. The instructions run once,
in the order the PTX lists them, ignoring branches: a shared address is computed from the thread's index
and constants, before the loop or in it, and an unknown one is reported, not guessed. A predicated access
counts the lanes whose predicate is true, or all of them where it is unknown. Each shared access in the time
loop (the outermost loop of the PTX, by LLVM's loop comments) counts once per step: a loop nested in the
time loop runs its accesses once here. Not counted: what wgmma reads through shared-memory descriptors and
what cp.async or TMA writes (their layouts are the compiler's swizzled ones), and ptxas's merging of several
PTX accesses into one wider SASS instruction (the fma tier's broadcast loads), which changes the wavefronts
of conflict-free accesses but not their conflicts.
"""
import re
from dataclasses import dataclass

import numpy as np

WARP = 32
BANKS = 32
WAVEFRONT_BYTES = 128

_INSTRUCTION = re.compile(r"^\s*(?:@(!?)(%\w+)\s+)?([a-z][\w.:]*)\s*(.*?);")
_ADDRESS = re.compile(r"\[\s*(%?\w+)\s*(?:\+\s*(-?\w+))?\s*\]")
_LABEL = re.compile(r"^\$(L__BB\d+_\d+):")
_BLOCK_COMMENT = re.compile(r"^(?:\$(L__BB\d+_\d+):|// %bb\.\d+:)(.*)$")
_HEADER = re.compile(r"=>\s*This (?:Inner )?Loop Header: Depth=(\d+)")
_IN_LOOP = re.compile(r"(?:in Loop: Header|Parent Loop)=?\s*(BB\d+_\d+)")
# Zero in every thread: the other thread and program indices (a program's shared addresses do not depend on them), and
# the shared buffer's base
_ZERO = ("%tid.y", "%tid.z", "%ctaid.x", "%ctaid.y", "%ctaid.z", "global_smem")
_WIDTHS = {"b8": 1, "u8": 1, "s8": 1, "b16": 2, "u16": 2, "s16": 2, "f16": 2, "bf16": 2,
           "b32": 4, "u32": 4, "s32": 4, "f32": 4, "b64": 8, "u64": 8, "s64": 8, "f64": 8}


@dataclass
class SharedAccess:
    """One shared-memory instruction of the time loop and what it costs a warp, summed over the program's warps."""
    line: int          # its line in the PTX
    text: str          # the instruction
    store: bool        # st.shared / stmatrix (else a load)
    wavefronts: int    # over all warps of the program
    ideal: int         # the fewest its bytes could take
    unknown: bool      # its address (or predicate) could not be computed: counted as ideal

    @property
    def conflicts(self) -> int:
        return self.wavefronts - self.ideal


# ---- the time loop ----------------------------------------------------------------------------------

def _blocks(lines: list[str]) -> list[tuple[int, str, str]]:
    """(first line, name, loop comment) of each basic block, by its label or LLVM's // %bb.N: comment; the
    comment runs on to the comment-only lines right after the label."""
    blocks = []
    for i, line in enumerate(lines):
        match = _BLOCK_COMMENT.match(line.strip())
        if match:
            comment = match.group(2)
            for follow in lines[i + 1:i + 4]:
                if not follow.strip().startswith("//"):
                    break
                comment += " " + follow.strip()
            blocks.append((i, match.group(1)[3:] if match.group(1) else "", comment))
    return blocks


def time_loop_lines(ptx: str) -> set[int]:
    """The PTX line numbers of the outermost loop with the most lines (the time loop), by LLVM's comments:
    its header says "=>This Loop Header: Depth=1", the rest of its blocks "in Loop: Header=BB.." or "Parent
    Loop BB..". Empty where the kernel has no loop."""
    lines = ptx.splitlines()
    blocks = _blocks(lines)
    ends = [start for start, _, _ in blocks[1:]] + [len(lines)]
    members: dict[str, set] = {}
    for (start, name, comment), end in zip(blocks, ends):
        header = _HEADER.search(comment)
        if header and header.group(1) == "1":
            members.setdefault(name, set()).update(range(start, end))
        for loop in _IN_LOOP.findall(comment):
            members.setdefault(loop, set()).update(range(start, end))
    return max(members.values(), key=len) if members else set()


# ---- the threads' integer arithmetic ------------------------------------------------------------------

def _bits(opcode: str) -> int:
    """The operand width an integer opcode names (.b32, .u64, .s16, ...), 32 where it names none."""
    return next((int(p[1:]) for p in reversed(opcode.split(".")) if p[:1] in "bus" and p[1:] in ("16", "32", "64")),
                32)


def _signed(opcode: str) -> bool:
    """Whether an integer opcode's operands are signed (.s32, .s64, ...)."""
    return any(p.startswith("s") and p[1:].isdigit() for p in opcode.split("."))


class Threads:
    """The integer registers of every thread of one program, as numpy arrays over the threads (None: unknown)."""

    def __init__(self, threads: int):
        self.tid = np.arange(threads, dtype=np.int64)
        self.regs: dict[str, np.ndarray | None] = {}

    def value(self, operand: str):
        """An operand's value in every thread: a register's, a special register's, or an integer constant's."""
        operand = operand.strip()
        if operand == "%tid.x":
            return self.tid
        if operand == "%laneid":
            return self.tid % WARP
        if operand in _ZERO:
            return np.zeros_like(self.tid)
        if operand.startswith("%"):
            return self.regs.get(operand)
        try:
            return np.full_like(self.tid, int(operand, 0))
        except ValueError:
            return None

    def run(self, opcode: str, operands: list[str]):
        """Execute one instruction if it is integer arithmetic whose inputs are known; else its result is unknown."""
        if not operands or not operands[0].startswith("%"):
            return
        dest, args = operands[0], [self.value(o) for o in operands[1:]]
        self.regs[dest] = None if any(a is None for a in args) else _compute(opcode, args)


def _wrap(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """values as a register of `bits` bits holds them, read as signed or unsigned."""
    if bits >= 64:
        return values
    values = values & ((1 << bits) - 1)
    return np.where(values >= (1 << (bits - 1)), values - (1 << bits), values) if signed else values


def _compute(opcode: str, args: list[np.ndarray]):
    """The result of one integer PTX instruction in every thread, or None for an opcode this model does not run."""
    op = opcode.split(".")[0]
    bits, signed = _bits(opcode), _signed(opcode)
    wide = ".wide." in f".{opcode}."
    a = [_wrap(x, bits, signed) for x in args] if op not in ("setp", "selp", "cvt") else args
    if op == "mov":
        result = a[0]
    elif op == "add":
        result = a[0] + a[1]
    elif op == "sub":
        result = a[0] - a[1]
    elif op == "mul":
        result = a[0] * a[1]
    elif op == "mad":
        result = a[0] * a[1] + (args[2] if wide else a[2])
    elif op == "shl":
        result = a[0] << args[1]
    elif op == "shr":
        result = a[0] >> args[1]
    elif op == "and":
        result = a[0] & a[1]
    elif op == "or":
        result = a[0] | a[1]
    elif op == "xor":
        result = a[0] ^ a[1]
    elif op == "not":
        result = ~a[0]
    elif op == "neg":
        result = -a[0]
    elif op in ("min", "max"):
        result = (np.minimum if op == "min" else np.maximum)(a[0], a[1])
    elif op == "rem":
        result = np.fmod(a[0], a[1])
    elif op == "div":
        result = np.trunc(a[0] / a[1]).astype(np.int64)
    elif op == "bfe":
        result = _wrap((a[0] >> args[1]) & ((1 << args[2]) - 1), 32, False)
        if signed:
            result = np.where(args[2] > 0, _wrap(result << (32 - args[2]), 32, True) >> (32 - args[2]), 0)
    elif op == "selp":
        result = np.where(args[2].astype(bool), args[0], args[1])
    elif op == "cvt":
        types = [p for p in opcode.split(".")[1:] if p[:1] in "bus" and p[1:].isdigit()]
        if len(types) != 2:  # to or from a float
            return None
        dst, src = types
        return _wrap(_wrap(args[0], int(src[1:]), src[0] == "s"), int(dst[1:]), dst[0] == "s")
    elif op == "setp":
        return _compare(opcode, [_wrap(x, bits, signed) for x in args])
    else:
        return None
    return _wrap(result, 64 if wide else bits, signed)


def _compare(opcode: str, args: list[np.ndarray]):
    """setp: 1 where the comparison holds, else 0."""
    test = opcode.split(".")[1]
    compare = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
               "ge": np.greater_equal, "lo": np.less, "ls": np.less_equal, "hi": np.greater, "hs": np.greater_equal}
    return compare[test](args[0], args[1]).astype(np.int64) if test in compare else None


def _predicates(opcode: str, operands: list[str], threads: Threads):
    """and/or/xor/not .pred: logic on known predicates."""
    args = [threads.value(o) for o in operands[1:]]
    if any(a is None for a in args):
        threads.regs[operands[0]] = None
        return
    op = opcode.split(".")[0]
    result = {"and": lambda: args[0] & args[1], "or": lambda: args[0] | args[1],
              "xor": lambda: args[0] ^ args[1], "not": lambda: 1 - args[0], "mov": lambda: args[0]}.get(op)
    threads.regs[operands[0]] = result() if result else None


# ---- wavefronts ---------------------------------------------------------------------------------------

def wavefronts(starts: np.ndarray, width: int) -> tuple[int, int]:
    """(wavefronts, ideal) of one warp's access: each active lane touching `width` bytes from its start."""
    if len(starts) == 0:
        return 0, 0
    touched = np.unique((starts[:, None] + np.arange(width)[None, :]).ravel())
    words = np.unique(touched // 4)
    busiest = np.bincount(words % BANKS, minlength=BANKS).max()
    return int(busiest), max(1, -(-len(touched) // WAVEFRONT_BYTES))


def _width(opcode: str) -> int:
    """Bytes one lane moves: the vector length (.v2, .v4) times the element's width."""
    parts = opcode.split(".")
    vector = next((int(p[1:]) for p in parts if p in ("v2", "v4", "v8")), 1)
    return vector * next((_WIDTHS[p] for p in reversed(parts) if p in _WIDTHS), 4)


def _matrices(opcode: str) -> int:
    """The 8x8 matrices an ldmatrix or stmatrix .xN moves (N); 0 for any other access."""
    return int(re.search(r"\.x(\d)", opcode).group(1)) if opcode.startswith(("ldmatrix", "stmatrix")) else 0


def _fewest_wavefronts(opcode: str) -> int:
    """The fewest wavefronts one warp's access can take with all lanes active: one a matrix, else its bytes'."""
    return _matrices(opcode) or max(1, _width(opcode) * WARP // WAVEFRONT_BYTES)


def _matrix_access(opcode: str, addresses: np.ndarray, active: np.ndarray) -> tuple[int, int]:
    """ldmatrix/stmatrix .xN: matrix i's 8 rows of 16 bytes are at lanes 8i .. 8i + 7's addresses."""
    total = ideal = 0
    for matrix in range(_matrices(opcode)):
        lanes = slice(8 * matrix, 8 * matrix + 8)
        w, i = wavefronts(addresses[lanes][active[lanes]], 16)
        total, ideal = total + w, ideal + i
    return total, ideal


def _warp_cost(opcode: str, addresses: np.ndarray, active: np.ndarray) -> tuple[int, int]:
    """(wavefronts, ideal) of one warp's shared-memory instruction at these lane addresses, these lanes active."""
    if _matrices(opcode):
        return _matrix_access(opcode, addresses, active)
    return wavefronts(addresses[active], _width(opcode))


def shared_accesses(ptx: str, num_warps: int) -> list[SharedAccess]:
    """Every shared-memory access of the time loop (time_loop_lines) and its wavefronts over the program's warps."""
    loop = time_loop_lines(ptx)
    threads = Threads(WARP * num_warps)
    accesses = []
    for number, line in enumerate(ptx.splitlines()):
        match = _INSTRUCTION.match(line.split("//")[0])
        if not match:
            continue
        negate, guard, opcode, rest = match.groups()
        is_shared = ".shared" in opcode and opcode.split(".")[0] in ("ld", "st", "ldmatrix", "stmatrix")
        if is_shared and number in loop:
            accesses.append(_access(number, line.strip(), opcode, rest, negate, guard, threads, num_warps))
            continue
        operands = [o.strip() for o in re.split(r",(?![^{]*})", rest)] if rest else []
        if opcode.endswith(".pred") and opcode.split(".")[0] in ("and", "or", "xor", "not", "mov"):
            _predicates(opcode, operands, threads)
        elif not opcode.startswith(("st.", "bar", "bra", "ret", "red.", "mma", "wgmma", "stmatrix")):
            threads.run(opcode, operands)
    return accesses


def _access(number, text, opcode, rest, negate, guard, threads: Threads, num_warps: int) -> SharedAccess:
    """The SharedAccess of one shared-memory instruction (its address [reg + offset], its guard @[!]pred)."""
    match = _ADDRESS.search(rest)
    base = threads.value(match.group(1)) if match else None
    active = np.ones(len(threads.tid), dtype=bool)
    if guard:
        predicate = threads.value(guard)
        active = None if predicate is None else (predicate.astype(bool) != bool(negate))
    store = opcode.startswith(("st.", "stmatrix"))
    if base is None or active is None:
        ideal = _fewest_wavefronts(opcode) * num_warps
        return SharedAccess(number, text, store, ideal, ideal, True)
    addresses = base + int(match.group(2) or "0", 0)
    total = ideal = 0
    for warp in range(num_warps):
        lanes = slice(WARP * warp, WARP * (warp + 1))
        w, i = _warp_cost(opcode, addresses[lanes], active[lanes])
        total, ideal = total + w, ideal + i
    return SharedAccess(number, text, store, total, ideal, False)
