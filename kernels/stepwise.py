"""Stepwise Triton baseline: the same maths as the persistent kernels, one launch per timestep.

Each launch is a tiled GEMM with a fused epilogue over a [B, H] state:

    forward  (t = 1..T):  h_t      = act(xw_t + h_{t-1} U^T)
    backward (t = T..1):  da_t     = (dy_t + da_{t+1} U) * act'(h_t),   da_{T+1} = 0

so between launches the state round-trips through global memory and every step pays a launch.
It serves any H and shows in the harness what persistence buys. The product's right operand M (U^T
forward, U backward) is re-read from global memory (L2) by every launch; the K loop streams it in
[BLOCK_K, BLOCK_N] slices.

The forward's launcher passes U^T as a contiguous copy, so that both passes read M row-major. That
matters where the product runs on FMA (fp32, float64): a warp's lanes run along n there, and each
reads its columns' k values from the staged slice. Read as U's columns (k contiguous), the slice was
staged k-major without a swizzle: neighbouring lanes read words two columns (2 BLOCK_K words) apart,
all in one shared-memory bank, and the K loop's reads serialised. Nothing else set the two passes'
loops apart in the compile audit, and on an H200 that forward took 150 us per step at fp32,
H = 2048, B = 8, against 190 for forward+backward on the same grid (results/race/20261126-h200-
defaults). Row-major, the forward's K loop compiles to the backward's. The 16-bit products (mma)
read either layout without conflicts; there the copy adds 2-7 instructions per K iteration (sm_90).

On CUDA the T launches of a loop are recorded into a CUDA graph and replayed (StepGraphs), so a
step costs what the GPU needs for one launch, not the 6-13 us of host time a Python-side Triton
launch takes on an H100. In the interpreter, and inside a caller's own graph capture, the loop
launches step by step.
"""
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .activations import activation_grad_from_output, apply_activation
from .driver import time_order
from .launch import Blocks, cdiv, common_keywords
from .runtime import capturing, interpreting


@dataclass(frozen=True)
class StepwiseBlocks(Blocks):
    """Compile-time configuration of the step kernel (one for every shape)."""
    BLOCK_B: int = 16
    BLOCK_N: int = 64
    # The K loop's step: 128 runs H = 2048's loop in 16 iterations, each waiting on its slices' loads, where 32 took 64,
    # and issues a third fewer instructions per k in fp32 (1.99 against 2.91 per k at 16 columns), two thirds fewer
    # in bf16 (0.54 against 1.47); no spills from 16 to 64 columns on sm_80 and sm_90 (compile audit). Not yet timed.
    BLOCK_K: int = 128
    num_warps: int = 8


def launch_keywords(config: StepwiseBlocks, nonlinearity: str, dtype: torch.dtype, interpreted: bool,
                    backward: bool) -> dict:
    """Everything step_kernel takes besides tensors and sizes, forward or backward."""
    return config.keywords() | common_keywords(nonlinearity, dtype, interpreted) | {
        "DOT_PRECISION": "ieee", "BACKWARD": backward}


@triton.jit
def step_kernel(
    a_ptr,          # [B, H] state entering the step: h_{t-1} (forward) or da_{t+1} (backward)
    m_ptr,          # [H, H] the product's right operand M[k, n], contiguous: U^T (forward) or U (backward)
    c_ptr,          # [B, H] added to the product: xw_t (forward) or dy_t (backward)
    hd_ptr,         # [B, H] backward only: h_t, whose act' scales the sum (ignored forward)
    out_ptr,        # [B, H] out: h_t (forward) or da_t (backward)
    B, H,           # batch, hidden size; all [B, H] tensors contiguous
    BACKWARD: tl.constexpr,       # selects the epilogue
    ACTIVATION: tl.constexpr,     # 0 tanh, 1 relu
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32"; only matters for fp32
    ACC_DTYPE: tl.constexpr,      # carry and accumulation: tl.float32 (tl.float64 for float64 I/O)
    UPCAST_DOT: tl.constexpr,     # interpreter workaround for bf16 tl.dot (see matmul.py)
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + offs_b[:, None] * H + offs_k[None, :],
                    mask=(offs_b[:, None] < B) & (offs_k[None, :] < H), other=0.0)
        m = tl.load(m_ptr + offs_k[:, None] * H + offs_n[None, :],
                    mask=(offs_k[:, None] < H) & (offs_n[None, :] < H), other=0.0)
        if UPCAST_DOT:
            a = a.to(tl.float32)
            m = m.to(tl.float32)
        acc = tl.dot(a, m, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    tile = offs_b[:, None] * H + offs_n[None, :]
    tile_mask = (offs_b[:, None] < B) & (offs_n[None, :] < H)
    acc += tl.load(c_ptr + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
    if BACKWARD:
        h = tl.load(hd_ptr + tile, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        out = acc * activation_grad_from_output(h, ACTIVATION)
    else:
        out = apply_activation(acc, ACTIVATION)
    tl.store(out_ptr + tile, out.to(out_ptr.dtype.element_ty), mask=tile_mask)


def _launch_step(a, u, c, hd, out, config: StepwiseBlocks, keywords: dict) -> None:
    B, H = out.shape
    step_kernel[(cdiv(B, config.BLOCK_B), cdiv(H, config.BLOCK_N))](a, u, c, hd, out, B, H, **keywords)


GRAPH_CACHE_SIZE = 16  # loops kept: (layers x directions x passes) of a few models at once


def capture_graph(loop: Callable[[], None], device: torch.device) -> "torch.cuda.CUDAGraph":
    """A CUDA graph of loop's launches, recorded (not run) on a side stream. capture_begin is called
    directly rather than through torch.cuda.graph, which empties the allocator's cache first and so
    would move the very tensors the graph is keyed by."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(torch.cuda.Stream(device)):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            loop()
        finally:
            graph.capture_end()
    return graph


class StepGraphs:
    """CUDA graphs of step loops, keyed by everything the launches read: the tensors' addresses,
    shapes and dtypes, the pass, the direction and the configuration. A replay makes exactly the
    launches the loop would make (same kernel, same arguments), so it is right for whatever tensors
    live at those addresses when the key comes back. A key is captured the second time it comes
    (the first run compiles the kernels, and a key that recurs is one the caching allocator serves
    again, as it does for every repeated call of the same shapes), then replayed; the least recently
    used graph goes beyond GRAPH_CACHE_SIZE. A graph holds no tensors (nothing is allocated while
    capturing); captures and replays are counted for tests and the harness."""

    def __init__(self, capture: Callable = capture_graph, size: int = GRAPH_CACHE_SIZE):
        self.capture, self.size = capture, size
        self.graphs: OrderedDict[Hashable, object] = OrderedDict()  # key -> graph, or None when seen once
        self.captures = self.replays = 0

    def run(self, key: Hashable, loop: Callable[[], None], device: torch.device) -> None:
        """loop() itself on its first sight of key; a graph of it from the second sight on."""
        if key not in self.graphs:
            self._keep(key, None)
            loop()
            return
        graph = self.graphs[key]
        if graph is None:
            graph = self.capture(loop, device)
            self.captures += 1
        self._keep(key, graph)
        graph.replay()
        self.replays += 1

    def _keep(self, key: Hashable, graph) -> None:
        self.graphs[key] = graph
        self.graphs.move_to_end(key)
        while len(self.graphs) > self.size:
            self.graphs.popitem(last=False)


STEP_GRAPHS = StepGraphs()


def loop_key(tensors: tuple[torch.Tensor, ...], reverse: bool, keywords: dict) -> tuple:
    """Everything a loop's launches read: each tensor's address, shape and dtype (all contiguous),
    the direction and the launch keywords (constexprs incl. the pass, compile options)."""
    return (reverse, tuple(sorted(keywords.items())),
            *((t.device, t.data_ptr(), tuple(t.shape), t.dtype) for t in tensors))


def _run_loop(loop: Callable[[], None], tensors: tuple[torch.Tensor, ...], reverse: bool, keywords: dict) -> None:
    """loop() on CUDA through STEP_GRAPHS; directly elsewhere."""
    device = tensors[0].device
    if device.type != "cuda" or capturing(device):  # a caller's capture records it as is
        loop()
        return
    STEP_GRAPHS.run(loop_key(tensors, reverse, keywords), loop, device)


def stepwise_forward(xw: torch.Tensor, h0: torch.Tensor, u: torch.Tensor, reverse: bool, config: StepwiseBlocks,
                     nonlinearity: str) -> torch.Tensor:
    """All hidden states [T, B, H] of one layer-direction, one launch per step; inputs contiguous."""
    y = torch.empty_like(xw)
    u_t = u.t().contiguous()  # the product's operand, row-major (module docstring)
    keywords = launch_keywords(config, nonlinearity, xw.dtype, interpreting(), backward=False)

    def loop() -> None:
        h = h0
        for t in time_order(xw.shape[0], reverse):
            _launch_step(h, u_t, xw[t], h, y[t], config, keywords)
            h = y[t]
    _run_loop(loop, (xw, h0, u_t, y), reverse, keywords)
    return y


def stepwise_backward(y: torch.Tensor, dy: torch.Tensor, u: torch.Tensor, reverse: bool, config: StepwiseBlocks,
                      nonlinearity: str) -> tuple[torch.Tensor, None]:
    """(da [T, B, H], None: dh0 is the dispatcher's GEMM, dispatch.recurrence_backward) for one layer-direction, one
    launch per step; inputs contiguous."""
    da = torch.empty_like(y)
    keywords = launch_keywords(config, nonlinearity, y.dtype, interpreting(), backward=True)
    nothing_after = torch.zeros_like(y[0])  # nothing flows back into the last step but dy
    order = time_order(y.shape[0], not reverse)  # backward walks the forward order in reverse

    def loop() -> None:
        da_next = nothing_after
        for t in order:
            _launch_step(da_next, u, dy[t], y[t], da[t], config, keywords)
            da_next = da[t]
    _run_loop(loop, (y, dy, u, da, nothing_after), reverse, keywords)
    return da, None
