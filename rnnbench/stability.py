"""Gradient stability over long sequences: errors against float64 and the BPTT gradient curve.

The study uses one layer with input_size = hidden, W_ih = I and U = W_hh drawn with a chosen
spectral radius (Pascanu et al. 2013: the per-step Jacobian is diag(act'(a_t)) U, so gradients
vanish or explode with the radius). For each backend and dtype it reports the relative error
||y - y_ref|| / ||y_ref|| of the output and of every gradient (loss = <output, gy> with a fixed
random gy) against the float64 reference loop on the same weights, and NaN/Inf counts. Inputs are
small (std `input_scale`) so tanh stays out of saturation and radii above 1 really explode.

The curve ||dL/dh_t|| puts the loss at the last step (L = <h_{T-1}, g>). It is read from the
backend's own input gradient: with W_ih = I, dL/dx_t = dL/da_t, hence dL/dh_{t-1} = (dL/dx_t) U
(computed in float64), and dL/dh_{T-1} = g.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from rnnbench.backends import Prepared

CURVE_MAX_POINTS = 256  # enough for a plot; 13 curves per radius in stability.yaml


def spectral_matrix(hidden: int, radius: float, gen: torch.Generator) -> torch.Tensor:
    """A random Gaussian hidden x hidden matrix scaled to the given spectral radius (float64)."""
    a = torch.randn(hidden, hidden, generator=gen, dtype=torch.float64)
    return a * (radius / torch.linalg.eigvals(a).abs().max().item())


def stability_rnn(hidden: int, radius: float, nonlinearity: str, seed: int) -> torch.nn.RNN:
    """One-layer float32 nn.RNN with W_ih = I, U of the given spectral radius, seeded biases."""
    gen = torch.Generator().manual_seed(seed)
    rnn = torch.nn.RNN(hidden, hidden, 1, nonlinearity=nonlinearity)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.eye(hidden))
        rnn.weight_hh_l0.copy_(spectral_matrix(hidden, radius, gen))
        bound = 1 / math.sqrt(hidden)
        for bias in (rnn.bias_ih_l0, rnn.bias_hh_l0):
            bias.copy_(torch.empty(hidden).uniform_(-bound, bound, generator=gen))
    return rnn


@dataclass
class Gradients:
    """Output and gradients of one run, in float64 on CPU; curve[t] = ||dL/dh_t|| (last-step loss)."""
    output: torch.Tensor
    grads: dict[str, torch.Tensor]
    curve: torch.Tensor | None


def study_inputs(seq_len: int, batch: int, hidden: int, seed: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, B, H] (standard deviation `scale`) and the upstream gradient gy [T, B, H] (standard
    normal), float64, seeded by (seed, T)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + seq_len)
    return (scale * torch.randn(seq_len, batch, hidden, generator=gen, dtype=torch.float64),
            torch.randn(seq_len, batch, hidden, generator=gen, dtype=torch.float64))


def run_study(prepared: Prepared, x: torch.Tensor, gy: torch.Tensor, device: torch.device,
              dtype: torch.dtype, with_curve: bool) -> Gradients:
    """Runs prepared on x (cast to device/dtype): output, gradients of <output, gy> for the input
    ("input") and every parameter, and if with_curve the ||dL/dh_t|| curve."""
    xb = x.to(device=device, dtype=dtype).requires_grad_(True)
    h0 = torch.zeros(1, x.shape[1], x.shape[2], device=device, dtype=dtype)
    wrt = [xb, *prepared.params.values()]

    def gradients(upstream: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        # a fresh forward per backward: compiled backends free their graph after one backward
        output, _ = prepared.fn(xb, h0)
        return output, torch.autograd.grad(output, wrt, upstream.to(device=device, dtype=dtype))
    output, grads = gradients(gy)
    result = Gradients(_f64(output), {n: _f64(g) for n, g in zip(["input", *prepared.params], grads)}, None)
    if with_curve:
        last = torch.zeros_like(gy)
        last[-1] = gy[-1]
        dx = gradients(last)[1][0]
        result.curve = hidden_grad_norms(_f64(dx), _f64(prepared.params["weight_hh_l0"]), gy[-1])
    return result


def hidden_grad_norms(dx: torch.Tensor, u: torch.Tensor, g_last: torch.Tensor) -> torch.Tensor:
    """||dL/dh_t|| for t = 0..T-1 from dL/dx (W_ih = I): dL/dh_{t-1} = dx_t @ U, dL/dh_{T-1} = g."""
    dh = torch.cat([dx[1:] @ u, g_last.unsqueeze(0)])
    return dh.flatten(1).norm(dim=1)


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


@functools.lru_cache(maxsize=4)
def reference(hidden: int, batch: int, seq_len: int, radius: float, nonlinearity: str, seed: int,
              scale: float, with_curve: bool) -> Gradients:
    """The float64 reference loop (kernels.reference) on CPU, same weights and inputs as the backends (whatever
    the eager backend's entry in BACKENDS holds)."""
    from rnnbench.backends import reference_loop
    source = stability_rnn(hidden, radius, nonlinearity, seed)
    prepared = reference_loop(source, torch.device("cpu"), torch.float64)
    x, gy = study_inputs(seq_len, batch, hidden, seed, scale)
    return run_study(prepared, x, gy, torch.device("cpu"), torch.float64, with_curve)


def relative_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    """||value - ref|| / ||ref|| (Frobenius, float64); inf/nan propagate."""
    return ((value - ref).norm() / ref.norm()).item()


def nonfinite(result: Gradients) -> int:
    """NaN and Inf entries in the output and all gradients."""
    return sum(int((~torch.isfinite(t)).sum()) for t in (result.output, *result.grads.values()))


def error_metrics(result: Gradients, ref: Gradients) -> dict[str, float]:
    """Metric name -> relative error, for the output and every gradient."""
    errors = {"rel_err_output": relative_error(result.output, ref.output)}
    errors.update({f"rel_err_grad_{name}": relative_error(g, ref.grads[name]) for name, g in result.grads.items()})
    return errors


def curve_points(curve: torch.Tensor) -> list[tuple[int, float]]:
    """(t, ||dL/dh_t||) for at most CURVE_MAX_POINTS evenly spaced steps, always including both ends."""
    steps = sorted(set(torch.linspace(0, len(curve) - 1, min(len(curve), CURVE_MAX_POINTS)).round().long().tolist()))
    return [(t, curve[t].item()) for t in steps]
