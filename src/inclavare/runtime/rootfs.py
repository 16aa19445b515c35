"""The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

Everything here runs inside the container's new mount namespace, so nothing it mounts is
visible on the host and everything disappears with the namespace.
"""

from __future__ import annotations

import os
import stat

from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.linux.constants import (
    MNT_DETACH,
    MOUNT_OPTIONS,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    PROPAGATION_OPTIONS,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from inclavare.oci.spec import Device, Mount, Spec


class RootfsError(InclavareError):
    """The root filesystem cannot be set up as the spec asks."""


# The devices every container gets (path, type, major, minor), as runc creates them.
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
)
_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
# Flags a bind mount inherits from its source and that an unprivileged remount may not clear.
_STATVFS_TO_MOUNT = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
)
_MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """root + unsafe, with symlinks in unsafe resolved as if root were "/".

    A container image may hold a symlink such as /etc -> /../../host/etc; following it
    from the host would mount outside the rootfs.
    """
    remaining = [part for part in unsafe.split("/") if part]
    resolved: list[str] = []
    links = 0
    while remaining:
        part = remaining.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise RootfsError(f"too many levels of symbolic links in {unsafe}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            remaining[:0] = [p for p in target.split("/") if p]
        else:
            resolved.append(part)
    return os.path.join(root, *resolved)


def parse_mount_options(options: list[str]) -> tuple[int, list[int], str]:
    """(mount flags, propagation flags to apply after mounting, filesystem data string)."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in MOUNT_OPTIONS:
            flag, setting = MOUNT_OPTIONS[option]
            flags = (flags | flag) if setting else (flags & ~flag)
        elif option in PROPAGATION_OPTIONS:
            propagation.append(PROPAGATION_OPTIONS[option])
        elif option in ("tmpcopyup", "idmap", "ridmap"):
            raise RootfsError(f"mount option {option!r} is not supported by rune")
        else:
            data.append(option)
    return flags, propagation, ",".join(data)


def _locked_flags(path: str) -> int:
    flags = 0
    try:
        current = os.statvfs(path).f_flag
    except OSError:
        return 0
    for statvfs_flag, mount_flag in _STATVFS_TO_MOUNT:
        if current & statvfs_flag:
            flags |= mount_flag
    return flags


def remount_bind(path: str, flags: int) -> None:
    """Change the flags of a bind mount, keeping those the kernel locks in user namespaces."""
    try:
        syscalls.mount(None, path, None, MS_BIND | MS_REMOUNT | flags, None)
    except PermissionError:
        syscalls.mount(None, path, None, MS_BIND | MS_REMOUNT | flags | _locked_flags(path), None)


def _create_mount_point(destination: str, is_directory: bool) -> None:
    if is_directory:
        os.makedirs(destination, 0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(destination), 0o755, exist_ok=True)
    if not os.path.exists(destination):
        os.close(os.open(destination, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _mount_bind(mount: Mount, destination: str, bundle: str, flags: int) -> None:
    source = mount.source if mount.source.startswith("/") else os.path.join(bundle, mount.source)
    try:
        is_directory = stat.S_ISDIR(os.stat(source).st_mode)
    except OSError as error:
        raise RootfsError(f"mount {mount.destination}: source {source}: {error.strerror}") from None
    _create_mount_point(destination, is_directory)
    syscalls.mount(source, destination, None, MS_BIND | (flags & MS_REC), None)
    extra = flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
    if extra:
        remount_bind(destination, extra)


def _mount_cgroup_v1(rootfs: str, destination: str, flags: int, cgroup_dirs: list[str]) -> None:
    """A tmpfs holding, per host hierarchy, a bind mount of the container's own cgroup."""
    syscalls.mount("tmpfs", destination, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    for directory in cgroup_dirs:
        # /sys/fs/cgroup/<hierarchy>/<path...> -> <destination>/<hierarchy>
        hierarchy = directory.removeprefix("/sys/fs/cgroup/").split("/", 1)[0]
        target = os.path.join(destination, hierarchy)
        os.makedirs(target, 0o755, exist_ok=True)
        syscalls.mount(directory, target, None, MS_BIND | MS_REC, None)
        remount_bind(target, flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC))
    if flags & MS_RDONLY:
        remount_bind(destination, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_entry(
    mount: Mount, rootfs: str, bundle: str, cgroup_dirs: list[str], cgroup_version: int
) -> None:
    flags, propagation, data = parse_mount_options(mount.options)
    destination = secure_join(rootfs, mount.destination)
    try:
        if mount.is_bind:
            _mount_bind(mount, destination, bundle, flags)
        elif mount.type == "cgroup" and cgroup_version == 1:
            os.makedirs(destination, 0o755, exist_ok=True)
            _mount_cgroup_v1(rootfs, destination, flags, cgroup_dirs)
        else:
            fstype = "cgroup2" if mount.type == "cgroup" else mount.type
            if not fstype:
                raise RootfsError(f"mount {mount.destination}: no type and not a bind mount")
            os.makedirs(destination, 0o755, exist_ok=True)
            try:
                syscalls.mount(mount.source or fstype, destination, fstype, flags, data or None)
            except PermissionError:
                if fstype != "sysfs":
                    raise
                # Without its own network namespace a user namespace may not mount sysfs.
                syscalls.mount("/sys", destination, None, MS_BIND | MS_REC, None)
                remount_bind(destination, flags | MS_RDONLY)
            except OSError as error:
                if fstype != "devpts" or "gid=" not in data or error.errno != 22:
                    raise
                # gid=5 (tty) may be unmapped in a user namespace: mount without it.
                reduced = ",".join(o for o in data.split(",") if not o.startswith("gid="))
                syscalls.mount(mount.source or fstype, destination, fstype, flags, reduced)
        for propagation_flag in propagation:
            syscalls.mount(None, destination, None, propagation_flag, None)
    except OSError as error:
        raise RootfsError(
            f"mount {mount.source or mount.type} on {mount.destination}: {error.strerror}"
        ) from None


def _make_device(device: Device, path: str, in_user_namespace: bool) -> None:
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    if in_user_namespace:
        # mknod is not allowed in a user namespace: bind the host's node instead.
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        syscalls.mount(device.path, path, None, MS_BIND, None)
        return
    mode = 0o666 if device.file_mode is None else device.file_mode
    try:
        os.mknod(path, mode | _DEVICE_TYPES[device.type], os.makedev(device.major, device.minor))
    except FileExistsError:
        os.unlink(path)
        os.mknod(path, mode | _DEVICE_TYPES[device.type], os.makedev(device.major, device.minor))
    os.chmod(path, mode)
    os.chown(path, device.uid or 0, device.gid or 0)


def create_devices(spec: Spec, rootfs: str, in_user_namespace: bool) -> None:
    from inclavare.oci.spec import Device

    if any(m.destination == "/dev" and m.is_bind for m in spec.mounts):
        return  # the host's /dev is bound in; nothing to create
    devices = {d.path: d for d in spec.linux.devices}
    for path, kind, major, minor in DEFAULT_DEVICES:
        if path not in devices:
            devices[path] = Device(path, kind, major, minor)
    for device in devices.values():
        target = secure_join(rootfs, device.path)
        try:
            _make_device(device, target, in_user_namespace)
        except OSError as error:
            raise RootfsError(f"create device {device.path}: {error.strerror}") from None
    links = {
        "/dev/fd": "/proc/self/fd",
        "/dev/stdin": "/proc/self/fd/0",
        "/dev/stdout": "/proc/self/fd/1",
        "/dev/stderr": "/proc/self/fd/2",
    }
    if os.path.exists("/proc/kcore"):
        links["/dev/core"] = "/proc/kcore"
    if "/dev/ptmx" not in devices:
        links["/dev/ptmx"] = "pts/ptmx"
    for link, target in links.items():
        path = os.path.join(rootfs, link.lstrip("/"))
        if os.path.lexists(path):
            if link != "/dev/ptmx":
                continue
            os.unlink(path)
        os.symlink(target, path)


def _parent_mount(path: str) -> str:
    best = "/"
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best = point
    return best


def prepare_rootfs(
    spec: Spec,
    rootfs: str,
    bundle: str,
    cgroup_dirs: list[str],
    cgroup_version: int,
    in_user_namespace: bool,
    wait_for_cgroup: Callable[[], object],
) -> None:
    """Mount the rootfs and everything the spec puts in it, before pivot_root.

    `wait_for_cgroup` is called before the first cgroup filesystem is mounted: rune creates
    the container's cgroup while this runs, and the mount shows it."""
    propagation = spec.linux.rootfs_propagation or "slave"
    # An unbindable tree cannot be bind-mounted: the root becomes unbindable once entered
    # (see finish_root_propagation); until then it is a slave like the default.
    initial = "slave" if propagation == "unbindable" else propagation
    try:
        # Stop mounts from propagating back to the host (or apply the spec's choice).
        syscalls.mount(None, "/", None, PROPAGATION_OPTIONS[initial] | MS_REC, None)
        # pivot_root refuses a new root whose parent mount is shared.
        parent = _parent_mount(rootfs)
        if propagation == "shared":
            syscalls.mount(None, parent, None, MS_PRIVATE, None)
        syscalls.mount(rootfs, rootfs, None, MS_BIND | MS_REC, None)
    except OSError as error:
        raise RootfsError(f"prepare rootfs {rootfs}: {error.strerror}") from None
    for mount in spec.mounts:
        if mount.type == "cgroup":
            wait_for_cgroup()
        mount_entry(mount, rootfs, bundle, cgroup_dirs, cgroup_version)
    try:
        create_devices(spec, rootfs, in_user_namespace)
    except OSError as error:
        raise RootfsError(f"create devices: {error.strerror}") from None


def make_directory(rootfs: str, path: str) -> None:
    """Create path (and its parents) inside the rootfs, as the working directory may need."""
    target = secure_join(rootfs, path)
    try:
        os.makedirs(target, 0o755, exist_ok=True)
    except OSError as error:
        raise RootfsError(f"create directory {path}: {error.strerror}") from None


def finish_root_propagation(spec: Spec) -> None:
    """Give the container's root the rootfsPropagation asked for, once it is entered and
    every bind mount is made (an unbindable tree cannot be bound, and the bind mount of the
    rootfs was made from a private parent, which pivot_root requires)."""
    propagation = spec.linux.rootfs_propagation
    if propagation in ("shared", "unbindable"):
        try:
            syscalls.mount(None, "/", None, PROPAGATION_OPTIONS[propagation] | MS_REC, None)
        except OSError as error:
            raise RootfsError(f"make the root {propagation}: {error.strerror}") from None


def enter_rootfs(rootfs: str, no_pivot: bool) -> None:
    """Make rootfs the process's "/" and detach the host's root from the mount namespace."""
    try:
        if no_pivot:
            os.chdir(rootfs)
            syscalls.mount(rootfs, "/", None, MS_MOVE, None)
            os.chroot(".")
            os.chdir("/")
            return
        old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            # pivot_root(".", ".") stacks the old root on top of the new one; it is then
            # unmounted from beneath, without needing a directory for it inside the rootfs.
            os.fchdir(new_root)
            syscalls.pivot_root(".", ".")
            os.fchdir(old_root)
            syscalls.mount(None, ".", None, MS_SLAVE | MS_REC, None)
            syscalls.umount(".", MNT_DETACH)
        finally:
            os.close(old_root)
            os.close(new_root)
        os.chdir("/")
    except OSError as error:
        raise RootfsError(f"enter rootfs {rootfs}: {error.strerror}") from None


def mask_paths(paths: list[str]) -> None:
    """Hide paths from the container: /dev/null over files, an empty read-only tmpfs over dirs."""
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY, None)
            elif os.path.lexists(path):
                syscalls.mount("/dev/null", path, None, MS_BIND, None)
        except OSError as error:
            raise RootfsError(f"mask {path}: {error.strerror}") from None


def make_paths_readonly(paths: list[str]) -> None:
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            syscalls.mount(path, path, None, MS_BIND | MS_REC, None)
            remount_bind(path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as error:
            raise RootfsError(f"make {path} read-only: {error.strerror}") from None


def make_root_readonly() -> None:
    try:
        remount_bind("/", MS_RDONLY)
    except OSError as error:
        raise RootfsError(f"make the root filesystem read-only: {error.strerror}") from None


def write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as error:
            raise RootfsError(f"sysctl {key}={value}: {error.strerror}") from None
