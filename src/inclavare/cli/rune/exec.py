"""rune exec: run a new process inside a running container."""

from __future__ import annotations

import os

from inclavare.cli.goflags import Flag, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context
    from inclavare.oci.spec import Process
    from inclavare.runtime.container import Container

USAGE = "[command options] <container-id> <command> [args...]  |  -p process.json <container-id>"
DESCRIPTION = """\
   The process joins every namespace and the cgroup of the container. Without --process,
   it takes the container's process settings (user, environment, capabilities...) with the
   flags applied on top. Unless detached, rune waits and exits with the process's exit code."""
ARGUMENTS = (1, 1 << 30)
STOP_AT_FIRST_ARGUMENT = True  # what follows the container id belongs to the command
FLAGS = [
    Flag("console-socket", str, "path to an AF_UNIX socket to receive the pty master"),
    Flag("cwd", str, "current working directory in the container"),
    Flag("env, e", list, "set environment variables (NAME=VALUE)"),
    Flag("tty, t", bool, "allocate a pseudo-TTY"),
    Flag("user, u", str, "user and group to run as: <uid>[:<gid>] or names"),
    Flag("additional-gids, g", list, "additional groups to join"),
    Flag("process, p", str, "path to a process.json (runtime-spec process object)"),
    Flag("detach, d", bool, "detach from the process"),
    Flag("pid-file", str, "file to write the process id to"),
    Flag("process-label", str, "SELinux label (not supported: ignored with a warning)"),
    Flag("apparmor", str, "AppArmor profile (not supported: ignored with a warning)"),
    Flag("no-new-privs", bool, "set no_new_privs for the process"),
    Flag("cap, c", list, "add a capability to the bounding, effective and permitted sets"),
    Flag("preserve-fds", int, "pass N additional file descriptors to the process"),
    Flag("cgroup", str, "sub-cgroup to run in (not supported)"),
    Flag("ignore-paused", bool, "allow exec in a paused container"),
]


def _read_process_file(path: str) -> dict[str, Any]:
    from inclavare import lightjson
    from inclavare.errors import InclavareError

    try:
        with open(path, "rb") as process_file:
            raw = lightjson.loads(process_file.read())
    except OSError as error:
        raise InclavareError(f"read {path}: {error.strerror}") from None
    except ValueError as error:
        raise InclavareError(f"{path}: invalid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise InclavareError(f"{path}: must be an object")
    return raw


def build_process(container: Container, options: Options, command: list[str]) -> Process:
    """The process to run: --process, or the container's process with the flags applied."""
    from inclavare import lightjson
    from inclavare.errors import InclavareError
    from inclavare.oci.spec import SpecError, parse_process

    if options.process:
        raw = _read_process_file(options.process)
        where = options.process
    else:
        if not command:
            raise UsageError('"exec" requires a command (or --process FILE)')
        raw = lightjson.loads(lightjson.dumps(container.config.get("process") or {}))
        raw["args"] = command
        raw["terminal"] = options.tty
        raw.pop("consoleSize", None)
        if options.cwd:
            raw["cwd"] = options.cwd
        env = {entry.split("=", 1)[0]: entry for entry in raw.get("env", [])}
        for entry in options.env:
            if "=" not in entry:
                raise UsageError(f"--env {entry!r}: expected NAME=VALUE")
            env[entry.split("=", 1)[0]] = entry
        raw["env"] = list(env.values())
        if options.no_new_privs:
            raw["noNewPrivileges"] = True
        if options.cap:
            capabilities = raw.setdefault("capabilities", {})
            for name in options.cap:
                name = name.upper() if name.upper().startswith("CAP_") else f"CAP_{name.upper()}"
                for kind in ("bounding", "effective", "permitted"):
                    names = capabilities.setdefault(kind, [])
                    if name not in names:
                        names.append(name)
        user = raw.setdefault("user", {"uid": 0, "gid": 0})
        if options.user:
            user.update(_resolve_user(container, options.user))
        if options.additional_gids:
            try:
                user["additionalGids"] = [int(gid) for gid in options.additional_gids]
            except ValueError:
                raise UsageError("--additional-gids: expected numeric group ids") from None
        where = "process"
    try:
        return parse_process(raw, "process")
    except SpecError as error:
        message = str(error).replace("config.json: ", f"{where}: " if options.process else "")
        raise InclavareError(message) from None


def _lookup(path: str, name: str, field: int) -> int | None:
    try:
        with open(path, errors="replace") as table:
            for line in table:
                fields = line.rstrip("\n").split(":")
                if len(fields) > field and fields[0] == name:
                    return int(fields[field])
    except (OSError, ValueError):
        return None
    return None


def _resolve_user(container: Container, text: str) -> dict[str, int]:
    """<uid>[:<gid>], numeric or names from the container's /etc/passwd and /etc/group."""
    rootfs = container.record.get("rootfs", "")
    user, _, group = text.partition(":")
    result: dict[str, int] = {}
    if user.isdigit():
        result["uid"] = int(user)
    else:
        uid = _lookup(os.path.join(rootfs, "etc/passwd"), user, 2)
        if uid is None:
            raise UsageError(f"--user: no user {user!r} in the container's /etc/passwd")
        result["uid"] = uid
        gid = _lookup(os.path.join(rootfs, "etc/passwd"), user, 3)
        if gid is not None and not group:
            result["gid"] = gid
    if group:
        if group.isdigit():
            result["gid"] = int(group)
        else:
            gid = _lookup(os.path.join(rootfs, "etc/group"), group, 2)
            if gid is None:
                raise UsageError(f"--user: no group {group!r} in the container's /etc/group")
            result["gid"] = gid
    return result


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.cgroups import prime_migration

    prime_migration()
    from inclavare import log
    from inclavare.errors import InclavareError
    from inclavare.runtime.container import Container
    from inclavare.runtime.exec import ExecOptions, check_can_exec, start_process, wait_for
    from inclavare.runtime.foreground import SignalForwarder, proxy_terminal

    container = Container.load(context.root, args[0])
    if container.record.get("enclave"):
        return _run_in_enclave(container, options, args)
    forwarder = None if options.detach else SignalForwarder()
    check_can_exec(container, options.ignore_paused)
    if options.cgroup:
        raise InclavareError(
            "--cgroup is not supported by rune: the process joins the container's cgroup"
        )
    if options.process_label:
        log.warning("--process-label: SELinux is not supported by rune; ignored")
    if options.apparmor:
        log.warning("--apparmor: AppArmor is not supported by rune; ignored")
    process = build_process(container, options, args[1:])
    exec_options = ExecOptions()
    exec_options.detach = options.detach
    exec_options.preserve_fds = options.preserve_fds
    proxy_socket = -1
    if process.terminal:
        if options.console_socket:
            from inclavare.runtime.console import connect_console_socket

            exec_options.console_socket_fd = connect_console_socket(options.console_socket)
        elif options.detach:
            raise InclavareError(
                "cannot allocate a terminal when detached without --console-socket"
            )
        else:
            import _socket

            ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
            proxy_socket = ours.detach()
            exec_options.console_socket_fd = theirs.detach()
    elif options.console_socket:
        raise InclavareError("--console-socket needs --tty (or terminal: true in --process)")
    try:
        pid = start_process(container, process, exec_options)
    finally:
        if exec_options.console_socket_fd >= 0:
            os.close(exec_options.console_socket_fd)
    if options.pid_file:
        from inclavare.runtime.create import write_pid_file

        write_pid_file(options.pid_file, pid)
    if forwarder is None:
        return 0
    forwarder.forward_to(pid)
    if proxy_socket >= 0:
        from inclavare.runtime.console import receive_fd

        master = receive_fd(proxy_socket)
        os.close(proxy_socket)
        return proxy_terminal(master, pid)
    return wait_for(pid)


# Flags that shape a process's identity or terminal, which an enclave runtime does not take:
# its processes run as the enclave, with the descriptors rune passes.
_NOT_FOR_ENCLAVES = (
    ("tty", "--tty"),
    ("console_socket", "--console-socket"),
    ("user", "--user"),
    ("additional_gids", "--additional-gids"),
    ("cap", "--cap"),
    ("preserve_fds", "--preserve-fds"),
    ("cgroup", "--cgroup"),
)


def _run_in_enclave(container: Container, options: Options, args: list[str]) -> int:
    """exec in an enclave container: the init-runelet starts the process through the enclave
    runtime, with argv and env as arrays and rune's standard streams."""
    from inclavare.errors import InclavareError
    from inclavare.runtime.enclave import exec_in_enclave
    from inclavare.runtime.exec import check_can_exec

    check_can_exec(container, options.ignore_paused)
    for attribute, flag in _NOT_FOR_ENCLAVES:
        if getattr(options, attribute):
            raise InclavareError(
                f"{flag} is not supported in enclave containers: their processes are started "
                "by the enclave runtime with the enclave's identity"
            )
    process = build_process(container, options, args[1:])
    if process.terminal:
        raise InclavareError("a terminal is not supported in enclave containers")
    return exec_in_enclave(
        container, process.args, process.env, process.cwd, options.detach, options.pid_file
    )
