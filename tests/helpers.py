"""Shared test helpers: tolerances against float64 and the relative error; float64 references (one
layer-direction with its gradients; a torch.nn.RNN with a layer's weights), a forward and backward of
a layer with every gradient, and running code with the kernels compiled rather than interpreted."""
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from kernels.reference import elman_layer

# Relative error ||got - ref|| / ||ref|| allowed against the float64 reference, per I/O dtype.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def where_it_departs(got: torch.Tensor, ref: torch.Tensor, bound: float) -> str:
    """For a failed comparison of [T, B, H] sequences: which steps' relative errors pass bound (how many, the first,
    the worst), and at the first, the batch rows and hidden units off by more than bound times that step's largest
    reference value; so that a GPU failure, which a lease seldom runs twice, tells a layout or a race (from the first
    step, every row) from an error that grows with the sequence or one batch tile's."""
    ref = ref.double()  # once: a 10k-step stress test's sequences run to gigabytes
    diff = got.double() - ref
    per_step = diff.flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-30)
    worst = f"worst t = {int(per_step.argmax())} ({per_step.max().item():.2e})"
    bad = (per_step > bound).nonzero().flatten().tolist()
    if not bad:
        return f"no step alone over {bound:.2e}; {worst}"
    t = bad[0]
    off = (diff[t].abs() > bound * ref[t].abs().max()).nonzero()
    rows, units = (sorted(set(off[:, i].tolist())) for i in (0, 1))
    return (f"{len(bad)} of {len(per_step)} steps over {bound:.2e}, the first t = {t}, {worst}; at t = {t}: batch rows "
            f"{rows[:8]}{' ...' if len(rows) > 8 else ''} ({len(rows)}), units {units[:8]}"
            f"{' ...' if len(units) > 8 else ''} ({len(units)})")


def reference_layer(xw, h0, u, nonlinearity, reverse, dy):
    """(h_t for all t, dL/da_t for all t, dL/dh0) in float64 for L = sum(h * dy), by autograd."""
    xw, h0, u, dy = (t.detach().double() for t in (xw, h0, u, dy))
    xw.requires_grad_(True)
    h0.requires_grad_(True)
    eye = torch.eye(xw.shape[-1], dtype=torch.float64, device=xw.device)
    y, _ = elman_layer(xw, h0, eye, u, None, None, nonlinearity, reverse)
    (y * dy).sum().backward()
    return y.detach(), xw.grad, h0.grad  # with W_ih = I and no bias, dL/dxw_t is dL/da_t


def reference_with_ends(xw, h0, u, nonlinearity, reverse, dy, b_hh=None, dh_n=None):
    """reference_layer of the recurrence with b_hh added to every step's xw and L = sum(h * dy) + sum(h_n * dh_n) (h_n:
    the state after the last processed step; None: no such term): (h_t for all t, dL/da_t for all t, dL/dh0)."""
    if b_hh is not None:
        xw = xw.double() + b_hh.double()
    if dh_n is not None:
        dy = dy.double().clone()
        dy[0 if reverse else -1] += dh_n.double()
    return reference_layer(xw, h0, u, nonlinearity, reverse, dy)


def reference_copy(layer: torch.nn.RNN) -> torch.nn.RNN:
    """A float64 torch.nn.RNN with layer's settings and weights (loaded through state_dict)."""
    ref = torch.nn.RNN(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                       nonlinearity=layer.nonlinearity, bias=layer.bias, batch_first=layer.batch_first,
                       bidirectional=layer.bidirectional, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    return ref


def run_and_backward(module, x, hx, lengths=None, enforce_sorted=False):
    """(output, h_n, grads of x, hx and every parameter) for L = sum(output * w1) + sum(h_n * w2).
    With lengths, x (padded, in the module's layout) goes in as a PackedSequence and output is one."""
    x = x.detach().requires_grad_(True)
    hx = None if hx is None else hx.detach().requires_grad_(True)
    packed = None if lengths is None else pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                                                enforce_sorted=enforce_sorted)
    out, h_n = module(x if packed is None else packed, hx)
    values = out if packed is None else out.data
    g = torch.Generator().manual_seed(1)  # drawn on the CPU and moved: the same weights for any device
    loss = (values.double() * torch.randn(values.shape, generator=g, dtype=torch.float64).to(values.device)).sum() \
        + (h_n.double() * torch.randn(h_n.shape, generator=g, dtype=torch.float64).to(h_n.device)).sum()
    loss.backward()
    grads = {"input": x.grad, "hx": None if hx is None else hx.grad}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return out, h_n, grads


def compiled_without_interpreter(code: str) -> str:
    """stdout of python -c code with TRITON_INTERPRET unset: kernels are compiled, not interpreted."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def load_ci_script(name: str):
    """.ci/NAME.py as a module (a script, outside any package)."""
    script = Path(__file__).resolve().parents[1] / ".ci" / f"{name}.py"
    if str(script.parent) not in sys.path:  # its neighbours (gpu_pytest, launch_stub) import as they do for a script
        sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # by name, as pickle refers to its functions (gpu_variants' --compile-workers)
    spec.loader.exec_module(module)
    return module


def load_gpu_variants():
    """.ci/gpu_variants.py as a module."""
    return load_ci_script("gpu_variants")


def timed_out_split_status() -> tuple:
    """An entry of kernels.barrier_status._UNREAD as a split call on a GPU leaves it: a status copy the GPU is done with
    (its event), holding a barrier's timeout. The CPU reads its own statuses at once, so tests stand this in."""
    return types.SimpleNamespace(query=lambda: True, synchronize=lambda: None), torch.ones(1, dtype=torch.int32)
