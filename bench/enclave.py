"""Benchmark: `rune run` of enclave containers against the same program as an ordinary
container, in the same run; prints the median wall-time of each and the ratios.

    python bench/enclave.py [--runs N] [--rune PATH]

Three bundles over one busybox-static root file system, each running `echo hello`:
ordinary; `builtin:native` on the sim TEE, signed once with enclave-sign (as a deployed
enclave is, so no throwaway key is made per run); `builtin:native` unsigned (measured and
signed with a throwaway RSA-3072 key at every create). A fourth runs a WebAssembly hello
world with `builtin:wasm` (signed). Runs alternate between the bundles; the first two rounds
warm the caches and are not counted. The simulated platform lives in a temporary
INCLAVARE_SIM_DIR. Needs root and busybox-static; measurement throughput is
bench/enclave_measure.py.
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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from inclavare.cli.enclave_sign import main as enclave_sign  # noqa: E402
from inclavare.oci.default_spec import default_spec  # noqa: E402

HELLO_WAT = REPO_ROOT / "tests" / "integration" / "wasm" / "hello.wat"


def make_bundle(directory: Path, name: str, args: list[str], env: list[str]) -> Path:
    bundle = directory / name
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "app").mkdir()
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("echo", "sh"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["process"]["env"] += env
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def time_run(rune: str, root: Path, bundle: Path, name: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [rune, "--root", str(root), "run", "--bundle", str(bundle), name],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each bundle (>= 5)")
    parser.add_argument("--rune", default=shutil.which("rune") or "rune")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/enclave: needs root", file=sys.stderr)
        return 2
    runs = max(args.runs, 5)
    native = ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:native"]
    wasm = ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:wasm"]
    with tempfile.TemporaryDirectory(prefix="bench-enclave-") as scratch:
        directory = Path(scratch)
        os.environ["INCLAVARE_SIM_DIR"] = str(directory / "sim")
        hello = ["echo", "hello"]
        bundles = {
            "ordinary": make_bundle(directory, "ordinary", hello, []),
            "native (signed)": make_bundle(directory, "native", hello, native),
            "native (unsigned)": make_bundle(directory, "unsigned", hello, native),
            "wasm (signed)": make_bundle(directory, "wasm", ["/app/hello.wasm"], wasm),
        }
        try:
            import wasmtime
        except ImportError:
            print("bench/enclave: wasmtime is not installed; no wasm run", file=sys.stderr)
            del bundles["wasm (signed)"]
        else:
            module = wasmtime.wat2wasm(HELLO_WAT.read_text())
            (bundles["wasm (signed)"] / "rootfs" / "app" / "hello.wasm").write_bytes(module)
        key = directory / "signing.pem"
        quiet = open(os.devnull, "w")  # noqa: SIM115 - enclave-sign prints what it did
        saved, sys.stdout = sys.stdout, quiet
        try:
            enclave_sign(["genkey", str(key)])
            for name in ("native (signed)", "wasm (signed)"):
                if name in bundles:
                    enclave_sign(["sign", str(bundles[name]), "--key", str(key)])
        finally:
            sys.stdout = saved
            quiet.close()
        root = directory / "state"
        times: dict[str, list[float]] = {name: [] for name in bundles}
        names = list(bundles)
        for index in range(runs + 2):
            order = names if index % 2 == 0 else list(reversed(names))
            for name in order:
                elapsed = time_run(args.rune, root, bundles[name], f"b{index}-{names.index(name)}")
                if index >= 2:
                    times[name].append(elapsed)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    ordinary = medians["ordinary"]
    print(f"rune run, {runs} runs each, alternating (sim TEE: simulated, no hardware protection)")
    for name, median in medians.items():
        ratio = "" if name == "ordinary" else f"   ratio enclave/ordinary {median / ordinary:.2f}"
        print(f"  {name:<18} median {median:7.1f} ms{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
