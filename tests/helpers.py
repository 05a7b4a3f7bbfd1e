"""Shared test helpers: the float64 reference of one layer-direction, with its gradients; running
code with the kernels compiled rather than interpreted."""
import os
import subprocess
import sys

import torch

from kernels.reference import elman_layer


def reference_layer(xw, h0, u, nonlinearity, reverse, dy):
    """(h_t for all t, dL/da_t for all t, dL/dh0) in float64 for L = sum(h * dy), by autograd."""
    xw, h0, u, dy = (t.detach().double() for t in (xw, h0, u, dy))
    xw.requires_grad_(True)
    h0.requires_grad_(True)
    eye = torch.eye(xw.shape[-1], dtype=torch.float64)
    y = elman_layer(xw, h0, eye, u, None, None, nonlinearity, reverse)
    (y * dy).sum().backward()
    return y.detach(), xw.grad, h0.grad  # with W_ih = I and no bias, dL/dxw_t is dL/da_t


def compiled_without_interpreter(code: str) -> str:
    """stdout of python -c code with TRITON_INTERPRET unset: kernels are compiled, not interpreted."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
