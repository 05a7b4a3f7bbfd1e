"""Pure-PyTorch Elman RNN: the one definition of "correct" shared by the tests and the harness.

For every layer l and direction d (reverse runs t = T-1 .. 0)::

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

with x of layer l > 0 being the (direction-concatenated) output of layer l-1. Parameters are
looked up by the names `torch.nn.RNN` uses (weight_ih_l0, weight_hh_l0_reverse, ...), so the
same function runs an nn.RNN, a TritonRNN or a plain dict of tensors. It is a Python loop of
PyTorch ops per step with autograd, which is also what the harness times as "eager".
Call it with float64 tensors to get the reference the kernels are checked against.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def time_order(T: int, reverse: bool) -> range:
    """The order a direction visits the time steps: 0..T-1, or T-1..0 for the reverse direction."""
    return range(T - 1, -1, -1) if reverse else range(T)


def param_name(kind: str, layer: int, reverse: bool) -> str:
    """nn.RNN's parameter name, e.g. param_name("weight_hh", 1, True) == "weight_hh_l1_reverse"."""
    return f"{kind}_l{layer}" + ("_reverse" if reverse else "")


def elman_layer(x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor | None, b_hh: torch.Tensor | None, nonlinearity: str = "tanh",
                reverse: bool = False) -> torch.Tensor:
    """One layer, one direction. x: [T, B, I], h0: [B, H]. Returns all hidden states [T, B, H]."""
    act = ACTIVATIONS[nonlinearity]
    xw = x @ w_ih.t()
    if b_ih is not None:
        xw = xw + b_ih + b_hh
    h = h0
    outputs = [None] * x.shape[0]
    for t in time_order(x.shape[0], reverse):
        h = act(xw[t] + h @ w_hh.t())
        outputs[t] = h
    return torch.stack(outputs)


LayerFn = Callable[..., torch.Tensor]  # elman_layer's signature


def rnn_forward(input: torch.Tensor, hx: torch.Tensor | None, weights: Mapping[str, torch.Tensor], *,
                num_layers: int = 1, nonlinearity: str = "tanh", bidirectional: bool = False,
                batch_first: bool = False, dropout: float = 0.0, layer_fn: LayerFn = elman_layer
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.RNN's forward: layers, directions, batch_first, unbatched input and dropout between
    layers (pass dropout > 0 only in training), with layer_fn running one layer and direction
    (elman_layer, the loop of PyTorch ops, by default; the Triton layer passes its kernels).

    input: [T, B, I] ([B, T, I] if batch_first) or unbatched [T, I]; hx: [L*D, B, H] or None.
    Returns (output [T, B, D*H], h_n [L*D, B, H]) shaped like nn.RNN's.
    """
    unbatched = input.dim() == 2
    if unbatched:
        input = input.unsqueeze(1)
        hx = None if hx is None else hx.unsqueeze(1)
    elif batch_first:
        input = input.transpose(0, 1)
    directions = 2 if bidirectional else 1
    hidden = weights["weight_hh_l0"].shape[0]
    if hx is None:
        hx = input.new_zeros(num_layers * directions, input.shape[1], hidden)
    layer_input, finals = input, []
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            reverse = d == 1
            w = {k: weights.get(param_name(k, layer, reverse)) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            ys = layer_fn(layer_input, hx[layer * directions + d], w["weight_ih"], w["weight_hh"],
                             w["bias_ih"], w["bias_hh"], nonlinearity, reverse)
            outs.append(ys)
            finals.append(ys[0] if reverse else ys[-1])
        layer_input = torch.cat(outs, dim=-1) if directions == 2 else outs[0]
        if dropout > 0 and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    output, h_n = layer_input, torch.stack(finals)
    if unbatched:
        return output.squeeze(1), h_n.squeeze(1)
    return (output.transpose(0, 1) if batch_first else output), h_n


def run_module(module: torch.nn.Module, input: torch.Tensor, hx: torch.Tensor | None = None,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """rnn_forward with an nn.RNN-like module's parameters and settings, optionally cast to dtype
    (float64 for the reference); the cast keeps autograd links to the module's parameters."""
    weights = {name: (p if dtype is None else p.to(dtype)) for name, p in module.named_parameters()}
    if dtype is not None:
        input = input.to(dtype)
        hx = None if hx is None else hx.to(dtype)
    return rnn_forward(input, hx, weights, num_layers=module.num_layers, nonlinearity=module.nonlinearity,
                       bidirectional=module.bidirectional, batch_first=module.batch_first)
