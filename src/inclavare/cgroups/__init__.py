"""Control groups: one interface, a driver per cgroup version.

A container's cgroup is created at `create`, holds every process of the container (so that
`kill --all` and `delete` find them all), and is removed at `delete`. Hosts come in three
layouts: cgroup v1 (a hierarchy per controller), cgroup v2 (one unified hierarchy), and
"hybrid" (v1 controllers plus an empty v2 hierarchy, as on this project's CI machines); the
v1 driver also joins the hybrid host's v2 hierarchy, so that v2-only tools see the container.
"""

from __future__ import annotations

import os
import time

from inclavare.errors import InclavareError


class CgroupError(InclavareError):
    """A cgroup could not be created, joined, or removed."""


class Hierarchy:
    """One mounted cgroup hierarchy: where it is mounted and which controllers it holds."""

    __slots__ = ("controllers", "mountpoint", "own_path", "version")

    def __init__(self, mountpoint: str, version: int, controllers: tuple[str, ...]) -> None:
        self.mountpoint = mountpoint
        self.version = version
        self.controllers = controllers
        self.own_path = "/"  # this process's cgroup in the hierarchy, for relative paths

    @property
    def key(self) -> str:
        """How /proc/PID/cgroup names this hierarchy."""
        return "" if self.version == 2 else ",".join(self.controllers)


def _mounted_hierarchies() -> list[Hierarchy]:
    hierarchies: list[Hierarchy] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            fstype, _source, options = after.split()[:3]
            mountpoint = before.split()[4].replace("\\040", " ")
            if fstype == "cgroup2":
                hierarchies.append(Hierarchy(mountpoint, 2, ()))
            elif fstype == "cgroup":
                controllers = tuple(
                    option
                    for option in options.split(",")
                    if option not in ("rw", "ro")
                    and not option.startswith("release_agent=")
                    and option not in ("noprefix", "clone_children", "xattr", "cpuset_v2_mode")
                )
                hierarchies.append(Hierarchy(mountpoint, 1, controllers))
    own = _own_cgroups()
    for hierarchy in hierarchies:
        if hierarchy.version == 2:
            hierarchy.own_path = own.get("", "/")
        else:
            for key, path in own.items():
                if key and set(key.split(",")) == set(hierarchy.controllers):
                    hierarchy.own_path = path
    return hierarchies


def _own_cgroups() -> dict[str, str]:
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as cgroup_file:
        for line in cgroup_file:
            _, key, path = line.rstrip("\n").split(":", 2)
            paths[key] = path
    return paths


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class Cgroup:
    """The cgroup of one container, across every hierarchy the host mounts."""

    def __init__(self, relative_path: str, hierarchies: list[Hierarchy]) -> None:
        self.path = relative_path
        self.hierarchies = hierarchies
        self.directories = [self._directory(h) for h in hierarchies]

    def _directory(self, hierarchy: Hierarchy) -> str:
        if self.path.startswith("/"):
            inner = self.path
        else:
            inner = os.path.join(hierarchy.own_path, self.path)
        inner = os.path.normpath(inner)
        if inner.startswith("/.."):
            raise CgroupError(f"cgroup path {self.path!r} leaves the cgroup hierarchy")
        return hierarchy.mountpoint + inner.rstrip("/")

    @property
    def version(self) -> int:
        return 2 if all(h.version == 2 for h in self.hierarchies) else 1

    def missing_directories(self) -> list[str]:
        """The directories `create` will make, parents first (recorded before making them)."""
        missing: list[str] = []
        for directory in self.directories:
            current = directory
            pending: list[str] = []
            while not os.path.isdir(current):
                pending.append(current)
                current = os.path.dirname(current)
            missing.extend(reversed(pending))
        return missing

    def create(self) -> None:
        """Create the cgroup in every hierarchy."""
        made: list[str] = []
        try:
            for hierarchy, directory in zip(self.hierarchies, self.directories, strict=True):
                made.extend(self._make_directories(hierarchy, directory))
        except OSError as error:
            remove_directories(made)
            raise CgroupError(f"create cgroup {self.path}: {error.strerror}") from None

    @staticmethod
    def _make_directories(hierarchy: Hierarchy, directory: str) -> list[str]:
        missing: list[str] = []
        current = directory
        while not os.path.isdir(current):
            missing.append(current)
            current = os.path.dirname(current)
        made: list[str] = []
        for path in reversed(missing):
            os.mkdir(path, 0o755)
            made.append(path)
            if "cpuset" in hierarchy.controllers:
                # A new v1 cpuset starts empty and refuses tasks: inherit the parent's sets.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(path, name)) as current_file:
                        if current_file.read().strip():
                            continue
                    with open(os.path.join(os.path.dirname(path), name)) as parent_file:
                        _write(os.path.join(path, name), parent_file.read().strip())
        return made

    def add_process(self, pid: int) -> None:
        """Move pid into the cgroup; ProcessLookupError if it has exited."""
        for directory in self.directories:
            try:
                _write(os.path.join(directory, "cgroup.procs"), str(pid))
            except ProcessLookupError:
                raise
            except OSError as error:
                raise CgroupError(f"join cgroup {directory}: {error.strerror}") from None


def processes_in(directories: list[str]) -> list[int]:
    """Every process in a container's cgroup, given its directories (one per hierarchy)."""
    for directory in directories:
        try:
            with open(os.path.join(directory, "cgroup.procs")) as procs:
                return [int(line) for line in procs.read().split()]
        except FileNotFoundError:
            continue
    return []


def signal_all(directories: list[str], signal_number: int) -> None:
    for pid in processes_in(directories):
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass


def remove_directories(directories: list[str], timeout: float = 5.0) -> None:
    """Remove cgroup directories, deepest first; a just-killed process may hold one briefly."""
    deadline = time.monotonic() + timeout
    for directory in sorted(directories, key=len, reverse=True):
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if error.errno != 16 or time.monotonic() > deadline:  # EBUSY: still in use
                    raise CgroupError(f"remove cgroup {directory}: {error.strerror}") from None
                time.sleep(0.005)


def prime_migration() -> None:
    """Have the kernel start, in a background thread, the wait that the first cgroup
    migration after a quiet spell costs, while rune is still starting up.

    Moving a process into a cgroup takes a per-CPU semaphore whose writer waits for an RCU
    grace period (10-20 ms on a small VM) unless a migration happened moments before. The
    thread re-writes rune's own pid into its own cgroup: a migration that moves nothing.
    """
    import _thread

    def migrate_into_own_cgroup() -> None:
        try:
            own = _own_cgroups()
            for key in ("pids", "memory", "cpu", ""):
                if key in own:
                    mountpoint = f"/sys/fs/cgroup/{key}".rstrip("/")
                    _write(f"{mountpoint}{own[key]}/cgroup.procs", str(os.getpid()))
                    return
        except OSError:
            pass  # only an optimisation

    _thread.start_new_thread(migrate_into_own_cgroup, ())


def open_cgroup(cgroups_path: str, container_id: str) -> Cgroup:
    """The container's cgroup; as runc, <id> under rune's own cgroup when the spec gives none."""
    hierarchies = _mounted_hierarchies()
    if not hierarchies:
        raise CgroupError("no cgroup hierarchy is mounted")
    if ":" in cgroups_path:
        raise CgroupError(
            f"cgroupsPath {cgroups_path!r} is in systemd's slice:prefix:name form;"
            " rune uses the cgroupfs driver"
        )
    return Cgroup(cgroups_path or container_id, hierarchies)
