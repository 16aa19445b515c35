"""A container as rune records it: its state directory under `--root`, and its status.

The state directory `<root>/<id>/` holds `state.json` (what rune knows about the container)
and, while the container is created but not started, the `exec.fifo` its init process waits
on. The status is never stored; it is derived each time from the facts:

    creating  the directory exists but the container process is not ready yet
    created   the init process is alive and `exec.fifo` still exists (start not called)
    running   the init process is alive and has executed the user program
    paused    running, with its cgroup frozen
    stopped   the init process has exited
"""

from __future__ import annotations

import fcntl
import os

from inclavare import lightjson
from inclavare.errors import InclavareError
from inclavare.linux.proc import is_alive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CREATING = "creating"
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"

OCI_VERSION = "1.1.0"
STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"


class ContainerError(InclavareError):
    """An operation does not fit the container's state."""


class ContainerNotFound(ContainerError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f'container "{container_id}" does not exist')


def check_id(container_id: str) -> None:
    """runc's rule: letters, digits, and _ + - . only; not "." or ".."."""
    valid = (
        container_id not in ("", ".", "..")
        and container_id.isascii()
        and all(c.isalnum() or c in "_+-." for c in container_id)
    )
    if not valid:
        raise ContainerError(f"invalid container id format: {container_id!r}")


class Container:
    """A container under a state root. `record` is the content of state.json."""

    __slots__ = ("id", "record", "root")

    def __init__(self, root: str, container_id: str, record: dict[str, Any]) -> None:
        self.root = root
        self.id = container_id
        self.record = record

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, self.id)

    @property
    def fifo_path(self) -> str:
        return os.path.join(self.state_dir, EXEC_FIFO)

    @property
    def pid(self) -> int:
        pid: int = self.record.get("pid", 0)
        return pid

    @property
    def bundle(self) -> str:
        bundle: str = self.record["bundle"]
        return bundle

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.record["config"]
        return config

    @staticmethod
    def load(root: str, container_id: str) -> Container:
        check_id(container_id)
        path = os.path.join(root, container_id, STATE_FILE)
        try:
            with open(path, "rb") as state_file:
                record = lightjson.loads(state_file.read())
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None
        except ValueError:
            raise ContainerError(
                f"state of container {container_id!r} is corrupt: {path}"
            ) from None
        return Container(root, container_id, record)

    def save(self) -> None:
        """Write state.json atomically (readers never see half a file)."""
        path = os.path.join(self.state_dir, STATE_FILE)
        temporary = path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, lightjson.dumps(self.record).encode())
        finally:
            os.close(fd)
        os.rename(temporary, path)

    def status(self) -> str:
        if self.record.get("phase") == CREATING:
            return CREATING
        if not self.pid or not is_alive(self.pid, self.record.get("pid_start", -1)):
            return STOPPED
        if os.path.exists(self.fifo_path):
            return CREATED
        if self.frozen():
            return PAUSED
        return RUNNING

    def frozen(self) -> bool:
        from inclavare.cgroups import is_frozen

        return is_frozen(self.record.get("cgroup_dirs_leaf", []))

    def oci_state(self) -> dict[str, Any]:
        """The OCI state document, with runc's extra fields (rootfs, created, owner)."""
        status = self.status()
        state: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status not in (STOPPED, CREATING) else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.record.get("rootfs", ""),
            "created": self.record.get("created", ""),
            "owner": self.record.get("owner", ""),
        }
        annotations = self.config.get("annotations")
        if annotations:
            state["annotations"] = annotations
        return state

    def hook_state(self, status: str | None = None) -> str:
        """The state JSON that hooks read on their standard input."""
        state = self.oci_state()
        if status is not None:
            state["status"] = status
        state["pid"] = self.pid
        for extra in ("rootfs", "created", "owner"):
            state.pop(extra, None)
        return lightjson.dumps(state)


class StateLock:
    """An exclusive lock on a container's state directory, against concurrent rune commands."""

    __slots__ = ("fd", "path")

    def __init__(self, state_dir: str) -> None:
        self.path = state_dir
        self.fd = -1

    def __enter__(self) -> StateLock:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(os.path.basename(self.path)) from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


def list_containers(root: str) -> list[Container]:
    """Every container with a state file under root, sorted by id."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    containers = []
    for name in names:
        try:
            containers.append(Container.load(root, name))
        except ContainerError:
            continue  # a directory of a create that is under way or was interrupted
    return containers
