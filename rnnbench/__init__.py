"""rnnbench: the harness that compares the Triton Elman-RNN kernels with cuDNN and eager PyTorch.

Triton reads TRITON_INTERPRET when kernels are *defined*, i.e. when the `kernels` package is first
imported (even `kernels.reference` runs `kernels/__init__.py`). Without a CUDA GPU the kernels can
only run in Triton's CPU interpreter, so the harness turns it on here, before anything imports
`kernels`. FMA fusion is pinned on, as in the test suite, so the harness times the numerics the
tests check (Triton 3.9 warns that its default will change). The CUDA allocator's configuration is
set here too, before CUDA starts (see below).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
# Jobs allocate tensors of 64 MiB to 8 GiB whose sizes change from one job to the next; with fixed
# segments the caching allocator splits a freed block for the next job's sizes and a segment with
# one live block in it cannot be given back. Expandable segments map memory in pages instead. Read
# when CUDA is first used (not yet here); a user's own setting wins; environment.json records it.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

__version__ = "0.1.0"
