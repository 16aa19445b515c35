"""The demo `make demo` runs: an ordinary container's whole lifecycle with rune, then an
enclave container and the verification of its quote.

Builds a tiny bundle from busybox-static in a temporary directory, then creates, inspects,
starts and deletes a container with the installed `rune`, as containerd would drive it,
and runs one in the foreground. Then the same busybox runs as an enclave container on the
simulated TEE (sim, builtin:native): signed with `enclave-sign`, attested with `rune attest`
and its quote verified with `shelter verify`. The sim platform of the demo lives in the
temporary directory. Everything it makes is removed at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNE = shutil.which("rune") or "/usr/local/bin/rune"
SHELTER = shutil.which("shelter") or "/usr/local/bin/shelter"
ENCLAVE_SIGN = shutil.which("enclave-sign") or "/usr/local/bin/enclave-sign"
BUSYBOX = "/bin/busybox"


class Steps:
    def __init__(self) -> None:
        self.number = 0

    def step(self, title: str, why: str) -> None:
        self.number += 1
        print(f"\n{self.number}. {title}\n   ({why})")


def show(command: list[str], expected: int = 0) -> subprocess.CompletedProcess[str]:
    shown = shlex.join(command).replace(RUNE, "rune")
    shown = shown.replace(SHELTER, "shelter").replace(ENCLAVE_SIGN, "enclave-sign")
    print(f"   $ {shown}")
    started = time.perf_counter()
    result = subprocess.run(command, text=True, capture_output=True, stdin=subprocess.DEVNULL)
    elapsed = (time.perf_counter() - started) * 1000
    for line in (result.stdout + result.stderr).splitlines():
        print(f"     {line}")
    print(f"     [exit {result.returncode}, {elapsed:.0f} ms]")
    if result.returncode != expected:
        raise SystemExit(f"demo: {shown} exited {result.returncode}, not {expected}")
    return result


def build_bundle(directory: Path) -> Path:
    bundle = directory / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "echo", "hostname", "id", "ls", "cat", "sleep", "ps"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run([RUNE, "spec", "--bundle", str(bundle)], check=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = [
        "sh",
        "-c",
        "echo hello from a rune container; echo hostname: $(hostname);"
        " echo I am pid $$ as uid $(id -u); ls /",
    ]
    config["hostname"] = "demo"
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


def enclave_part(steps: Steps, directory: Path, rune: list[str]) -> None:
    """The same busybox as an enclave container on the simulated TEE, and its quote."""
    sim_dir = directory / "sim"
    os.environ["INCLAVARE_SIM_DIR"] = str(sim_dir)  # rune, enclave-sign and shelter's roots
    bundle = directory / "enclave-bundle"
    shutil.copytree(directory / "bundle" / "rootfs", bundle / "rootfs", symlinks=True)
    steps.step(
        "rune spec --enclave: the same image as an enclave container",
        "ENCLAVE_TYPE=sim, ENCLAVE_RUNTIME_PATH=builtin:native in the process environment;"
        " sim is a simulated TEE: no protection against the host's root",
    )
    show([RUNE, "spec", "--enclave", "--bundle", str(bundle)])
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sleep", "60"]
    config_path.write_text(json.dumps(config, indent=2))
    print("   process.args: sleep 60;", " ".join(e for e in config["process"]["env"][-4:]))
    steps.step(
        "enclave-sign: measure the trusted files and sign the enclave",
        "MRENCLAVE covers the runtime and the files; the signature goes into the rootfs",
    )
    key = directory / "signing.pem"
    show([ENCLAVE_SIGN, "genkey", str(key)])
    show([ENCLAVE_SIGN, "sign", str(bundle), "--key", str(key), "--trusted", "/bin/busybox"])
    steps.step(
        "rune run -d: the launch check, then the init-runelet runs the program in the enclave",
        "a tampered trusted file or a bad signature would be refused here, naming the file",
    )
    log = directory / "enclave-output"
    with open(log, "w") as sink:
        print(f"   $ rune run -d --bundle {bundle} demo-enclave")
        subprocess.run(
            [*rune, "run", "-d", "--bundle", str(bundle), "demo-enclave"],
            check=True,
            stdout=sink,
            stderr=sink,
            stdin=subprocess.DEVNULL,
        )
    for line in log.read_text().splitlines():
        print(f"     | {line}")
    try:
        steps.step(
            "rune exec: a process in the enclave, through the init-runelet's agent socket",
            "argv travels as an array: the argument with spaces stays one argument",
        )
        show(
            [*rune, "exec", "demo-enclave", "sh", "-c", 'echo "[$1]"; exit 4', "sh", "a b c"],
            expected=4,
        )
        steps.step(
            "rune attest --isRA: an SGX ECDSA quote (v3) whose report data is our nonce",
            "made by the simulated quoting enclave from a local report of the enclave",
        )
        nonce = os.urandom(16).hex()
        quote = directory / "quote.dat"
        show(
            [
                *rune,
                *("attest", "--isRA", "--quote-type", "ecdsa", "--nonce", nonce),
                *("--output", str(quote), "demo-enclave"),
            ]
        )
        steps.step(
            "shelter verify: the quote checked like a hardware quote, against this host's root",
            "--allow-sim accepts simulated evidence; without it the quote is refused",
        )
        roots = str(sim_dir / "root-ca.pem")
        show([SHELTER, "verify", "--roots", roots, "--allow-sim", str(quote)])
        show([SHELTER, "verify", "--roots", roots, str(quote)], expected=1)
    finally:
        steps.step("rune delete --force", "the enclave container, its agent socket and cgroup go")
        show([*rune, "delete", "--force", "demo-enclave"])


def main() -> int:
    if os.geteuid() != 0:
        print("demo: run as root (containers need namespaces and cgroups)", file=sys.stderr)
        return 2
    steps = Steps()
    with tempfile.TemporaryDirectory(prefix="rune-demo-") as temporary:
        directory = Path(temporary)
        root = directory / "state"
        rune = [RUNE, "--root", str(root)]
        container_id = "demo"
        steps.step(
            "Build a bundle: busybox-static and the config.json `rune spec` writes",
            "the same OCI bundle runc would run",
        )
        bundle = build_bundle(directory)
        print(f"   bundle: {bundle}")
        output = directory / "container-output"
        steps.step(
            "rune create: namespaces, cgroup, mounts and devices are set up",
            "the program does not run yet: the init waits for `start`",
        )
        with open(output, "w") as sink:
            print(f"   $ rune create --bundle {bundle} {container_id}")
            subprocess.run(
                [*rune, "create", "--bundle", str(bundle), container_id],
                check=True,
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
            )
        steps.step("rune state: the OCI state document", "status is `created`")
        show([*rune, "state", container_id])
        steps.step("rune start: the program runs", "its output went to the container's stdout")
        show([*rune, "start", container_id])
        time.sleep(0.3)
        for line in output.read_text().splitlines():
            print(f"     | {line}")
        steps.step("rune list", "the container has exited: status `stopped`")
        show([*rune, "list"])
        steps.step("rune delete", "its cgroup and state are removed")
        show([*rune, "delete", container_id])
        show([*rune, "list", "--format", "json"])
        steps.step(
            "rune run: create, start, wait and delete in one command",
            "the container's exit code becomes rune's",
        )
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["args"] = ["sh", "-c", "echo exiting with 3; exit 3"]
        config_path.write_text(json.dumps(config))
        show([*rune, "run", "--bundle", str(bundle), "demo-run"], expected=3)
        enclave_part(steps, directory, rune)
    print("\nDone: every container, cgroup and file of the demo has been removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
