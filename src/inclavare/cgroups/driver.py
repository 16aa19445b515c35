"""What the two drivers share: reading and writing control files with errors that say which
file, which value and why, and the interface the runtime calls."""

from __future__ import annotations

import errno
import os
import time

from inclavare.cgroups.errors import CgroupError
from inclavare.cgroups.resources import hugepage_size_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from inclavare.cgroups.resources import Resources

FREEZE_TIMEOUT = 10.0  # seconds


def read_file(path: str) -> str | None:
    """A control file's text, or None when it does not exist (or the kernel cannot say)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


_REASONS = {
    errno.EINVAL: "the kernel refuses this value",
    errno.EBUSY: "the kernel cannot apply it now (busy)",
    errno.EPERM: "not permitted (the parent cgroup does not allow it)",
    errno.EACCES: "permission denied",
    errno.ENOSPC: "no room (the parent's limits or the hierarchy's depth)",
    errno.EOPNOTSUPP: "not supported by this kernel",
    errno.ENODEV: "no such device",
    errno.ERANGE: "out of the range the kernel accepts",
}


def write_file(path: str, value: str, what: str = "") -> None:
    """Write one value to a control file; CgroupError naming the file, value and reason."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CgroupError(
            f"{what or 'cgroup'}: {path} does not exist (the kernel or the controller lacks it)"
        ) from None
    except OSError as error:
        raise CgroupError(f"{what or 'cgroup'}: open {path}: {error.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as error:
        reason = _REASONS.get(error.errno or 0, error.strerror)
        prefix = f"{what}: " if what else ""
        raise CgroupError(f"{prefix}write {value!r} to {path}: {reason}") from error
    finally:
        os.close(fd)


class Driver:
    """The operations on one container's cgroup; `V1Driver` and `V2Driver` implement them."""

    version = 0

    def check_host(self, resources: Resources, where: str = "linux.resources") -> list[str]:
        """Refuse (CgroupError) what this host cannot apply; return warnings for what it
        ignores. Needs only the mounts: call it before the cgroup exists."""
        raise NotImplementedError

    def apply(
        self,
        resources: Resources,
        created_devices: Sequence[tuple[str, int, int]] = (),
        update: bool = False,
    ) -> None:
        """Write the resources. At create, the device rules are written too (the spec's,
        the defaults and `created_devices`); `update` leaves the device rules alone, checks
        memory.checkBeforeUpdate, and keeps what the update does not name."""
        raise NotImplementedError

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def is_frozen(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in the cgroup: `events`
        reports an "oom" event each time the count grows."""
        raise NotImplementedError

    def processes(self) -> list[int]:
        raise NotImplementedError


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll `done` with a growing interval (from 0.5 ms to 10 ms) until true or timeout."""
    deadline = time.monotonic() + timeout
    interval = 0.0005
    while True:
        if done():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 2, 0.01)


def hugepage_sizes(sysfs: str = "/sys/kernel/mm/hugepages") -> list[str]:
    """The huge page sizes of this host, as the hugetlb controller names them ("2MB")."""
    sizes: list[str] = []
    try:
        names = os.listdir(sysfs)
    except OSError:
        return sizes
    for name in names:
        kilobytes = name.removeprefix("hugepages-").removesuffix("kB")
        if not kilobytes.isdigit():
            continue
        size = int(kilobytes)
        if size >= 1 << 20 and size % (1 << 20) == 0:
            sizes.append(f"{size >> 20}GB")
        elif size >= 1 << 10 and size % (1 << 10) == 0:
            sizes.append(f"{size >> 10}MB")
        else:
            sizes.append(f"{size}KB")
    return sorted(sizes, key=hugepage_size_bytes)
