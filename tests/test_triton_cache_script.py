""".ci/triton_cache.py, which carries a lease's Triton cache to the next lease: Triton finds a kernel it compiled
again after the cache has been packed and unpacked elsewhere, the newest entries are kept where the archive would be
too large, and bad input is a usage error."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "triton_cache.py"

# A kernel compiled for sm_90 into TRITON_CACHE_DIR without a GPU (as the compile audit does); prints whether Triton
# compiled it or found it in the cache (no file written to the cache).
COMPILE = textwrap.dedent("""
    import os, sys
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    @triton.jit
    def scale_kernel(x_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)

    def files():  # a compile writes every IR (the LLVM IR too, which the archive leaves out) into the cache
        return sorted(str(p) for p in __import__("pathlib").Path(os.environ["TRITON_CACHE_DIR"]).rglob("*"))

    before = files()
    src = ASTSource(fn=scale_kernel, signature={"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
                    constexprs={"BLOCK": 64})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"] and "scale_kernel" in compiled.asm["ptx"] and compiled.asm["ttgir"]
    print("found" if files() == before else "compiled")
""")


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_a_kernel_compiled_before_is_found_in_the_unpacked_cache(tmp_path):
    program = tmp_path / "compile_kernel.py"
    program.write_text(COMPILE)
    first, second, archive = tmp_path / "lease1", tmp_path / "lease2", tmp_path / "cache.tar.xz"
    env = {"TRITON_INTERPRET": "0"}
    compiled = run(str(program), TRITON_CACHE_DIR=str(first), **env)
    assert compiled.returncode == 0 and compiled.stdout.strip() == "compiled", compiled.stderr
    packed = run(str(SCRIPT), "pack", str(first), str(archive))
    assert packed.returncode == 0 and packed.stdout.startswith("packed 1 of 1 cache entries"), packed.stderr
    shutil.rmtree(first)  # as the lease's machine is gone: Triton must find the files where they were unpacked
    unpacked = run(str(SCRIPT), "unpack", str(archive), str(second))
    assert unpacked.returncode == 0 and "(1 kernels)" in unpacked.stdout, unpacked.stderr
    (group,) = second.glob("*/__grp__*.json")
    assert not list(second.glob("*/*.llir")) and not list(second.glob("*/*.source"))
    assert all(Path(path).parent == group.parent for path in json.loads(group.read_text())["child_paths"].values())
    found = run(str(program), TRITON_CACHE_DIR=str(second), **env)
    assert found.returncode == 0 and found.stdout.strip() == "found", found.stderr
    unknown = run(str(program), TRITON_CACHE_DIR=str(tmp_path / "empty"), **env)  # the test can tell the two apart
    assert unknown.stdout.strip() == "compiled"


def test_the_newest_entries_are_kept_where_the_archive_would_be_too_large(tmp_path):
    cache = tmp_path / "cache"
    for age in range(6):  # entry0 the newest
        entry = cache / f"entry{age}"
        entry.mkdir(parents=True)
        (entry / "kernel.cubin").write_bytes(os.urandom(100_000))  # incompressible
        os.utime(entry, (1e9 - age * 100, 1e9 - age * 100))
    packed = run(str(SCRIPT), "pack", str(cache), str(tmp_path / "cache.tar.xz"), "--max-mib", "0.3")
    assert packed.returncode == 0 and packed.stdout.startswith("packed 2 of 6 cache entries"), packed.stdout
    unpacked = run(str(SCRIPT), "unpack", str(tmp_path / "cache.tar.xz"), str(tmp_path / "out"))
    assert unpacked.returncode == 0 and unpacked.stdout.startswith("unpacked 2 cache entries (0 kernels)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["entry0", "entry1"]


def test_bad_input_is_a_usage_error(tmp_path):
    missing = run(str(SCRIPT), "pack", str(tmp_path / "none"), str(tmp_path / "a.tar.xz"))
    assert missing.returncode == 2 and "no such cache folder" in missing.stderr
    (tmp_path / "junk.tar.xz").write_text("not an archive")
    junk = run(str(SCRIPT), "unpack", str(tmp_path / "junk.tar.xz"), str(tmp_path / "out"))
    assert junk.returncode == 2 and "not a cache archive this script packed" in junk.stderr
    size = run(str(SCRIPT), "pack", str(tmp_path), str(tmp_path / "a.tar.xz"), "--max-mib", "0")
    assert size.returncode == 2 and "--max-mib wants a positive size" in size.stderr
