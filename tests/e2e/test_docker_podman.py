"""dockerd and podman, with rune as the runtime."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Dockerd, Podman

pytestmark = pytest.mark.daemon


def test_docker_run_exec_stop_rm(dockerd: Dockerd, image_archive: tuple[object, str]) -> None:
    image = image_archive[1]
    once = dockerd.docker(
        "run",
        "--rm",
        "--runtime",
        "rune",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        "echo hello from docker; exit 3",
        check=False,
    )
    assert once.returncode == 3, once.stderr
    assert once.stdout == "hello from docker\n"

    dockerd.docker(
        "run",
        "-d",
        "--name",
        "long",
        "--runtime",
        "rune",
        "--network",
        "none",
        image,
        "sleep",
        "300",
    )
    inspected = dockerd.docker("inspect", "--format", "{{.HostConfig.Runtime}}", "long").stdout
    assert inspected.strip() == "rune"
    executed = dockerd.docker("exec", "long", "sh", "-c", "echo inside; exit 4", check=False)
    assert (executed.returncode, executed.stdout) == (4, "inside\n")
    as_user = dockerd.docker("exec", "--user", "1000", "long", "id", "-u").stdout
    assert as_user.strip() == "1000"
    top = dockerd.docker("top", "long").stdout.splitlines()
    assert len(top) == 2 and top[1].split()[-2:] == ["sleep", "300"]
    dockerd.docker("stop", "--time", "1", "long")
    state = dockerd.docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "long")
    assert state.stdout.split() == ["exited", "137"]
    dockerd.docker("rm", "long")
    assert dockerd.docker("ps", "-aq").stdout.strip() == ""


def test_docker_limits_update_pause(dockerd: Dockerd, image_archive: tuple[object, str]) -> None:
    """Docker's default seccomp profile, memory and pids limits, `docker update` (rune
    update) and `docker pause` (rune pause)."""
    dockerd.docker(
        "run",
        "-d",
        "--name",
        "limited",
        "--runtime",
        "rune",
        "--network",
        "none",
        "--memory",
        "64m",
        "--pids-limit",
        "30",
        image_archive[1],
        "sleep",
        "300",
    )

    def inside(path: str) -> str:
        return dockerd.docker("exec", "limited", "cat", path).stdout.strip()

    assert inside("/sys/fs/cgroup/pids/pids.max") == "30"
    assert inside("/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(64 * 1024 * 1024)
    status = dockerd.docker("exec", "limited", "cat", "/proc/self/status").stdout
    assert "Seccomp:\t2" in status
    dockerd.docker(
        "update", "--memory", "96m", "--memory-swap", "192m", "--pids-limit", "40", "limited"
    )
    assert inside("/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(96 * 1024 * 1024)
    assert inside("/sys/fs/cgroup/pids/pids.max") == "40"
    dockerd.docker("pause", "limited")
    paused = dockerd.docker("inspect", "--format", "{{.State.Status}}", "limited").stdout
    assert paused.strip() == "paused"
    dockerd.docker("unpause", "limited")
    dockerd.docker("rm", "--force", "limited")


def test_docker_runs_and_execs_an_enclave_container(
    dockerd: Dockerd, image_archive: tuple[object, str]
) -> None:
    """The architecture's first flow: `docker run --runtime rune -e ENCLAVE_TYPE=sim ...`."""
    enclave = ["-e", "ENCLAVE_TYPE=sim", "-e", "ENCLAVE_RUNTIME_PATH=builtin:native"]
    once = dockerd.docker(
        "run",
        "--rm",
        "--runtime",
        "rune",
        "--network",
        "none",
        *enclave,
        image_archive[1],
        "sh",
        "-c",
        "echo hello from a sim enclave; exit 5",
        check=False,
    )
    assert (once.returncode, once.stdout) == (5, "hello from a sim enclave\n"), once.stderr
    dockerd.docker(
        "run",
        "-d",
        "--name",
        "enclave",
        "--runtime",
        "rune",
        "--network",
        "none",
        *enclave,
        image_archive[1],
        "sleep",
        "300",
    )
    executed = dockerd.docker(
        "exec", "enclave", "sh", "-c", "echo inside the enclave; exit 3", check=False, timeout=60
    )
    assert (executed.returncode, executed.stdout) == (3, "inside the enclave\n"), executed.stderr
    dockerd.docker("rm", "--force", "enclave")


def test_docker_reports_runtime_errors(dockerd: Dockerd, image_archive: tuple[object, str]) -> None:
    failed = dockerd.docker(
        "run",
        "--rm",
        "--runtime",
        "rune",
        "--network",
        "none",
        image_archive[1],
        "no-such-program",
        check=False,
    )
    assert failed.returncode != 0
    assert "executable file not found in $PATH" in failed.stderr


def test_podman_run_exec_stop_rm(podman: Podman, image_archive: tuple[object, str]) -> None:
    image = image_archive[1]
    once = podman.podman(
        "run",
        "--rm",
        "--network",
        "none",
        *Podman.LIMITS,
        image,
        "sh",
        "-c",
        "echo hello from podman; exit 3",
        check=False,
    )
    assert once.returncode == 3, once.stderr
    assert once.stdout == "hello from podman\n"

    podman.podman(
        "run", "-d", "--name", "long", "--network", "none", *Podman.LIMITS, image, "sleep", "300"
    )
    executed = podman.podman("exec", "long", "sh", "-c", "echo inside; exit 4", check=False)
    assert (executed.returncode, executed.stdout) == (4, "inside\n")
    assert podman.podman("exec", "--user", "1000", "long", "id", "-u").stdout.strip() == "1000"
    podman.podman("stop", "--time", "1", "long")
    status = podman.podman("inspect", "--format", "{{.State.Status}}", "long").stdout
    assert status.strip() == "exited"
    podman.podman("rm", "long")
    assert podman.podman("ps", "-aq").stdout.strip() == ""


def test_podman_with_a_terminal(podman: Podman, image_archive: tuple[object, str]) -> None:
    result = podman.podman(
        "run", "--rm", "-t", "--network", "none", *Podman.LIMITS, image_archive[1], "tty"
    )
    assert result.stdout.strip().startswith("/dev/pts/")
