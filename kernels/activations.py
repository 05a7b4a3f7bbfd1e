"""Activation helpers shared by every Triton kernel of the Elman RNN.

act(a) is tanh or relu. Backward needs act'(a_t) but we store only h_t = act(a_t), so the derivative
is written in terms of the output: tanh'(a) = 1 - h^2, relu'(a) = [h > 0].

tanh has three forms, a forward kernel's TANH_FORM (launch.tanh_form picks it):
- PORTABLE_TANH: sign(a) (1 - e) / (1 + e) with e = exp(-2|a|). libdevice's tanh does not run in the
  Triton interpreter; this form runs in both, cannot overflow, and its division is the fast
  approximate one (an IEEE fp32 division compiles to a subroutine call that spills registers).
  float64 and the interpreter take it.
- FTZ_TANH: the same maths by inline PTX, ex2.approx.ftz.f32 and rcp.approx.ftz.f32, the instructions
  tl.exp and the fast division compile to, less their range checks for denormal operands (a compare
  and two multiplies each on the step's serial chain). Flushing a denormal changes nothing here: e
  underflows only where tanh is 1 in fp32, and 1 + e lies in [1, 2]. fp32 on a GPU (FTZ_TANH_ON):
  compile audit, sm_90, the fma forward at H = 128 takes 275 stall cycles per step against 330 and
  7 fewer instructions (audit.stall_cycles). On an H200 (fma tier, H = 64-256, B = 8 and 64, T = 4096)
  the portable form took 1-8% more time per step forward, 1-3% forward+backward
  (results/variants/20261127-h200-untimed/fma_chains.csv).
- APPROX_TANH: the hardware's tanh.approx.f32, one MUFU instruction (max error about 2^-11, below
  the rounding of a 16-bit output), for bf16/fp16 I/O on a GPU.
Inline PTX does not run in the interpreter, which therefore always takes the portable form.
"""
import triton
import triton.language as tl

TANH: tl.constexpr = tl.constexpr(0)
RELU: tl.constexpr = tl.constexpr(1)
ACTIVATION_CODES = {"tanh": 0, "relu": 1}
# tanh's forms (module docstring)
PORTABLE_TANH = tl.constexpr("portable")
FTZ_TANH = tl.constexpr("ftz")
APPROX_TANH = tl.constexpr("approx")
# Whether fp32 kernels on a GPU take FTZ_TANH (else PORTABLE_TANH): launch.tanh_form
FTZ_TANH_ON = True


@triton.jit
def apply_activation(a, ACTIVATION: tl.constexpr, TANH_FORM: tl.constexpr = PORTABLE_TANH):
    """h = act(a), elementwise on an fp32 tile (float64 with PORTABLE_TANH)."""
    if ACTIVATION == TANH:
        if TANH_FORM == APPROX_TANH:
            return _ptx("tanh.approx.f32 $0, $1;", a)
        elif TANH_FORM == FTZ_TANH:
            e = _ptx("ex2.approx.ftz.f32 $0, $1;", -2.0 * 1.4426950408889634 * tl.abs(a))  # exp(-2|a|)
            t = (1.0 - e) * _ptx("rcp.approx.ftz.f32 $0, $1;", 1.0 + e)
            return tl.where(a < 0.0, -t, t)
        else:
            e = tl.exp(-2.0 * tl.abs(a))
            t = tl.fdiv(1.0 - e, 1.0 + e, ieee_rounding=False)  # IEEE division is a ptxas subroutine call
            return tl.where(a < 0.0, -t, t)
    else:
        return tl.where(a > 0.0, a, 0.0)


@triton.jit
def _ptx(instruction: tl.constexpr, x):
    """One fp32 PTX instruction, $1 in and $0 out, elementwise."""
    return tl.inline_asm_elementwise(instruction, "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def activation_grad_from_output(h, ACTIVATION: tl.constexpr):
    """act'(a) expressed through h = act(a), elementwise on an fp32 tile."""
    if ACTIVATION == TANH:
        return 1.0 - h * h
    else:
        return tl.where(h > 0.0, 1.0, 0.0)
