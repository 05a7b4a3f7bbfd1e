"""64-bit offsets: a [T, B, H] tensor of T*B*H >= 2^31 elements needs the per-step offset t*B*H
computed in i64 inside the persistent kernels. Checked on the compiled TTIR (no GPU needed) by
kernels/offsets.py, for every configuration the dispatcher can pick by the compile audit (its t i64 column,
test_audit.py); here the check is shown to fail on kernels that multiply in 32 bits. The GPU run at
T*B*H > 2^31 is in test_gpu.py."""
import json

from kernels.stepwise import step_kernel

from helpers import compiled_without_interpreter


def test_the_check_flags_every_32_bit_step_offset():
    found = json.loads(compiled_without_interpreter(
        "import json; from time_offsets import variant_problems; print(json.dumps(variant_problems()))"))
    assert found["i64"] == [2, [], "yes"]  # one timed load and one timed store, both right
    assert any("offset in i32" in p for p in found["i32"][1])
    assert found["widened_late"][1] and all("arith.muli in i32" in p for p in found["widened_late"][1])
    assert any("offset in i32" in p for p in found["carried_i32"][1])
    assert [found[name][2] for name in ("i32", "widened_late", "carried_i32")] == ["NO"] * 3


def test_the_stepwise_kernel_has_no_time_offset():
    """It gets each step's [B, H] views from the host, where torch indexes in 64 bits."""
    assert not {"T", "t", "t_first"} & set(step_kernel.arg_names)
