"""One owner for every child's exit status.

The shim is a subreaper: the container's init and exec'd processes become its children when
`rune` exits, alongside the `rune` commands it runs. One thread reaps them all with
waitpid(-1) and hands each status to whoever asked for that pid; a status that arrives before
anyone asked (a short-lived exec) is kept until asked. Nothing else may wait for a child (no
subprocess.Popen.wait): it would steal statuses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def exit_code(status: int) -> int:
    """A wait status as the shell and containerd report it: the code, or 128 + signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 255


class Exit:
    """The exit code of one child, once it is known."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.code = -1

    def set(self, code: int) -> None:
        self.code = code
        self._done.set()

    def result(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise TimeoutError("the process has not exited")
        return self.code


class Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children = threading.Condition(self._lock)
        self._waiting: dict[int, Exit] = {}
        self._unclaimed: dict[int, int] = {}
        # told of pids nobody waits for; True when it knew the pid (a container's process)
        self.on_exit: Callable[[int, int], bool] | None = None
        self._thread = threading.Thread(target=self._reap, daemon=True)
        self._thread.start()

    def spawned(self) -> None:
        """A child was started: a reaper idle for lack of children goes back to waiting."""
        with self._children:
            self._children.notify()

    def wait(self, pid: int) -> Exit:
        """pid's exit. Ask right after starting the child (an early exit is kept)."""
        with self._lock:
            found = self._waiting.get(pid)
            if found is None:
                found = Exit()
                if pid in self._unclaimed:
                    found.set(self._unclaimed.pop(pid))
                else:
                    self._waiting[pid] = found
            return found

    def claimed(self, pid: int) -> int | None:
        """The exit code of pid if it already exited unwatched (taken out of the store)."""
        with self._lock:
            return self._unclaimed.pop(pid, None)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                with self._children:
                    self._children.wait(0.5)
                continue
            except InterruptedError:
                continue
            code = exit_code(status)
            with self._lock:
                waiter = self._waiting.pop(pid, None)
                if waiter is None:
                    # kept before on_exit is asked, so that a pid being registered at
                    # this moment finds its exit in one place or the other
                    self._unclaimed[pid] = code
            if waiter is not None:
                waiter.set(code)
            elif self.on_exit is not None and self.on_exit(pid, code):
                with self._lock:
                    self._unclaimed.pop(pid, None)
