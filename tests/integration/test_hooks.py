"""Hooks at the runtime-spec's points, in order, with the state on standard input; and the
spec's failure rules: fatal before the program starts, warnings after."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.integration.conftest import Bundle, LeakCheck, Rune

KINDS = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)


def hook(script: Path, *args: str, timeout: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": "/bin/sh", "args": ["sh", str(script), *args]}
    if timeout is not None:
        entry["timeout"] = timeout
    return entry


def write_recorder(directory: Path) -> Path:
    """A hook that appends its name, the state it read and where it ran, one JSON a line."""
    log = directory / "hooks.log"
    script = directory / "record.sh"
    script.write_text(
        "state=$(cat)\n"
        f'printf \'{{"hook": "%s", "state": %s, "mnt": "%s"}}\\n\' "$1" "$state"'
        f' "$(readlink /proc/self/ns/mnt)" >> {log}\n'
    )
    return script


def read_log(directory: Path) -> list[dict[str, Any]]:
    log = directory / "hooks.log"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_hook_runs_once_in_order_with_the_state(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    """startContainer and createContainer run in the container's namespaces (their path is
    the host's /bin/sh, which busybox provides in the rootfs too)."""
    recorder = write_recorder(tmp_path)
    # createContainer and startContainer run in the container: give them the log and script.
    bundle.config["mounts"].append(
        {"destination": str(tmp_path), "source": str(tmp_path), "options": ["rbind"]}
    )
    bundle.config["hooks"] = {kind: [hook(recorder, kind)] for kind in KINDS}
    bundle.config["annotations"] = {"purpose": "hooks"}
    container_id = leaks.new_id()
    bundle.write()
    rune.detached("create", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    after_create = [entry["hook"] for entry in read_log(tmp_path)]
    assert after_create == ["prestart", "createRuntime", "createContainer"]
    pid = rune.state(container_id)["pid"]
    rune("start", container_id)
    rune.wait_for_status(container_id, "stopped")
    assert [entry["hook"] for entry in read_log(tmp_path)] == [
        *after_create,
        "startContainer",
        "poststart",
    ]
    rune("delete", container_id)
    entries = read_log(tmp_path)
    assert [entry["hook"] for entry in entries] == list(KINDS)
    host_mnt = os.readlink("/proc/self/ns/mnt")
    for entry in entries:
        state = entry["state"]
        assert state["id"] == container_id
        assert state["bundle"] == str(bundle.path)
        assert state["pid"] == pid
        assert state["annotations"] == {"purpose": "hooks"}
        in_container = entry["hook"] in ("createContainer", "startContainer")
        assert (entry["mnt"] != host_mnt) == in_container, entry["hook"]
    statuses = {entry["hook"]: entry["state"]["status"] for entry in entries}
    assert statuses["createRuntime"] == "creating"
    assert statuses["poststop"] == "stopped"


def test_hook_environment_and_arguments(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    out = tmp_path / "env.out"
    bundle.config["hooks"] = {
        "createRuntime": [
            {
                "path": "/bin/sh",
                "args": ["sh", "-c", f'echo "$0 $1 $HOOKVAR $PATH" > {out}', "first", "second"],
                "env": ["HOOKVAR=set", "PATH=/nowhere"],
            }
        ]
    }
    bundle.write()
    rune("run", "-b", str(bundle.path), leaks.new_id())
    assert out.read_text() == "first second set /nowhere\n"


def test_a_failing_create_runtime_hook_aborts_create_and_leaves_nothing(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("echo this hook refuses >&2; exit 3\n")
    bundle.config["hooks"] = {"createRuntime": [hook(script)]}
    bundle.write()
    container_id = leaks.new_id()
    result = rune.detached(
        "create", "-b", str(bundle.path), container_id, output=tmp_path / "o", check=False
    )
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1
    assert "createRuntime hook #0 (/bin/sh) failed: exit status 3: this hook refuses" in errors[0]
    leaks.assert_clean(container_id)


def test_a_failing_create_container_hook_aborts(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    bundle.config["hooks"] = {"createContainer": [{"path": "/bin/false"}]}
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "createContainer hook #0 (/bin/false) failed: exit status 1" in result.stderr
    leaks.assert_clean(container_id)


def test_a_failing_start_container_hook_fails_start(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    bundle.config["hooks"] = {"startContainer": [{"path": "/bin/false"}]}
    bundle.write()
    container_id = leaks.new_id()
    rune.detached("create", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    result = rune("start", container_id, check=False)
    assert result.returncode == 1
    assert "startContainer hook #0 (/bin/false) failed: exit status 1" in result.stderr
    rune.wait_for_status(container_id, "stopped")
    rune("delete", container_id)


def test_poststart_and_poststop_failures_are_warnings(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    bundle.config["hooks"] = {
        "poststart": [{"path": "/bin/false"}],
        "poststop": [{"path": "/bin/false"}],
    }
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id)
    assert result.returncode == 0
    assert "level=warning" in result.stderr
    assert "poststart hook #0 (/bin/false) failed" in result.stderr
    assert "poststop hook #0 (/bin/false) failed" in result.stderr
    leaks.assert_clean(container_id)


def test_a_hook_that_outlives_its_timeout_is_killed(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    script = tmp_path / "slow.sh"
    script.write_text("sleep 30\n")
    bundle.config["hooks"] = {"prestart": [hook(script, timeout=1)]}
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False, timeout=20)
    assert result.returncode == 1
    assert "prestart hook #0 (/bin/sh) timed out after 1s" in result.stderr
    leaks.assert_clean(container_id)


def test_a_hook_that_cannot_be_executed(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["hooks"] = {"prestart": [{"path": "/no/such/hook"}]}
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "prestart hook #0 (/no/such/hook): cannot execute: No such file or directory" in (
        result.stderr
    )
    leaks.assert_clean(container_id)
