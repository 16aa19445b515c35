"""rune exec vs runc exec of `true` in a running container of the same bundle, alternating;
prints the median wall-time of each and the ratio rune/runc.

    python bench/exec.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.lifecycle import make_bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rune", default=shutil.which("rune") or "rune")
    parser.add_argument("--runc", default=shutil.which("runc") or "runc")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/exec: needs root", file=sys.stderr)
        return 2
    runs = max(args.runs, 10)
    programs = {"rune": args.rune, "runc": args.runc}
    times: dict[str, list[float]] = {"rune": [], "runc": []}
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as directory:
        bundle = make_bundle(directory, args.runc, ["sleep", "600"])
        roots = {name: os.path.join(directory, f"state-{name}") for name in programs}
        for name, program in programs.items():
            with open(os.path.join(directory, f"{name}.out"), "wb") as sink:
                subprocess.run(
                    [program, "--root", roots[name], "run", "-d", "--bundle", bundle, "bench"],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=sink,
                )
        try:
            for index in range(runs + 2):
                for name in ("runc", "rune") if index % 2 else ("rune", "runc"):
                    started = time.perf_counter()
                    subprocess.run(
                        [programs[name], "--root", roots[name], "exec", "bench", "true"],
                        check=True,
                        stdin=subprocess.DEVNULL,
                    )
                    if index >= 2:
                        times[name].append(time.perf_counter() - started)
        finally:
            for name, program in programs.items():
                subprocess.run([program, "--root", roots[name], "delete", "--force", "bench"])
    rune_ms = statistics.median(times["rune"]) * 1000
    runc_ms = statistics.median(times["runc"]) * 1000
    print(f"runs: {runs} each, alternating")
    print(f"rune exec: median {rune_ms:.1f} ms")
    print(f"runc exec: median {runc_ms:.1f} ms")
    print(f"ratio rune/runc: {rune_ms / runc_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
