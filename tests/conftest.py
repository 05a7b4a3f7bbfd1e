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


@pytest.fixture(autouse=True)
def barriers_read_as_each_test_ends():
    """On a GPU a split call returns without reading its barriers' status (kernels/barrier_status.py): read it as
    each test ends, so that a barrier that gave up fails the test that had it, not a later one, or none."""
    yield
    if torch.cuda.is_available():
        from kernels.barrier_status import check_barriers
        check_barriers()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
