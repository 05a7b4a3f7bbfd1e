"""A recurrence kernel that keeps U in shared memory, for the test that the compile audit flags it:
the resident tier's transposed step without its pin and peeled step (kernels/resident.py)."""
import triton
import triton.language as tl

from kernels.audit import compile_for, time_loop_facts


@triton.jit
def u_in_shared_kernel(xw_ptr, h0_ptr, u_ptr, y_ptr, T, B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    offs_h = tl.arange(0, BLOCK_H)
    offs_b = tl.arange(0, BLOCK_B)
    tile = offs_h[:, None] + offs_b[None, :] * H
    resident_u = tl.load(u_ptr + offs_h[:, None] * H + offs_h[None, :])
    h = tl.load(h0_ptr + tile).to(tl.float32)
    for t in range(T):
        h = tl.dot(resident_u, h.to(tl.float16), tl.load(xw_ptr + t * B * H + tile).to(tl.float32))
        tl.store(y_ptr + t * B * H + tile, h.to(tl.float16))


def audit_facts() -> dict:
    """The audit's time-loop facts of this kernel at H=128, fp16, 8 warps, compiled for sm_90."""
    keywords = {"BLOCK_B": 16, "BLOCK_H": 128, "num_warps": 8}
    return time_loop_facts(compile_for(u_in_shared_kernel, "torch.float16", keywords, 90), keywords, "torch.float16")
