"""start, kill, delete, and waiting for a container: the lifecycle after `create`.

The runtime-spec's rules on hooks apply here: poststart hooks run after the user program has
started (and a failure is a warning), poststop hooks run after the container is deleted (a
failure is a warning too).
"""

from __future__ import annotations

import os
import time

from inclavare import log
from inclavare.cgroups import freeze, remove_directories, signal_all, thaw
from inclavare.errors import InclavareError
from inclavare.linux.proc import is_alive
from inclavare.runtime.container import (
    CREATED,
    CREATING,
    PAUSED,
    RUNNING,
    STOPPED,
    Container,
    ContainerError,
    ContainerNotFound,
    StateLock,
)
from inclavare.runtime.create import kill_all_and_wait, reap_children, remove_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_START_POLL_SECONDS = 0.1


def _run_warning_hooks(container: Container, kind: str, status: str) -> None:
    from inclavare.oci.spec import Spec
    from inclavare.runtime.hooks import HookError, run_hooks

    hooks = Spec(container.config).hooks[kind]
    if not hooks:
        return
    try:
        run_hooks(hooks, kind, container.hook_state(status))
    except HookError as error:
        log.warning(str(error))


class _InitDied(Exception):
    pass


def _open_fifo_while_alive(container: Container) -> int:
    """Open exec.fifo for reading; it blocks until init opens it for writing, so check
    periodically that init still lives (it may die after `create` returned)."""
    import _signal

    def check(signal_number: int, frame: object) -> None:
        if not is_alive(container.pid, container.record["pid_start"]):
            raise _InitDied

    previous = _signal.signal(_signal.SIGALRM, check)
    _signal.setitimer(_signal.ITIMER_REAL, _START_POLL_SECONDS, _START_POLL_SECONDS)
    try:
        return os.open(container.fifo_path, os.O_RDONLY | os.O_CLOEXEC)
    except _InitDied:
        raise ContainerError("container init died before start") from None
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0, 0)
        _signal.signal(_signal.SIGALRM, previous)


def start(container: Container) -> None:
    with StateLock(container.state_dir):
        status = container.status()
        if status == STOPPED:
            raise ContainerError("cannot start a container that has stopped")
        if status != CREATED:
            raise ContainerError(f"cannot start an already {status} container")
        fifo = _open_fifo_while_alive(container)
        try:
            report = b""
            while chunk := os.read(fifo, 4096):
                report += chunk
        finally:
            os.close(fifo)
        os.unlink(container.fifo_path)
        # init writes "0" right before execve, and an error after it if execve failed.
        if report != b"0":
            problem = report[1:] if report.startswith(b"0") else report
            reason = problem.decode(errors="replace") or "container init exited before start"
            raise ContainerError(f"start container {container.id}: {reason}")
        _run_warning_hooks(container, "poststart", RUNNING)


def kill(container: Container, signal_number: int, all_processes: bool = False) -> None:
    status = container.status()
    # "container not running" is the phrase containerd's shim looks for.
    if status in (STOPPED, CREATING):
        raise ContainerError("container not running")
    if all_processes:
        signal_all(container.record.get("cgroup_dirs_leaf", []), signal_number)
        return
    try:
        os.kill(container.pid, signal_number)
    except ProcessLookupError:
        raise ContainerError("container not running") from None


def destroy(container: Container) -> None:
    """Kill whatever is left of the container and remove its cgroup and state."""
    record = container.record
    leaves: list[str] = record.get("cgroup_dirs_leaf", [])
    if container.pid:
        try:
            os.kill(container.pid, 9)
        except ProcessLookupError:
            pass
    if container.frozen():
        thaw(leaves)  # frozen processes cannot die
    kill_all_and_wait(leaves)
    deadline = time.monotonic() + 10
    while container.pid and is_alive(container.pid, record.get("pid_start", -1)):
        if time.monotonic() > deadline:
            raise InclavareError(f"container init {container.pid} does not exit")
        reap_children()
        time.sleep(0.002)
    remove_directories(record.get("cgroup_dirs", []), record.get("cgroup_dirs_leaf", []))
    remove_state_dir(container.state_dir)


def delete(root: str, container_id: str, force: bool = False) -> None:
    try:
        container = Container.load(root, container_id)
    except ContainerNotFound:
        # An interrupted create may have left a directory without a state file.
        state_dir = os.path.join(root, container_id)
        if os.path.isdir(state_dir):
            remove_state_dir(state_dir)
        if force:
            return
        raise
    delete_container(container, force)


def delete_container(container: Container, force: bool = False) -> None:
    with StateLock(container.state_dir):
        status = container.status()
        if status in (RUNNING, PAUSED, CREATING) and not force:
            raise ContainerError(
                f"cannot delete container {container.id} that is not stopped: {status}"
            )
        was_created = status != CREATING
        destroy(container)
    if was_created:
        _run_warning_hooks(container, "poststop", STOPPED)


def pause(container: Container) -> None:
    with StateLock(container.state_dir):
        status = container.status()
        if status == PAUSED:
            raise ContainerError(f"container {container.id} is already paused")
        if status not in (RUNNING, CREATED):
            raise ContainerError(f"container not running: {container.id} is {status}")
        freeze(container.record.get("cgroup_dirs_leaf", []))


def resume(container: Container) -> None:
    with StateLock(container.state_dir):
        status = container.status()
        if status != PAUSED:
            raise ContainerError(f"container not paused: {container.id} is {status}")
        thaw(container.record.get("cgroup_dirs_leaf", []))


def update(container: Container, changes: dict[str, Any]) -> None:
    """Change the resources of a container that exists, and remember them for next time."""
    from inclavare.cgroups import update_resources

    with StateLock(container.state_dir):
        status = container.status()
        if status in (STOPPED, CREATING):
            raise ContainerError(f"container {container.id} is {status}: nothing to update")
        _check_epc_budget(container, changes)
        leaves = container.record.get("cgroup_dirs_leaf", [])
        current = container.record.get("resources") or {}
        container.record["resources"] = update_resources(leaves, current, changes)
        container.save()


def _check_epc_budget(container: Container, changes: dict[str, Any]) -> None:
    """A sim enclave's memory stays within its EPC budget: an update may lower the limit,
    not lift it above the budget (nor remove it)."""
    enclave = container.record.get("enclave") or {}
    budget = enclave.get("epc_limit_mib")
    memory = changes.get("memory")
    if budget is None or enclave.get("type") != "sim" or not isinstance(memory, dict):
        return
    for key in ("limit", "swap"):
        value = memory.get(key)
        if isinstance(value, int) and (value < 0 or value > budget << 20):
            shown = "unlimited" if value < 0 else f"{value} bytes"
            raise ContainerError(
                f"memory {key} {shown} exceeds the EPC budget of enclave container "
                f"{container.id} ({budget} MiB)"
            )


def wait_for_exit(container: Container) -> int:
    """Wait for the container's init (rune's child, as subreaper) and return its exit code,
    128+N when a signal N ended it, as a shell reports it."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255  # init is not rune's child: nothing to wait for
        if pid != container.pid:
            continue  # an orphan of the container, reaped
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)
