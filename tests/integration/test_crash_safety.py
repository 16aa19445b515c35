"""Killing `rune create` with SIGKILL at any point, then `rune delete --force`, leaves no
mount, cgroup, process or state behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


def wait_until_clean(leaks: LeakCheck, container_id: str, timeout: float = 5) -> None:
    """Processes of an abandoned create notice rune is gone and exit: give them a moment."""
    deadline = time.monotonic() + timeout
    while leaks.leftovers(container_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    leaks.assert_clean(container_id)


def kill_create_after(
    rune: Rune, bundle: Bundle, container_id: str, delay: float, output: Path
) -> None:
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            rune.command("create", "-b", str(bundle.path), container_id),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.parametrize("delay_ms", [0, 5, 10, 15, 20, 25, 30, 40, 50, 70])
def test_sigkill_during_create_then_delete_force(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, delay_ms: int
) -> None:
    """The delays sweep create from start-up to the end (it takes about 30-40 ms here)."""
    bundle.set_args("sleep", "30").write()
    container_id = leaks.new_id()
    kill_create_after(rune, bundle, container_id, delay_ms / 1000, tmp_path / "out")
    rune("delete", "--force", container_id)
    wait_until_clean(leaks, container_id)


@pytest.mark.parametrize("kind", ["createRuntime", "createContainer"])
def test_sigkill_while_a_hook_runs(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, kind: str
) -> None:
    """A deterministic point: rune (createRuntime) or the container's init (createContainer)
    is running a hook that waits until the test has killed rune."""
    entered = tmp_path / "entered"
    release = tmp_path / "release"
    bundle.config["hooks"] = {
        kind: [
            {
                "path": "/bin/sh",
                "args": [
                    "sh",
                    "-c",
                    f"touch {entered}; while [ ! -e {release} ]; do sleep 0.02; done",
                ],
            }
        ]
    }
    bundle.set_args("sleep", "30").write()
    container_id = leaks.new_id()
    with open(tmp_path / "out", "wb") as sink:
        process = subprocess.Popen(
            rune.command("create", "-b", str(bundle.path), container_id),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
        deadline = time.monotonic() + 10
        while not entered.exists():
            assert time.monotonic() < deadline, "the hook never ran"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert (rune.root / container_id).exists()
    assert rune.state(container_id)["status"] == "creating"
    rune("delete", "--force", container_id)
    release.touch()  # let the orphaned hook finish
    wait_until_clean(leaks, container_id)


def test_sigkill_after_create_returned(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    """Killing the container's init itself while created: delete cleans up."""
    bundle.set_args("sleep", "30").write()
    container_id = leaks.new_id()
    rune.detached("create", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    os.kill(rune.state(container_id)["pid"], signal.SIGKILL)
    rune("delete", "--force", container_id)
    wait_until_clean(leaks, container_id)
