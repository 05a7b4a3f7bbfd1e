"""Activation helpers shared by every Triton kernel of the Elman RNN.

act(a) is tanh or relu. Backward needs act'(a_t) but we store only h_t = act(a_t), so the derivative
is written in terms of the output: tanh'(a) = 1 - h^2, relu'(a) = [h > 0].

tanh has two forms:
- exact: sign(a) (1 - e) / (1 + e) with e = exp(-2|a|). libdevice's tanh does not run in the
  Triton interpreter; this form runs in both, cannot overflow, and its division is the fast
  approximate one (an IEEE fp32 division compiles to a subroutine call that spills registers).
- FAST_TANH: the hardware's tanh.approx.f32, one MUFU instruction (max error about 2^-11, below
  the rounding of a 16-bit output). It shortens the serial chain of every time step, so the
  kernels use it for bf16/fp16 I/O; fp32 and float64 keep the exact form. Inline PTX does not
  run in the interpreter, which therefore always takes the exact form.
"""
import triton
import triton.language as tl

TANH: tl.constexpr = tl.constexpr(0)
RELU: tl.constexpr = tl.constexpr(1)
ACTIVATION_CODES = {"tanh": 0, "relu": 1}


@triton.jit
def apply_activation(a, ACTIVATION: tl.constexpr, FAST_TANH: tl.constexpr = False):
    """h = act(a), elementwise on an fp32 tile."""
    if ACTIVATION == TANH:
        if FAST_TANH:
            return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [a], dtype=tl.float32,
                                             is_pure=True, pack=1)
        else:
            e = tl.exp(-2.0 * tl.abs(a))
            t = tl.fdiv(1.0 - e, 1.0 + e, ieee_rounding=False)  # IEEE division is a ptxas subroutine call
            return tl.where(a < 0.0, -t, t)
    else:
        return tl.where(a > 0.0, a, 0.0)


@triton.jit
def activation_grad_from_output(h, ACTIVATION: tl.constexpr):
    """act'(a) expressed through h = act(a), elementwise on an fp32 tile."""
    if ACTIVATION == TANH:
        return 1.0 - h * h
    else:
        return tl.where(h > 0.0, 1.0, 0.0)
