"""torch.nn.RNN's forward around a per-layer function: layers, directions, batch_first, unbatched
input, PackedSequence input and dropout between layers.

For every layer l and direction d (reverse runs t = T-1 .. 0)::

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

with x of layer l > 0 being the (direction-concatenated) output of layer l-1. Parameters are looked
up by the names torch.nn.RNN uses (weight_ih_l0, weight_hh_l0_reverse, ...), so one driver runs the
float64 reference loop (reference.py), the Triton layer (layer.py) and torch.compile of the loop.

PackedSequence input (variable lengths L_b, sorted longest first as the packed data is) runs as one
padded batch [T = L_0, B, I]; no layer function sees the lengths:

- forward direction: step t depends only on steps before it, so the states at t < L_b are those of
  row b alone; h_n of row b is its state at t = L_b - 1.
- reverse direction: it must start at each row's own last step. Each row is reversed within its
  length, x'[t, b] = x[L_b - 1 - t, b] for t < L_b (padding stays where it is), the direction runs
  forward on x', and its output is put back in time order by the same permutation (its own inverse).
  h_n of row b is then its state at t = 0.

Padded steps come after every valid step of their row in both directions, so they never reach a
valid state; they are dropped when the output is packed, hence receive no gradient either.

A bidirectional layer's directions share no data: given `beside` (the Triton layer's, where a second CUDA
stream can run its kernels: streams.py), the reverse one is issued first inside it, then the forward one, so
that both can run at once; without, in order, with nothing around them (torch.compile traces this).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from .streams import Beside

# layer_fn(x [T, B, I], h0 [B, H] or None (zeros: hx=None), w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse)
#   -> (h_t for all t [T, B, H], h_n [B, H]: the state after the last processed step, not a view of the first)
LayerFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def time_order(T: int, reverse: bool) -> range:
    """The order a direction visits the time steps: 0..T-1, or T-1..0 for the reverse direction."""
    return range(T - 1, -1, -1) if reverse else range(T)


def param_name(kind: str, layer: int, reverse: bool) -> str:
    """nn.RNN's parameter name, e.g. param_name("weight_hh", 1, True) == "weight_hh_l1_reverse"."""
    return f"{kind}_l{layer}" + ("_reverse" if reverse else "")


def packed_batch_size(packed: PackedSequence) -> int:
    """Rows of a PackedSequence: the batch size of its first (fullest) step."""
    return int(packed.batch_sizes[0])


def unpack(packed: PackedSequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(padded input [T, B, I] in the packed (sorted) row order, zero past each row's length;
    lengths [B]; rows: the flat index into [T * B] of every packed row, in the packed data's order)."""
    batch_sizes = packed.batch_sizes  # on the CPU, by PackedSequence's contract
    T, B = batch_sizes.numel(), packed_batch_size(packed)
    valid = torch.arange(B) < batch_sizes[:, None]  # [T, B]; packed data lists the True entries row-major
    device = packed.data.device
    rows = valid.flatten().nonzero().squeeze(1).to(device)
    data = packed.data
    padded = data.new_zeros(T * B, data.shape[-1]).index_copy(0, rows, data)
    return padded.view(T, B, -1), valid.sum(0).to(device), rows


def within_length_reversal(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """[T, B] time index: L_b - 1 - t for t < L_b, else t. A permutation of each row that is its own inverse."""
    t = torch.arange(T, device=lengths.device)[:, None]
    return torch.where(t < lengths, lengths - 1 - t, t)


def reorder_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x'[t, b] = x[index[t, b], b] for x [T, B, F] and index [T', B] -> x' [T', B, F]."""
    return x.gather(0, index[:, :, None].expand(-1, -1, x.shape[-1]))


def final_state(ys: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """h_n of a forward direction over rows of lengths [B] from its states [T, B, H]: each row's state after its last
    valid step."""
    return reorder_time(ys, (lengths - 1)[None, :]).squeeze(0)


def stacked_forward(x: torch.Tensor, hx: torch.Tensor | None, weights: Mapping[str, torch.Tensor], *,
                    layer_fn: LayerFn, num_layers: int, nonlinearity: str, bidirectional: bool, dropout: float,
                    lengths: torch.Tensor | None = None,
                    beside: Callable[[], Beside] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer and direction over time-major x [T, B, I] -> (output [T, B, D*H], h_n [L*D, B, H]);
    lengths [B]: row b holds L_b valid steps, the rest is padding; beside: where a reverse direction runs
    (module docstring)."""
    directions = 2 if bidirectional else 1
    within_length = None if lengths is None else within_length_reversal(lengths, x.shape[0])

    def direction(layer_input: torch.Tensor, layer: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [T, B, H] in time order, h_n [B, H]) of one layer and direction."""
        w = [weights.get(param_name(k, layer, reverse)) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = None if hx is None else hx[layer * directions + reverse]
        if lengths is None:
            return layer_fn(layer_input, h0, *w, nonlinearity, reverse)
        # The layer's own h_n is each row's state after step T - 1, past its last valid step where L_b < T.
        if not reverse:
            ys, _ = layer_fn(layer_input, h0, *w, nonlinearity, False)
            return ys, final_state(ys, lengths)
        flipped, _ = layer_fn(reorder_time(layer_input, within_length), h0, *w, nonlinearity, False)
        return reorder_time(flipped, within_length), final_state(flipped, lengths)

    layer_input, finals = x, []
    for layer in range(num_layers):
        if bidirectional:
            block = contextlib.nullcontext() if beside is None else beside()
            with block:  # first: the side stream waits for this layer's input, not for the forward direction
                backward_states, backward_final = direction(layer_input, layer, True)
            forward_states, forward_final = direction(layer_input, layer, False)
            if beside is not None:
                block.join(backward_states, backward_final)
            layer_input = torch.cat([forward_states, backward_states], dim=-1)
            finals += [forward_final, backward_final]
        else:
            layer_input, final = direction(layer_input, layer, False)
            finals.append(final)
        if dropout > 0 and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    # One layer and direction's h_n is its own: no copy (on a GPU each launch costs host time on every call)
    return layer_input, finals[0].unsqueeze(0) if len(finals) == 1 else torch.stack(finals)


def rnn_forward(input: torch.Tensor | PackedSequence, hx: torch.Tensor | None, weights: Mapping[str, torch.Tensor], *,
                layer_fn: LayerFn, num_layers: int = 1, nonlinearity: str = "tanh", bidirectional: bool = False,
                batch_first: bool = False, dropout: float = 0.0, beside: Callable[[], Beside] | None = None):
    """torch.nn.RNN's forward with layer_fn running one layer and direction (pass dropout > 0 only in
    training; beside: where a reverse direction runs, module docstring).

    input: [T, B, I] ([B, T, I] if batch_first), unbatched [T, I], or a PackedSequence;
    hx: [L*D, B, H] or None (zeros; each layer_fn is given None: in the Triton layer, its kernel starts from zeros
    without a tensor of them; in the caller's row order for a PackedSequence).
    Returns (output [T, B, D*H], h_n [L*D, B, H]) shaped like nn.RNN's; output is a PackedSequence
    for PackedSequence input.
    """
    stack = dict(layer_fn=layer_fn, num_layers=num_layers, nonlinearity=nonlinearity, bidirectional=bidirectional,
                 dropout=dropout, beside=beside)
    if isinstance(input, PackedSequence):
        return _packed_forward(input, hx, weights, **stack)
    unbatched = input.dim() == 2
    if unbatched:
        input = input.unsqueeze(1)
        hx = None if hx is None else hx.unsqueeze(1)
    elif batch_first:
        input = input.transpose(0, 1)
    output, h_n = stacked_forward(input, hx, weights, **stack)
    if unbatched:
        return output.squeeze(1), h_n.squeeze(1)
    return (output.transpose(0, 1) if batch_first else output), h_n


def _packed_forward(input: PackedSequence, hx: torch.Tensor | None, weights: Mapping[str, torch.Tensor],
                    **stack) -> tuple[PackedSequence, torch.Tensor]:
    """rnn_forward of a PackedSequence. As nn.RNN does, hx's rows are put in the packed (sorted) order
    and h_n's rows back in the caller's (enforce_sorted=False packs carry both permutations)."""
    padded, lengths, rows = unpack(input)
    if hx is not None and input.sorted_indices is not None:
        hx = hx.index_select(1, input.sorted_indices)
    output, h_n = stacked_forward(padded, hx, weights, lengths=lengths, **stack)
    data = output.reshape(-1, output.shape[-1]).index_select(0, rows)
    if input.unsorted_indices is not None:
        h_n = h_n.index_select(1, input.unsorted_indices)
    return PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices), h_n
