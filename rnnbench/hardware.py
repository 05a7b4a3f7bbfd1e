"""What the hardware allows: occupancy from compile facts, the peaks of known GPUs, and the bytes a
call must move at minimum. All of it is arithmetic on stated numbers, none of it is a measurement.

Occupancy of one kernel configuration on one streaming multiprocessor (SM), the CUDA occupancy
calculator's model:

    regs/warp      = ceil(registers * 32 / 256) * 256            (registers are allocated per warp, 256 at a time)
    blocks by regs = floor(65536 / (regs/warp * num_warps))      (65536 32-bit registers per SM)
    blocks by smem = floor(smem/SM / (shared + 1 KiB))            (1 KiB per block is reserved by the driver;
                                                                   unlimited when the kernel uses no shared memory)
    blocks by warps= floor(64 / num_warps)                        (64 resident warps per SM)
    blocks         = min(the three, 32 blocks per SM)
    occupancy      = blocks * num_warps / 64                      (resident warps / the SM's maximum)

with smem/SM = 164 KiB on sm_80 (A100) and 228 KiB on sm_90 (H100/H200). The limiter is the term
that gives the minimum. For a persistent kernel occupancy says how many batch tiles one SM can hold
at once, not how fast a step is: one program per SM already runs the whole recurrence.
"""
from __future__ import annotations

from dataclasses import dataclass

KiB = 1024


@dataclass(frozen=True)
class SMSpec:
    registers: int = 65536
    shared: int = 0              # bytes of shared memory per SM available to blocks
    max_warps: int = 64
    max_blocks: int = 32
    reg_unit: int = 256          # registers allocated per warp in units of this many
    block_reserve: int = 1 * KiB  # shared memory the driver reserves per resident block


SM_SPECS = {80: SMSpec(shared=164 * KiB), 90: SMSpec(shared=228 * KiB)}


def occupancy(registers: int, shared: int, num_warps: int, arch: int) -> dict:
    """Resident blocks per SM, the occupancy (fraction of the SM's warps) and which limit binds."""
    spec = SM_SPECS[arch]
    regs_per_warp = -(-registers * 32 // spec.reg_unit) * spec.reg_unit
    limits = {
        "registers": spec.registers // (regs_per_warp * num_warps) if registers > 0 else spec.max_blocks,
        "shared memory": spec.shared // (shared + spec.block_reserve) if shared > 0 else spec.max_blocks,
        "warps": spec.max_warps // num_warps,
        "blocks": spec.max_blocks,
    }
    limiter = min(limits, key=limits.get)
    blocks = limits[limiter]
    return {"blocks_per_sm": blocks, "occupancy": blocks * num_warps / spec.max_warps, "limiter": limiter}


# Dense (no sparsity) peak throughput in TFLOP/s and HBM bandwidth in GB/s, from NVIDIA's datasheets:
# H100: "NVIDIA H100 Tensor Core GPU" datasheet (SXM5 and PCIe columns; the sparse figures halved);
# H200: "NVIDIA H200 Tensor Core GPU" datasheet (SXM); A100: "NVIDIA A100 Tensor Core GPU" datasheet
# (80 GB SXM4 and 80 GB PCIe; the 40 GB parts have 1555 GB/s). fp32 is the non-tensor-core rate.
GPU_PEAKS = {
    "H100 SXM": {"bfloat16": 989.4, "float16": 989.4, "tf32": 494.7, "float32": 66.9, "bandwidth_gbs": 3350},
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "tf32": 378.0, "float32": 51.2, "bandwidth_gbs": 2000},
    "H200": {"bfloat16": 989.4, "float16": 989.4, "tf32": 494.7, "float32": 66.9, "bandwidth_gbs": 4800},
    "A100 80GB SXM": {"bfloat16": 312.0, "float16": 312.0, "tf32": 156.0, "float32": 19.5, "bandwidth_gbs": 2039},
    "A100 80GB PCIe": {"bfloat16": 312.0, "float16": 312.0, "tf32": 156.0, "float32": 19.5, "bandwidth_gbs": 1935},
    "A100 40GB": {"bfloat16": 312.0, "float16": 312.0, "tf32": 156.0, "float32": 19.5, "bandwidth_gbs": 1555},
}


def known_gpu(device_name: str) -> str | None:
    """The GPU_PEAKS key for a torch.cuda.get_device_name() string, or None when it is not in the table."""
    name = device_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name:
        return "H100 PCIe" if "PCIE" in name else ("H100 SXM" if "HBM3" in name or "SXM" in name else None)
    if "A100" in name:
        if "40GB" in name:
            return "A100 40GB"
        return "A100 80GB PCIe" if "PCIE" in name else "A100 80GB SXM"
    return None


def peak_tflops(gpu: str, dtype: str, allow_tf32: bool) -> float:
    """The peak that applies to a dtype: tensor cores for 16-bit types (and fp32 with TF32 allowed)."""
    peaks = GPU_PEAKS[gpu]
    if dtype == "float32":
        return peaks["tf32"] if allow_tf32 else peaks["float32"]
    return peaks.get(dtype, peaks["float32"])


def compulsory_bytes(case, mode: str, itemsize: int) -> int:
    """Bytes the call must move at the very least: each input and output read or written once.

    forward: x [T,B,I], h0, the weights read; y [T,B,H] and h_n written. forward+backward adds the
    upstream gradient [T,B,H] read and dx and the weight gradients written. A lower bound of the real
    traffic, so bytes / latency is a lower bound of the bandwidth achieved."""
    t, b = case.seq_len, case.batch
    weights = sum(case.hidden * ((case.input_size if layer == 0 else case.hidden) + case.hidden + 2)
                  for layer in range(case.layers))
    states = 2 * case.layers * b * case.hidden
    forward = t * b * (case.input_size + case.hidden) + states + weights
    if mode == "forward":
        return forward * itemsize
    return (forward + t * b * (case.hidden + case.input_size) + weights) * itemsize
