"""Starting and stopping private daemons (for the end-to-end tests and the benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon never listened on {path}: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains text (the shims a daemon left behind)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def stop_daemon(process: subprocess.Popen[bytes], directory: Path) -> None:
    """Stop the daemon by its pid, then whatever it started that mentions its directory,
    then unmount what is left under it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pid in processes_mentioning(str(directory)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    with open("/proc/self/mountinfo") as mountinfo:
        mounted = [line.split()[4] for line in mountinfo if str(directory) in line.split()[4]]
    for point in sorted(mounted, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


class Containerd:
    """A private containerd; its shims run rune in place of runc (`ctr run --runc-binary`)."""

    def __init__(self, directory: Path, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process
        self.socket = directory / "containerd.sock"
        self.namespace = "rune-e2e"
        self.environment: dict[str, str] = dict(os.environ)

    def stop(self) -> None:
        stop_daemon(self.process, self.directory)

    def remove_everything(self) -> None:
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "--all", "--signal", "KILL", task, check=False)
            self.ctr("tasks", "delete", "--force", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {result.returncode}: {result.stderr}")
        return result


def start_containerd(
    directory: Path,
    extra_config: str = "",
    path: list[str] | None = None,
    variables: dict[str, str] | None = None,
) -> Containerd:
    """A containerd with its own root, state and socket under directory (no CRI plugin).
    extra_config is appended to its config.toml; path, put in front of PATH, is where it
    finds shims (containerd-shim-<name>-v2) and they find their runtimes; variables are
    added to its environment (which its shims and runtimes inherit)."""
    config = (
        "version = 2\n"
        f'root = "{directory}/root"\n'
        f'state = "{directory}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{directory}/containerd.sock"\n' + extra_config
    )
    return launch_containerd(directory, config, path, variables)


def launch_containerd(
    directory: Path,
    config: str,
    path: list[str] | None = None,
    variables: dict[str, str] | None = None,
) -> Containerd:
    """A containerd running `config` (written to directory/config.toml), which must keep
    its root, state and sockets under directory; variables as for start_containerd."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text(config)
    environment = dict(os.environ, **(variables or {}))
    if path:
        environment["PATH"] = os.pathsep.join([*path, environment.get("PATH", "")])
    daemon = Containerd(directory, _spawn_containerd(directory, environment))
    daemon.environment = environment
    try:
        wait_for_socket(daemon.socket, daemon.process, directory / "containerd.log")
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _spawn_containerd(directory: Path, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(directory / "containerd.log", "ab") as sink:
        return subprocess.Popen(
            ["containerd", "--config", str(directory / "config.toml")],
            stdout=sink,
            stderr=sink,
            env=environment,
        )


def restart_containerd(daemon: Containerd) -> None:
    """Stop containerd alone (SIGTERM, by pid; its shims keep running) and start it again
    with the same configuration."""
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(timeout=20)
    daemon.socket.unlink(missing_ok=True)
    daemon.process = _spawn_containerd(daemon.directory, daemon.environment)
    wait_for_socket(daemon.socket, daemon.process, daemon.directory / "containerd.log")
