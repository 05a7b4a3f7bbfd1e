"""GPU-only checks of the compiled kernels at the sizes they are built for (skipped without CUDA).
The rest of the suite also runs compiled on a GPU; these add the large shapes the interpreter
cannot afford: every resident and fma size limit, long sequences (past 2^31 elements, checkpointed), and the
layer against cuDNN."""
import dataclasses

import pytest
import torch
import triton

from kernels import TritonRNN, barrier_status, dispatch, plan_for, prefetch, resident, streams
from kernels.dispatch import recurrence_backward, recurrence_forward, resident_limit
from kernels.fragments import within_padding_bound
from kernels.occupancy import max_active_clusters
from kernels.runtime import co_resident_clusters, device_facts
from rnnbench.backends import Prepared
from rnnbench.measure import Inputs, saved_activation_mib

from helpers import DTYPES, TOLERANCE, reference_with_ends, rel_err, where_it_departs

pytestmark = pytest.mark.gpu


def check_long_sequence(tier, dtype, H, B, nonlinearity):
    """The tier's kernels for T = 1024 steps of a layer of H and B in dtype against float64, given b_hh and dL/dh_n
    as the layer gives them; the forward given xw to spare, as the layer's autograd gives it, so that the tiers that
    store the states over xw do so here."""
    T = 1024
    g = torch.Generator().manual_seed(0)
    xw = torch.randn(T, B, H, generator=g) * 0.5
    h0 = torch.randn(B, H, generator=g) * 0.5
    u = torch.randn(H, H, generator=g) * (0.9 / H ** 0.5)
    dy = torch.randn(T, B, H, generator=g)
    b_hh, dh_n = torch.randn(H, generator=g) * 0.3, torch.randn(B, H, generator=g)
    plan = plan_for(H, B, dtype, "cuda", kernel=tier)
    args = [t.to("cuda", dtype) for t in (xw, h0, u)]
    dy, b_hh, dh_n = (t.to("cuda", dtype) for t in (dy, b_hh, dh_n))
    # float64 on the GPU too: on a lease's CPU, which the test workers share, the reference took seconds a test
    # (T = 1024 steps of autograd at B = 64, H = 256: 40 s on a 2-core machine), more than compiling and running
    ref_y, ref_da, ref_dh0 = reference_with_ends(*args, nonlinearity, False, dy, b_hh, dh_n)
    y, h_n = recurrence_forward(plan, *args, nonlinearity, False, xw_spare=True, b_hh=b_hh)
    assert rel_err(y, ref_y) < 2 * TOLERANCE[dtype], where_it_departs(y, ref_y, 2 * TOLERANCE[dtype])
    assert torch.equal(h_n, y[-1])
    da, dh0 = recurrence_backward(plan, ref_y.to(dtype), dy, args[2], nonlinearity, False, dh_n=dh_n)
    assert rel_err(da, ref_da) < 4 * TOLERANCE[dtype], where_it_departs(da, ref_da, 4 * TOLERANCE[dtype])
    assert rel_err(dh0, ref_dh0) < 4 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("B", [1, 16, 64])
def test_resident_limit_long_sequence(dtype, nonlinearity, B):
    check_long_sequence("resident", dtype, resident_limit(dtype, device_facts("cuda")[1]), B, nonlinearity)


@pytest.mark.parametrize("l2_prefetch", ["forced", "off"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("B", [16, 64])
def test_resident_limit_long_sequence_in_fragment_order(dtype, nonlinearity, B, l2_prefetch, monkeypatch):
    """The 16-bit resident kernels at their limit with resident.FRAGMENT_IO on (off by default: in the lease of
    2026-11-28 four of the fragment tests and the tests above, which it then reached, failed unnamed), T = 1024, B
    within the padding bound, so that both kernels run in fragment order; each with the L2 prefetch forced on and off
    in both kernels. The prefetch (inline PTX) is fragment order's one GPU-only instruction beyond the converted
    form's: with the tiles converted the backward at BLOCK_H = 256 never takes it, in fragment order it takes it where
    its streams outgrow L2, which at T = 1024 is B = 64 alone: four of the eight cases of this test's shapes, as
    many as failed then."""
    monkeypatch.setattr(resident, "FRAGMENT_IO", True)
    distances = []

    def distance(keywords, streams, cold=None):  # whatever the launch streams
        distances.append(keywords["L2_PREFETCH_STEPS"] if l2_prefetch == "forced" else 0)
        return distances[-1]
    monkeypatch.setattr(resident, "prefetch_distance", distance)
    H = resident_limit(dtype, device_facts("cuda")[1])
    plan = plan_for(H, B, dtype, "cuda", kernel="resident")
    assert within_padding_bound(B, H, plan.config.forward.BLOCK_B, plan.config.forward.BLOCK_H)
    assert all(resident.launch_keywords(blocks, nonlinearity, dtype, False, backward)["FRAGMENTS"]
               for backward, blocks in enumerate((plan.config.forward, plan.config.backward)))
    check_long_sequence("resident", dtype, H, B, nonlinearity)
    assert distances == ([prefetch.L2_PREFETCH_STEPS] * 2 if l2_prefetch == "forced" else [0, 0])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("B", [1, 5, 64])
@pytest.mark.parametrize("H", [128, 256])
def test_fma_limit_long_sequence(H, nonlinearity, B):
    """fp32 by FMA where U is held whole (BLOCK_H = 128) and at the limit, half of U streamed through L1
    (BLOCK_H = 256): the dispatcher's choice there (one program per batch row)."""
    assert plan_for(H, B, torch.float32, "cuda").tier == "fma"
    check_long_sequence("fma", torch.float32, H, B, nonlinearity)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("H,nonlinearity", [(100, "tanh"), (100, "relu"), (128, "tanh")])
@pytest.mark.parametrize("B", [1, 64])
def test_fma_16_bit_long_sequence(dtype, H, nonlinearity, B):
    """16-bit I/O by FMA at BLOCK_H = 128, the dispatcher's choice there (the forward's tanh the hardware's): the
    forward reads a padded copy of U at H = 100, U itself at 128 (fma.reads_u_itself)."""
    assert plan_for(H, B, dtype, "cuda").tier == "fma"
    check_long_sequence("fma", dtype, H, B, nonlinearity)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_layer_on_a_gpu_that_is_not_the_current_one_runs_there():
    """Triton launches on the current device: the layer makes its tensors' device current, as torch.nn.RNN needs
    no torch.cuda.set_device. Its outputs and gradients equal those of the same layer called with its device current
    (autograd runs the backward with it current either way)."""
    torch.manual_seed(0)
    rnn = TritonRNN(16, 64, num_layers=2, bidirectional=True, device="cuda:1")
    x = torch.randn(40, 3, 16, device="cuda:1")
    results = []
    for current in (0, 1):
        rnn.zero_grad()
        with torch.cuda.device(current):
            out, h_n = rnn(x)
            (out.square().sum() + h_n.sum()).backward()
        results.append([out, h_n] + [p.grad.clone() for p in rnn.parameters()])
    for elsewhere, here in zip(*results):
        assert elsewhere.device == torch.device("cuda:1") and torch.equal(elsewhere, here)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_matches_cudnn(dtype):
    torch.manual_seed(0)
    ours = TritonRNN(64, 128, num_layers=2, bidirectional=True, device="cuda", dtype=dtype)
    theirs = torch.nn.RNN(64, 128, num_layers=2, bidirectional=True, device="cuda", dtype=torch.float64)
    theirs.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(512, 8, 64, device="cuda")
    out, h_n = ours(x.to(dtype))
    ref_out, ref_h_n = theirs(x.to(dtype).double())
    assert rel_err(out, ref_out) < 2 * TOLERANCE[dtype] and rel_err(h_n, ref_h_n) < 2 * TOLERANCE[dtype]
    out.float().sum().backward()
    ref_out.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert rel_err(p.grad, q.grad) < 8 * TOLERANCE[dtype], name


@pytest.mark.parametrize("dtype,H", [(torch.bfloat16, 512), (torch.bfloat16, 1024), (torch.bfloat16, 2048),
                                     (torch.float32, 1024)])
def test_split_defaults_long_sequence(dtype, H):
    """The split tier's default configurations at B = 8 (16-bit H = 512: clusters of 8 from sm_90) for T = 1024
    against float64, given b_hh and dL/dh_n, which its kernels add themselves since 2026-11-29 (the stress tests
    below compare with the step kernel, without them)."""
    check_long_sequence("split", dtype, H, 8, "tanh")


def check_split_against_stepwise(H, B, clustered=False, exchange="l2", dtype=torch.bfloat16):
    """T >= 10k steps with (nearly) every SM in the barrier: any missed or torn barrier would show up as a difference
    from the stepwise kernel, which synchronises by launching once per step."""
    T = 10_000
    g = torch.Generator().manual_seed(0)
    xw = (torch.randn(T, B, H, generator=g) * 0.5).to("cuda", dtype)
    h0 = (torch.randn(B, H, generator=g) * 0.5).to("cuda", dtype)
    u = (torch.randn(H, H, generator=g) * (0.9 / H ** 0.5)).to("cuda", dtype)
    dy = torch.randn(T, B, H, generator=g).to("cuda", dtype)
    split_plan, step_plan = plan_for(H, B, dtype, "cuda"), plan_for(H, B, dtype, "cuda", kernel="stepwise")
    if split_plan.tier != "split":  # a GPU with fewer SMs than any configuration has slices
        pytest.skip(f"the split tier does not serve H={H} on this GPU: {split_plan.reason}")
    if clustered and split_plan.config.forward.CLUSTER == 1:  # clusters from sm_90
        pytest.skip(f"no cluster configuration for H={H}, B={B} on this GPU: {split_plan.name}")
    assert split_plan.config.forward.EXCHANGE == exchange, split_plan.name
    y, _ = recurrence_forward(split_plan, xw, h0, u, "tanh", False)
    y_ref, _ = recurrence_forward(step_plan, xw, h0, u, "tanh", False)
    assert rel_err(y, y_ref) < 1e-2, where_it_departs(y, y_ref, 1e-2)  # a torn barrier: from the step it tore
    da, dh0 = recurrence_backward(split_plan, y_ref, dy, u, "tanh", False)
    da_ref, dh0_ref = recurrence_backward(step_plan, y_ref, dy, u, "tanh", False)
    assert rel_err(da, da_ref) < 1e-2, where_it_departs(da, da_ref, 1e-2)
    assert rel_err(dh0, dh0_ref) < 1e-2
    barrier_status.check_barriers()  # the calls return without reading their barriers' status


@pytest.mark.parametrize("H,B", [(1024, 64), (2048, 16), (2048, 32), (2048, 64), (512, 1), (1024, 16), (1024, 32),
                                 (512, 128), (512, 256)])
def test_split_barrier_under_load_matches_stepwise(H, B, monkeypatch):
    """The grid barrier (at H = 512 too, whose 16-bit batch groups are clusters by default from sm_90: the cluster tests
    below stress those). B = 1, 16 and 32 take 8-row tiles (H = 1024, B = 16: two groups of 64 16-row slices; B = 32:
    four groups of 32-row slices; H = 2048, B = 16: two groups of 64 32-row slices,
    dispatch.SPLIT_WIDE_ONE_TILE_BLOCK_H), but H = 2048, B = 32: one 16-row tile in each of those groups
    (dispatch.SPLIT_LOOPED_BLOCK_B). Every case loads its first tile's inputs a step ahead (split.INPUTS_AHEAD). H =
    2048, B = 64 runs two 16-row tiles per program in the tile loop, in two groups of 64 32-row slices, pipelined over 2
    stages (dispatch.SPLIT_TALL_TILE_MAX_STAGES), and H = 512 one (B = 128) or two (B = 256), in eight groups of 16,
    over 3 (dispatch.SPLIT_TILE_LOOP_STAGES; all dispatch.SPLIT_LOOPED_CONFIGS), the others' inputs read in the step;
    every other case one tile per program without the loop (ONE_TILE)."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS_DEFAULT", frozenset())
    check_split_against_stepwise(H, B)


@pytest.mark.parametrize("cluster", [2, 4])
@pytest.mark.parametrize("B", [64, 128])
def test_split_with_k_over_a_cluster_matches_stepwise_and_float64(B, cluster, monkeypatch):
    """dispatch.SPLIT_K_CLUSTER (inline PTX, never run in the interpreter): the split kernels' product split over
    clusters of 2 or 4 programs along K, their fp32 partial products summed in distributed shared memory, in the
    tile loop of H = 2048 (two 16-row tiles a program at B = 64, four at B = 128, so the partial slots turn within a
    step and across steps), forward and backward: 10k steps against the step kernel (B = 256's would take about 60
    GB of the GPU), and (B = 64) T = 1024 against float64 in both activations."""
    monkeypatch.setattr(dispatch, "SPLIT_K_CLUSTER", cluster)
    plan = plan_for(2048, B, torch.bfloat16, "cuda")
    if plan.tier != "split" or {plan.config.forward.K_CLUSTER, plan.config.backward.K_CLUSTER} != {cluster}:
        pytest.skip(f"no K split over clusters of {cluster} here: {plan.name}")
    check_split_against_stepwise(2048, B)
    for nonlinearity in ("tanh", "relu") if B == 64 else ():
        check_long_sequence("split", torch.bfloat16, 2048, B, nonlinearity)


@pytest.mark.parametrize("B", [8, 64])
def test_split_barrier_by_fma_under_load_matches_stepwise(B):
    """fp32 at H = 2048: 128 slices multiplied by FMA (SplitBlocks.FMA), one 8-row tile per program (B = 8) or eight
    in the tile loop (B = 64)."""
    check_split_against_stepwise(2048, B, dtype=torch.float32)


@pytest.mark.parametrize("B,nonlinearity", [(8, "tanh"), (20, "relu")])
def test_split_by_fma_matches_float64(B, nonlinearity):
    """The FMA product at its size (fp32, H = 2048) at fp32 accuracy: T = 1024 against the float64 loop."""
    if plan_for(2048, B, torch.float32, "cuda").tier != "split":
        pytest.skip("fp32 at H = 2048 needs 128 SMs for the split tier")
    check_long_sequence("split", torch.float32, 2048, B, nonlinearity)


def filling_batch(H, dtype):
    """The batch that gives each of the clusters the GPU runs at once (runtime.co_resident_clusters) one tile of
    dispatch.SPLIT_CLUSTER_CONFIGS' configuration: the most the dispatcher gives them."""
    sms, arch = device_facts("cuda")
    if arch < 90:
        pytest.skip("thread-block clusters need sm_90")
    config = dispatch.SPLIT_CLUSTER_CONFIGS[(dtype, H)].forward
    return co_resident_clusters("cuda", config.CLUSTER, sms) * config.BLOCK_B


def test_the_driver_counts_the_clusters_that_fit_in_the_gpcs():
    """occupancy.max_active_clusters, one CTA per SM: every SM for clusters of 1; at most sm_count // size for
    larger ones, and halving the size at least doubles the count. Printed: the figures the planner used."""
    sms, arch = device_facts("cuda")
    if arch < 90:
        pytest.skip("thread-block clusters need sm_90")
    counts = {size: max_active_clusters(torch.cuda.current_device(), size) for size in (1, 2, 4, 8, 16)}
    print(f"clusters that run at once on {torch.cuda.get_device_name()} ({sms} SMs), by size: {counts}")
    assert counts[1] == sms
    for size in (2, 4, 8, 16):
        assert 1 <= counts[size] <= sms // size and counts[size // 2] >= 2 * counts[size]


@pytest.mark.parametrize("H,B", [(512, 1), (512, "fill"), (1024, 8), (1024, "fill"), (256, 8), (256, "fill")])
def test_split_cluster_barrier_under_load_matches_stepwise(H, B, monkeypatch):
    """The batch groups as clusters (dispatch.SPLIT_CLUSTERS; at H = 512 the default from sm_90,
    dispatch.SPLIT_CLUSTERS_DEFAULT): one group of 8 or 16 CTAs, and as many groups as run
    at once ("fill": at most 16 clusters of 8 at H = 512, 8 of 16 at H = 1024, 33 of 4 at H = 256, in place of the
    resident tier, on 132 SMs), each meeting at its cluster barrier."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    check_split_against_stepwise(H, filling_batch(H, torch.bfloat16) if B == "fill" else B, clustered=True)


@pytest.mark.parametrize("B", [1, 8, "fill"])
def test_fp32_clusters_under_load_match_stepwise(B, monkeypatch):
    """fp32 at H = 256 split over clusters of 4 programs (dispatch.SPLIT_CLUSTERS), multiplied by FMA: 1, 4 and as
    many as run at once (at most 33 on 132 SMs) clusters of one 2-row tile each (the first half empty at B = 1)."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    B = filling_batch(256, torch.float32) if B == "fill" else B
    check_split_against_stepwise(256, B, clustered=True, dtype=torch.float32)


@pytest.mark.parametrize("B,nonlinearity", [(8, "tanh"), (5, "relu")])
def test_fp32_clusters_match_float64(B, nonlinearity, monkeypatch):
    """The same at fp32 accuracy: T = 1024 against the float64 loop."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    if plan_for(256, B, torch.float32, "cuda").tier != "split":
        pytest.skip("thread-block clusters need sm_90")
    check_long_sequence("split", torch.float32, 256, B, nonlinearity)


@pytest.mark.parametrize("H,B", [(512, 1), (512, 8), (512, "fill"), (256, 64), (1024, 8), (1024, "fill")])
@pytest.mark.parametrize("exchange", ["dsmem-pull", "dsmem-push"])
def test_split_cluster_state_in_dsmem_under_load_matches_stepwise(exchange, H, B, monkeypatch):
    """The clusters' state exchanged in distributed shared memory (dispatch.SPLIT_CLUSTER_EXCHANGE, H = 256 ... 1024;
    "fill": as many clusters as run at once): a slot read before it was written, or rewritten before every program
    read it, would show up over 10k steps; a copy that never arrives (push) as the launcher's timeout error."""
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTER_EXCHANGE", exchange)
    B = filling_batch(H, torch.bfloat16) if B == "fill" else B
    check_split_against_stepwise(H, B, clustered=True, exchange=exchange)


@pytest.mark.parametrize("H,B", [(512, 8), (1024, 64)])
def test_a_split_call_leaves_its_barrier_status_unread(H, B, monkeypatch):
    """barrier_status.WAIT_FOR_STATUS off (the default): each call returns with its status copied behind its
    launches, not read; the states are those of a call that waits, the next call reads what the GPU is done with,
    and check_barriers the rest."""
    g = torch.Generator().manual_seed(0)
    xw = (torch.randn(256, B, H, generator=g) * 0.5).to("cuda", torch.bfloat16)
    h0 = torch.zeros(B, H, device="cuda", dtype=torch.bfloat16)
    u = (torch.randn(H, H, generator=g) * (0.9 / H ** 0.5)).to("cuda", torch.bfloat16)
    plan = plan_for(H, B, torch.bfloat16, "cuda")
    if plan.tier != "split":
        pytest.skip(f"the split tier does not serve H={H} on this GPU: {plan.reason}")
    monkeypatch.setattr(barrier_status, "WAIT_FOR_STATUS", True)
    waited, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    monkeypatch.setattr(barrier_status, "WAIT_FOR_STATUS", False)
    monkeypatch.setattr(barrier_status, "_UNREAD", [])
    first, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    assert len(barrier_status._UNREAD) == 1
    torch.cuda.synchronize()
    second, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    assert len(barrier_status._UNREAD) == 1  # the first read as the second started, the second's left
    barrier_status.check_barriers()
    assert barrier_status._UNREAD == []
    assert torch.equal(first, waited) and torch.equal(second, waited)


def test_split_refuses_a_grid_larger_than_the_sm_count():
    from kernels.split import split_forward
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    config = dataclasses.replace(plan_for(512, 1, torch.bfloat16, "cuda", kernel="split").config.forward, BLOCK_N=16,
                                 CLUSTER=1)  # the grid barrier's form (16-bit H = 512 runs clusters from sm_90)
    H = 16 * (sms + 1)  # one slice more than there are SMs
    xw, h0, u = (torch.zeros(shape, device="cuda", dtype=torch.bfloat16) for shape in ((4, 1, H), (1, H), (H, H)))
    with pytest.raises(RuntimeError, match="could never be met"):
        split_forward(xw, h0, u, False, dataclasses.replace(config, BLOCK_H=triton.next_power_of_2(H)), "tanh")


def forward_step_error(y, xw, h0, u, steps):
    """Relative error of h_t = tanh(xw_t + h_{t-1} U^T) at these steps, recomputed in fp32 from the stored h_{t-1}."""
    index = torch.tensor(steps, device=y.device)
    prev = torch.stack([h0 if t == 0 else y[t - 1] for t in steps])
    return rel_err(y[index], torch.tanh(xw[index].float() + prev.float() @ u.float().t()))


def backward_step_error(da, y, dy, u, steps):
    """Relative error of da_t = (dy_t + da_{t+1} U) * (1 - h_t^2) at these steps, recomputed in fp32
    from the stored da_{t+1} (nothing after the last step)."""
    index = torch.tensor(steps, device=y.device)
    after = torch.stack([torch.zeros_like(da[0]) if t == len(da) - 1 else da[t + 1] for t in steps])
    return rel_err(da[index], (dy[index].float() + after.float() @ u.float()) * (1 - y[index].float() ** 2))


def test_more_than_2_31_elements_in_bf16():
    """T*B*H = 2.25e9 > 2^31: a 32-bit step offset would wrap at t = 2^31 / (B*H) = 1,048,576. The
    states and their gradients must satisfy the recurrence at the first steps, around that one and
    at the last (a float64 reference of the whole sequence is too big; each step is checked from
    the stored previous step)."""
    T, B, H, dtype = 1_100_000, 8, 256, torch.bfloat16
    assert T * B * H >= 2 ** 31
    wrap = 2 ** 31 // (B * H)
    steps = [*range(16), *range(wrap - 16, wrap + 16), *range(T - 16, T)]
    g = torch.Generator(device="cuda").manual_seed(0)
    xw = torch.randn(T, B, H, generator=g, device="cuda", dtype=dtype).mul_(0.5)
    h0 = torch.randn(B, H, generator=g, device="cuda", dtype=dtype).mul_(0.5)
    u = (torch.randn(H, H, generator=g, device="cuda") * (0.9 / H ** 0.5)).to(dtype)
    plan = plan_for(H, B, dtype, "cuda")
    y, _ = recurrence_forward(plan, xw, h0, u, "tanh", False)
    assert forward_step_error(y, xw, h0, u, steps) < 1e-2
    del xw
    dy = torch.randn(T, B, H, generator=g, device="cuda", dtype=dtype)
    da, dh0 = recurrence_backward(plan, y, dy, u, "tanh", False)
    assert backward_step_error(da, y, dy, u, steps) < 1e-2
    assert rel_err(dh0, da[0].float() @ u.float()) < 1e-2


@pytest.mark.parametrize("dtype, H", [(torch.bfloat16, 256), (torch.float32, 128)], ids=["resident", "fma"])
def test_checkpoint_matches_the_full_backward_on_a_long_sequence(dtype, H, monkeypatch):
    """T=16384, bidirectional: the same output and gradients with checkpoint=True (64 segments of 256 steps) as
    without, both with the launches that may share the GPU on two streams (streams.py: the directions, and
    each segment's recomputation beside the backward of the one after it) as with everything in order on one
    stream (a race would give other states; cuBLAS on two streams may round differently, so not bitwise); and
    63 states saved per direction instead of 16384."""
    torch.manual_seed(0)
    T, B = 16384, 8
    x = torch.randn(T, B, 64, device="cuda", dtype=dtype)
    gy = torch.randn(T, B, 2 * H, device="cuda", dtype=dtype)
    outs, grads, saved = {}, {}, {}
    for run in ("full", "checkpoint", "in-order", "checkpoint-in-order"):
        monkeypatch.setattr(streams, "OVERLAP", "in-order" not in run)
        torch.manual_seed(1)
        layer = TritonRNN(64, H, bidirectional=True, checkpoint="checkpoint" in run, device="cuda", dtype=dtype)
        params = dict(layer.named_parameters())
        saved[run] = saved_activation_mib(Prepared(layer, params), Inputs(x, torch.zeros(2, B, H, device="cuda",
                                                                                 dtype=dtype), gy))
        outs[run], _ = layer(x)
        grads[run] = torch.autograd.grad(outs[run], list(params.values()), gy)
        assert {plan.tier for plan in layer.last_plans} == {"resident" if dtype == torch.bfloat16 else "fma"}
    for run, same_as, tolerance in (("full", "in-order", 1e-3), ("checkpoint", "checkpoint-in-order", 1e-3),
                                    ("checkpoint", "full", 1e-2)):  # checkpointing rounds dL/dh at each boundary
        assert rel_err(outs[run], outs[same_as]) < 1e-3, (run, same_as)
        for name, got, want in zip(params, grads[run], grads[same_as]):
            assert rel_err(got, want) < tolerance, (run, same_as, name)
    assert saved["checkpoint"] < saved["full"] / 50
