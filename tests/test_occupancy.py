"""How many thread-block clusters run at once (kernels/occupancy.py), and what the split tier makes of it: the
driver's structures checked against cuda.h, and the dispatcher's choices with a device whose GPCs hold fewer
clusters than its SM count suggests. The driver's own figures are tests/test_gpu.py's."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import triton

from kernels import dispatch, occupancy, runtime
from kernels.dispatch import SPLIT_CLUSTER_CONFIGS, _clusters_instead, split_config
from kernels.runtime import co_resident_clusters
from kernels.split import split_grid

CUDA_H = Path(triton.__file__).parent / "backends" / "nvidia" / "include" / "cuda.h"
# What the C compiler says of cuda.h, against what occupancy.py's ctypes structures and constants hold
LAYOUT = {
    "sizeof(CUlaunchAttribute)": ctypes.sizeof(occupancy.LaunchAttribute),
    "offsetof(CUlaunchAttribute, value)": occupancy.LaunchAttribute.value.offset,
    "offsetof(CUlaunchAttribute, value.clusterDim.x)": occupancy.LaunchAttribute.value.offset,
    "offsetof(CUlaunchAttribute, value.clusterDim.y)": occupancy.LaunchAttribute.value.offset + 4,
    "offsetof(CUlaunchAttribute, value.clusterDim.z)": occupancy.LaunchAttribute.value.offset + 8,
    "sizeof(CUlaunchAttributeValue)": ctypes.sizeof(occupancy.ClusterDim),
    "sizeof(CUlaunchConfig)": ctypes.sizeof(occupancy.LaunchConfig),
    **{f"offsetof(CUlaunchConfig, {name})": getattr(occupancy.LaunchConfig, name).offset
       for name, _ in occupancy.LaunchConfig._fields_},
    "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES": occupancy.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
    "CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED":
        occupancy.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
    "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN":
        occupancy.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
    "CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION": occupancy.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
}


def test_the_driver_structures_match_cuda_h(tmp_path):
    """A wrong offset would hand the driver a cluster size or a shared-memory size it never meant."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not CUDA_H.exists():
        pytest.skip("needs a C compiler and triton's cuda.h")
    source = tmp_path / "layout.c"
    prints = "".join(f'    printf("%ld\\n", (long)({expression}));\n' for expression in LAYOUT)
    source.write_text(f"#include <stddef.h>\n#include <stdio.h>\n#include <cuda.h>\nint main(void) {{\n{prints}"
                      "    return 0;\n}\n")
    program = tmp_path / "layout"
    subprocess.run([compiler, f"-I{CUDA_H.parent}", str(source), "-o", str(program)], check=True)
    printed = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split()
    assert dict(zip(LAYOUT, map(int, printed))) == LAYOUT


def test_without_a_device_every_sm_holds_a_program_of_a_cluster():
    """Plans made without a CUDA device (and the interpreter's) take the bound, as if every SM were in a cluster."""
    assert [co_resident_clusters(device, 16, 132) for device in (None, "cpu")] == [8, 8]
    assert co_resident_clusters(None, 4, 132) == 33


@pytest.fixture
def gpcs(monkeypatch):
    """A CUDA device (never touched) whose driver counts clusters as an H100 with GPCs of 18, 18, 18, 18, 16, 16,
    14 and 14 SMs would: 132 SMs, but 6 clusters of 16, 14 of 8 and 30 of 4."""
    sizes = (18, 18, 18, 18, 16, 16, 14, 14)
    monkeypatch.setattr(runtime, "max_active_clusters", lambda index, cluster: sum(g // cluster for g in sizes))
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    return torch.device("cuda", 0)


def test_the_driver_count_bounds_the_cluster_groups(gpcs):
    assert [co_resident_clusters(gpcs, c, 132) for c in (16, 8, 4, 2)] == [6, 14, 30, 66]
    assert co_resident_clusters(gpcs, 16, 64) == 4  # never past the SMs' bound
    config = SPLIT_CLUSTER_CONFIGS[(torch.bfloat16, 1024)].forward
    assert split_grid(64, 1024, config, 132, gpcs) == (16, 6)  # 8 tiles: 6 clusters, so the tile loop
    assert split_grid(64, 1024, config, 132) == (16, 8)  # planned for no device: one tile each
    assert split_grid(64, 1024, dispatch.SPLIT_CONFIGS[(torch.bfloat16, 1024)].forward, 132, gpcs) == (32, 4)


@pytest.mark.parametrize("hidden,fits,past", [(1024, 48, 49), (512, 112, 113)])
def test_clusters_serve_the_batches_whose_tiles_they_hold_at_once(gpcs, hidden, fits, past):
    """16-bit, 8-row tiles: clusters of 16 at H = 1024 hold 6 tiles (B <= 48) on that device, not 8 (B <= 64);
    clusters of 8 at H = 512 14 (B <= 112), not 16. Past them the grid-barrier forms serve."""
    def config(batch):
        return split_config(torch.bfloat16, hidden, hidden, batch, 132, 90, gpcs).forward
    assert (config(fits).CLUSTER, config(fits).ONE_TILE) == (hidden // 64, True)
    assert config(past).CLUSTER == 1
    assert split_config(torch.bfloat16, hidden, hidden, past, 132, 90).forward.CLUSTER == hidden // 64  # no device


@pytest.mark.parametrize("dtype,fits", [(torch.bfloat16, 240), (torch.float32, 60)])
def test_h256_leaves_its_tier_for_clusters_only_where_they_all_run_at_once(gpcs, dtype, fits):
    """At H = 256 clusters of 4 take 16-bit from the resident tier (8-row tiles) and fp32 from the fma tier (2-row
    tiles) up to 30 tiles on that device, not 33."""
    assert "clusters of 4 programs" in _clusters_instead(256, fits, dtype, 256, 132, 90, gpcs)
    assert _clusters_instead(256, fits + 1, dtype, 256, 132, 90, gpcs) is None
    assert _clusters_instead(256, fits + 1, dtype, 256, 132, 90) is not None  # no device: 33 of them


def test_clusters_that_fit_no_gpc_are_never_planned(monkeypatch):
    """A GPU whose GPCs hold no cluster of 16 (one CTA per SM): H = 1024 keeps the grid barrier, and a launch of
    such a cluster configuration is refused before it could fail on the GPU."""
    monkeypatch.setattr(runtime, "max_active_clusters", lambda index, cluster: 0 if cluster == 16 else 132 // cluster)
    monkeypatch.setattr(dispatch, "SPLIT_CLUSTERS", True)
    device = torch.device("cuda", 0)
    assert split_config(torch.bfloat16, 1024, 1024, 8, 132, 90, device).forward.CLUSTER == 1
    assert split_config(torch.bfloat16, 512, 512, 8, 132, 90, device).forward.CLUSTER == 8
    with pytest.raises(RuntimeError, match="clusters of 16 programs, one per SM, do not fit in any GPC"):
        split_grid(8, 1024, SPLIT_CLUSTER_CONFIGS[(torch.bfloat16, 1024)].forward, 132, device)


def test_16_bit_h512_takes_as_many_clusters_as_the_h200_ran_at_once(monkeypatch):
    """By default (SPLIT_CLUSTERS off), with the counts the driver gave on an H200 (2: 66, 4: 30, 8: 15, 16: 7;
    results/variants/20261127-h200-untimed/cluster_counts.log): 16-bit H = 512 in clusters of 8 up to 15 tiles of 8
    rows (B <= 120, not 128), the grid barrier past them; H = 1024 never in clusters."""
    counts = {2: 66, 4: 30, 8: 15, 16: 7}
    monkeypatch.setattr(runtime, "max_active_clusters", lambda index, cluster: counts[cluster])
    device = torch.device("cuda", 0)

    def cluster(hidden, batch):
        return split_config(torch.bfloat16, hidden, hidden, batch, 132, 90, device).forward.CLUSTER
    assert [cluster(512, b) for b in (1, 120, 121)] == [8, 8, 1]
    assert [cluster(1024, b) for b in (1, 56)] == [1, 1]
