"""Running `rune` the way containerd's runc shim runs runc.

Every command gets `--root <root> --log <bundle>/log.json --log-format json`; when one fails,
the last error line of that log says why, and that message is what containerd shows.
Commands are spawned with posix_spawn and their statuses come from the shim's reaper.
"""

from __future__ import annotations

import os
import signal

from inclavare.shim.bundle import DEFAULT_BINARY
from inclavare.shim.reaper import Reaper
from inclavare.shim.ttrpc import UNKNOWN
from inclavare.shim.ttrpc_server import RpcError


class RuneError(RpcError):
    """A rune command failed; the message is rune's own error."""

    def __init__(self, message: str) -> None:
        super().__init__(UNKNOWN, message)


def last_error(log_path: str) -> str:
    """The message of the last `"level":"error"` line of a runc-style JSON log."""
    from inclavare import lightjson

    try:
        with open(log_path, "rb") as log:
            lines = log.read().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = lightjson.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "error":
            return str(entry.get("msg", ""))
    return ""


class Runtime:
    def __init__(self, reaper: Reaper, binary: str, root: str, bundle: str) -> None:
        self.reaper = reaper
        self.binary = binary or DEFAULT_BINARY
        self.root = root
        self.bundle = bundle
        self.log_path = os.path.join(bundle, "log.json")

    def _argv(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--root",
            self.root,
            "--log",
            self.log_path,
            "--log-format",
            "json",
            *args,
        ]

    def run(
        self,
        *args: str,
        stdio: tuple[int, int, int] | None = None,
        stdin_data: bytes | None = None,
        what: str = "",
    ) -> bytes:
        """Run a rune command to its end; its standard output is returned. With stdio, the
        command's standard streams are those descriptors (create and exec hand them on to
        the container's process) and nothing is captured."""
        try:
            code, output = run_program(
                self.reaper,
                self._argv(*args),
                stdio,
                stdin_data,
                with_errors=stdin_data is not None,
            )
        except OSError as error:
            raise RuneError(f"{self.binary}: {error.strerror}") from None
        if code != 0:
            message = last_error(self.log_path)
            if not message:
                message = output.decode(errors="replace").strip() or f"exit status {code}"
            verb = what or args[0]
            raise RuneError(f"OCI runtime {verb} failed: {message}")
        return output

    # --- the commands ------------------------------------------------------------------------

    def create(
        self,
        container_id: str,
        pid_file: str,
        stdio: tuple[int, int, int],
        console_socket: str = "",
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> None:
        args = ["create", "--bundle", self.bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        self.run(*args, container_id, stdio=stdio)

    def start(self, container_id: str) -> None:
        self.run("start", container_id)

    def exec(
        self,
        container_id: str,
        process_file: str,
        pid_file: str,
        stdio: tuple[int, int, int],
        console_socket: str = "",
    ) -> None:
        args = ["exec", "--process", process_file, "--detach", "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        self.run(*args, container_id, stdio=stdio)

    def kill(self, container_id: str, signal_number: int, all_processes: bool) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal_number)]
        self.run(*args)

    def delete(self, container_id: str, force: bool = False) -> None:
        self.run("delete", *(["--force"] if force else []), container_id)

    def pause(self, container_id: str) -> None:
        self.run("pause", container_id)

    def resume(self, container_id: str) -> None:
        self.run("resume", container_id)

    def update(self, container_id: str, resources_json: bytes) -> None:
        self.run("update", "--resources", "-", container_id, stdin_data=resources_json)

    def ps(self, container_id: str) -> list[int]:
        from inclavare import lightjson

        listed = lightjson.loads(self.run("ps", "--format", "json", container_id))
        return [int(pid) for pid in listed or []]

    def stats(self, container_id: str) -> dict[str, object]:
        from inclavare import lightjson

        output = self.run("events", "--stats", container_id)
        event = lightjson.loads(output.splitlines()[0] if output else b"{}")
        data = event.get("data", {}) if isinstance(event, dict) else {}
        return data if isinstance(data, dict) else {}


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def run_program(
    reaper: Reaper,
    argv: list[str],
    stdio: tuple[int, int, int] | None = None,
    stdin_data: bytes | None = None,
    with_errors: bool = False,
) -> tuple[int, bytes]:
    """Run argv to its end: (exit code, standard output, and standard error too if
    with_errors). Its status comes from the reaper, which owns every child of the shim.
    With stdio, the program's standard streams are those descriptors and nothing is
    captured."""
    close_after: list[int] = []
    output_read = -1
    input_write = -1
    if stdio is None:
        output_read, output_write = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        close_after += [output_write, null]
        errors = output_write if with_errors else null
        if stdin_data is not None:
            stdin_read, input_write = os.pipe()
            close_after.append(stdin_read)
            stdio = (stdin_read, output_write, errors)
        else:
            stdio = (null, output_write, errors)
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    try:
        pid = os.posix_spawnp(
            argv[0], argv, dict(os.environ), file_actions=actions, setsigdef=(signal.SIGPIPE,)
        )
    except OSError:
        for fd in (*close_after, output_read, input_write):
            if fd >= 0:
                os.close(fd)
        raise
    exited = reaper.wait(pid)
    reaper.spawned()
    for fd in close_after:
        os.close(fd)
    output = b""
    if input_write >= 0:
        _write_all(input_write, stdin_data or b"")
    if output_read >= 0:
        output = _read_all(output_read)
    return exited.result(), output
