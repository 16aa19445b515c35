"""The container's process: arguments, environment, user, limits, capabilities, terminal."""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


def run_output(rune: Rune, bundle: Bundle, leaks: LeakCheck, script: str) -> str:
    bundle.set_args("sh", "-c", script).write()
    return rune("run", "-b", str(bundle.path), leaks.new_id()).stdout


def status_field(status_text: str, name: str) -> str:
    for line in status_text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in /proc/self/status")


def test_arguments_with_spaces_and_environment(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    bundle.config["process"]["env"] = ["PATH=/bin", "GREETING=hello world", "EMPTY="]
    bundle.set_args("sh", "-c", 'printf "%s|" "$@"; echo; env | sort', "argv0", "a b", "")
    bundle.write()
    output = rune("run", "-b", str(bundle.path), leaks.new_id()).stdout.splitlines()
    assert output[0] == "a b||"
    assert "GREETING=hello world" in output
    assert "EMPTY=" in output
    assert "HOME=/root" in output  # from the container's /etc/passwd, as runc sets it


def test_user_groups_and_umask(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["process"]["user"] = {
        "uid": 1000,
        "gid": 1000,
        "additionalGids": [5, 2000],
        "umask": 0o077,
    }
    bundle.config["root"]["readonly"] = False
    output = run_output(
        rune, bundle, leaks, "id -u; id -g; id -G; echo $HOME; cd /tmp; touch f; stat -c %a f"
    )
    uid, gid, groups, home, mode = output.split("\n")[:5]
    assert (uid, gid, home, mode) == ("1000", "1000", "/home/user", "600")
    assert set(groups.split()) == {"1000", "5", "2000"}


def test_rlimits(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    output = run_output(rune, bundle, leaks, "ulimit -n; ulimit -Hn; ulimit -c")
    assert output.split() == ["123", "456", "0"]


def test_capabilities(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    status = run_output(rune, bundle, leaks, "cat /proc/self/status")
    kill_audit_bind = 1 << 5 | 1 << 10 | 1 << 29  # CAP_KILL, CAP_NET_BIND_SERVICE, AUDIT_WRITE
    assert int(status_field(status, "CapBnd"), 16) == kill_audit_bind
    assert int(status_field(status, "CapEff"), 16) == kill_audit_bind
    assert int(status_field(status, "CapPrm"), 16) == kill_audit_bind
    assert status_field(status, "NoNewPrivs") == "1"

    caps = bundle.config["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        caps[kind] = ["CAP_CHOWN", "CAP_NET_RAW"]
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["noNewPrivileges"] = False
    status = run_output(rune, bundle, leaks, "cat /proc/self/status")
    chown_raw = 1 << 0 | 1 << 13
    for field in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(status_field(status, field), 16) == chown_raw, field
    assert status_field(status, "NoNewPrivs") == "0"


def test_oom_score_adj(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["process"]["oomScoreAdj"] = 321
    assert run_output(rune, bundle, leaks, "cat /proc/self/oom_score_adj").strip() == "321"


def test_an_oom_score_adj_that_cannot_be_set_is_named(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    """Lowering oom_score_adj needs CAP_SYS_RESOURCE, which root lacks on some machines
    (containerd's CRI plugin asks for -998 for a pod's sandbox)."""
    cap_sys_resource = 1 << 24
    effective = int(status_field(Path("/proc/self/status").read_text(), "CapEff"), 16)
    if effective & cap_sys_resource:
        pytest.skip("root has CAP_SYS_RESOURCE here: any oom_score_adj can be set")
    bundle.config["process"]["oomScoreAdj"] = -998
    bundle.set_args("true").write()
    result = rune("run", "-b", str(bundle.path), leaks.new_id(), check=False)
    assert result.returncode != 0
    assert "oom_score_adj -998: Permission denied" in result.stderr


def test_session_keyring(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["linux"]["maskedPaths"].remove("/proc/keys")
    container_id = leaks.new_id()
    bundle.set_args("sh", "-c", "cat /proc/keys").write()
    keys = rune("run", "-b", str(bundle.path), container_id).stdout
    assert container_id in keys  # the new session keyring is named after the container


def ignore_usr2_and_block_usr1() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])


def test_signals_start_with_their_default_dispositions(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    bundle.set_args("cat", "/proc/self/status").write()  # not through sh: it ignores SIGQUIT
    status = subprocess.run(
        rune.command("run", "-b", str(bundle.path), leaks.new_id()),
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
        # rune's caller ignoring a signal must not make the container ignore it
        preexec_fn=ignore_usr2_and_block_usr1,
    ).stdout
    assert int(status_field(status, "SigIgn"), 16) == 0
    assert int(status_field(status, "SigBlk"), 16) == 0


def test_preserve_fds(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> None:
    passed = tmp_path / "passed"
    passed.write_text("through fd 3\n")
    bundle.set_args("sh", "-c", "cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '").write()
    with open(passed) as extra:
        os.set_inheritable(extra.fileno(), True)
        if extra.fileno() != 3:
            os.dup2(extra.fileno(), 3)
        result = subprocess.run(
            rune.command("run", "--preserve-fds", "1", "-b", str(bundle.path), leaks.new_id()),
            capture_output=True,
            text=True,
            pass_fds=(3,),
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    first, fds = result.stdout.split("\n", 1)
    assert first == "through fd 3"
    # 0-2, the preserved 3, and the descriptor `ls` lists /proc/self/fd with: nothing of rune's
    assert fds.split() == ["0", "1", "2", "3", "4"]


def test_console_socket(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> None:
    """The pty master arrives over the socket; the program has a terminal of its own."""
    socket_path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)
    container_id = leaks.new_id()
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle.set_args("sh", "-c", "tty; stty size; test -t 0 && echo stdin-is-a-tty").write()
    creating = subprocess.Popen(
        rune.command(
            "create", "--console-socket", socket_path, "-b", str(bundle.path), container_id
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    connection, _ = listener.accept()
    fds = array.array("i")
    message, ancillary, _, _ = connection.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: fds.itemsize])
    assert creating.wait(timeout=30) == 0
    assert message.startswith(b"/dev/pts/")
    master = fds[0]
    rune("start", container_id)
    output = b""
    deadline = time.monotonic() + 10
    while b"stdin-is-a-tty" not in output and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                output += os.read(master, 4096)
            except OSError:
                break
    os.close(master)
    connection.close()
    listener.close()
    lines = output.decode().replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "33 101"
    assert lines[2] == "stdin-is-a-tty"
    rune.wait_for_status(container_id, "stopped")
    rune("delete", container_id)


def test_run_with_a_terminal_and_no_console_socket(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    """rune itself is the terminal's other end: its streams are proxied."""
    import pty

    bundle.config["process"]["terminal"] = True
    bundle.set_args("sh", "-c", "read line; echo got:$line; tty").write()
    pid, terminal = pty.fork()
    if pid == 0:
        os.execv(rune.program, rune.command("run", "-b", str(bundle.path), leaks.new_id()))
    os.write(terminal, b"typed\n")  # typed early: it must not be lost when rune goes raw
    output = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not select.select([terminal], [], [], 0.1)[0]:
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    text = output.decode().replace("\r", "")
    assert "got:typed" in text
    assert "/dev/pts/" in text
