"""The attestation chain for tests and benchmarks: the enclave service image run by rune as a
sim enclave container, and inclavared as a process of its own.

The service listens on a unix socket in a host directory bind-mounted into the container
(the container keeps its own network namespace); the host's sim root, which the service
needs to judge inclavared's sim evidence, is bind-mounted read-only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inclavare.cli.enclave_sign import main as enclave_sign
from inclavare.eaa import service_image
from inclavare.oci.default_spec import default_spec
from inclavare.tee.sim.store import root_ca_path

SOCKET_DIR_IN_CONTAINER = "/run/eaa"
ROOT_CA_IN_CONTAINER = "/run/inclavare/sim-root-ca.pem"


def copy_rootfs(source: Path, target: Path) -> None:
    """A copy sharing the files' data through hard links (cheap); tests that change a file
    replace it instead of writing into it, and the container's root is read-only."""
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)


@dataclass
class ServiceEnclave:
    """A bundle of the enclave service image, signed, and the container running it."""

    bundle: Path
    key: Path
    sim_dir: Path
    container_id: str = ""
    signed: dict[str, str] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    @property
    def socket_dir(self) -> Path:
        return self.bundle / "eaa"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "service.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def configure(self, *service_args: str) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        config: dict[str, Any] = default_spec()
        config["process"]["terminal"] = False
        listen = f"unix://{SOCKET_DIR_IN_CONTAINER}/service.sock"
        config["process"]["args"] = [
            *service_image.process_args(listen),
            "--allow-sim",
            "--roots",
            ROOT_CA_IN_CONTAINER,
            *service_args,
        ]
        config["process"]["env"] += [
            "ENCLAVE_TYPE=sim",
            "ENCLAVE_RUNTIME_PATH=builtin:native",
        ]
        config["root"]["readonly"] = True
        config["mounts"] += [
            {
                "destination": SOCKET_DIR_IN_CONTAINER,
                "type": "bind",
                "source": str(self.socket_dir),
                "options": ["rbind", "rw"],
            },
            {
                "destination": ROOT_CA_IN_CONTAINER,
                "type": "bind",
                "source": str(root_ca_path(self.sim_dir)),
                "options": ["rbind", "ro"],
            },
        ]
        (self.bundle / "config.json").write_text(json.dumps(config, indent=2))

    def sign(self, key: Path | None = None) -> dict[str, str]:
        """Sign with enclave-sign (trusted: everything under /usr and /opt/inclavare)."""
        arguments = ["sign", str(self.bundle), "--key", str(key or self.key)]
        for path in service_image.TRUSTED_PATHS:
            arguments += ["--trusted", path]
        assert enclave_sign(arguments) == 0
        measured = self.measure()
        self.signed = measured
        return measured

    def measure(self) -> dict[str, str]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "inclavare.cli.enclave_sign",
                "verify",
                str(self.bundle),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        document: dict[str, str] = json.loads(result.stdout)
        return document

    def policy(self, path: Path, **overrides: object) -> Path:
        """A policy with this enclave's reference values (as `shelter mrverify` writes)."""
        document: dict[str, object] = {
            "mrenclave": [self.signed["mrenclave"]],
            "mrsigner": [self.signed["mrsigner"]],
            "allow_debug": False,
            "allow_simulated": True,
        }
        document.update(overrides)
        path.write_text(json.dumps(document))
        return path

    def start(self, rune: Any, container_id: str, timeout: float = 30) -> None:
        self.container_id = container_id
        output = self.bundle / f"{container_id}.out"
        rune.detached("run", "-d", "-b", str(self.bundle), container_id, output=output)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if time.monotonic() > deadline:
                errors = output.with_name(output.name + ".err").read_text()
                raise AssertionError(f"the enclave service did not start: {errors[-2000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        errors = self.bundle / f"{self.container_id}.out.err"
        return errors.read_text() if errors.exists() else ""


@dataclass
class InclavaredProcess:
    """inclavared started with `python -m`, its JSON log in a file, stopped by pid."""

    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    metrics: str = ""
    tunnel: str = ""

    @classmethod
    def start(
        cls, directory: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30
    ) -> InclavaredProcess:
        log_path = directory / f"inclavared-{time.monotonic_ns()}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "inclavare.cli.inclavared", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        daemon = cls(process, log_path)
        deadline = time.monotonic() + timeout
        while True:
            events = daemon.events()
            for event in events:
                if event["event"] == "listening" and not daemon.address:
                    daemon.address = str(event["address"])
                if event["event"] == "metrics":
                    daemon.metrics = str(event["address"])
                if event["event"] == "tunnel-listening":
                    daemon.tunnel = str(event["address"])
            if any(event["event"] == "ready" for event in events):
                return daemon
            if process.poll() is not None:
                raise AssertionError(f"inclavared exited {process.returncode}: {daemon.text()}")
            if time.monotonic() > deadline:
                daemon.stop()
                raise AssertionError(f"inclavared did not become ready: {daemon.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def shelter(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inclavare.cli.shelter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )
