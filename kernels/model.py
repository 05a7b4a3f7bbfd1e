"""The seed's whole network: input -> Elman recurrent layer -> output layer.

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   o_t = softmax(W_o h_t + b_o)

forward returns log o_t (log-softmax, what NLL training wants) for every step; for sequence
classification use the last step (classify), for language modelling every step with token-id
inputs (vocab_size embeds them first).
"""
from __future__ import annotations

import torch

from .layer import TritonRNN


class ElmanRNNModel(torch.nn.Module):
    def __init__(self, input_size: int, hidden_size: int, output_size: int, *, vocab_size: int | None = None,
                 rnn_cls: type[torch.nn.RNN] = TritonRNN, device=None, dtype=None, **rnn_kwargs):
        """rnn_kwargs go to the recurrent layer (num_layers, nonlinearity, batch_first, kernel, ...);
        rnn_cls=torch.nn.RNN builds the same model on PyTorch's layer."""
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embedding = None if vocab_size is None else torch.nn.Embedding(vocab_size, input_size, **factory)
        self.rnn = rnn_cls(input_size, hidden_size, **rnn_kwargs, **factory)
        directions = 2 if self.rnn.bidirectional else 1
        self.output = torch.nn.Linear(directions * hidden_size, output_size, **factory)

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: features [T, B, I] (or token ids [T, B] with vocab_size); returns (log o_t for all t, h_n)."""
        if self.embedding is not None:
            x = self.embedding(x)
        hidden, h_n = self.rnn(x, hx)
        return torch.log_softmax(self.output(hidden), dim=-1), h_n

    def classify(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        """Sequence classification: log o_T, the last step's log-probabilities [B, output_size]."""
        log_probs, _ = self(x, hx)
        return log_probs[:, -1] if self.rnn.batch_first else log_probs[-1]
