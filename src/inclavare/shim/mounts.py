"""The container's root filesystem from the mounts containerd sends with Create.

containerd's snapshotters describe the rootfs as mounts (an overlay with its lowerdir,
upperdir and workdir, or a bind of a directory); the shim mounts them on <bundle>/rootfs
before `rune create` and unmounts them at delete.
"""

from __future__ import annotations

import errno
import os

from inclavare.linux import syscalls
from inclavare.linux.constants import (
    MNT_DETACH,
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
)

_SET = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "sync": MS_SYNCHRONOUS,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
    "bind": MS_BIND,
    "rbind": MS_BIND | MS_REC,
}
_CLEAR = {"rw": MS_RDONLY, "suid": MS_NOSUID, "dev": MS_NODEV, "exec": MS_NOEXEC}


def parse_options(options: list[str]) -> tuple[int, str]:
    """Mount flags and the filesystem's data string (what is not a flag)."""
    flags = 0
    data: list[str] = []
    for option in options:
        if option in _SET:
            flags |= _SET[option]
        elif option in _CLEAR:
            flags &= ~_CLEAR[option]
        elif option not in ("defaults", "async", "atime", "diratime", "norelatime"):
            data.append(option)
    return flags, ",".join(data)


def mount_all(mounts: list[tuple[str, str, list[str]]], target: str) -> None:
    os.makedirs(target, mode=0o711, exist_ok=True)
    done = 0
    try:
        for kind, source, options in mounts:
            flags, data = parse_options(options)
            fstype = None if flags & MS_BIND else kind
            syscalls.mount(source, target, fstype, flags, data or None)
            done += 1
            if flags & MS_BIND and flags & MS_RDONLY:
                syscalls.mount("", target, None, flags | MS_REMOUNT, None)
    except OSError:
        for _ in range(done):
            unmount_all(target)
        raise


def unmount_all(target: str) -> None:
    """Unmount every layer mounted on target (until it is no mount point)."""
    for _ in range(64):
        try:
            syscalls.umount(target, MNT_DETACH)
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise
