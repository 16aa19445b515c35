"""`ctr run --rm` of a trivial container through containerd's runc shim, with rune and with
runc as the runtime binary, alternating; prints the median wall-time of each and the ratio.

    python bench/containerd.py [--runs N]

Starts a private containerd (its own root, state and socket in a temporary directory) and
imports an image built locally from busybox-static. Needs root and containerd.
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

from tests.e2e.daemons import start_containerd
from tests.e2e.images import build_busybox_archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rune", default=shutil.which("rune") or "rune")
    parser.add_argument("--runc", default=shutil.which("runc") or "runc")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/containerd: needs root", file=sys.stderr)
        return 2
    runs = max(args.runs, 10)
    programs = {"rune": args.rune, "runc": args.runc}
    times: dict[str, list[float]] = {"rune": [], "runc": []}
    with tempfile.TemporaryDirectory(prefix="bench-containerd-") as directory:
        image = build_busybox_archive(Path(directory) / "image.tar")
        daemon = start_containerd(Path(directory) / "containerd")
        try:
            daemon.ctr("images", "import", str(Path(directory) / "image.tar"))
            for index in range(runs + 2):
                for name in ("runc", "rune") if index % 2 else ("rune", "runc"):
                    started = time.perf_counter()
                    daemon.ctr(
                        "run",
                        "--rm",
                        "--runc-binary",
                        programs[name],
                        image,
                        f"bench-{name}-{index}",
                        "true",
                    )
                    if index >= 2:
                        times[name].append(time.perf_counter() - started)
        finally:
            daemon.remove_everything()
            daemon.stop()
    rune_ms = statistics.median(times["rune"]) * 1000
    runc_ms = statistics.median(times["runc"]) * 1000
    print(f"runs: {runs} each, alternating")
    print(f"ctr run --rm with rune: median {rune_ms:.1f} ms")
    print(f"ctr run --rm with runc: median {runc_ms:.1f} ms")
    print(f"ratio rune/runc: {rune_ms / runc_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
