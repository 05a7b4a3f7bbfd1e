"""torch.nn.RNN's forward around a per-layer function: layers, directions, batch_first, unbatched
input and dropout between layers.

For every layer l and direction d (reverse runs t = T-1 .. 0)::

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

with x of layer l > 0 being the (direction-concatenated) output of layer l-1. Parameters are looked
up by the names torch.nn.RNN uses (weight_ih_l0, weight_hh_l0_reverse, ...), so one driver runs the
float64 reference loop (reference.py), the Triton layer (layer.py) and torch.compile of the loop.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

# layer_fn(x [T, B, I], h0 [B, H], w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse) -> h_t for all t [T, B, H]
LayerFn = Callable[..., torch.Tensor]


def time_order(T: int, reverse: bool) -> range:
    """The order a direction visits the time steps: 0..T-1, or T-1..0 for the reverse direction."""
    return range(T - 1, -1, -1) if reverse else range(T)


def param_name(kind: str, layer: int, reverse: bool) -> str:
    """nn.RNN's parameter name, e.g. param_name("weight_hh", 1, True) == "weight_hh_l1_reverse"."""
    return f"{kind}_l{layer}" + ("_reverse" if reverse else "")


def rnn_forward(input: torch.Tensor, hx: torch.Tensor | None, weights: Mapping[str, torch.Tensor], *,
                layer_fn: LayerFn, num_layers: int = 1, nonlinearity: str = "tanh", bidirectional: bool = False,
                batch_first: bool = False, dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.RNN's forward with layer_fn running one layer and direction (pass dropout > 0 only in
    training).

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
