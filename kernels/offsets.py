"""Are a persistent kernel's per-step offsets 64-bit? A check of its Triton IR (TTIR), no GPU needed.

A [T, B, H] tensor of T*B*H >= 2^31 elements (T = 1.1M, B = 8, H = 256 is 2.25e9) overflows an
int32 offset. The persistent kernels run the time loop inside one launch, so the offset of step t,
t*B*H, is computed in the kernel: it must be an i64 product, not an i32 product extended afterwards.
(Offsets inside one step's [B, H] tile stay 32-bit: B*H < 2^31 always.) The stepwise kernel takes
each step's [B, H] views from the host, where torch indexes in 64 bits, so it has no time offset.

The check follows the TTIR's SSA values, region by region (sibling regions reuse names).
Time-dependent ("timed") values are the kernel argument t_first, the induction variable and the
loop-carried values (iter_args) of every loop that runs up to the argument T, and everything
computed from them, except what is loaded through a timed address. For every tt.addptr whose
offset is timed:

- the offset must be i64, and
- every timed arith.muli it is computed from must produce i64 (an i32 product that is extended
  after the multiplication has already wrapped around).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

TIME_ARGUMENT = "t_first"  # the kernels' first time index (reverse directions start at T - 1)
TIME_BOUND = "%T"          # loops over the time steps run up to this argument

_VALUE = re.compile(r"%[\w.]+")
_DEF = re.compile(r"^(%[\w.]+)(?::\d+)? = (\S+)(.*)$")
_FOR = re.compile(r"scf\.for (%[\w.]+) = \S+ to (\S+) step \S+(?: iter_args\((.*?)\))?")
_REGION_ARGS = re.compile(r"(%[\w.]+) = (%[\w.#]+)")  # scf.for iter_args, scf.while's header
_ELEMENT = re.compile(r"(i\d+|f\d+|bf16|!tt\.ptr<[^>]*>)>?$")


@dataclass
class Value:
    name: str                                          # as printed; sibling regions reuse names
    op: str                                            # defining op, e.g. "arith.muli"; "iter_arg", "argument"
    operands: list[int] = field(default_factory=list)  # the values it is computed from (indices)
    type: str = ""                                     # element type of the result: "i32", "i64", "f32", ...


def _element_type(type_text: str) -> str:
    match = _ELEMENT.search(type_text.strip())
    return match.group(1) if match else ""


def _strip_loc(line: str) -> str:
    return re.sub(r"\s+loc\(.*\)\s*$", "", line).strip()


class _Scopes:
    """SSA values by name, region by region: a name refers to its definition in the innermost open region."""

    def __init__(self):
        self.values: list[Value] = []
        self.open: list[dict[str, int]] = [{}]

    def define(self, name: str, op: str, operands=(), type_: str = "", outer: bool = False) -> int:
        self.values.append(Value(name, op, list(operands), type_))
        self.open[-2 if outer else -1][name] = len(self.values) - 1
        return len(self.values) - 1

    def lookup(self, name: str) -> int:
        name = name.split("#")[0]  # %x#1: one result of a multi-result op
        found = next((scope[name] for scope in reversed(self.open) if name in scope), None)
        return self.define(name, "undefined") if found is None else found


def parse_ttir(ttir: str) -> tuple[list[Value], set[int]]:
    """(every SSA value, the time sources among them) of a kernel's TTIR. An scf.for's iter_args are
    computed from their initial values and its results from its iter_args."""
    scopes, sources = _Scopes(), set()
    for line in map(_strip_loc, ttir.splitlines()):
        if line.startswith("}"):
            scopes.open.pop()
        definition, loop = _DEF.match(line), _FOR.search(line)
        if "tt.func" in line:
            scopes.open.append({})
            for name in re.findall(r"(%[\w.]+): ", line):
                argument = scopes.define(name, "argument")
                sources.update([argument] if name == f"%{TIME_ARGUMENT}" else [])
        elif line.startswith("^bb"):  # a region's block arguments
            for name in re.findall(r"(%[\w.]+): ", line):
                scopes.define(name, "argument")
        elif loop:
            induction, bound, iter_args = loop.groups()
            pairs = _REGION_ARGS.findall(iter_args or "")
            inits = [scopes.lookup(init) for _, init in pairs]
            carried_types = re.search(r"-> \((.*?)\)", line)
            types = carried_types.group(1).split(", ") if carried_types else []
            scopes.open.append({})
            carried = [scopes.define(arg, "iter_arg", [init], _element_type(ty))
                       for (arg, _), init, ty in zip(pairs, inits, types)]
            step = scopes.define(induction, "scf.for", type_="i32")
            if definition:  # the loop's results, in the enclosing region
                scopes.define(definition.group(1), "scf.for", carried, outer=True)
            if bound == TIME_BOUND:  # what a time loop carries from step to step depends on the step
                sources.update([step, *carried])
        elif definition:
            name, op, rest = definition.groups()
            body, _, types = rest.rpartition(" : ") if " : " in rest else (rest, "", "")
            region_args = _REGION_ARGS.findall(body)
            inner = {arg for arg, _ in region_args}
            operands = [scopes.lookup(v) for v in _VALUE.findall(body) if v not in inner]
            scopes.define(name, op, operands, _element_type(types.split(",")[-1].split("->")[-1]))
            if line.endswith("{"):
                inits = [scopes.lookup(init) for _, init in region_args]
                scopes.open.append({})
                for (arg, _), init in zip(region_args, inits):
                    scopes.define(arg, "iter_arg", [init])
        elif line.endswith("{"):
            scopes.open.append({})
    return scopes.values, sources


def timed_values(values: list[Value], sources: set[int]) -> set[int]:
    """The sources and every value computed from them. A load's result is data, not an address:
    time does not flow through tt.load."""
    timed = set(sources)
    changed = True
    while changed:
        changed = False
        for index, value in enumerate(values):
            if index not in timed and value.op != "tt.load" and timed.intersection(value.operands):
                timed.add(index)
                changed = True
    return timed


def _computed_from(values: list[Value], index: int) -> set[int]:
    """index and every value it is computed from."""
    seen, todo = set(), [index]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(values[current].operands)
    return seen


def time_offset_problems(ttir: str) -> tuple[int, list[str]]:
    """(how many tt.addptr take a timed offset, what is wrong with them: empty when all are 64-bit)."""
    values, sources = parse_ttir(ttir)
    timed = timed_values(values, sources)
    checked, problems = 0, []
    for value in values:
        if value.op != "tt.addptr" or len(value.operands) != 2 or value.operands[1] not in timed:
            continue
        checked += 1
        offset = values[value.operands[1]]
        if offset.type != "i64":
            problems.append(f"{value.name} = tt.addptr with an offset in {offset.type or '?'}: {offset.name}")
        for part in _computed_from(values, value.operands[1]) & timed:
            if values[part].op == "arith.muli" and values[part].type != "i64":
                problems.append(f"{value.name}: its offset is computed from {values[part].name} = arith.muli in "
                                f"{values[part].type}")
    return checked, sorted(set(problems))
