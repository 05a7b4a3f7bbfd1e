"""rnnbench: the harness that compares the Triton Elman-RNN kernels with cuDNN and eager PyTorch.

Triton reads TRITON_INTERPRET when kernels are *defined*, i.e. when the `kernels` package is first
imported (even `kernels.reference` runs `kernels/__init__.py`). Without a CUDA GPU the kernels can
only run in Triton's CPU interpreter, so the harness turns it on here, before anything imports
`kernels`. FMA fusion is pinned on, as in the test suite, so the harness times the numerics the
tests check (Triton 3.9 warns that its default will change).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

__version__ = "0.1.0"
