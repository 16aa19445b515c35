"""`exec`: run another process inside a running container.

rune forks a child that joins every namespace of the container's init (the user namespace
first, so that the others can be joined with its privileges) and forks again: joining a pid
or time namespace applies to children only. The grandchild, adopted by rune (a subreaper),
is placed in the container's cgroup by rune, takes on the process's identity, limits and
capabilities, and executes the program when rune says so. The channel between them is
close-on-exec: after the grandchild's last "exec" message, end-of-file means execve worked.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.linux.constants import NAMESPACES, PR_SET_CHILD_SUBREAPER
from inclavare.runtime.container import CREATED, PAUSED, RUNNING, Container, ContainerError
from inclavare.runtime.sync import ContainerSetupError, SyncChannel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.linux.seccomp import SeccompFilter
    from inclavare.oci.spec import Process

# The order in which namespaces are joined: user first, mount last but one (joining it
# changes the root directory), pid and time last (they apply to the children).
_JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "network", "mount", "pid", "time")


class ExecOptions:
    __slots__ = (
        "console_socket",
        "console_socket_fd",
        "detach",
        "pid_file",
        "preserve_fds",
        "seccomp",
    )

    def __init__(self) -> None:
        self.console_socket = ""
        self.console_socket_fd = -1
        self.detach = False
        self.pid_file = ""
        self.preserve_fds = 0
        self.seccomp: SeccompFilter | None = None


def _namespace_paths(container: Container) -> list[tuple[int, str]]:
    """(clone flag, /proc/<init>/ns/<name>) for each namespace the container's config has."""
    configured = {ns.get("type") for ns in container.config.get("linux", {}).get("namespaces", [])}
    paths = []
    for kind in _JOIN_ORDER:
        if kind in configured:
            flag, name = NAMESPACES[kind]
            paths.append((flag, f"/proc/{container.pid}/ns/{name}"))
    return paths


def _join(namespaces: list[tuple[int, str]]) -> None:
    """Open every namespace first (the paths are the host's), then join them in order."""
    opened = []
    try:
        for flag, path in namespaces:
            opened.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC), path))
        for flag, fd, path in opened:
            syscalls.setns(fd, flag, what=path)
    finally:
        for _, fd, _ in opened:
            os.close(fd)


def check_can_exec(container: Container, ignore_paused: bool = False) -> None:
    status = container.status()
    if status == PAUSED and not ignore_paused:
        raise ContainerError(f"cannot exec in a paused container {container.id}")
    if status not in (RUNNING, CREATED, PAUSED):
        raise ContainerError(f"cannot exec in a {status} container {container.id}")


def _child(
    container: Container,
    process: Process,
    options: ExecOptions,
    channel: SyncChannel,
) -> None:
    """The first child: joins the namespaces and forks the process. Never returns."""
    from inclavare.runtime.init import describe

    try:
        _join(_namespace_paths(container))
        pid = os.fork()
        if pid == 0:
            _grandchild(container, process, options, channel)
        channel.send("child", pid=pid)
        os._exit(0)
    except BaseException as error:
        try:
            channel.send("error", message=describe(error))
        finally:
            os._exit(1)


def _grandchild(
    container: Container,
    process: Process,
    options: ExecOptions,
    channel: SyncChannel,
) -> None:
    """The process itself, in all the container's namespaces. Never returns."""
    from inclavare.runtime.init import describe
    from inclavare.runtime.process import become

    try:
        syscalls.reset_signals()
        os.setsid()
        if process.terminal:
            from inclavare.runtime.console import setup_container_terminal

            setup_container_terminal(
                options.console_socket_fd, process.console_size, bind_console=False
            )
        program, env = become(
            process, keyring=None, preserve_fds=options.preserve_fds, seccomp=options.seccomp
        )
        channel.receive("go")  # rune has placed this process in the container's cgroup
        if options.seccomp is not None and process.no_new_privileges:
            options.seccomp.load()  # as late as possible: see process.become
        channel.send("exec")
        os.execve(program, process.args, env)
    except BaseException as error:
        try:
            channel.send("error", message=describe(error))
        finally:
            os._exit(1)


def start_process(container: Container, process: Process, options: ExecOptions) -> int:
    """Start the process in the container; return its pid once it has executed the program."""
    # Once in the container's mount namespace, the host's Python library is out of reach:
    # import now what the children use.
    import inclavare.linux.proc
    import inclavare.runtime.init
    import inclavare.runtime.process

    if process.terminal:
        import inclavare.runtime.console  # noqa: F401
    seccomp = container.config.get("linux", {}).get("seccomp")
    if seccomp is not None:
        from inclavare.linux.seccomp import build_filter, compile_profile

        options.seccomp = build_filter(compile_profile(seccomp))  # the container's profile

    syscalls.prctl(PR_SET_CHILD_SUBREAPER, 1, what="become a subreaper")
    ours, theirs = SyncChannel.pair()
    child = os.fork()
    if child == 0:
        ours.close()
        _child(container, process, options, theirs)
    theirs.close()
    pid = 0
    try:
        # Joining a cgroup may wait for the kernel (see cgroups.prime_migration): the child
        # joins the namespaces meanwhile.
        _join_cgroup(container, child)
        message = ours.receive("child")
        os.waitpid(child, 0)
        pid = int(message["pid"])
        _join_cgroup(container, pid)
        ours.send("go")
        ours.receive("exec")
        try:
            ours.receive()
        except ContainerSetupError as error:
            if "without reporting why" not in str(error):
                raise
        # end of file: execve closed the channel
    except BaseException:
        if child and _alive(child):
            os.kill(child, 9)
        if pid and _alive(pid):
            os.kill(pid, 9)
        _reap(child, pid)
        raise
    finally:
        ours.close()
    return pid


def _join_cgroup(container: Container, pid: int) -> None:
    from inclavare.cgroups import Cgroup

    try:
        Cgroup.from_directories(container.record.get("cgroup_dirs_leaf", [])).add_process(pid)
    except ProcessLookupError:
        pass  # a first child that has already forked the process and exited


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(*pids: int) -> None:
    for pid in pids:
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def wait_for(pid: int) -> int:
    """The exit code of the exec'd process (rune's child, as subreaper), 128+N for signal N."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            raise InclavareError(f"process {pid} is not rune's child") from None
        if reaped == pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
