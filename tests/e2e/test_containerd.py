"""containerd 1.6 with its runc v2 shim pointed at rune (`ctr run --runc-binary`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.daemons import Containerd

pytestmark = pytest.mark.daemon


def run_detached(containerd: Containerd, image: str, rune: str, name: str, *command: str) -> None:
    containerd.ctr("run", "-d", "--runc-binary", rune, image, name, *command)


def test_run_returns_the_exit_code_and_output(
    containerd: Containerd, image_archive: tuple[Path, str], rune_program: str
) -> None:
    image = image_archive[1]
    result = containerd.ctr(
        "run",
        "--rm",
        "--runc-binary",
        rune_program,
        image,
        "once",
        "sh",
        "-c",
        "echo hello from rune; exit 3",
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hello from rune\n"
    assert "once" not in containerd.ctr("containers", "ls", "-q").stdout.split()


def test_exec_ps_kill_delete(
    containerd: Containerd, image_archive: tuple[Path, str], rune_program: str
) -> None:
    run_detached(containerd, image_archive[1], rune_program, "long", "sleep", "300")
    tasks = containerd.ctr("tasks", "ls").stdout
    assert "long" in tasks and "RUNNING" in tasks
    executed = containerd.ctr(
        "tasks",
        "exec",
        "--exec-id",
        "probe",
        "long",
        "sh",
        "-c",
        "echo inside; exit 4",
        check=False,
    )
    assert executed.returncode == 4
    assert executed.stdout == "inside\n"
    listed = containerd.ctr("tasks", "ps", "long").stdout.splitlines()
    assert listed[0].split() == ["PID", "INFO"]
    assert len(listed) == 2  # sleep, and the finished exec is gone
    containerd.ctr("tasks", "kill", "--signal", "KILL", "long")
    deadline = time.monotonic() + 10
    while "STOPPED" not in containerd.ctr("tasks", "ls").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    containerd.ctr("tasks", "delete", "long")
    containerd.ctr("containers", "delete", "long")
    assert containerd.ctr("containers", "ls", "-q").stdout.strip() == ""


def test_a_failure_reaches_ctr(
    containerd: Containerd, image_archive: tuple[Path, str], rune_program: str
) -> None:
    """rune's error, read by the shim from rune's JSON log, is what ctr shows."""
    result = containerd.ctr(
        "run",
        "--rm",
        "--runc-binary",
        rune_program,
        image_archive[1],
        "broken",
        "no-such-program",
        check=False,
    )
    assert result.returncode != 0
    assert 'exec: \\"no-such-program\\": executable file not found in $PATH' in result.stderr or (
        "executable file not found" in result.stderr
    )
    containerd.ctr("containers", "delete", "broken", check=False)


def test_metrics_come_from_the_containers_cgroup(
    containerd: Containerd, image_archive: tuple[Path, str], rune_program: str
) -> None:
    run_detached(containerd, image_archive[1], rune_program, "measured", "sleep", "300")
    metrics = containerd.ctr("tasks", "metrics", "--format", "json", "measured").stdout
    data = json.loads(metrics)
    assert data["pids"]["current"] == 1
    containerd.ctr("tasks", "kill", "--signal", "KILL", "measured")
    containerd.ctr("tasks", "delete", "--force", "measured", check=False)
    containerd.ctr("containers", "delete", "measured")


def test_pause_resume_limits_and_seccomp(
    containerd: Containerd, image_archive: tuple[Path, str], rune_program: str
) -> None:
    """ctr's default seccomp profile and a memory limit, as containerd writes them into
    config.json; pause and resume through the shim."""
    containerd.ctr(
        "run",
        "-d",
        "--runc-binary",
        rune_program,
        "--seccomp",
        "--memory-limit",
        str(48 * 1024 * 1024),
        "--cpus",
        "0.5",
        image_archive[1],
        "limited",
        "sleep",
        "300",
    )
    status = containerd.ctr(
        "tasks", "exec", "--exec-id", "status", "limited", "cat", "/proc/self/status"
    ).stdout
    assert "Seccomp:\t2" in status  # the profile is loaded in exec'd processes too
    metrics = json.loads(containerd.ctr("tasks", "metrics", "--format", "json", "limited").stdout)
    assert metrics["memory"]["usage"]["limit"] == 48 * 1024 * 1024
    containerd.ctr("tasks", "pause", "limited")
    assert "PAUSED" in containerd.ctr("tasks", "ls").stdout
    containerd.ctr("tasks", "resume", "limited")
    assert "RUNNING" in containerd.ctr("tasks", "ls").stdout
    containerd.ctr("tasks", "kill", "--signal", "KILL", "limited")
    containerd.ctr("tasks", "delete", "--force", "limited", check=False)
    containerd.ctr("containers", "delete", "limited")
