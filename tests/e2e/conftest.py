"""Private daemons from Debian's packages (containerd, dockerd, podman), each with its own
root, state and socket under a temporary directory, stopped by pid at the end; and a local
image built from busybox-static."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemons import (
    Containerd,
    processes_mentioning,
    start_containerd,
    stop_daemon,
    wait_for_socket,
)
from tests.e2e.images import build_busybox_archive
from tests.integration.conftest import rune_path


@pytest.fixture(scope="session", autouse=True)
def _requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests start daemons and need root")
    if not os.access(rune_path(), os.X_OK):
        pytest.skip(f"rune is not installed at {rune_path()}: run `make install`")


@pytest.fixture(scope="session")
def rune_program() -> str:
    return rune_path()


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("image") / "busybox.tar"
    reference = build_busybox_archive(path)
    return path, reference


@pytest.fixture(scope="module")
def containerd(
    tmp_path_factory: pytest.TempPathFactory, image_archive: tuple[Path, str]
) -> Iterator[Containerd]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed: run `make install`")
    daemon = start_containerd(tmp_path_factory.mktemp("containerd"))
    try:
        daemon.ctr("images", "import", str(image_archive[0]))
        yield daemon
        daemon.remove_everything()
    finally:
        daemon.stop()


class Dockerd:
    """A private dockerd with the runtime `rune` added (`--add-runtime rune=<path>`)."""

    def __init__(self, directory: Path, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process
        self.socket = directory / "docker.sock"

    def docker(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKER_CLIENT, "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.returncode}: {result.stderr}")
        return result


# Debian's docker.io client, which matches its daemon (another client may be first on PATH).
DOCKER_CLIENT = "/usr/bin/docker"


@pytest.fixture(scope="module")
def dockerd(
    tmp_path_factory: pytest.TempPathFactory, image_archive: tuple[Path, str], rune_program: str
) -> Iterator[Dockerd]:
    if shutil.which("dockerd") is None or not os.access(DOCKER_CLIENT, os.X_OK):
        pytest.skip("docker.io is not installed: run `make install`")
    directory = tmp_path_factory.mktemp("dockerd")
    log = directory / "dockerd.log"
    command = [
        "dockerd",
        "--data-root",
        f"{directory}/data",
        "--exec-root",
        f"{directory}/exec",
        "--pidfile",
        f"{directory}/docker.pid",
        "--host",
        f"unix://{directory}/docker.sock",
        # no network set-up on the host: containers run with --network none
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--storage-driver=vfs",
        "--add-runtime",
        f"rune={rune_program}",
        "--containerd-namespace",
        "rune-e2e-docker",
        "--containerd-plugins-namespace",
        "rune-e2e-docker-plugins",
    ]
    # rune, started by the daemon's shims, keeps the sim TEE's platform in the test's directory
    environment = dict(os.environ, INCLAVARE_SIM_DIR=f"{directory}/sim")
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, env=environment)
    daemon = Dockerd(directory, process)
    try:
        wait_for_socket(daemon.socket, process, log)
        daemon.docker("load", "--input", str(image_archive[0]))
        yield daemon
        for container in daemon.docker("ps", "-aq", check=False).stdout.split():
            daemon.docker("rm", "--force", container, check=False)
    finally:
        stop_daemon(process, directory)


class Podman:
    """podman with rune as its OCI runtime, storage and state in a temporary directory."""

    # podman's default rlimits (nofile and nproc 1048576) exceed what root may set on
    # machines whose root lacks CAP_SYS_RESOURCE, as on this project's CI machines.
    LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

    def __init__(self, directory: Path, rune_program: str) -> None:
        self.directory = directory
        self.global_flags = [
            "--root",
            f"{directory}/root",
            "--runroot",
            f"{directory}/run",
            "--tmpdir",
            f"{directory}/tmp",
            "--storage-driver",
            "vfs",
            "--runtime",
            rune_program,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def podman(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *self.global_flags, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.returncode}: {result.stderr}")
        return result


@pytest.fixture(scope="module")
def podman(
    tmp_path_factory: pytest.TempPathFactory, image_archive: tuple[Path, str], rune_program: str
) -> Iterator[Podman]:
    if shutil.which("podman") is None or shutil.which("conmon") is None:
        pytest.skip("podman is not installed: run `make install`")
    directory = tmp_path_factory.mktemp("podman")
    client = Podman(directory, rune_program)
    try:
        client.podman("load", "--input", str(image_archive[0]))
        yield client
        client.podman("rm", "--all", "--force", check=False)
        client.podman("system", "reset", "--force", check=False)
    finally:
        for pid in processes_mentioning(str(directory)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
