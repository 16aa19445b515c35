"""OOM notifications of the containers' memory cgroups (cgroup v1), for /tasks/oom events.

cgroup v1 signals an out-of-memory condition through an eventfd registered, with a
descriptor of the cgroup's memory.oom_control, in its cgroup.event_control; the same eventfd
is also signalled when the cgroup is removed, which is told apart by the cgroup being gone.
A container whose memory controller is on cgroup v2 is not watched (this shim does not
report OOM there yet).
"""

from __future__ import annotations

import os
import selectors
import threading
from collections.abc import Callable


def memory_cgroup(pid: int) -> str | None:
    """The directory of pid's memory cgroup on a v1 hierarchy, or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as membership:
            lines = membership.read().splitlines()
        with open("/proc/self/mountinfo") as mountinfo:
            mounts = mountinfo.read().splitlines()
    except OSError:
        return None
    path = None
    for line in lines:
        _, controllers, cgroup_path = line.split(":", 2)
        if "memory" in controllers.split(","):
            path = cgroup_path
    if path is None:
        return None
    for mount in mounts:
        fields = mount.split()
        separator = fields.index("-")
        fstype, options = fields[separator + 1], fields[separator + 3]
        if fstype == "cgroup" and "memory" in options.split(","):
            root, mountpoint = fields[3], fields[4]
            relative = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
            return os.path.normpath(os.path.join(mountpoint, relative))
    return None


class OomWatcher:
    def __init__(self, on_oom: Callable[[str], None], log: Callable[[str], None]) -> None:
        self.on_oom = on_oom
        self.log = log
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._watched: dict[int, tuple[str, str, int]] = {}  # eventfd -> (id, cgroup, oom fd)
        self._thread: threading.Thread | None = None

    def watch(self, container_id: str, pid: int) -> None:
        directory = memory_cgroup(pid)
        if directory is None:
            return
        event = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            control = os.open(
                os.path.join(directory, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC
            )
        except OSError as error:
            os.close(event)
            self.log(f"oom: {container_id}: {error}")
            return
        try:
            with open(os.path.join(directory, "cgroup.event_control"), "w") as register:
                register.write(f"{event} {control}")
        except OSError as error:
            os.close(event)
            os.close(control)
            self.log(f"oom: {container_id}: {error}")
            return
        with self._lock:
            self._watched[event] = (container_id, directory, control)
            self._selector.register(event, selectors.EVENT_READ)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def unwatch(self, container_id: str) -> None:
        with self._lock:
            for event, (watched_id, _, control) in list(self._watched.items()):
                if watched_id == container_id:
                    self._selector.unregister(event)
                    del self._watched[event]
                    os.close(event)
                    os.close(control)

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select(timeout=1.0):
                event = int(key.fd)
                try:
                    os.eventfd_read(event)
                except OSError:
                    continue
                with self._lock:
                    if event not in self._watched:
                        continue  # unwatched meanwhile
                    container_id, directory, control = self._watched[event]
                    gone = not os.path.exists(os.path.join(directory, "memory.oom_control"))
                    if gone:
                        self._selector.unregister(event)
                        del self._watched[event]
                        os.close(event)
                        os.close(control)
                if not gone:
                    self.on_oom(container_id)
