"""rune exec and rune ps: processes joining a running container."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


@pytest.fixture
def running(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> str:
    container_id = leaks.new_id()
    bundle.config["process"]["env"].append("FROM_CONFIG=yes")
    bundle.set_args("sleep", "300").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    return container_id


def test_exec_joins_every_namespace_and_the_cgroup(rune: Rune, running: str) -> None:
    init = rune.state(running)["pid"]
    names = ("pid", "net", "ipc", "uts", "mnt")
    script = "; ".join(f"readlink /proc/self/ns/{name}" for name in names)
    inside = rune("exec", running, "sh", "-c", script + "; cat /proc/self/cgroup").stdout
    lines = inside.splitlines()
    for name, line in zip(names, lines, strict=False):
        assert line == os.readlink(f"/proc/{init}/ns/{name}"), name
    with open(f"/proc/{init}/cgroup") as init_cgroups:
        assert sorted(lines[len(names) :]) == sorted(init_cgroups.read().splitlines())


def test_exec_exit_code_output_and_arguments(rune: Rune, running: str) -> None:
    result = rune(
        "exec", running, "sh", "-c", 'echo "$1|$2"; exit 5', "sh", "a b", "c", check=False
    )
    assert result.returncode == 5
    assert result.stdout == "a b|c\n"


def test_exec_takes_the_containers_settings_with_flags_on_top(rune: Rune, running: str) -> None:
    output = rune("exec", running, "sh", "-c", "echo $FROM_CONFIG; id -u; pwd").stdout
    assert output.split() == ["yes", "0", "/"]
    output = rune(
        "exec",
        "-u",
        "1000:1000",
        "-g",
        "5",
        "-e",
        "EXTRA=1",
        "--cwd",
        "/tmp",
        running,
        "sh",
        "-c",
        "echo $EXTRA $FROM_CONFIG; id -u; id -G; pwd",
    ).stdout
    assert output.split("\n")[:4] == ["1 yes", "1000", "1000 5", "/tmp"]
    by_name = rune("exec", "--user", "user", running, "id").stdout
    assert by_name.startswith("uid=1000(user) gid=1000(user)")


def test_exec_capabilities_and_no_new_privs(rune: Rune, running: str) -> None:
    status = rune("exec", "--cap", "CAP_SYS_ADMIN", running, "cat", "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) & 1 << 21  # CAP_SYS_ADMIN added
    assert fields["NoNewPrivs"] == "1"


def test_exec_with_a_process_file(rune: Rune, running: str, tmp_path: Path) -> None:
    process = {
        "args": ["sh", "-c", "echo $ONLY; id -u"],
        "env": ["ONLY=from-file", "PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 1000, "gid": 1000},
    }
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    assert rune("exec", "-p", str(path), running).stdout.split() == ["from-file", "1000"]
    path.write_text(json.dumps({"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}))
    bad = rune("exec", "-p", str(path), running, check=False)
    assert bad.returncode == 1
    assert f"{path}: process.args: must not be empty" in bad.stderr


def test_exec_detached_with_pid_file(rune: Rune, running: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "exec.pid"
    rune.detached(
        "exec", "-d", "--pid-file", str(pid_file), running, "sleep", "200", output=tmp_path / "x"
    )
    pid = int(pid_file.read_text())
    assert pid in json.loads(rune("ps", "--format", "json", running).stdout)
    table = rune("ps", running).stdout.splitlines()
    assert table[0].split()[1] == "PID"
    assert len(table) == 3  # the header, sleep 300 and sleep 200
    assert {line.split()[-1] for line in table[1:]} == {"300", "200"}


def test_exec_forwards_signals(rune: Rune, running: str) -> None:
    process = subprocess.Popen(
        rune.command(
            "exec",
            running,
            "sh",
            "-c",
            "trap 'exit 9' TERM; echo ready; while :; do sleep 0.05; done",
        ),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 9


def test_exec_with_a_terminal(rune: Rune, running: str) -> None:
    import pty

    pid, terminal = pty.fork()
    if pid == 0:
        os.execv(rune.program, rune.command("exec", "-t", running, "sh", "-c", "tty; exit 2"))
    output = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 2, output
    assert b"/dev/pts/" in output


def test_exec_errors(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, running: str, tmp_path: Path
) -> None:
    missing = rune("exec", running, "no-such-program", check=False)
    assert missing.returncode == 1
    assert "no-such-program" in missing.stderr
    assert "executable file not found in $PATH" in missing.stderr
    no_command = rune("exec", running, check=False)
    assert no_command.returncode == 1 and "requires a command" in no_command.stderr
    unknown = rune("exec", "nobody", "true", check=False)
    assert unknown.returncode == 1 and 'container \\"nobody\\" does not exist' in unknown.stderr
    rune("kill", running, "KILL")
    rune.wait_for_status(running, "stopped")
    stopped = rune("exec", running, "true", check=False)
    assert stopped.returncode == 1
    assert f"cannot exec in a stopped container {running}" in stopped.stderr
    rune("delete", running)
    leaks.assert_clean(running)
