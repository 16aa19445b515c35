"""Bad input: one clear line on standard error, a non-zero exit, nothing left behind."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


def assert_one_line_error(stderr: str, expected: str) -> None:
    """One line in runc's text log format, whose message contains expected."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    match = re.fullmatch(r'time="[0-9T:Z-]+" level=error msg=(".*")', lines[0])
    assert match is not None, stderr
    assert expected in json.loads(match.group(1)), stderr


def run_fails(rune: Rune, bundle: Bundle, leaks: LeakCheck, expected: str) -> None:
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1, result.stdout
    assert_one_line_error(result.stderr, expected)
    leaks.assert_clean(container_id)
    assert not (rune.root / container_id).exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "config.json: invalid JSON: empty document"),
        ("{not json", "config.json: invalid JSON"),
        ("[]", "config.json: must be an object, got a list"),
        ('{"ociVersion": "1.0.2"}', "config.json: root: required"),
    ],
)
def test_malformed_config(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, text: str, expected: str
) -> None:
    (bundle.path / "config.json").write_text(text)
    run_fails(rune, bundle, leaks, expected)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"process": None}, "config.json: process: required"),
        ({"process.args": []}, "config.json: process.args: must not be empty"),
        ({"process.user.uid": "0"}, "process.user.uid: must be an integer, got a string"),
        ({"mounts": {"a": 1}}, "config.json: mounts: must be a list, got an object"),
        ({"linux.namespaces": [{"type": "pid"}]}, "a mount namespace is required"),
        (
            {"process.capabilities.effective": ["CAP_MAKE_COFFEE"]},
            "unknown capability 'CAP_MAKE_COFFEE'",
        ),
    ],
)
def test_invalid_config(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, change: dict[str, Any], expected: str
) -> None:
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        target = bundle.config
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    bundle.write()
    run_fails(rune, bundle, leaks, expected)


def test_missing_config(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    run_fails(rune, bundle, leaks, f"config.json not found in bundle {bundle.path}")


def test_missing_rootfs(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["root"]["path"] = "no-such-rootfs"
    bundle.write()
    run_fails(rune, bundle, leaks, f"rootfs ({bundle.path}/no-such-rootfs) does not exist")


def test_program_not_in_the_container(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.set_args("no-such-program", "--flag").write()
    run_fails(rune, bundle, leaks, 'exec: "no-such-program": executable file not found in $PATH')
    bundle.set_args("/opt/missing").write()
    run_fails(rune, bundle, leaks, 'exec: "/opt/missing": no such file or directory')


def test_program_that_cannot_be_executed(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    (bundle.rootfs / "bin" / "not-a-program").write_text("just text\n")
    os.chmod(bundle.rootfs / "bin" / "not-a-program", 0o755)
    bundle.set_args("/bin/not-a-program").write()
    run_fails(rune, bundle, leaks, "Exec format error")


def test_mount_source_missing(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["mounts"].append(
        {"destination": "/data", "source": "/no/such/source", "options": ["bind"]}
    )
    bundle.write()
    run_fails(rune, bundle, leaks, "mount /data: source /no/such/source: No such file or directory")


def test_unsupported_mount_type(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["mounts"].append({"destination": "/x", "type": "nosuchfs", "source": "x"})
    bundle.write()
    run_fails(rune, bundle, leaks, "mount x on /x: No such device")


def test_duplicate_id(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> None:
    container_id = leaks.new_id()
    bundle.set_args("sleep", "30").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    pid = rune.state(container_id)["pid"]
    again = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert again.returncode == 1
    assert_one_line_error(again.stderr, f"container with id exists: {container_id}")
    assert rune.state(container_id)["pid"] == pid  # the first one is untouched
    rune("delete", "-f", container_id)


@pytest.mark.parametrize("command", ["start", "state", "kill", "delete"])
def test_unknown_id(rune: Rune, command: str) -> None:
    result = rune(command, "nobody", check=False)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, 'container "nobody" does not exist')


@pytest.mark.parametrize("container_id", ["../escape", "a/b", "", ".", "white space"])
def test_invalid_ids(rune: Rune, bundle: Bundle, container_id: str) -> None:
    bundle.write()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "invalid container id format")
    assert not any(rune.root.iterdir()) if rune.root.exists() else True


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--no-such-flag", "x"], "flag provided but not defined: -no-such-flag"),
        (["--no-such-global", "list"], "flag provided but not defined: -no-such-global"),
        (["create", "--pid-file"], "flag needs an argument: -pid-file"),
        (["start"], '"start" requires exactly 1 argument(s)'),
        (["kill", "a", "b", "c"], '"kill" requires at most 2 argument(s)'),
        (["frobnicate"], "no such command: frobnicate"),
        (["--systemd-cgroup", "list"], "--systemd-cgroup is not supported"),
        (["--log-format", "xml", "list"], "unknown log-format 'xml'"),
        (["run", "--preserve-fds", "many", "x"], 'invalid value "many" for flag -preserve-fds'),
    ],
)
def test_command_line_errors(rune: Rune, args: list[str], expected: str) -> None:
    result = rune(*args, check=False)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, expected)


def test_terminal_without_console_socket(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    bundle.config["process"]["terminal"] = True
    bundle.write()
    container_id = leaks.new_id()
    result = rune.detached(
        "create", "-b", str(bundle.path), container_id, output=tmp_path / "o", check=False
    )
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot allocate a terminal without --console-socket")
    leaks.assert_clean(container_id)


def test_console_socket_that_nobody_listens_on(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    bundle.config["process"]["terminal"] = True
    bundle.write()
    container_id = leaks.new_id()
    socket_path = tmp_path / "nobody.sock"
    result = rune.detached(
        "create",
        "--console-socket",
        str(socket_path),
        "-b",
        str(bundle.path),
        container_id,
        output=tmp_path / "o",
        check=False,
    )
    assert result.returncode == 1
    assert_one_line_error(
        result.stderr, f"connect to console socket {socket_path}: No such file or directory"
    )
    leaks.assert_clean(container_id)


def test_errors_go_to_the_json_log_for_containerd(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    """containerd reads the last error line of --log; stderr still gets the message."""
    log = tmp_path / "log.json"
    bundle.set_args("no-such-program").write()
    container_id = leaks.new_id()
    result = rune(
        "--log",
        str(log),
        "--log-format",
        "json",
        "run",
        "-b",
        str(bundle.path),
        container_id,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'rune: exec: "no-such-program": executable file not found in $PATH'
    )
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error"
    assert entries[-1]["msg"] == 'exec: "no-such-program": executable file not found in $PATH'
    assert entries[-1]["time"].endswith("Z")
    leaks.assert_clean(container_id)


def test_debug_still_gives_one_line_for_user_errors(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    bundle.config["root"]["path"] = "nope"
    bundle.write()
    result = rune("--debug", "run", "-b", str(bundle.path), leaks.new_id(), check=False)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "does not exist")


def test_fields_this_host_cannot_honour_are_warnings(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    bundle.config["process"]["apparmorProfile"] = "docker-default"
    bundle.config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
    bundle.set_args("echo", "ran").write()
    result = rune("run", "-b", str(bundle.path), leaks.new_id())
    assert result.stdout == "ran\n"
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2
    assert all("level=warning" in line for line in warnings)
    assert "AppArmor is not supported" in warnings[0]
    assert "SELinux is not supported" in warnings[1]
