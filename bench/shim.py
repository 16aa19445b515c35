"""containerd-shim-rune-v2 against containerd's runc shim.

    python bench/shim.py [--runs N] [--containers N]

Latency: `ctr run --rm` of a trivial container with `--runtime io.containerd.rune.v2` (this
project's shim driving rune) and `--runtime io.containerd.runc.v2` (containerd's shim driving
runc), alternating; and, to tell the shim's share from rune's, containerd's runc shim driving
rune. Memory: the resident set (RSS, and PSS, which shares pages among the shims fairly) of the
shim processes with N containers running, per container.

Starts a private containerd (its own root, state and socket in a temporary directory) with
the launchers' directory (beside rune) on its PATH, and imports an image built locally from
busybox-static. Needs root, containerd and runc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.daemons import Containerd, processes_mentioning, start_containerd
from tests.e2e.images import build_busybox_archive

SHIMS = {
    "io.containerd.rune.v2": b"containerd-shim-rune-v2",
    "io.containerd.runc.v2": b"containerd-shim-runc-v2",
}


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name] = int(rest.split()[0])
    return values.get("Rss", 0), values.get("Pss", 0)


def shim_memory(daemon: Containerd, runtime: str) -> tuple[int, int, int]:
    """(number of shim processes, total RSS KiB, total PSS KiB) of runtime's shims."""
    count = rss = pss = 0
    for pid in processes_mentioning(str(daemon.socket)):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            # the program, or the script a Python launcher runs
            if not any(argument.endswith(SHIMS[runtime]) for argument in arguments[:3]):
                continue
            memory = _memory_kib(pid)
        except OSError:
            continue
        count += 1
        rss += memory[0]
        pss += memory[1]
    return count, rss, pss


def latency(daemon: Containerd, image: str, runs: int, rune: str) -> dict[str, list[float]]:
    kinds = {
        "rune.v2 shim + rune": ["--runtime", "io.containerd.rune.v2"],
        "runc.v2 shim + runc": ["--runtime", "io.containerd.runc.v2"],
        "runc.v2 shim + rune": ["--runtime", "io.containerd.runc.v2", "--runc-binary", rune],
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    names = list(kinds)
    for index in range(runs + 2):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            started = time.perf_counter()
            daemon.ctr("run", "--rm", *kinds[name], image, f"bench-{index}", "true")
            if index >= 2:  # the first rounds warm caches
                times[name].append(time.perf_counter() - started)
    return times


def memory(daemon: Containerd, image: str, containers: int) -> dict[str, tuple[int, int, int]]:
    found = {}
    for runtime in SHIMS:
        names = [f"mem-{runtime.split('.')[2]}-{index}" for index in range(containers)]
        for name in names:
            daemon.ctr("run", "-d", "--runtime", runtime, image, name, "sleep", "600")
        time.sleep(1)  # let the shims settle after their start-up
        found[runtime] = shim_memory(daemon, runtime)
        for name in names:
            daemon.ctr("tasks", "kill", "--signal", "KILL", name)
        for name in names:
            deadline = time.monotonic() + 20
            while daemon.ctr("tasks", "delete", name, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            daemon.ctr("containers", "delete", name, check=False)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--containers", type=int, default=5)
    parser.add_argument("--rune", default=shutil.which("rune") or "rune")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/shim: needs root", file=sys.stderr)
        return 2
    launchers = Path(args.rune).resolve().parent if os.sep in args.rune else None
    shim = (launchers or Path(args.rune)) / "containerd-shim-rune-v2"
    if launchers is None or not os.access(shim, os.X_OK):
        print(f"bench/shim: no containerd-shim-rune-v2 beside {args.rune}", file=sys.stderr)
        return 2
    runs = max(args.runs, 6)
    with tempfile.TemporaryDirectory(prefix="bench-shim-") as directory:
        image = build_busybox_archive(Path(directory) / "image.tar")
        daemon = start_containerd(Path(directory) / "containerd", path=[str(launchers)])
        try:
            daemon.ctr("images", "import", str(Path(directory) / "image.tar"))
            times = latency(daemon, image, runs, args.rune)
            used = memory(daemon, image, args.containers)
        finally:
            daemon.remove_everything()
            daemon.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"ctr run --rm, {runs} runs each, rotating:")
    for name, value in medians.items():
        print(f"  {name}: median {value:.1f} ms")
    ours, runc = medians["rune.v2 shim + rune"], medians["runc.v2 shim + runc"]
    print(f"latency ratio rune.v2/runc.v2: {ours / runc:.2f}")
    print(
        "latency ratio rune.v2/(runc.v2 shim + rune), the shim's own share: "
        f"{ours / medians['runc.v2 shim + rune']:.2f}"
    )
    print(f"shim memory with {args.containers} containers running:")
    per_container = {}
    for runtime, (count, rss, pss) in used.items():
        per_container[runtime] = (rss / args.containers, pss / args.containers)
        print(
            f"  {runtime}: {count} shim processes, RSS {rss / 1024:.1f} MiB, "
            f"PSS {pss / 1024:.1f} MiB; per container RSS "
            f"{rss / 1024 / args.containers:.1f} MiB, PSS {pss / 1024 / args.containers:.1f} MiB"
        )
    rune_rss, rune_pss = per_container["io.containerd.rune.v2"]
    runc_rss, runc_pss = per_container["io.containerd.runc.v2"]
    print(f"memory ratio per container rune.v2/runc.v2: RSS {rune_rss / runc_rss:.2f}, ", end="")
    print(f"PSS {rune_pss / runc_pss:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
