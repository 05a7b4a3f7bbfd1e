"""Dispatch: which kernel runs a layer of hidden size H, batch B and dtype, and with what configuration.

Tiers, tried in order:

- resident: the persistent kernels of persistent.py. One program per BLOCK_B batch rows holds all of
  U (H padded to BLOCK_H) on chip; fits while U is at most 128 KiB and compiles without spills.
- split: the persistent kernels of split.py. U is cut into column slices of BLOCK_N, one program per
  slice and batch tile, all co-resident (at most one per SM), meeting at a grid barrier every step.
  Needs cdiv(H, BLOCK_N) <= the SM count; batch tiles beyond what the SMs hold run as further launches.
- stepwise: one launch per timestep (stepwise.py); serves any H.

Every configuration in RESIDENT_CONFIGS and SPLIT_CONFIGS was chosen from the compile audit
(kernels/audit.py checks each for sm_80 and sm_90): the fewest warps and K blocks with no spills.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from . import persistent, split, stepwise
from .activations import ACTIVATION_CODES
from .matmul import accumulator_dtype
from .runtime import interpreting

TIERS = ("resident", "split", "stepwise")
KERNEL_CHOICES = ("auto",) + TIERS
RESIDENT_BLOCK_B = 16  # tl.dot needs M >= 16; small tiles spread the batch over more SMs

# (dtype, BLOCK_H) -> (num_warps, K_CHUNKS) of the resident kernels, forward and backward unless
# RESIDENT_BACKWARD says otherwise (at H=256 no single setting is spill-free for both kernels).
_SMALL_H = {16: (4, 1), 32: (4, 1), 64: (4, 1), 128: (8, 1)}
RESIDENT_CONFIGS = {
    **{(torch.bfloat16, bh): cfg for bh, cfg in {**_SMALL_H, 256: (8, 4)}.items()},
    **{(torch.float16, bh): cfg for bh, cfg in {**_SMALL_H, 256: (8, 4)}.items()},
    **{(torch.float32, bh): cfg for bh, cfg in {16: (4, 1), 32: (4, 1), 64: (8, 1), 128: (16, 4)}.items()},
    # float64 exists for gradcheck; small sizes only.
    **{(torch.float64, bh): cfg for bh, cfg in {16: (4, 1), 32: (4, 1)}.items()},
}
RESIDENT_BACKWARD = {(torch.bfloat16, 256): (32, 2), (torch.float16, 256): (32, 2)}
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

# (dtype, BLOCK_H) -> (BLOCK_N, num_warps, K_CHUNKS) of the split kernels: slices of at most 64 KiB.
_SPLIT_16BIT = {512: (32, 8, 4), 1024: (32, 8, 4), 2048: (16, 4, 4)}
SPLIT_CONFIGS = {
    **{(torch.bfloat16, bh): cfg for bh, cfg in _SPLIT_16BIT.items()},
    **{(torch.float16, bh): cfg for bh, cfg in _SPLIT_16BIT.items()},
    **{(torch.float32, bh): cfg for bh, cfg in {256: (16, 8, 4), 512: (32, 8, 4), 1024: (16, 8, 4)}.items()},
}
SPLIT_BLOCK_B = 16
PLANNING_SM_COUNT = 132  # an H100's, for plans made without a CUDA device (the interpreter has no limit)


@dataclass(frozen=True)
class KernelPlan:
    """The kernel chosen for one shape: its tier, compile-time configuration and why."""
    tier: str
    config: dict = field(compare=False)
    reason: str = field(compare=False, default="")

    @property
    def name(self) -> str:
        return f"{self.tier}({','.join(f'{k}={v}' for k, v in self.config.items())})"


def padded_hidden(hidden_size: int) -> int:
    """BLOCK_H: the hidden size padded to a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(hidden_size))


def _limit(configs: dict, dtype: torch.dtype) -> int:
    return max((bh for (dt, bh) in configs if dt == dtype), default=0)


def resident_limit(dtype: torch.dtype) -> int:
    """Largest hidden size the resident tier serves for dtype (0 if none)."""
    return _limit(RESIDENT_CONFIGS, dtype)


def sm_count(device: torch.device | str | None) -> int:
    """SMs available to a split plan: the device's, or an H100's when planning without CUDA."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return PLANNING_SM_COUNT


def plan_for(hidden_size: int, batch_size: int, dtype: torch.dtype, device: torch.device | str | None = None,
             kernel: str = "auto") -> KernelPlan:
    """The plan for a layer of this hidden size and batch in dtype on device (its SM count bounds the
    split tier). kernel: 'auto' (first tier that fits) or a tier name (an error if it cannot serve)."""
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    if kernel == "stepwise":
        return _stepwise_plan("requested")
    block_h = padded_hidden(hidden_size)
    refusals = []
    for tier, make in (("resident", _resident_plan), ("split", _split_plan)):
        if kernel in ("auto", tier):
            plan = make(hidden_size, batch_size, dtype, block_h, sm_count(device))
            if isinstance(plan, KernelPlan):
                return plan
            refusals.append(f"{tier}: {plan}")
    why = "; ".join(refusals)
    if kernel != "auto":
        raise ValueError(f"kernel={kernel!r} cannot serve this layer ({why}); use kernel='auto' or 'stepwise'")
    return _stepwise_plan(why)


def _resident_plan(hidden_size, batch_size, dtype, block_h, sms) -> KernelPlan | str:
    """The resident plan, or why there is none."""
    if (dtype, block_h) not in RESIDENT_CONFIGS:
        return f"hidden_size {hidden_size} exceeds the resident tier's limit of {resident_limit(dtype)} for {dtype}"
    num_warps, k_chunks = RESIDENT_CONFIGS[(dtype, block_h)]
    config = {"BLOCK_B": RESIDENT_BLOCK_B, "BLOCK_H": block_h, "K_CHUNKS": k_chunks, "num_warps": num_warps}
    if (dtype, block_h) in RESIDENT_BACKWARD:
        config["bwd_num_warps"], config["bwd_K_CHUNKS"] = RESIDENT_BACKWARD[(dtype, block_h)]
    size_kib = block_h * block_h * dtype.itemsize / 1024
    return KernelPlan("resident", config,
                      f"U ({block_h}x{block_h} {dtype}, {size_kib:.0f} KiB) stays on chip in one program")


def _split_plan(hidden_size, batch_size, dtype, block_h, sms) -> KernelPlan | str:
    """The split-H plan, or why there is none."""
    if (dtype, block_h) not in SPLIT_CONFIGS:
        return f"no split configuration for hidden_size {hidden_size} in {dtype} (limit {_limit(SPLIT_CONFIGS, dtype)})"
    block_n, num_warps, k_chunks = SPLIT_CONFIGS[(dtype, block_h)]
    slices = triton.cdiv(hidden_size, block_n)
    if slices > sms:
        return f"{slices} slices of U need {slices} co-resident programs but the device has {sms} SMs"
    tiles = triton.cdiv(batch_size, SPLIT_BLOCK_B)
    launches = triton.cdiv(tiles, sms // slices)
    return KernelPlan("split", {"BLOCK_B": SPLIT_BLOCK_B, "BLOCK_N": block_n, "BLOCK_H": block_h, "K_CHUNKS": k_chunks,
                                "num_warps": num_warps, "num_stages": 1},
                      f"U cut into {slices} column slices of {block_n} held by {slices} programs per batch tile "
                      f"({sms} SMs), a grid barrier per step; {launches} persistent launch(es) for batch {batch_size}")


def _stepwise_plan(reason: str) -> KernelPlan:
    return KernelPlan("stepwise", {"BLOCK_B": stepwise.BLOCK_B, "BLOCK_N": stepwise.BLOCK_N,
                                   "BLOCK_K": stepwise.BLOCK_K, "num_warps": stepwise.NUM_WARPS}, reason)


def launch_config(plan: KernelPlan, nonlinearity: str, dtype: torch.dtype, backward: bool = False) -> dict:
    """plan.config for the forward or backward kernel (bwd_ keys replace their plain twins for the
    backward) plus what every launch needs: activation, dot precision, interpreter workaround."""
    config = {k: v for k, v in plan.config.items() if not k.startswith("bwd_")}
    if backward:
        config.update({k[len("bwd_"):]: v for k, v in plan.config.items() if k.startswith("bwd_")})
    acc_dtype = tl.float64 if accumulator_dtype(dtype) == torch.float64 else tl.float32
    config.update({"ACTIVATION": ACTIVATION_CODES[nonlinearity], "DOT_PRECISION": "ieee", "ACC_DTYPE": acc_dtype,
                   "UPCAST_DOT": interpreting() and dtype in (torch.bfloat16, torch.float16)})
    if plan.tier == "split":
        config["USE_BARRIER"] = not interpreting()  # the interpreter runs programs in turn: one launch per step
    return config


_FORWARD = {"resident": persistent.resident_forward, "split": split.split_forward, "stepwise": stepwise.stepwise_forward}
_BACKWARD = {"resident": persistent.resident_backward, "split": split.split_backward,
             "stepwise": stepwise.stepwise_backward}


def recurrence_forward(plan: KernelPlan, xw: torch.Tensor, h0: torch.Tensor, u: torch.Tensor,
                       nonlinearity: str, reverse: bool) -> torch.Tensor:
    """h_t = act(xw_t + h_{t-1} U^T) for all t: [T, B, H] in xw's dtype."""
    return _FORWARD[plan.tier](xw, h0, u, reverse, launch_config(plan, nonlinearity, xw.dtype))


def recurrence_backward(plan: KernelPlan, y: torch.Tensor, dy: torch.Tensor, u: torch.Tensor,
                        nonlinearity: str, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/da_t for all t in y's dtype, dL/dh_0 in the accumulator dtype) from the stored h_t and their gradients dy."""
    return _BACKWARD[plan.tier](y, dy, u, reverse, launch_config(plan, nonlinearity, y.dtype, backward=True))
