"""The demo `make demo` runs: from an ordinary image to a remotely attested confidential
container, on one machine, with the simulated TEE.

1. an ordinary container with rune, as runc would run it;
2. the image of a small confidential service (the enclave attestation service with the
   Python that runs it, and busybox-static), built from this host's files;
3. converted into a sim enclave image: measured and signed (enclave-sign convert-image);
4. its reference values computed from the image alone (shelter mrverify), as a policy;
5. run with rune as an enclave container (builtin:native);
6. inclavared started between verifiers and the container;
7. shelter remoteattestation: both evidences verified for a fresh nonce against the policy,
   a secret passed in, sealed to the enclave: VERIFIED (simulated TEE);
8. a tampered copy: refused at launch when unsigned, rejected by shelter when re-signed;
9. everything removed.

Everything lives in a temporary directory, the sim platform included; the daemons and
containers it starts are stopped by pid or deleted at the end, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNE = shutil.which("rune") or "/usr/local/bin/rune"
SHELTER = shutil.which("shelter") or "/usr/local/bin/shelter"
ENCLAVE_SIGN = shutil.which("enclave-sign") or "/usr/local/bin/enclave-sign"
INCLAVARED = shutil.which("inclavared") or "/usr/local/bin/inclavared"
BUSYBOX = "/bin/busybox"
SHORT = {RUNE: "rune", SHELTER: "shelter", ENCLAVE_SIGN: "enclave-sign", INCLAVARED: "inclavared"}


class Demo:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.number = 0
        self.rune = [RUNE, "--root", str(directory / "state")]
        self.containers: list[str] = []
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.started = time.perf_counter()

    def step(self, title: str, why: str) -> None:
        self.number += 1
        elapsed = time.perf_counter() - self.started
        print(f"\n{self.number}. {title}   [{elapsed:.1f} s]\n   ({why})")

    def show(
        self, command: list[str], expected: int = 0, quiet: bool = False, skip: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run and print a command; `skip`: a pattern of output lines not worth printing."""
        shown = shlex.join(command)
        for path, name in SHORT.items():
            shown = shown.replace(path, name)
        shown = shown.replace(str(self.directory), "$DEMO")
        print(f"   $ {shown}")
        started = time.perf_counter()
        result = subprocess.run(command, text=True, capture_output=True, stdin=subprocess.DEVNULL)
        elapsed = (time.perf_counter() - started) * 1000
        if not quiet or result.returncode != expected:
            lines = (result.stdout + result.stderr).splitlines()
            shown_lines = [line for line in lines if not (skip and re.search(skip, line))]
            for line in shown_lines:
                print(f"     {line.replace(str(self.directory), '$DEMO')}")
            if len(shown_lines) < len(lines):
                print(f"     ({len(lines) - len(shown_lines)} lines, one per file, not shown)")
        print(f"     [exit {result.returncode}, {elapsed:.0f} ms]")
        if result.returncode != expected:
            raise SystemExit(f"demo: {shown} exited {result.returncode}, not {expected}")
        return result

    def run_detached(self, bundle: Path, container_id: str, expected: int = 0) -> str:
        """`rune run -d`: its output goes to a file (the container keeps the streams)."""
        log = self.directory / f"{container_id}.log"
        print(
            f"   $ rune run -d --bundle {str(bundle).replace(str(self.directory), '$DEMO')}"
            f" {container_id}"
        )
        with open(log, "w") as sink:
            code = subprocess.run(
                [*self.rune, "run", "-d", "--bundle", str(bundle), container_id],
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
            ).returncode
        if code == 0:
            self.containers.append(container_id)
        text = log.read_text()
        for line in text.splitlines():
            print(f"     | {line}")
        print(f"     [exit {code}]")
        if code != expected:
            raise SystemExit(f"demo: rune run {container_id} exited {code}, not {expected}")
        return text

    def clean_up(self) -> None:
        for process in self.daemons:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for container_id in self.containers:
            subprocess.run(
                [*self.rune, "delete", "--force", container_id], capture_output=True, check=False
            )


def ordinary_container(demo: Demo) -> None:
    demo.step(
        "rune run: an ordinary container, as runc would run it",
        "rune is runc's CLI; without ENCLAVE_TYPE nothing enclave-related happens",
    )
    bundle = demo.directory / "busybox"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, bundle / "rootfs" / "bin" / "busybox")
    for applet in ("sh", "echo", "hostname", "id", "ls"):
        (bundle / "rootfs" / "bin" / applet).symlink_to("busybox")
    subprocess.run([RUNE, "spec", "--bundle", str(bundle)], check=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = [
        "sh",
        "-c",
        "echo hello from $(hostname), pid $$, uid $(id -u); ls /; exit 3",
    ]
    config["hostname"] = "ordinary"
    config_path.write_text(json.dumps(config, indent=2))
    demo.show([*demo.rune, "run", "--bundle", str(bundle), "ordinary"], expected=3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare_bundle(demo: Demo, image: Path, tag: str, name: str) -> Path:
    """Unpack the image into a bundle (as ctr would), with the service's socket directory
    and the host's sim root (public) bind-mounted, and the container's root read-only."""
    from inclavare.oci.image import unpack_to_bundle

    bundle = demo.directory / name
    config = unpack_to_bundle(image, tag, bundle)
    sockets = bundle / "eaa"
    sockets.mkdir()
    config["process"]["terminal"] = False
    config["process"]["args"] = [
        *config["process"]["args"][:4],
        "--listen",
        "unix:///run/eaa/service.sock",
        "--allow-sim",
        "--roots",
        "/run/inclavare/sim-root-ca.pem",
    ]
    config["root"]["readonly"] = True
    config["mounts"] += [
        {
            "destination": "/run/eaa",
            "type": "bind",
            "source": str(sockets),
            "options": ["rbind", "rw"],
        },
        {
            "destination": "/run/inclavare/sim-root-ca.pem",
            "type": "bind",
            "source": str(demo.directory / "sim" / "root-ca.pem"),
            "options": ["rbind", "ro"],
        },
    ]
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {path} did not appear within {timeout:g} s")
        time.sleep(0.05)


def start_inclavared(demo: Demo, port: int, enclave_socket: Path) -> None:
    log = demo.directory / "inclavared.log"
    command = [
        INCLAVARED,
        "--listen",
        f"tcp://127.0.0.1:{port}",
        "--connect",
        f"unix://{enclave_socket}",
        "--attester",
        "sim",
        "--allow-sim",
        "--metrics",
        "127.0.0.1:0",
    ]
    print(
        f"   $ {shlex.join(command).replace(INCLAVARED, 'inclavared')}".replace(
            str(demo.directory), "$DEMO"
        )
        + " &"
    )
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
    demo.daemons.append(process)
    deadline = time.monotonic() + 30
    while '"event": "ready"' not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"demo: inclavared did not start: {log.read_text()}")
        time.sleep(0.05)
    for line in log.read_text().splitlines():
        print(f"     | {line.replace(str(demo.directory), '$DEMO')}")


def story(demo: Demo) -> None:
    from inclavare.eaa import service_image

    work = demo.directory
    os.environ["INCLAVARE_SIM_DIR"] = str(work / "sim")  # the demo's own sim platform

    demo.step(
        "Build the image of a small confidential service",
        "the attestation service and the Python running it, found by running it once, "
        "plus busybox-static; an ordinary OCI image layout",
    )
    started = time.perf_counter()
    rootfs = work / "service-rootfs"
    image = service_image.build_rootfs(rootfs)
    service_image.write_layout(rootfs, work / "image", "plain")
    print(
        f"     {image.files} files, {image.size / 1e6:.1f} MB -> $DEMO/image:plain "
        f"[{(time.perf_counter() - started) * 1000:.0f} ms]"
    )

    demo.step(
        "enclave-sign convert-image: the image becomes a sim enclave image",
        "every file under /usr and /opt/inclavare is measured into MRENCLAVE and signed "
        "(SGX SIGSTRUCT, RSA-3072 e=3); the signature is a new layer",
    )
    key = work / "vendor-key.pem"
    demo.show([ENCLAVE_SIGN, "genkey", str(key)])
    trusted = [item for path in service_image.TRUSTED_PATHS for item in ("--trusted", path)]
    demo.show(
        [
            ENCLAVE_SIGN,
            "convert-image",
            f"{work}/image:plain",
            f"{work}/image:enclave",
            "--key",
            str(key),
            *trusted,
        ]
    )

    demo.step(
        "shelter mrverify: the reference values, from the image alone",
        "what a genuine launch of this image must report; written as the policy the "
        "verifier will hold (allowing simulated evidence, for this demo only)",
    )
    policy = work / "policy.toml"
    demo.show(
        [
            SHELTER,
            "mrverify",
            "--image",
            f"{work}/image:enclave",
            "--key",
            str(key),
            "--policy-out",
            str(policy),
            "--allow-sim",
        ],
        skip=r"^\s*[0-9a-f]{64}\s+/",
    )

    demo.step(
        "rune run -d: the enclave container",
        "the launch check re-measures every trusted file; the init-runelet runs the "
        "service from sealed memory and answers its quote requests (sim: no protection "
        "against the host's root)",
    )
    bundle = prepare_bundle(demo, work / "image", "enclave", "enclave")
    demo.run_detached(bundle, "confidential")
    wait_for(bundle / "eaa" / "service.sock")

    demo.step(
        "inclavared: the node daemon between verifiers and the container",
        "mutual Enclave-TLS to the enclave: it verifies the enclave's evidence itself, "
        "and attests itself to verifiers",
    )
    port = free_port()
    start_inclavared(demo, port, bundle / "eaa" / "service.sock")

    demo.step(
        "shelter remoteattestation: verify both evidences for a fresh nonce",
        "inclavared's and the enclave's evidence, checked here against the policy; the "
        "secret is sealed to the enclave's attested key, inclavared cannot read it",
    )
    secret = work / "db-password"
    secret.write_text("correct horse battery staple\n")
    address = f"tcp://127.0.0.1:{port}"
    demo.show(
        [
            SHELTER,
            "remoteattestation",
            "--addr",
            address,
            "--policy",
            str(policy),
            "--allow-sim",
            "--secret",
            f"db-password={secret}",
        ]
    )
    print("   Without --allow-sim, simulated evidence is refused:")
    demo.show(
        [SHELTER, "remoteattestation", "--addr", address, "--policy", str(policy)], expected=1
    )

    demo.step(
        "A tampered copy, unsigned: the service's code changed inside the image",
        "the launch check finds the changed file and refuses to start it",
    )
    tampered = prepare_bundle(demo, work / "image", "enclave", "tampered")
    script = tampered / "rootfs" / service_image.ENTRY_SCRIPT.lstrip("/")
    script.write_text(script.read_text() + "print('leaking secrets')\n")
    output = demo.run_detached(tampered, "tampered", expected=1)
    assert "differs from the signed measurement" in output

    demo.step(
        "The same tampered copy, re-signed with someone else's key",
        "it launches, as any enclave would, but its MRENCLAVE and MRSIGNER are not the "
        "reference values: shelter rejects it and says why",
    )
    other_key = work / "attacker-key.pem"
    demo.show([ENCLAVE_SIGN, "genkey", str(other_key)], quiet=True)
    demo.show([ENCLAVE_SIGN, "sign", str(tampered), "--key", str(other_key), *trusted])
    demo.run_detached(tampered, "tampered")
    wait_for(tampered / "eaa" / "service.sock")
    other_port = free_port()
    start_inclavared(demo, other_port, tampered / "eaa" / "service.sock")
    demo.show(
        [
            SHELTER,
            "remoteattestation",
            "--addr",
            f"tcp://127.0.0.1:{other_port}",
            "--policy",
            str(policy),
            "--allow-sim",
        ],
        expected=1,
    )


def main() -> int:
    if os.geteuid() != 0:
        print("demo: run as root (containers need namespaces and cgroups)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="inclavare-demo-") as temporary:
        demo = Demo(Path(temporary))
        print(f"demo directory: {temporary} (shown as $DEMO)")
        try:
            ordinary_container(demo)
            story(demo)
        finally:
            demo.step("Clean up", "inclavared stopped by pid, containers deleted, files removed")
            demo.clean_up()
            left = subprocess.run([*demo.rune, "list", "-q"], capture_output=True, text=True)
            print(f"     containers left: {len(left.stdout.split())}")
    print(
        "\nDone. The simulated TEE proves the mechanics only: it gives no protection "
        "against this host's root."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
