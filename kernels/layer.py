"""TritonRNN: a drop-in replacement for torch.nn.RNN running on the Triton kernels.

It *is* an nn.RNN (same constructor, parameter names, initialisation and state_dict, so
load_state_dict works both ways); only forward differs: every layer and direction runs through
ElmanRecurrence, whose recurrence kernel is picked by the dispatcher (see dispatch.plan_for).
Inputs are checked before anything is launched, with errors that name the argument.
"""
from __future__ import annotations

import torch

from .autograd import ElmanRecurrence
from .dispatch import KERNEL_CHOICES, SUPPORTED_DTYPES, KernelPlan, plan_for
from .driver import rnn_forward


class TritonRNN(torch.nn.RNN):
    """torch.nn.RNN's arguments, plus keyword-only kernel: 'auto' (dispatcher), 'resident', 'split' or 'stepwise'.

    After a forward, last_plans holds the KernelPlan of each layer and direction, in nn.RNN's order.
    """

    def __init__(self, *args, kernel: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
        self.kernel = kernel
        self.last_plans: list[KernelPlan] = []

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel={self.kernel!r}"

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(input, hx)
        batch = 1 if input.dim() == 2 else input.shape[0 if self.batch_first else 1]
        plan = plan_for(self.hidden_size, batch, input.dtype, input.device, self.kernel)
        self.last_plans = [plan] * (self.num_layers * (2 if self.bidirectional else 1))

        def layer(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse):
            return ElmanRecurrence.apply(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, plan)

        return rnn_forward(input, hx, dict(self.named_parameters()), layer_fn=layer, num_layers=self.num_layers,
                           nonlinearity=self.nonlinearity, bidirectional=self.bidirectional,
                           batch_first=self.batch_first, dropout=self.dropout if self.training else 0.0)

    def _check_inputs(self, input: torch.Tensor, hx: torch.Tensor | None) -> None:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 3-D ({'[B, T, I]' if self.batch_first else '[T, B, I]'}) or 2-D "
                             f"unbatched [T, I], got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input's last dimension must be input_size={self.input_size}, "
                             f"got shape {tuple(input.shape)}")
        if input.numel() == 0:
            raise ValueError(f"input must have at least one timestep and one batch row, got shape {tuple(input.shape)}")
        weight = self.weight_hh_l0
        if input.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"input dtype must be one of {SUPPORTED_DTYPES}, got {input.dtype}")
        if input.dtype != weight.dtype:
            raise TypeError(f"input dtype {input.dtype} does not match the layer's parameters ({weight.dtype}); "
                            f"convert one with .to(dtype)")
        if input.device != weight.device:
            raise ValueError(f"input is on {input.device} but the layer's parameters are on {weight.device}")
        if hx is not None:
            self._check_hx(input, hx)

    def _check_hx(self, input: torch.Tensor, hx: torch.Tensor) -> None:
        if not isinstance(hx, torch.Tensor):
            raise TypeError(f"hx must be a torch.Tensor or None, got {type(hx).__name__}")
        states = self.num_layers * (2 if self.bidirectional else 1)
        if input.dim() == 2:
            expected = (states, self.hidden_size)
        else:
            expected = (states, input.shape[0 if self.batch_first else 1], self.hidden_size)
        if tuple(hx.shape) != expected:
            raise ValueError(f"hx must have shape {expected} (num_layers * num_directions, batch, hidden_size), "
                             f"got {tuple(hx.shape)}")
        if hx.dtype != input.dtype:
            raise TypeError(f"hx dtype {hx.dtype} does not match input dtype {input.dtype}")
        if hx.device != input.device:
            raise ValueError(f"hx is on {hx.device} but input is on {input.device}")
