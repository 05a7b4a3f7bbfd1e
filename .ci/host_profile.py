"""Where a layer call's host time goes: cProfile over repeated calls of TritonRNN, as a user calls it.

    python3 .ci/host_profile.py --out DIR [--calls N] [--seq-len T] [--batch B] [--case DTYPE:H ...]

The race of 2026-11-28 (results/race/20261128-h200-graphs/) showed that at T = 1024 and H <= 256 a plain call is
decided by its host path: 0.58-0.94 ms from Python to the call's return, against 0.27 ms of GPU work at H = 64 (the
same call replayed from a CUDA graph). Which part of that path costs what (the autograd Function, the input GEMM, the
plan, each Triton launch's binding of its arguments, the tensors made per call) needs the GPU's host to tell: on a
CPU-only machine the kernels run in Triton's interpreter, whose time drowns the rest.

For each case: a layer of that dtype and size (input size = H), a few calls first (compiles, caches), then --calls
calls forward (under torch.no_grad, as an inference call) and --calls forward+backward (out.sum().backward()), each
call made with the device idle (synchronised before it, outside the timing and the profile), as rnnbench's host time
per call is, so that its time is the host's work alone (back to back, a GPU slower than the host would fill CUDA's
launch queue and the calls would wait for it): timed once as it is, then once more under cProfile (whose hooks slow
every Python call, so its own time per call is higher). Beside each,
torch.nn.RNN's host time per call on the same case (cuDNN on a GPU), in the case's dtype and, for 16-bit, in fp16
(cuDNN's persistent kernels): a host that is slow for cuDNN's calls too shows there. First, what one launch costs the
host there: a one-element torch op, and a Triton kernel that does nothing (so that a call's host time can be weighed
against its launches: rnnbench profile counts them). Writes DIR/host_profile.txt: the launch costs, then per case and
mode those times, then the functions by own time and by cumulative time (the first --top of each).

--stub-launches (a CPU without TRITON_INTERPRET) profiles the same calls with every Triton launch stubbed to the
host work before it (launch_stub.py: no kernel runs), and counts the Triton launches a call makes: a CPU session's
lower bound of a GPU host's path, for comparing two forms of it (keep --seq-len small: torch's GEMMs run on the CPU).
torch.nn.RNN is not timed then (its CPU kernels are not cuDNN's).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch
import triton
import triton.language as tl
from launch_stub import stubbed  # beside this script

from kernels import TritonRNN
from kernels.dispatch import SUPPORTED_DTYPES
from kernels.runtime import interpreting

DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in SUPPORTED_DTYPES}


def case(text: str) -> tuple[torch.dtype, int]:
    """DTYPE:H, e.g. bfloat16:64."""
    dtype, _, hidden = text.partition(":")
    if dtype not in DTYPES or not hidden.isdigit() or int(hidden) < 1:
        raise argparse.ArgumentTypeError(f"expected DTYPE:H with DTYPE one of {', '.join(DTYPES)} and H a positive "
                                         f"whole number, got {text!r}")
    return DTYPES[dtype], int(hidden)


def host_seconds(call, calls: int, device: torch.device, profile: cProfile.Profile | None = None) -> float:
    """Host seconds per call of `calls` calls of call(), each made with the device idle, as rnnbench's host time per
    call is (back to back, a GPU slower than the host would fill CUDA's launch queue, and the calls would then wait
    for it), under profile if given, which sees the calls alone. (Not rnnbench's sync: importing rnnbench turns the
    interpreter on where there is no GPU, which --stub-launches must not have.)"""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda device: None
    total = 0.0
    for _ in range(calls):
        sync(device)
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        call()
        if profile is not None:
            profile.disable()
        total += time.perf_counter() - started
    sync(device)
    return total / calls


@triton.jit
def nothing_kernel(x_ptr, n, BLOCK: tl.constexpr):
    """A launch and nothing else."""
    pass


def launch_costs(args, device: torch.device) -> str:
    """The host's us per launch of a one-element torch op and of nothing_kernel, --calls of each (host_seconds) after
    --warmup of each (the kernel's at least one: its compile). A first call's one-off costs are no launch's: on this
    project's CPU the op's first call took 2.5 ms and the next ones 2 us each, so that 300 averaged 35 us with it."""
    one = torch.zeros(1, device=device)

    def op():
        one.add_(1)

    def launch():
        nothing_kernel[(1,)](one, 1, BLOCK=16)
    for _ in range(args.warmup):
        op()
    op_seconds = host_seconds(op, args.calls, device)
    with stubbed() if args.stub_launches else contextlib.nullcontext():
        for _ in range(max(1, args.warmup)):
            launch()
        launch_seconds = host_seconds(launch, args.calls, device)
    how = ", stubbed" if args.stub_launches else ""
    return (f"## launch costs: {op_seconds * 1e6:.1f} us of host time per one-element torch op, "
            f"{launch_seconds * 1e6:.1f} per Triton launch of a kernel that does nothing{how} ({args.calls} of each)")


def calls_of(layer: torch.nn.RNN, x: torch.Tensor) -> dict:
    """The two modes' calls of layer on x: an inference forward, and forward+backward as a user writes it."""
    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        layer(x)[0].float().sum().backward()
    return {"forward": forward, "forward+backward": forward_backward}


def baselines(dtype: torch.dtype, hidden: int, args, device: torch.device) -> dict[str, str]:
    """Per mode, torch.nn.RNN's host ms per call on the case, in dtype and (16-bit) in fp16: 'bfloat16 0.123, ...'."""
    times: dict[str, list[str]] = {"forward": [], "forward+backward": []}
    for each in dict.fromkeys([dtype] + ([torch.float16] if dtype.itemsize == 2 else [])):
        torch.manual_seed(0)
        reference = torch.nn.RNN(hidden, hidden, device=device, dtype=each)
        x = torch.randn(args.seq_len, args.batch, hidden, device=device, dtype=each)
        for mode, call in calls_of(reference, x).items():
            for _ in range(args.warmup):
                call()
            times[mode].append(f"{str(each).removeprefix('torch.')} {host_seconds(call, args.calls, device) * 1e3:.3f}")
    return {mode: ", ".join(each) for mode, each in times.items()}


def listing(stats: pstats.Stats, order: str, top: int) -> str:
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats(order).print_stats(top)
    return out.getvalue()


def profile_case(dtype: torch.dtype, hidden: int, args, device: torch.device) -> str:
    torch.manual_seed(0)
    layer = TritonRNN(hidden, hidden, device=device, dtype=dtype)
    x = torch.randn(args.seq_len, args.batch, hidden, device=device, dtype=dtype)
    nn_rnn = ({mode: "not timed (launches stubbed on a CPU)" for mode in ("forward", "forward+backward")}
              if args.stub_launches else {mode: f"{times} ms" for mode, times in baselines(dtype, hidden, args,
                                                                                           device).items()})
    sections = []
    for mode, call in calls_of(layer, x).items():
        with stubbed() if args.stub_launches else contextlib.nullcontext() as launches:
            for _ in range(args.warmup):
                call()
            warm = launches.count if launches else 0
            plain = host_seconds(call, args.calls, device)
            profile = cProfile.Profile()
            profiled = host_seconds(call, args.calls, device, profile)
        stubs = f"; Triton launches a call: {(launches.count - warm) // (2 * args.calls)}, stubbed" if launches else ""
        head = (f"## {str(dtype).removeprefix('torch.')} H={hidden} T={args.seq_len} B={args.batch} {mode}: "
                f"{plain * 1e3:.3f} ms of host time per call, {profiled * 1e3:.3f} under cProfile ({args.calls} calls; "
                f"plan {layer.last_plans[0].name}{stubs}); torch.nn.RNN's: {nn_rnn[mode]}")
        stats = pstats.Stats(profile)
        sections.append("\n".join([head, listing(stats, "tottime", args.top), listing(stats, "cumulative", args.top)]))
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, required=True, help="folder for host_profile.txt")
    parser.add_argument("--calls", type=int, default=200, help="calls profiled per case and mode (default 200)")
    parser.add_argument("--warmup", type=int, default=3, help="calls before, not profiled (default 3)")
    parser.add_argument("--seq-len", type=int, default=1024, help="T (default 1024)")
    parser.add_argument("--batch", type=int, default=8, help="B (default 8)")
    parser.add_argument("--top", type=int, default=30, help="functions listed per ordering (default 30)")
    parser.add_argument("--case", type=case, nargs="+", default=[case("bfloat16:64"), case("float32:64")],
                        metavar="DTYPE:H", help="layers profiled (default: bfloat16:64 float32:64)")
    parser.add_argument("--stub-launches", action="store_true",
                        help="on a CPU without TRITON_INTERPRET: every Triton launch stubbed to its host work "
                             "(launch_stub.py), and counted")
    args = parser.parse_args(argv)
    for name in ("calls", "seq_len", "batch", "top"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} wants 1 or more (got {getattr(args, name)})")
    if args.warmup < 0:
        parser.error(f"--warmup wants 0 or more (got {args.warmup})")
    if args.stub_launches and interpreting():
        parser.error("--stub-launches stubs compiled kernels' launches: unset TRITON_INTERPRET")
    device = torch.device("cpu" if args.stub_launches or interpreting() or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not (interpreting() or args.stub_launches):
        parser.error("no CUDA GPU here: set TRITON_INTERPRET=1 to run the kernels in the interpreter, or give "
                     "--stub-launches")
    args.out.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report = args.out / "host_profile.txt"
    heading = (f"# Host time per layer call on {where}{', Triton launches stubbed' if args.stub_launches else ''} "
               f"(.ci/host_profile.py)")
    costs = launch_costs(args, device)
    print(costs, flush=True)
    report.write_text(f"{heading}\n\n{costs}\n")
    for dtype, hidden in args.case:  # each case's section kept as it ends: a step cut short keeps what it profiled
        section = profile_case(dtype, hidden, args, device)
        print("\n".join(line for line in section.splitlines() if line.startswith("## ")), flush=True)
        with report.open("a") as f:
            f.write(f"\n{section}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
