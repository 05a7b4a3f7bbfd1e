"""Triton kernels for the Elman RNN h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

TritonRNN is the drop-in torch.nn.RNN; ElmanRNNModel adds the output layer; plan_for tells which
kernel a shape gets. On a machine without CUDA, set TRITON_INTERPRET=1 before importing this package
to run the same kernels in Triton's interpreter.
"""
from .dispatch import KernelPlan, plan_for
from .layer import TritonRNN
from .model import ElmanRNNModel
from .runtime import triton_mode

__all__ = ["TritonRNN", "ElmanRNNModel", "KernelPlan", "plan_for", "triton_mode"]
