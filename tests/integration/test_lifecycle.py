"""The container lifecycle, as runc's callers drive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


def wait_for_file(path: Path, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_create_start_state_delete(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    out = bundle.path / "out"
    bundle.set_args("sh", "-c", "echo started; sleep 30").write()
    pid_file = bundle.path / "pid"
    rune.detached(
        "create",
        "--bundle",
        str(bundle.path),
        "--pid-file",
        str(pid_file),
        container_id,
        output=out,
    )
    state = rune.state(container_id)
    assert state["status"] == "created"
    assert state["id"] == container_id
    assert state["bundle"] == str(bundle.path)
    assert state["rootfs"] == str(bundle.rootfs)
    assert state["pid"] == int(pid_file.read_text())
    assert state["ociVersion"]
    assert state["created"].endswith("Z")
    assert "annotations" not in state
    assert out.read_text() == ""  # the program has not run yet

    rune("start", container_id)
    assert rune.state(container_id)["status"] == "running"
    deadline = time.monotonic() + 5
    while "started" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.read_text() == "started\n"

    refused = rune("delete", container_id, check=False)
    assert refused.returncode == 1
    assert f"cannot delete container {container_id} that is not stopped: running" in (
        refused.stderr
    )
    rune("kill", container_id, "KILL")
    rune.wait_for_status(container_id, "stopped")
    assert rune.state(container_id)["pid"] == 0
    rune("delete", container_id)
    leaks.assert_clean(container_id)
    missing = rune("state", container_id, check=False)
    assert missing.returncode == 1
    assert f'container \\"{container_id}\\" does not exist' in missing.stderr  # text log: quoted


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("exit 3", 3), ("exit 255", 255), ("kill -KILL $$", 128 + 9)],
)
def test_run_returns_the_exit_code(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, script: str, code: int
) -> None:
    container_id = leaks.new_id()
    # pid 1 of a pid namespace cannot kill itself: run this one in the host's pid namespace
    bundle.config["linux"]["namespaces"] = [
        ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "pid"
    ]
    bundle.set_args("sh", "-c", script).write()
    result = rune("run", "--bundle", str(bundle.path), container_id, check=False)
    assert result.returncode == code, result.stderr
    leaks.assert_clean(container_id)  # `run` deletes the container after it exits


def test_run_passes_standard_streams(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.set_args("sh", "-c", "read line; echo got:$line; echo oops >&2").write()
    result = rune("run", "-b", str(bundle.path), leaks.new_id(), stdin=None, input="hello\n")
    assert result.stdout == "got:hello\n"
    assert result.stderr == "oops\n"


def test_run_forwards_signals(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.set_args(
        "sh", "-c", "trap 'echo term; exit 7' TERM; echo ready; while true; do sleep 0.05; done"
    ).write()
    process = subprocess.Popen(
        rune.command("run", "-b", str(bundle.path), leaks.new_id()),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 7
    assert process.stdout.read() == "term\n"


def test_run_detached_and_keep(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.set_args("sleep", "30").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    assert rune.state(container_id)["status"] == "running"
    rune("kill", container_id, "9")
    rune.wait_for_status(container_id, "stopped")
    rune("delete", container_id)

    kept = leaks.new_id()
    bundle.set_args("true").write()
    rune("run", "--keep", "-b", str(bundle.path), kept)
    assert rune.state(kept)["status"] == "stopped"
    rune("delete", kept)


def test_start_refuses_when_not_created(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.set_args("sleep", "30").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    again = rune("start", container_id, check=False)
    assert again.returncode == 1
    assert "cannot start an already running container" in again.stderr
    rune("delete", "--force", container_id)


def test_start_reports_a_container_that_died(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.write()
    rune.detached("create", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    os.kill(rune.state(container_id)["pid"], signal.SIGKILL)
    rune.wait_for_status(container_id, "stopped")
    result = rune("start", container_id, check=False)
    assert result.returncode == 1
    assert "cannot start a container that has stopped" in result.stderr
    rune("delete", container_id)


def test_delete_of_a_created_container(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.write()
    rune.detached("create", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    rune("delete", container_id)
    leaks.assert_clean(container_id)


def test_delete_force_of_a_running_container(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.set_args("sh", "-c", "sleep 30 & sleep 30 & sleep 30").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    rune("delete", "-f", container_id)
    leaks.assert_clean(container_id)


def test_delete_force_of_an_unknown_container_succeeds(rune: Rune) -> None:
    assert rune("delete", "--force", "never-existed").returncode == 0
    plain = rune("delete", "never-existed", check=False)
    assert plain.returncode == 1
    assert "does not exist" in plain.stderr


def test_kill(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.config["root"]["readonly"] = False
    bundle.set_args(
        "sh",
        "-c",
        "trap 'echo usr1 >> /tmp/log' USR1; touch /tmp/ready; while true; do sleep 0.05; done",
    ).write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    wait_for_file(bundle.rootfs / "tmp" / "ready")
    rune("kill", container_id, "SIGUSR1")
    log = bundle.rootfs / "tmp" / "log"
    wait_for_file(log)
    assert log.read_text() == "usr1\n"
    rune("kill", container_id)  # SIGTERM, which a pid 1 without a handler ignores
    time.sleep(0.2)
    assert rune.state(container_id)["status"] == "running"
    rune("kill", "--all", container_id, "KILL")
    rune.wait_for_status(container_id, "stopped")
    stopped = rune("kill", container_id, "KILL", check=False)
    assert stopped.returncode == 1
    assert "container not running" in stopped.stderr
    bad = rune("kill", container_id, "SIGNOPE", check=False)
    assert bad.returncode == 1 and "unknown signal 'SIGNOPE'" in bad.stderr
    rune("delete", container_id)


def test_kill_all_reaches_every_process(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.config["linux"]["namespaces"] = [
        ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "pid"
    ]
    bundle.set_args("sh", "-c", "sleep 30 & sleep 30 & wait").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    time.sleep(0.2)
    rune("kill", "-a", container_id, "KILL")
    rune.wait_for_status(container_id, "stopped")
    rune("delete", container_id)
    leaks.assert_clean(container_id)


def test_list(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    assert rune("list").stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert json.loads(rune("list", "--format", "json").stdout) == []
    first, second = leaks.new_id(), leaks.new_id()
    bundle.set_args("sleep", "30").write()
    rune.detached("create", "-b", str(bundle.path), first, output=bundle.path / "o")
    rune.detached("run", "-d", "-b", str(bundle.path), second, output=bundle.path / "o")
    listed = json.loads(rune("list", "-f", "json").stdout)
    assert {(c["id"], c["status"]) for c in listed} == {(first, "created"), (second, "running")}
    assert all(c["owner"] == "root" and c["pid"] > 0 for c in listed)
    table = rune("list").stdout.splitlines()
    assert len(table) == 3
    assert table[1].split()[:3] == [min(first, second), str(listed[0]["pid"]), listed[0]["status"]]
    assert sorted(rune("list", "-q").stdout.split()) == sorted([first, second])
    bad = rune("list", "--format", "yaml", check=False)
    assert bad.returncode == 1 and "invalid format option 'yaml'" in bad.stderr
    for container_id in (first, second):
        rune("delete", "-f", container_id)


def test_annotations_appear_in_state(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    container_id = leaks.new_id()
    bundle.config["annotations"] = {"org.example.key": "value"}
    bundle.write()
    rune.detached("create", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    assert rune.state(container_id)["annotations"] == {"org.example.key": "value"}
    rune("delete", container_id)


def test_state_has_the_fields_of_runcs(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    container_id = leaks.new_id()
    bundle.set_args("sleep", "30").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=bundle.path / "o")
    ours = rune.state(container_id)
    runc_root = tmp_path / "runc-state"
    with open(bundle.path / "o2", "wb") as sink:
        subprocess.run(
            ["runc", "--root", str(runc_root), "run", "-d", "-b", str(bundle.path), "r1"],
            check=True,
            stdout=sink,
            stdin=subprocess.DEVNULL,
        )
    try:
        theirs = json.loads(
            subprocess.run(
                ["runc", "--root", str(runc_root), "state", "r1"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    finally:
        subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", "r1"], check=True)
    assert list(ours) == list(theirs)
    assert ours["status"] == theirs["status"] == "running"
    rune("delete", "-f", container_id)


def test_concurrent_creates(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    """Different ids side by side all work; the same id twice fails once."""
    bundle.write()
    ids = [leaks.new_id() for _ in range(6)]
    duplicate = ids[0]
    processes = []
    for index, container_id in enumerate([*ids, duplicate]):
        sink = open(bundle.path / f"out-{index}", "wb")  # noqa: SIM115
        errors = open(bundle.path / f"err-{index}", "wb")  # noqa: SIM115
        command = rune.command("create", "-b", str(bundle.path), container_id)
        process = subprocess.Popen(command, stdout=sink, stderr=errors, stdin=subprocess.DEVNULL)
        processes.append((process, sink, errors, bundle.path / f"err-{index}"))
    failures = []
    for process, sink, errors, error_path in processes:
        process.wait(timeout=60)
        sink.close()
        errors.close()
        if process.returncode != 0:
            failures.append(error_path.read_text())
    assert len(failures) == 1, failures
    assert f"container with id exists: {duplicate}" in failures[0]
    for container_id in ids:
        assert rune.state(container_id)["status"] == "created"
        rune("delete", container_id)


def test_containers_sharing_a_parent_cgroup(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    """The first container made the parent of both cgroups: deleting it while the second
    runs keeps the parent (and does not wait for it); deleting the second removes its own."""
    parent = f"/{leaks.new_id()}"
    first, second = leaks.new_id(), leaks.new_id()
    bundle.set_args("sleep", "300")
    for container_id in (first, second):
        bundle.config["linux"]["cgroupsPath"] = f"{parent}/{container_id}"
        bundle.write()
        rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    started = time.monotonic()
    rune("delete", "--force", first)
    assert time.monotonic() - started < 3
    assert os.path.isdir(f"/sys/fs/cgroup/pids{parent}/{second}")
    assert not os.path.exists(f"/sys/fs/cgroup/pids{parent}/{first}")
    rune("delete", "--force", second)
    assert not os.path.exists(f"/sys/fs/cgroup/pids{parent}/{second}")
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        shared = f"/sys/fs/cgroup/{hierarchy}{parent}"
        if os.path.isdir(shared):
            os.rmdir(shared)  # made by the first container, which could not remove it then
