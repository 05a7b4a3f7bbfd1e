"""Test set-up: without CUDA the Triton kernels run in the interpreter on CPU tensors.

TRITON_INTERPRET must be set before `kernels` is imported (Triton reads it when the kernels are
defined), so it is set here, at collection time. With a GPU the same tests run the compiled kernels.
Only fixtures and hooks live here; helpers shared by test files are in tests/helpers.py.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402

from kernels.runtime import interpreting  # noqa: E402


@pytest.fixture(scope="session")
def device() -> str:
    return "cpu" if interpreting() else "cuda"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
