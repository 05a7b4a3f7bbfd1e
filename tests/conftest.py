"""Test set-up: without CUDA the Triton kernels run in the interpreter on CPU tensors.

TRITON_INTERPRET must be set before `kernels` is imported (Triton reads it when the kernels are
defined), so it is set here, at collection time. With a GPU the same tests run the compiled kernels.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402

from kernels.runtime import interpreting  # noqa: E402

# Relative error ||got - ref|| / ||ref|| allowed against the float64 reference, per I/O dtype.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(scope="session")
def device() -> str:
    return "cpu" if interpreting() else "cuda"


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
