"""TritonRNN: a drop-in replacement for torch.nn.RNN running on the Triton kernels.

It *is* an nn.RNN (same constructor, parameter names, initialisation and state_dict, so
load_state_dict works both ways); only forward differs: every layer and direction runs through
ElmanRecurrence, whose recurrence kernel is picked by the dispatcher (see dispatch.plan_for). The weights
are read by nn.RNN's names, as attributes, so a torch.nn.utils.parametrize parametrization applies.
Input is a tensor or a PackedSequence, as for nn.RNN (driver.py says how variable lengths run).
Inputs are checked before anything is launched, with errors that name the argument.
Under torch.autocast the layer runs in the autocast dtype, as nn.RNN does (see forward).
On a GPU a bidirectional layer's two directions run at once on two streams where their kernels can share
the GPU (streams.py). Under torch.compile the layer runs as it does without it (forward).
"""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from .autograd import ElmanRecurrence
from .dispatch import KERNEL_CHOICES, SUPPORTED_DTYPES, KernelPlan, plan_for
from .driver import packed_batch_size, rnn_forward
from .runtime import launching_on
from .streams import Beside, side_stream


class TritonRNN(torch.nn.RNN):
    """torch.nn.RNN's arguments, plus keyword-only
    kernel: 'auto' (dispatcher), 'fma', 'resident', 'split' or 'stepwise';
    checkpoint: True keeps only the hidden state entering each segment of max(ceil(sqrt(T)),
    recompute.SEGMENT_MIN_STEPS) steps per layer and direction for the backward (fewer than sqrt(T); none
    for a sequence of one segment) and recomputes the others there (checkpointed BPTT, see autograd.py):
    less memory, one more forward recurrence per backward.

    After a forward, last_plans holds the KernelPlan of each layer and direction, in nn.RNN's order.
    """

    def __init__(self, *args, kernel: str = "auto", checkpoint: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
        if not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint must be True or False, got {checkpoint!r}")
        self.kernel = kernel
        self.checkpoint = checkpoint
        self.last_plans: list[KernelPlan] = []

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel={self.kernel!r}" + (", checkpoint=True" if self.checkpoint else "")

    # torch.compile of a model around the layer runs the layer as it is (a graph break), the rest compiled: Dynamo
    # cannot trace the launchers (plans, streams, cooperative and clustered launches; in the interpreter the
    # interpreter itself), and the kernels are already fused. Costs about 0.4 us a call outside torch.compile.
    @torch.compiler.disable
    def forward(self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None = None):
        weights = {name: getattr(self, name) for name in self._flat_weights_names}  # nn.RNN's own list
        device_type = self.weight_hh_l0.device.type
        if torch.is_autocast_enabled(device_type):
            # Autocast does not reach into ElmanRecurrence (its GEMMs would be cast, its kernels not). So the
            # layer does what autocast does to torch.nn.RNN: input, hx and weights go in as the autocast dtype
            # (float64 excepted), the casts are on the autograd graph, so the gradients reach fp32 parameters.
            dtype = torch.get_autocast_dtype(device_type)
            input, hx = _autocast(input, dtype), _autocast(hx, dtype)
            weights = {name: _autocast(w, dtype) for name, w in weights.items()}
            with torch.autocast(device_type, enabled=False):
                return self._run(input, hx, weights)
        return self._run(input, hx, weights)

    def _run(self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None, weights: dict[str, torch.Tensor]):
        self._check_inputs(input, hx, weights["weight_hh_l0"])
        features = input.data if isinstance(input, PackedSequence) else input
        plan = plan_for(self.hidden_size, self._batch_size(input), features.dtype, features.device, self.kernel)
        self.last_plans = [plan] * (self.num_layers * (2 if self.bidirectional else 1))

        grad_enabled = torch.is_grad_enabled()

        def layer(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse):
            return ElmanRecurrence.apply(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, plan, self.checkpoint,
                                         grad_enabled)

        stream = side_stream(plan, features.device) if self.bidirectional else None  # for the reverse directions
        with launching_on(features.device):  # autograd runs a device's backward with that device current
            return rnn_forward(input, hx, weights, layer_fn=layer, num_layers=self.num_layers,
                               nonlinearity=self.nonlinearity, bidirectional=self.bidirectional,
                               batch_first=self.batch_first, dropout=self.dropout if self.training else 0.0,
                               beside=None if stream is None else lambda: Beside(stream))

    def _batch_size(self, input: torch.Tensor | PackedSequence) -> int:
        if isinstance(input, PackedSequence):
            return packed_batch_size(input)
        return 1 if input.dim() == 2 else input.shape[0 if self.batch_first else 1]

    def _check_inputs(self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None,
                      weight: torch.Tensor) -> None:
        packed = isinstance(input, PackedSequence)
        if not packed and not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor or a PackedSequence, got {type(input).__name__}")
        features = input.data if packed else input
        if packed and features.dim() != 2:
            raise ValueError(f"input (PackedSequence) data must be 2-D [sum of lengths, input_size], got shape "
                             f"{tuple(features.shape)}")
        if features.dim() not in (2, 3):
            raise ValueError(f"input must be 3-D ({'[B, T, I]' if self.batch_first else '[T, B, I]'}) or 2-D "
                             f"unbatched [T, I], got shape {tuple(features.shape)}")
        if features.shape[-1] != self.input_size:
            raise ValueError(f"input's last dimension must be input_size={self.input_size}, "
                             f"got shape {tuple(features.shape)}")
        time_dim = 1 if features.dim() == 3 and self.batch_first else 0
        if not packed and features.shape[time_dim] == 0:  # nn.RNN refuses it too; an empty batch is fine
            raise ValueError(f"input must have at least one timestep, got shape {tuple(features.shape)}")
        if features.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"input dtype must be one of {SUPPORTED_DTYPES}, got {features.dtype}")
        if features.dtype != weight.dtype:
            raise TypeError(f"input dtype {features.dtype} does not match the layer's parameters ({weight.dtype}); "
                            f"convert one with .to(dtype)")
        if features.device != weight.device:
            raise ValueError(f"input is on {features.device} but the layer's parameters are on {weight.device}")
        if hx is not None:
            self._check_hx(input, features, hx)

    def _check_hx(self, input: torch.Tensor | PackedSequence, features: torch.Tensor, hx: torch.Tensor) -> None:
        if not isinstance(hx, torch.Tensor):
            raise TypeError(f"hx must be a torch.Tensor or None, got {type(hx).__name__}")
        states = self.num_layers * (2 if self.bidirectional else 1)
        if features.dim() == 2 and not isinstance(input, PackedSequence):
            expected = (states, self.hidden_size)
        else:
            expected = (states, self._batch_size(input), self.hidden_size)
        if tuple(hx.shape) != expected:
            raise ValueError(f"hx must have shape {expected} (num_layers * num_directions, batch, hidden_size), "
                             f"got {tuple(hx.shape)}")
        if hx.dtype != features.dtype:
            raise TypeError(f"hx dtype {hx.dtype} does not match input dtype {features.dtype}")
        if hx.device != features.device:
            raise ValueError(f"hx is on {hx.device} but input is on {features.device}")


def _autocast(value: torch.Tensor | PackedSequence | None, dtype: torch.dtype):
    """value in dtype where torch.autocast would cast it (floating point, float64 excepted); anything
    else (None, a wrong type that _check_inputs then names) as it is."""
    if not isinstance(value, (torch.Tensor, PackedSequence)):
        return value
    data = value.data if isinstance(value, PackedSequence) else value
    return value.to(dtype) if data.is_floating_point() and data.dtype != torch.float64 else value
