"""The last steps before the user program runs: limits, identity, capabilities, execve.

The order matters and follows the kernel's rules: the capability bounding set is reduced while
the process still has CAP_SETPCAP; PR_SET_KEEPCAPS keeps the permitted set across the switch
to the container's user; then the effective, permitted and inheritable sets are set, then the
ambient set; noNewPrivileges is set last, right before execve.
"""

from __future__ import annotations

import os
import resource

from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.linux.capabilities import last_capability, mask
from inclavare.linux.constants import (
    CAPABILITIES,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    RLIMITS,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.linux.seccomp import SeccompFilter
    from inclavare.oci.spec import Capabilities, Process, Rlimit


class ProcessSetupError(InclavareError):
    """The container's process cannot be given what the spec asks for."""


def look_path(name: str, env: list[str], cwd: str) -> str:
    """The program to execute for args[0], searched in the container's PATH like execvp."""
    if "/" in name:
        path = name if name.startswith("/") else os.path.join(cwd, name)
        if not os.path.exists(path):
            raise ProcessSetupError(f'exec: "{name}": no such file or directory')
        return path
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for entry in env:
        if entry.startswith("PATH="):
            search = entry[5:]
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ProcessSetupError(f'exec: "{name}": executable file not found in $PATH')


def home_directory(uid: int) -> str:
    """The home of uid from the container's /etc/passwd, "/" when it has none."""
    try:
        with open("/etc/passwd", errors="replace") as passwd:
            for line in passwd:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def environment(process: Process) -> list[str]:
    env = list(process.env)
    if not any(entry.startswith("HOME=") for entry in env):
        env.append("HOME=" + home_directory(process.user.uid))
    return env


def apply_rlimits(rlimits: list[Rlimit]) -> None:
    for rlimit in rlimits:
        try:
            resource.setrlimit(RLIMITS[rlimit.type], (rlimit.soft, rlimit.hard))
        except (OSError, ValueError) as error:
            raise ProcessSetupError(
                f"set {rlimit.type} to {rlimit.soft}/{rlimit.hard}: {error}"
            ) from None


def drop_bounding_set(capabilities: Capabilities | None) -> None:
    if capabilities is None:
        return
    last = last_capability()
    keep = mask(capabilities.bounding, last)
    for number in range(last + 1):
        if not keep & (1 << number):
            syscalls.prctl(PR_CAPBSET_DROP, number, what=f"drop capability {number}")


def switch_user(process: Process) -> None:
    """Become the container's user and groups, keeping the permitted capabilities."""
    user = process.user
    syscalls.prctl(PR_SET_KEEPCAPS, 1, what="keep capabilities")
    try:
        try:
            os.setgroups(user.additional_gids)
        except PermissionError:
            if user.additional_gids:
                raise
            # a user namespace with setgroups denied: there is nothing to drop anyway
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as error:
        raise ProcessSetupError(f"set user {user.uid}:{user.gid}: {error.strerror}") from None
    syscalls.prctl(PR_SET_KEEPCAPS, 0, what="clear keep-capabilities")
    if user.umask is not None:
        os.umask(user.umask)


def set_capabilities(capabilities: Capabilities | None) -> None:
    if capabilities is None:
        return
    last = last_capability()
    syscalls.capset(
        mask(capabilities.effective, last),
        mask(capabilities.permitted, last),
        mask(capabilities.inheritable, last),
    )
    syscalls.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clear ambient capabilities")
    for name in capabilities.ambient:
        number = CAPABILITIES[name]
        if number > last:
            continue
        try:
            syscalls.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number, what=name)
        except OSError:
            pass  # the kernel raises only what is permitted and inheritable, as runc ignores


def set_no_new_privileges() -> None:
    syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")


def become(
    process: Process,
    keyring: str | None,
    preserve_fds: int = 0,
    listen_fds: int = 0,
    seccomp: SeccompFilter | None = None,
    executable: bool = True,
) -> tuple[str, dict[str, str]]:
    """Take on the process's session keyring (a new one named `keyring`, unless None),
    oom_score_adj, limits, descriptors, identity, capabilities and working directory, in
    the kernel's order; return the program to execute and its environment.

    Without noNewPrivileges, the seccomp filter is loaded here, while the process still has
    CAP_SYS_ADMIN; with it, the caller loads it right before execve, as runc does, so that
    the profile constrains as few of rune's own system calls as possible.

    With `executable` false the program is not looked up (an enclave runtime runs it) and
    the returned program is empty."""
    from inclavare.linux.proc import close_fds_from, set_oom_score_adj

    env = environment(process)
    if executable:
        look_path(process.args[0], env, process.cwd)  # before anything irreversible
    if keyring is not None:
        syscalls.join_session_keyring(keyring)
    if process.oom_score_adj is not None:
        set_oom_score_adj("self", process.oom_score_adj)
    apply_rlimits(process.rlimits)
    passed = listen_fds + preserve_fds
    if listen_fds:
        env = [e for e in env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
        env += [f"LISTEN_FDS={listen_fds}", "LISTEN_PID=1"]
    close_fds_from(3 + passed)
    for fd in range(3, 3 + passed):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            raise OSError(9, f"preserved file descriptor {fd} is not open") from None
    if seccomp is not None and not process.no_new_privileges:
        seccomp.load()  # the last moment with CAP_SYS_ADMIN, after rune's own keyctl & co
    drop_bounding_set(process.capabilities)
    switch_user(process)
    set_capabilities(process.capabilities)
    try:
        os.chdir(process.cwd)
    except OSError as error:
        raise OSError(error.errno, f"working directory {process.cwd}: {error.strerror}") from None
    program = look_path(process.args[0], env, process.cwd) if executable else ""
    if process.no_new_privileges:
        set_no_new_privileges()
    return program, dict(entry.split("=", 1) for entry in env)
