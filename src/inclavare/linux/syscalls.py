"""The Linux system calls Python's `os` module does not offer.

They are implemented by the small C extension `_syscalls` (built by `make`), not ctypes:
rune is executed several times per container and importing ctypes would be a noticeable
part of its start-up. Every call raises `OSError` as `os` functions do: errno, its message,
and as `filename` what failed ("mount /proc", "unshare"), so that a caller can add its own
context to the plain reason and an uncaught failure still names the operation.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError

try:
    from inclavare.linux import _syscalls
except ImportError as error:  # pragma: no cover - a source tree where `make` was not run
    raise InclavareError(
        f"the system call extension is not built ({error}); run `make` in the source tree"
    ) from None


def _failed(error: OSError, operation: str) -> OSError:
    return OSError(error.errno, os.strerror(error.errno or 0), operation)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    try:
        _syscalls.mount(source, target, fstype, flags, data)
    except OSError as error:
        raise _failed(error, f"mount {target}") from None


def umount(target: str, flags: int = 0) -> None:
    try:
        _syscalls.umount2(target, flags)
    except OSError as error:
        raise _failed(error, f"unmount {target}") from None


def pivot_root(new_root: str, put_old: str) -> None:
    try:
        _syscalls.pivot_root(new_root, put_old)
    except OSError as error:
        raise _failed(error, f"pivot_root {new_root}") from None


def unshare(flags: int) -> None:
    try:
        _syscalls.unshare(flags)
    except OSError as error:
        raise _failed(error, "unshare") from None


def setns(fd: int, nstype: int, what: str = "namespace") -> None:
    try:
        _syscalls.setns(fd, nstype)
    except OSError as error:
        raise _failed(error, f"join {what}") from None


def sethostname(name: str) -> None:
    try:
        _syscalls.sethostname(name)
    except OSError as error:
        raise _failed(error, "set hostname") from None


def setdomainname(name: str) -> None:
    try:
        _syscalls.setdomainname(name)
    except OSError as error:
        raise _failed(error, "set domainname") from None


def prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> int:
    try:
        result: int = _syscalls.prctl(option, arg2, arg3)
    except OSError as error:
        raise _failed(error, what) from None
    return result


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the three capability sets of the calling thread (bit masks over 64 bits)."""
    try:
        _syscalls.capset(effective, permitted, inheritable)
    except OSError as error:
        raise _failed(error, "set capabilities") from None


def join_session_keyring(name: str) -> None:
    """Create and join a new session keyring, so the container does not share the caller's."""
    try:
        _syscalls.join_session_keyring(name)
    except OSError as error:
        raise _failed(error, "join session keyring") from None


def reset_signals() -> None:
    """Every signal to its default disposition, none blocked (for a process about to exec)."""
    try:
        _syscalls.reset_signals()
    except OSError as error:
        raise _failed(error, "reset signal dispositions") from None


def release_free_memory() -> bool:
    """Return the C heap's free memory to the kernel (glibc keeps it for reuse otherwise, so
    a daemon's resident size stays at its peak after a burst). True if any was released."""
    return _syscalls.malloc_trim()
