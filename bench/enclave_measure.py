"""Benchmark: MRENCLAVE measurement throughput against sha256sum over the same files.

Measures a tree of trusted files the way the launch check does (resolve each path inside
the root file system, SHA-256 its content, build the manifest), and in the same run hashes
the same files with coreutils' `sha256sum`. Both read from a warm page cache; the best of
several rounds is kept for each. The ratio says what the measurement costs beyond hashing.

    python bench/enclave_measure.py [--tree DIR] [--rounds N]

Without --tree, a tree is generated in a temporary directory: one 64 MiB file (a large
runtime or model), 400 files of 64 KiB (a library tree) and 2000 files of 2 KiB (scripts and
configuration), 101 MiB in all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from inclavare.tee.sim.files import measure  # noqa: E402
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity  # noqa: E402

MIB = 1024 * 1024
RUNTIME = RuntimeIdentity("builtin:native", "1")


def generate_tree(root: Path) -> None:
    (root / "opt").mkdir(parents=True)
    with open(root / "opt" / "model.bin", "wb") as large:
        for _ in range(64):
            large.write(os.urandom(MIB))
    for index in range(400):
        directory = root / "usr" / "lib" / f"pkg{index % 20}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"module{index}.so").write_bytes(os.urandom(64 * 1024))
    for index in range(2000):
        directory = root / "app" / f"dir{index % 50}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"script{index}.py").write_bytes(os.urandom(2048))


def best_time(operation: Callable[[], object], rounds: int) -> float:
    operation()  # warm the page cache
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", metavar="DIR", help="measure this directory (as a rootfs)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per tool (best kept)")
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        print("bench/enclave_measure: sha256sum is not installed", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="enclave-measure-") as scratch:
        root = Path(args.tree) if args.tree else Path(scratch) / "rootfs"
        if not args.tree:
            generate_tree(root)
        result: list[Manifest] = []
        ours = best_time(lambda: result.append(measure(root, RUNTIME, ["/"])), args.rounds)
        manifest = result[-1]
        files = [os.path.join(root, path.lstrip("/")) for path in manifest.paths]
        total = sum(os.path.getsize(path) for path in files)
        listing = b"\0".join(os.fsencode(path) for path in files)
        outputs: list[bytes] = []

        def sha256sum() -> None:
            completed = subprocess.run(
                ["xargs", "-0", "sha256sum", "--"], input=listing, capture_output=True, check=True
            )
            outputs.append(completed.stdout)

        theirs = best_time(sha256sum, args.rounds)

    digests = {line.split(b"  ", 1)[0].decode() for line in outputs[-1].splitlines()}
    if digests != {file.sha256.hex() for file in manifest.files}:
        print("bench/enclave_measure: sha256sum and the measurement disagree", file=sys.stderr)
        return 1

    megabytes = total / 1e6
    print(f"trusted files: {len(manifest.files)}, {megabytes:.1f} MB")
    print(f"measurement (MRENCLAVE):  {megabytes / ours:8.1f} MB/s  ({ours * 1000:.1f} ms)")
    print(f"sha256sum, same files:    {megabytes / theirs:8.1f} MB/s  ({theirs * 1000:.1f} ms)")
    print(f"ratio measurement/sha256sum throughput: {theirs / ours:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
