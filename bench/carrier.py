"""The carrier's conversion cache: the second start of a converted image (cache hit) against
the first (cache miss), through containerd and containerd-shim-rune-v2.

    python bench/carrier.py [--runs N] [--rune PATH]

`ctr run --rm --env RUNE_CARRIER=native` of a trivial container, signature_method "server"
(rune-sign-server over TLS on the loopback) and "key" (a local key): a miss (the cache
emptied before the run: measure, sign, store) and a hit (measure, the signature from the
cache), alternating; and, for scale, the same container without a carrier. Starts a private
containerd and sign server in a temporary directory; needs root, containerd, and the
launchers (rune, containerd-shim-rune-v2, rune-sign-server) in one directory.
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
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.daemons import Containerd, start_containerd
from tests.e2e.images import build_busybox_archive
from tests.signing_pki import make_pki

RUNTIME = "io.containerd.rune.v2"


def run(daemon: Containerd, image: str, name: str, options: Path | None) -> float:
    arguments = ["run", "--rm", "--runtime", RUNTIME]
    if options is not None:
        arguments += ["--runtime-config-path", str(options), "--env", "RUNE_CARRIER=native"]
    started = time.perf_counter()
    daemon.ctr(*arguments, image, name, "/bin/busybox", "true")
    return time.perf_counter() - started


def empty(cache: Path) -> None:
    for entry in cache.glob("*.entry"):
        entry.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--rune", default=shutil.which("rune") or "rune")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/carrier: needs root", file=sys.stderr)
        return 2
    launchers = Path(args.rune).resolve().parent
    for program in ("containerd-shim-rune-v2", "rune-sign-server"):
        if not os.access(launchers / program, os.X_OK):
            print(f"bench/carrier: no {program} beside {args.rune}", file=sys.stderr)
            return 2
    runs = max(args.runs, 4)
    with tempfile.TemporaryDirectory(prefix="bench-carrier-") as temporary:
        directory = Path(temporary)
        pki = make_pki(directory / "pki")
        server = subprocess.Popen(
            [
                str(launchers / "rune-sign-server"),
                "--listen",
                "127.0.0.1:0",
                "--key",
                str(pki.signing_key),
                "--cert",
                str(pki.server_certificate),
                "--tls-key",
                str(pki.server_key),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert server.stdout is not None
        address = server.stdout.readline().strip().removeprefix("listening on ")
        options = {}
        for method in ("server", "key"):
            config = directory / f"{method}.toml"
            config.write_text(
                "[enclave_runtime]\n"
                f'signature_method = "{method}"\n'
                f'signing_key = "{pki.signing_key}"\n'
                "[enclave_runtime.signature_server]\n"
                f'address = "{address}"\n'
                f'ca = "{pki.ca}"\n'
                "[enclave_runtime.cache]\n"
                f'directory = "{directory}/cache-{method}"\n'
            )
            options[method] = directory / f"{method}-options.toml"
            options[method].write_text(f'InclavareConfig = "{config}"\n')
        image = build_busybox_archive(directory / "image.tar")
        daemon = start_containerd(
            directory / "containerd",
            path=[str(launchers)],
            variables={"INCLAVARE_SIM_DIR": f"{directory}/sim"},
        )
        times: dict[str, list[float]] = {}
        try:
            daemon.ctr("images", "import", str(directory / "image.tar"))
            for index in range(runs + 1):
                kinds: list[tuple[str, Path | None, str | None]] = [
                    ("no carrier", None, None),
                    ("server miss", options["server"], "server"),
                    ("server hit", options["server"], None),
                    ("key miss", options["key"], "key"),
                    ("key hit", options["key"], None),
                ]
                for name, option, emptied in kinds:
                    if emptied:
                        empty(directory / f"cache-{emptied}")
                    elapsed = run(daemon, image, f"bench-{index}", option)
                    if index >= 1:  # the first round warms caches
                        times.setdefault(name, []).append(elapsed)
        finally:
            daemon.remove_everything()
            daemon.stop()
            server.terminate()
            server.wait()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"ctr run --rm with RUNE_CARRIER=native, {runs} runs each, alternating:")
    for name, value in medians.items():
        print(f"  {name}: median {value:.1f} ms")
    for method in ("server", "key"):
        hit, miss = medians[f"{method} hit"], medians[f"{method} miss"]
        print(f"second start / first start (cache hit / miss), signature_method {method}: ", end="")
        print(f"{hit / miss:.2f} (saves {miss - hit:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
