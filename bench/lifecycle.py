"""rune run vs runc run of the same trivial busybox bundle, alternating; prints the median
wall-time of each and the ratio rune/runc.

    python bench/lifecycle.py [--runs N] [--rune PATH] [--runc PATH]

Each run is a whole `run` (create, start, wait, delete) of a container executing `true`,
with runc's default configuration (pid, network, ipc, uts and mount namespaces, read-only
root, masked paths). Needs root, runc and busybox-static.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def make_bundle(directory: str, runc: str, args: list[str] | None = None) -> str:
    """A bundle with busybox's true and sleep, running `args` (default: true)."""
    bundle = os.path.join(directory, "bundle")
    bindir = os.path.join(bundle, "rootfs", "bin")
    os.makedirs(bindir)
    shutil.copy2("/bin/busybox", os.path.join(bindir, "busybox"))
    for applet in ("true", "sleep"):
        os.symlink("busybox", os.path.join(bindir, applet))
    subprocess.run([runc, "spec", "--bundle", bundle], check=True)
    config_path = os.path.join(bundle, "config.json")
    with open(config_path) as config_file:
        config = json.load(config_file)
    config["process"]["terminal"] = False
    config["process"]["args"] = args or ["true"]
    with open(config_path, "w") as config_file:
        json.dump(config, config_file)
    return bundle


def time_run(runtime: str, root: str, bundle: str, name: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [runtime, "--root", root, "run", "--bundle", bundle, name],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each runtime (>= 10)")
    parser.add_argument("--rune", default=shutil.which("rune") or "rune")
    parser.add_argument("--runc", default=shutil.which("runc") or "runc")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/lifecycle: needs root", file=sys.stderr)
        return 2
    runs = max(args.runs, 10)
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as directory:
        bundle = make_bundle(directory, args.runc)
        roots = {name: os.path.join(directory, f"state-{name}") for name in ("rune", "runc")}
        programs = {"rune": args.rune, "runc": args.runc}
        times: dict[str, list[float]] = {"rune": [], "runc": []}
        for index in range(runs + 2):
            for name in ("runc", "rune") if index % 2 else ("rune", "runc"):
                elapsed = time_run(programs[name], roots[name], bundle, f"bench{index}")
                if index >= 2:  # the first two rounds warm caches
                    times[name].append(elapsed)
    rune_ms = statistics.median(times["rune"]) * 1000
    runc_ms = statistics.median(times["runc"]) * 1000
    print(f"runs: {runs} each, alternating")
    print(f"rune run: median {rune_ms:.1f} ms")
    print(f"runc run: median {runc_ms:.1f} ms")
    print(f"ratio rune/runc: {rune_ms / runc_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
