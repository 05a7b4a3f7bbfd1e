"""How many thread-block clusters of a given size a CUDA device runs at once, one CTA per SM, from the driver.

A cluster's CTAs all run in one GPC (a group of SMs), and the GPCs of a chip differ in their SM counts, which are
not in the device's properties. An H100 SXM has 132 SMs in 8 GPCs of up to 18: so clusters of 16, say, fit at most
once a GPC (at most 8, fewer where a GPC has under 16 SMs), not 132 // 16 times, and clusters of 4 at most 4 times
in a GPC of 18 (two SMs idle). The split tier's clusters each give one batch group all of its programs' SMs, and
every group runs all T steps: a group that does not fit beside the others waits for one to finish, which would double
the layer's time. So the dispatcher and the launcher size the groups by cuOccupancyMaxActiveClusters, asked of a
probe kernel that takes a whole SM's shared memory (one CTA per SM, as the split tier's programs are placed), through
the CUDA driver library by ctypes (torch and triton expose no such query). Structures as in cuda.h (CUDA 12 and 13;
tests/test_occupancy.py checks their layout against the header that ships with triton).
"""
from __future__ import annotations

import ctypes
import functools

import torch
import triton

CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14
CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97
CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4


class ClusterDim(ctypes.Structure):
    """CUlaunchAttributeValue (a 64-byte union) as its clusterDim member."""
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint), ("pad", ctypes.c_char * 52)]


class LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: an id padded to 8 bytes, then its value."""
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ClusterDim)]


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig."""
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(LaunchAttribute)), ("numAttrs", ctypes.c_uint)]


@triton.jit
def _probe_kernel(x_ptr):  # never launched: only the driver's occupancy figures are asked of it
    pass


@functools.cache
def _driver() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _check(result: int, call: str) -> None:
    if result != 0:
        message = ctypes.c_char_p()
        _driver().cuGetErrorString(result, ctypes.byref(message))
        raise RuntimeError(f"{call} failed: CUDA error {result} ({(message.value or b'?').decode()})")


@functools.cache
def _probe_function(device_index: int) -> tuple[int, int]:
    """(the probe's CUfunction on the device, the most dynamic shared memory a CTA may take there), the function
    allowed that much and non-portable cluster sizes."""
    driver = _driver()
    with torch.cuda.device(device_index):
        compiled = _probe_kernel.warmup(torch.empty(1, device=f"cuda:{device_index}"), grid=(1,), num_warps=1)
        compiled._init_handles()  # loads the module into the device's context
    function = ctypes.c_void_p(compiled.function)
    device, shared = ctypes.c_int(), ctypes.c_int()
    _check(driver.cuDeviceGet(ctypes.byref(device), device_index), "cuDeviceGet")
    _check(driver.cuDeviceGetAttribute(ctypes.byref(shared), CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                       device), "cuDeviceGetAttribute")
    _check(driver.cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared),
           "cuFuncSetAttribute")
    _check(driver.cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1),
           "cuFuncSetAttribute")
    return compiled.function, shared.value


@functools.cache
def max_active_clusters(device_index: int, cluster: int) -> int:
    """Clusters of `cluster` CTAs, one CTA per SM, that CUDA device device_index runs at once
    (cuOccupancyMaxActiveClusters; sm_90 and later)."""
    function, shared = _probe_function(device_index)
    attribute = LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, value=ClusterDim(x=cluster, y=1, z=1))
    config = LaunchConfig(gridDimX=cluster, gridDimY=1, gridDimZ=1, blockDimX=32, blockDimY=1, blockDimZ=1,
                          sharedMemBytes=shared, hStream=None, attrs=ctypes.pointer(attribute), numAttrs=1)
    count = ctypes.c_int()
    with torch.cuda.device(device_index):  # the query uses the current context
        _check(_driver().cuOccupancyMaxActiveClusters(ctypes.byref(count), ctypes.c_void_p(function),
                                                      ctypes.byref(config)), "cuOccupancyMaxActiveClusters")
    return count.value


def counts_by_size(device_index: int) -> str:
    """max_active_clusters for clusters of 2, 4, 8 and 16 CTAs, as "size: count" pairs."""
    return ", ".join(f"{size}: {max_active_clusters(device_index, size)}" for size in (2, 4, 8, 16))
