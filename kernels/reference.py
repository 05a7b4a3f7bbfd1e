"""Pure-PyTorch Elman RNN: the one definition of "correct" shared by the tests and the harness.

One layer and direction is a Python loop of PyTorch ops per step, with autograd::

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

run_module puts it inside torch.nn.RNN's forward (driver.py) with a module's parameters; this is
also what the harness times as "eager". Call it with float64 tensors to get the reference the
kernels are checked against.
"""
from __future__ import annotations

import functools

import torch

from .driver import rnn_forward, time_order

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def elman_layer(x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor | None, b_hh: torch.Tensor | None, nonlinearity: str = "tanh",
                reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer, one direction. x: [T, B, I], h0: [B, H] or None (zeros). Returns (all hidden states [T, B, H],
    h_n [B, H])."""
    act = ACTIVATIONS[nonlinearity]
    xw = x @ w_ih.t()
    if b_ih is not None:
        xw = xw + b_ih + b_hh
    h = xw.new_zeros(xw.shape[1:]) if h0 is None else h0
    outputs = [None] * x.shape[0]
    for t in time_order(x.shape[0], reverse):
        h = act(xw[t] + h @ w_hh.t())
        outputs[t] = h
    return torch.stack(outputs), h


# nn.RNN's forward on the reference loop: reference_forward(input, hx, weights, num_layers=..., ...)
reference_forward = functools.partial(rnn_forward, layer_fn=elman_layer)


def run_module(module: torch.nn.Module, input: torch.Tensor, hx: torch.Tensor | None = None,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """reference_forward with an nn.RNN-like module's parameters and settings, optionally cast to dtype
    (float64 for the reference); the cast keeps autograd links to the module's parameters."""
    weights = {name: (p if dtype is None else p.to(dtype)) for name, p in module.named_parameters()}
    if dtype is not None:
        input = input.to(dtype)
        hx = None if hx is None else hx.to(dtype)
    return reference_forward(input, hx, weights, num_layers=module.num_layers, nonlinearity=module.nonlinearity,
                             bidirectional=module.bidirectional, batch_first=module.batch_first)
