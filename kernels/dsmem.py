"""A split batch group's state exchanged through distributed shared memory (sm_90), instead of through L2.

Where a batch group is one thread-block cluster with one batch tile (split.py: CLUSTER > 1, ONE_TILE), its CLUSTER
programs can reach each other's shared memory. Program p owns state columns [p*BLOCK_N, (p+1)*BLOCK_N), and its
cluster rank is p. Each program keeps two slots for the tile's state, [BLOCK_H, BLOCK_B] in the 16-bit I/O dtype,
k-major (a program's columns are one contiguous range of bytes); step s uses slot s % 2. Two exchanges
(split.SplitBlocks.EXCHANGE):

    dsmem-pull  step s:    p writes its columns of h_s into its own slot (st.shared) and arrives at the cluster
                           barrier, releasing its shared memory alone (barrier.cluster_arrive_shared: the step's
                           global stores and loads stay in flight);
                step s+1:  p waits at the barrier (acquire), then reads each column k of h_s from the slot of
                           program k // BLOCK_N (mapa, ld.shared::cluster).
    dsmem-push  step s:    p writes its columns of h_s into its own slot, then one thread copies them into the
                           same place of every other program's slot (cp.async.bulk, shared::cta to shared::cluster),
                           each copy counted on the receiver's mbarrier of the slot;
                step s+1:  p waits for its mbarrier to have received the other programs' bytes of h_s, then reads
                           the whole of h_s from its own slot (ld.shared). No cluster barrier, no fence.

Two slots suffice. Pull: p rewrites slot s % 2 at step s + 2, after the barrier of step s + 1, which no program
passes before every program has arrived there, after its reads of step s + 1. Push: p copies into q's slot s % 2
at step s + 2 only after it received q's columns of h_{s+1}, which q sent after its reads of step s + 1; and that
copy counts on q's mbarrier only after q's previous phase of it completed (q needed it to compute h_{s+1}), so
phases do not mix. An mbarrier phase completes when its one arrival (the receiver's, announcing the bytes it
expects) and all those bytes are in, in either order. After its last step each program meets the cluster once
more, so none exits while another may still reach its shared memory. tests/test_dsmem_protocol.py runs both
protocols under random schedules on the CPU. The first step reads h_0 (da_in backward) from global memory, and the
state still goes to y (da) in global memory every step.

Triton allocates and lays out shared memory itself, so the slots (and push's two mbarriers) lie past the end of
its allocation: the launcher asks for exchange_bytes more than the compiled kernel declares
(split._launch_clusters), and the kernel finds the end from Triton's symbol for the base (global_smem, declared by
every kernel that stages an MMA operand through shared memory) and the launch's dynamic size (%dynamic_smem_size).
Each store and load computes its own address, so neither exchange depends on the layouts Triton gives h: a value
held by several warps is written several times, identically. That is also what they cost: two to four times the
L2 exchange's instructions per step by the compile audit (its figures at dispatch.SPLIT_CLUSTER_EXCHANGE; push's
count includes its wait's polling loop), since the state is read and staged for the MMA element by element where
tl.load moves 16 bytes at a time. Stores go two batch rows at a time, which an MMA result holds in one
thread; wider loads joined into the tile cost more than they saved, and masking the reads cost about 50 more. Built
and compiled only (kernels.audit --split-clusters --split-cluster-exchange); not yet run on a GPU.

The same slots past Triton's shared memory carry a K split's partial products (split.SplitBlocks.K_CLUSTER,
sum_partials): fp32, two slots of a tile's [BLOCK_N * K_CLUSTER, BLOCK_B] each, stored locally, read back by every
program of the cluster after the cluster barrier (mapa, ld.shared::cluster), as pull reads the state.
"""
import triton
import triton.language as tl

from .barrier import cluster_arrive_shared, cluster_wait

L2 = tl.constexpr("l2")  # the split kernels' own exchange, through global memory
PULL = tl.constexpr("dsmem-pull")
PUSH = tl.constexpr("dsmem-push")
EXCHANGES = (L2.value, PULL.value, PUSH.value)
# PTX that leaves in register a the address one past the end of the exchange's buffer (the launch's shared memory)
_END = tl.constexpr("mov.u32 a, global_smem; mov.u32 e, %dynamic_smem_size; add.u32 a, a, e; ")
_THREAD_0 = tl.constexpr("mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; ")  # predicate p: this is thread 0
# How long push's wait polls its mbarrier (mbarrier.try_wait, which the hardware suspends for a time of its own)
# before it gives up and reports, as barrier.grid_barrier does: far beyond any step.
WAIT_NS = tl.constexpr(2_000_000_000)
LOST_NS = tl.constexpr(1_000_000)  # after this long a wait also gives up if another already has (status_ptr)


@triton.constexpr_function
def columns_bytes(BLOCK_B, columns):
    """Bytes of that many state columns of a tile in a slot: [columns, BLOCK_B] 16-bit elements (a whole slot has
    BLOCK_H of them, a program's part BLOCK_N)."""
    return columns * BLOCK_B * 2


@triton.constexpr_function
def exchange_bytes(BLOCK_B, BLOCK_H):
    """Shared memory the exchange adds past Triton's, at the end: two slots, then two 8-byte mbarriers (push's)."""
    return 2 * columns_bytes(BLOCK_B, BLOCK_H) + 16


@triton.jit
def _element(slot, k, b, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Byte offset of element (k, b) of slot `slot` (0 or 1), counted from the end of the buffer: negative."""
    return slot * columns_bytes(BLOCK_B, BLOCK_H) + (k * BLOCK_B + b) * 2 - exchange_bytes(BLOCK_B, BLOCK_H)


@triton.jit
def _mbarrier(slot):
    """Byte offset of slot `slot`'s mbarrier, counted from the end of the buffer."""
    return slot * 8 - 16


@triton.jit
def put_state(value, cols, slot, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's columns of the state into its own slot: value is [BLOCK_N, BLOCK_B], 16-bit, element (n, b)
    being batch row b of the tile, column cols[n]. Two batch rows per 4-byte store: an MMA result holds them in one
    thread."""
    even, odd = tl.split(value.to(tl.int16, bitcast=True).reshape(value.shape[0], BLOCK_B // 2, 2))
    offsets = _element(slot, cols[:, None], 2 * tl.arange(0, BLOCK_B // 2)[None, :], BLOCK_B, BLOCK_H)
    tl.inline_asm_elementwise(
        "{ .reg .u32 a, e; .reg .b32 w; " + _END + "add.u32 a, a, $1; mov.b32 w, {$2, $3}; st.shared.b32 [a], w; "
        "mov.b32 $0, 0; }", "=r,r,h,h", [offsets, even, odd], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def get_state(k, b, slot, dtype: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
              EXCHANGE: tl.constexpr):
    """Elements (k, b) of the state in slot `slot`, as dtype (16-bit): pull reads each from the slot of the program
    that owns column k, push from this program's own slot. k and b broadcast to the result's shape. Nothing is
    masked: a slot's columns past H and its rows past B hold zeros (computed from masked inputs and zero rows of
    U). One load per element: joining wider loads into the tile cost more than it saved (compile audit)."""
    offsets = _element(slot, k, b, BLOCK_B, BLOCK_H)
    if EXCHANGE == PULL:  # the owner's shared memory
        bits = tl.inline_asm_elementwise(
            "{ .reg .u32 a, e; " + _END + "add.u32 a, a, $1; mapa.shared::cluster.u32 a, a, $2; "
            "ld.shared::cluster.b16 $0, [a]; }", "=h,r,r", [offsets, k // BLOCK_N + b * 0], dtype=tl.int16,
            is_pure=False, pack=1)
    else:
        bits = tl.inline_asm_elementwise("{ .reg .u32 a, e; " + _END + "add.u32 a, a, $1; ld.shared.b16 $0, [a]; }",
                                         "=h,r", [offsets], dtype=tl.int16, is_pure=False, pack=1)
    return bits.to(dtype, bitcast=True)


# ---- push's mbarriers and bulk copies -------------------------------------------------------------------------------

@triton.jit
def init_mbarriers():
    """Thread 0 initialises both slots' mbarriers, each expecting one arrival (its own, with the bytes it waits
    for), and releases that to the cluster; the caller then meets the cluster barrier before any program sends."""
    tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .u32 t, a, e, m0, m1; " + _THREAD_0 + _END + "add.u32 m0, a, $1; add.u32 m1, a, $2; "
        "@p mbarrier.init.shared::cta.b64 [m0], 1; @p mbarrier.init.shared::cta.b64 [m1], 1; "
        "@p fence.mbarrier_init.release.cluster; mov.b32 $0, 0; }", "=r,r,r", [_mbarrier(0), _mbarrier(1)],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.constexpr_function
def _send_asm(CLUSTER, PORTION):
    """PTX by which thread 0 copies this program's range of a slot ($1: the slot's offset from the end) to the same
    range of every other program of the cluster, each copy completing on that program's mbarrier of the slot ($2)."""
    text = ("{ .reg .pred p, q; .reg .u32 t, a, e, r, src, mb, dst, rmb; " + _THREAD_0.value + _END.value +
            f"mov.u32 r, %cluster_ctarank; mad.lo.u32 src, r, {PORTION}, a; add.u32 src, src, $1; add.u32 mb, a, $2; ")
    for peer in range(CLUSTER):
        text += (f"setp.ne.and.u32 q, r, {peer}, p; @q mapa.shared::cluster.u32 dst, src, {peer}; "
                 f"@q mapa.shared::cluster.u32 rmb, mb, {peer}; @q cp.async.bulk.shared::cluster.shared::cta."
                 f"mbarrier::complete_tx::bytes [dst], [src], {PORTION}, [rmb]; ")
    return text + "mov.b32 $0, 0; }"


@triton.jit
def send_state(slot, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, CLUSTER: tl.constexpr):
    """After put_state: every thread's writes of the slot made visible to the bulk copies (the async proxy), the CTA
    synchronised, then thread 0's copies of this program's columns to every other program's slot."""
    tl.inline_asm_elementwise("fence.proxy.async.shared::cta; mov.b32 $0, 0;", "=r", [], dtype=tl.int32,
                              is_pure=False, pack=1)
    tl.debug_barrier()
    tl.inline_asm_elementwise(_send_asm(CLUSTER, columns_bytes(BLOCK_B, BLOCK_N)), "=r,r,r",
                              [_element(slot, 0, 0, BLOCK_B, BLOCK_H), _mbarrier(slot)],
                              dtype=tl.int32, is_pure=False, pack=1)


@triton.constexpr_function
def _expect_asm(BYTES):
    """PTX by which thread 0 arrives at the mbarrier at $1 (from the end), announcing BYTES to come."""
    return ("{ .reg .pred p; .reg .u32 t, a, e; " + _THREAD_0.value + _END.value +
            f"add.u32 a, a, $1; @p mbarrier.arrive.expect_tx.shared::cta.b64 _, [a], {BYTES}; mov.b32 $0, 0; }}")


@triton.jit
def _try_wait(slot, parity):
    """1 if the phase of this parity of slot `slot`'s mbarrier has completed, else 0 (after a suspension)."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .u32 a, e; " + _END + "add.u32 a, a, $1; mbarrier.try_wait.parity.shared::cta.b64 p, "
        "[a], $2; selp.u32 $0, 1, 0, p; }", "=r,r,r", [_mbarrier(slot), parity], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _clock():
    """The GPU's global timer, in nanoseconds."""
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def wait_state(slot, parity, status_ptr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, CLUSTER: tl.constexpr):
    """Until slot `slot` holds the other programs' columns of its next phase (parity: that phase's, 0 or 1), which
    thread 0 announces; bounded (WAIT_NS), recording a wait that never ends in status_ptr as barrier.grid_barrier
    does. Once one has, later waits give up after LOST_NS: a broken launch ends in seconds, not T times that."""
    tl.inline_asm_elementwise(_expect_asm((CLUSTER - 1) * columns_bytes(BLOCK_B, BLOCK_N)), "=r,r", [_mbarrier(slot)],
                              dtype=tl.int32, is_pure=False, pack=1)
    done = _try_wait(slot, parity)
    if done == 0:  # not yet: poll, with a clock (%globaltimer, ns) to give up by
        start = _clock()
        waited = start - start  # 0, as an int64
        given_up = 0
        while (done == 0) & (given_up == 0) & (waited < WAIT_NS):
            done = _try_wait(slot, parity)
            waited = _clock() - start
            if waited > LOST_NS:  # far beyond a step: has a wait of this launch given up? Then so does this one.
                given_up = tl.load(status_ptr, volatile=True)
    if done == 0:
        tl.atomic_max(status_ptr, 1, sem="relaxed")  # read by the launcher after the kernel


# ---- a K split over a cluster: the partial products' sum (split.SplitBlocks.K_CLUSTER) ------------------------------

@triton.constexpr_function
def partials_bytes(BLOCK_N, BLOCK_B, K_CLUSTER):
    """Shared memory a K split over a cluster adds past Triton's: two slots of a tile's fp32 partial products, each
    [BLOCK_N * K_CLUSTER, BLOCK_B] (the cluster's columns by the tile's rows)."""
    return 2 * BLOCK_N * K_CLUSTER * BLOCK_B * 4


@triton.jit
def _partial(slot, n, b, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, K_CLUSTER: tl.constexpr):
    """Byte offset of element (n, b) of partial slot `slot` (0 or 1), counted from the end of the buffer: negative."""
    return ((slot * BLOCK_N * K_CLUSTER + n) * BLOCK_B + b) * 4 - partials_bytes(BLOCK_N, BLOCK_B, K_CLUSTER)


@triton.jit
def sum_partials(partial, slot, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, K_CLUSTER: tl.constexpr):
    """[BLOCK_N, BLOCK_B] fp32: this program's columns of the sum of its cluster's partial products. partial is this
    program's, [BLOCK_N * K_CLUSTER, BLOCK_B] (the cluster's columns, over this program's range of K); it goes to
    slot `slot` of this program's shared memory, the cluster meets (cluster_arrive_shared releases that store alone,
    leaving the previous tile's output store and the next tile's state loads in flight; the wait acquires), and each
    program reads its BLOCK_N columns from every program's slot (its rank's rows: program_id(0) % K_CLUSTER, the
    cluster's CTAs being consecutive along x). Each store and load computes its own address, so nothing depends on
    the layouts Triton gives partial or the result. Two slots suffice, used in turn: a program writes a slot again
    two tiles later, after the cluster's barrier of the tile between, which no program passes before every program
    has arrived there, after its reads of this one (their values already summed into its tile's result)."""
    columns: tl.constexpr = BLOCK_N * K_CLUSTER
    b = tl.arange(0, BLOCK_B)[None, :]
    tl.inline_asm_elementwise(
        "{ .reg .u32 a, e; " + _END + "add.u32 a, a, $1; st.shared.f32 [a], $2; mov.b32 $0, 0; }", "=r,r,f",
        [_partial(slot, tl.arange(0, columns)[:, None], b, BLOCK_N, BLOCK_B, K_CLUSTER), partial], dtype=tl.int32,
        is_pure=False, pack=1)
    cluster_arrive_shared()
    cluster_wait()
    mine = (tl.program_id(0) % K_CLUSTER) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    offsets = _partial(slot, mine, b, BLOCK_N, BLOCK_B, K_CLUSTER)
    total = tl.zeros((BLOCK_N, BLOCK_B), tl.float32)
    for rank in tl.static_range(K_CLUSTER):
        total += tl.inline_asm_elementwise(
            "{ .reg .u32 a, e; " + _END + "add.u32 a, a, $1; mapa.shared::cluster.u32 a, a, $2; "
            "ld.shared::cluster.f32 $0, [a]; }", "=f,r,r", [offsets, offsets * 0 + rank], dtype=tl.float32,
            is_pure=False, pack=1)
    return total

