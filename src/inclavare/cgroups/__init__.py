"""Control groups: one interface, a driver per cgroup version.

A container's cgroup is created at `create`, holds every process of the container (so that
`kill --all` and `delete` find them all), and is removed at `delete`. Hosts come in three
layouts: cgroup v1 (a hierarchy per controller), cgroup v2 (one unified hierarchy), and
"hybrid" (v1 controllers plus an empty v2 hierarchy, as on this project's CI machines); the
v1 driver also joins the hybrid host's v2 hierarchy, so that v2-only tools see the container.

The runtime's calls, by command (`leaves` is the container's cgroup, one directory per
hierarchy, as recorded in its state at create):

    create   validate_resources(spec.linux.resources) -> Resources   (pure, first)
             open_cgroup(path, id).check_resources(resources) -> warnings (before mkdir)
             Cgroup.create(), add_process(pid), then apply_resources(leaves, resources,
             created_devices) once the init has prepared the root filesystem
    pause    freeze(leaves); resume: thaw(leaves); status: is_frozen(leaves)
    update   parse_update_flags(flags) -> dict; update_resources(leaves, current, update)
             -> the merged resources, to keep in the state
    events   stats(leaves) -> the "data" of `runc events --stats`; oom_kills(leaves)
    features features() -> the `linux.cgroup` object of the features document
    delete   signal_all / processes_in / remove_directories, as before

Resource validation and conversion live in `resources.py`, the drivers in `v1.py` and
`v2.py`, statistics in `statistics.py`, device rules in `devices.py` and `ebpf.py`; this module
imports them only when called, since every `rune` command imports it.
"""

from __future__ import annotations

import os
import time

from inclavare.cgroups.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from inclavare.cgroups.driver import Driver
    from inclavare.cgroups.resources import Resources

__all__ = [
    "UPDATE_FLAGS",
    "Cgroup",
    "CgroupError",
    "apply_resources",
    "driver_for",
    "features",
    "freeze",
    "is_frozen",
    "oom_kills",
    "open_cgroup",
    "parse_update_flags",
    "prime_migration",
    "processes_in",
    "remove_directories",
    "signal_all",
    "stats",
    "thaw",
    "update_resources",
    "validate_resources",
]


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


def _hierarchy_of(directory: str, hierarchies: list[Hierarchy]) -> Hierarchy | None:
    best: Hierarchy | None = None
    for hierarchy in hierarchies:
        mountpoint = hierarchy.mountpoint.rstrip("/")
        inside = directory == mountpoint or directory.startswith(mountpoint + "/")
        if inside and (best is None or len(mountpoint) > len(best.mountpoint.rstrip("/"))):
            best = hierarchy
    return best


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

    @classmethod
    def from_directories(cls, leaves: Sequence[str]) -> Cgroup:
        """The cgroup of a container created earlier, from the directories in its state."""
        hierarchies = _mounted_hierarchies()
        cgroup = cls.__new__(cls)
        cgroup.path = ""
        cgroup.hierarchies = []
        cgroup.directories = []
        for leaf in leaves:
            hierarchy = _hierarchy_of(leaf, hierarchies)
            if hierarchy is not None:
                cgroup.hierarchies.append(hierarchy)
                cgroup.directories.append(leaf)
        if not cgroup.directories:
            raise CgroupError(f"no mounted cgroup hierarchy holds {', '.join(leaves) or 'nothing'}")
        return cgroup

    def driver(self) -> Driver:
        """The v1 driver when any hierarchy is v1 (including hybrid hosts), else the v2 one."""
        if self.version == 1:
            from inclavare.cgroups.v1 import V1Driver

            controllers: dict[str, str] = {}
            others: list[str] = []
            for hierarchy, directory in zip(self.hierarchies, self.directories, strict=True):
                named = [c for c in hierarchy.controllers if not c.startswith("name=")]
                for controller in named:
                    controllers[controller] = directory
                if not named:
                    others.append(directory)
            return V1Driver(controllers, others)
        from inclavare.cgroups.v2 import V2Driver

        return V2Driver(self.directories[0], self.hierarchies[0].mountpoint)

    def check_resources(self, resources: Resources) -> list[str]:
        """Refuse what this host cannot apply (CgroupError naming the field); the warnings
        to log for what it ignores. Reads only the mounts: call it before `create`."""
        return self.driver().check_host(resources, "config.json: linux.resources")

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


def remove_directories(
    directories: list[str], leaves: Sequence[str] = (), timeout: float = 5.0
) -> None:
    """Remove the cgroup directories a container made, deepest first.

    A leaf (the container's own cgroup) may be held briefly by a process that was just
    killed: it is retried until `timeout`. A parent that create made for the leaf may hold
    the cgroups of other containers by now: it is removed only if it is empty.
    """
    deadline = time.monotonic() + timeout
    for directory in sorted(directories, key=len, reverse=True):
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                busy = error.errno in (16, 39)  # EBUSY, ENOTEMPTY
                if busy and directory not in leaves:
                    break  # another container's cgroup lives below it
                if not busy or time.monotonic() > deadline:
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


# -- resources, pause/resume, update, events, features


def validate_resources(
    resources: object, where: str = "config.json: linux.resources", partial: bool = False
) -> Resources:
    """The spec's `linux.resources` as typed values; CgroupError naming a bad field. Pure."""
    from inclavare.cgroups.resources import validate_resources as validate

    return validate(resources, where, partial)


def driver_for(leaves: Sequence[str]) -> Driver:
    """The driver of a container's cgroup, from the leaf directories in its state."""
    return Cgroup.from_directories(leaves).driver()


def apply_resources(
    leaves: Sequence[str],
    resources: Resources,
    created_devices: Sequence[tuple[str, int, int]] = (),
) -> None:
    """Write the resources into the container's new cgroup, device rules included:
    the spec's, those runc allows every container, and one per `linux.devices` entry
    (`created_devices`: (type, major, minor), type "c", "u", "b" or "p")."""
    driver_for(leaves).apply(resources, created_devices)


def update_resources(
    leaves: Sequence[str], current: object, update: object, where: str = "resources"
) -> dict[str, Any]:
    """`rune update`: merge the update into the resources the container has (`current`,
    the JSON object), check and apply the result, and return it for the state. Device
    rules are not updated (as with runc)."""
    from inclavare.cgroups.resources import merge_resources
    from inclavare.cgroups.resources import validate_resources as validate

    validate(update, where, partial=True)
    changes = dict(update) if isinstance(update, dict) else {}
    changes.pop("devices", None)
    merged = merge_resources(current, changes)
    resources = validate(merged, where, partial=True)
    driver = driver_for(leaves)
    driver.check_host(resources, where)
    driver.apply(resources, update=True)
    return merged


def freeze(leaves: Sequence[str]) -> None:
    """Freeze every process of the container, waiting until the kernel says it is done."""
    driver_for(leaves).freeze()


def thaw(leaves: Sequence[str]) -> None:
    driver_for(leaves).thaw()


def is_frozen(leaves: Sequence[str]) -> bool:
    """Whether the container's cgroup is frozen (or freezing). Every status query asks this,
    so it reads the freezer's file directly: the v1 freezer hierarchy's `freezer.state`, or
    cgroup v2's `cgroup.freeze` where there is no v1 freezer."""
    for leaf in leaves:
        try:
            with open(os.path.join(leaf, "freezer.state")) as state:
                return state.read().strip() in ("FROZEN", "FREEZING")
        except FileNotFoundError:
            continue
    for leaf in leaves:
        try:
            with open(os.path.join(leaf, "cgroup.freeze")) as state:
                return state.read().strip() == "1"
        except FileNotFoundError:
            continue
    return False


def stats(leaves: Sequence[str]) -> dict[str, Any]:
    """The container's statistics, as `runc events --stats` prints them under "data"."""
    return driver_for(leaves).stats()


def oom_kills(leaves: Sequence[str]) -> int:
    """The OOM killer's kills in the container's cgroup so far (for `events`' "oom")."""
    return driver_for(leaves).oom_kills()


def features() -> dict[str, bool]:
    """The `linux.cgroup` object of the runtime-spec features document, for this host:
    both drivers are built in, systemd is not (rune manages cgroups through cgroupfs),
    and RDMA limits are supported where the host has the rdma controller."""
    rdma = False
    try:
        hierarchies = _mounted_hierarchies()
    except OSError:
        hierarchies = []
    for hierarchy in hierarchies:
        if hierarchy.version == 1:
            rdma = rdma or "rdma" in hierarchy.controllers
        else:
            controllers = os.path.join(hierarchy.mountpoint, "cgroup.controllers")
            try:
                with open(controllers) as offered:
                    rdma = rdma or "rdma" in offered.read().split()
            except OSError:
                pass
    return {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": rdma}


# `rune update`'s flags, as runc spells them: (names, kind, help); kind is "str" or "int".
_USECS = "(in usecs)"
UPDATE_FLAGS: tuple[tuple[str, str, str], ...] = (
    (
        "resources, r",
        "str",
        "path to the file containing the resources to update"
        " or '-' to read from the standard input",
    ),
    ("blkio-weight", "int", "Specifies per cgroup weight, range is from 10 to 1000"),
    ("cpu-period", "str", f"CPU CFS period to be used for hardcapping {_USECS}. 0: default"),
    ("cpu-quota", "str", f"CPU CFS hardcap limit {_USECS}. Allowed cpu time in a given period"),
    ("cpu-burst", "str", f"CPU CFS hardcap burst limit {_USECS}, above the quota"),
    ("cpu-share, cpu-shares", "str", "CPU shares (relative weight vs. other containers)"),
    ("cpu-rt-period", "str", f"CPU realtime period {_USECS}. 0 to use system default"),
    ("cpu-rt-runtime", "str", f"CPU realtime hardcap limit {_USECS} in a given period"),
    ("cpuset-cpus", "str", "CPU(s) to use"),
    ("cpuset-mems", "str", "Memory node(s) to use"),
    ("cpu-idle", "str", "set cgroup SCHED_IDLE or not, 0: default behavior, 1: SCHED_IDLE"),
    ("kernel-memory", "str", "Kernel memory limit (in bytes); recent kernels ignore it"),
    ("kernel-memory-tcp", "str", "Kernel memory limit for TCP buffers (in bytes)"),
    ("memory", "str", "Memory limit (in bytes)"),
    ("memory-reservation", "str", "Memory reservation or soft_limit (in bytes)"),
    ("memory-swap", "str", "Total memory usage (memory + swap); '-1' for unlimited swap"),
    ("pids-limit", "int", "Maximum number of pids allowed in the container"),
    ("l3-cache-schema", "str", "Intel RDT/CAT L3 cache schema (not supported)"),
    ("mem-bw-schema", "str", "Intel RDT/MBA memory bandwidth schema (not supported)"),
)


def parse_update_flags(
    flags: Mapping[str, object], read_input: Callable[[str], bytes] | None = None
) -> dict[str, Any]:
    """The resources object that `rune update`'s flags describe, keyed by flag name (the
    first name in UPDATE_FLAGS, dashes kept; values as given, absent/empty/0 unset)."""
    from inclavare.cgroups.update import parse_update_flags as parse

    return parse(flags, read_input)
