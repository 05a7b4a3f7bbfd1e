"""The Triton cache a GPU lease leaves for the next one: packed at the end of `.ci/gpu`, unpacked at its start.

    python3 .ci/triton_cache.py pack CACHE_DIR ARCHIVE [--max-mib N]
    python3 .ci/triton_cache.py unpack ARCHIVE CACHE_DIR

A lease compiles a kernel or two a test and a launcher for each new signature, about a second each on one CPU core
(78 small tests of the split and fma tiers took 82 s on an H200: .ci/gpu_pytest.py), and every lease starts on a
bare machine with an empty cache. Triton finds a compiled kernel again by a hash of its source (with the jit
functions it calls), its specialisation, its target and Triton's own build (its Python files and libtriton), and its
compiled launchers by theirs; so what one lease compiled is found by the next wherever a kernel's source has not
changed since and the image's Triton is the same. Anything else is simply not found, and compiled as before.

pack: every entry of CACHE_DIR (a folder per kernel: its IRs, binary, metadata and the __grp__*.json that lists them;
or a compiled launcher) into ARCHIVE (tar.xz), without the LLVM IR and the source dump, which nothing reads back
(a cached kernel's asm holds what it finds; the compile audit reads ttir, ttgir, ptx and cubin). Where the archive
would pass --max-mib (the device tool returns files of at most 16 MiB), the most recently written entries, as many as
fit. unpack: ARCHIVE into CACHE_DIR, each group's paths rewritten to where its files now are (Triton stores them
absolute, and reads a group's files from there).
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

LEFT_OUT = (".llir", ".source")  # large, and read back by nothing
GROUP_PREFIX = "__grp__"
PRESET = 1  # xz: a third of gzip's size, at about 30 MiB of files a second on a slow core (preset 3: 10)
RATIO = 0.12  # the archive's size over its files' at PRESET (0.11 on a sample of this project's kernels): a first guess


def entries(cache_dir: Path) -> list[Path]:
    """The cache's entries (its folders), the most recently written first."""
    return sorted((d for d in cache_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)


def packed_files(entry: Path) -> list[Path]:
    """An entry's files that go into the archive."""
    return [file for file in sorted(entry.iterdir()) if file.is_file() and file.suffix not in LEFT_OUT]


def write_archive(archive: Path, kept: list[Path]) -> int:
    """kept's files into archive, each under its entry's name; its size in bytes."""
    with tarfile.open(archive, "w:xz", preset=PRESET) as tar:
        for entry in kept:
            for file in packed_files(entry):
                tar.add(file, arcname=f"{entry.name}/{file.name}")
    return archive.stat().st_size


def pack(cache_dir: Path, archive: Path, max_bytes: int) -> str:
    """cache_dir into archive within max_bytes (module docstring); what was packed, in words. The newest entries whose
    files would fit at RATIO first, so that one pass is the rule: packing is time a lease's steps do not get."""
    found = entries(cache_dir)
    kept, total = [], 0
    for entry in found:
        total += sum(file.stat().st_size for file in packed_files(entry))
        if total * RATIO > max_bytes:
            break
        kept.append(entry)
    size = write_archive(archive, kept)
    while size > max_bytes and kept:  # fewer, in proportion, until it fits
        kept = kept[:min(len(kept) - 1, int(len(kept) * max_bytes / size * 0.9))]
        size = write_archive(archive, kept)
    return f"packed {len(kept)} of {len(found)} cache entries into {archive} ({size / 2**20:.1f} MiB)"


def unpack(archive: Path, cache_dir: Path) -> str:
    """archive into cache_dir, its groups' paths pointing there; what was unpacked, in words."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        names = tar.getnames()
        tar.extractall(cache_dir, filter="data")
    for group in cache_dir.glob(f"*/{GROUP_PREFIX}*.json"):
        data = json.loads(group.read_text())
        data["child_paths"] = {name: str(group.parent / Path(path).name) for name, path in data["child_paths"].items()}
        group.write_text(json.dumps(data))
    kernels = sum(1 for name in names if Path(name).name.startswith(GROUP_PREFIX))
    return f"unpacked {len({Path(name).parts[0] for name in names})} cache entries ({kernels} kernels) into {cache_dir}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="a cache folder into a tar.xz archive")
    packing.add_argument("cache_dir", type=Path)
    packing.add_argument("archive", type=Path)
    packing.add_argument("--max-mib", type=float, default=15.0, help="the archive's largest size (default 15)")
    unpacking = verbs.add_parser("unpack", help="an archive into a cache folder")
    unpacking.add_argument("archive", type=Path)
    unpacking.add_argument("cache_dir", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "pack":
        if not args.cache_dir.is_dir():
            parser.error(f"{args.cache_dir}: no such cache folder")
        if args.max_mib <= 0:
            parser.error(f"--max-mib wants a positive size (got {args.max_mib})")
        print(pack(args.cache_dir, args.archive, int(args.max_mib * 2**20)))
    else:
        if not args.archive.is_file():
            parser.error(f"{args.archive}: no such archive")
        try:
            print(unpack(args.archive, args.cache_dir))
        except (tarfile.TarError, json.JSONDecodeError, KeyError, EOFError) as err:
            parser.error(f"{args.archive}: not a cache archive this script packed ({type(err).__name__}: {err})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
