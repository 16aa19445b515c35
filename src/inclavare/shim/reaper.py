"""One owner for every child's exit status.

The shim is a subreaper: the container's init and exec'd processes become its children when
`rune` exits, alongside the `rune` commands it runs. A single SIGCHLD handler reaps them all
with waitpid(-1) and hands each status to whoever asked for that pid; a status that arrives
before anyone asked (a short-lived exec) is kept until asked. Nothing else may wait for a
child (no subprocess.Popen.wait, no asyncio child watcher): it would steal statuses.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable


def exit_code(status: int) -> int:
    """A wait status as the shell and containerd report it: the code, or 128 + signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 255


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._unclaimed: dict[int, int] = {}
        # told of pids nobody waits for; True when it knew the pid (a container's process)
        self.on_exit: Callable[[int, int], bool] | None = None
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def wait(self, pid: int) -> asyncio.Future[int]:
        """A future of pid's exit code. Ask right after starting the child, on the loop."""
        future = self._waiting.get(pid)
        if future is None:
            future = self._loop.create_future()
            if pid in self._unclaimed:
                future.set_result(self._unclaimed.pop(pid))
            else:
                self._waiting[pid] = future
        return future

    def claimed(self, pid: int) -> int | None:
        """The exit code of pid if it already exited unwatched (taken out of the store)."""
        return self._unclaimed.pop(pid, None)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            future = self._waiting.pop(pid, None)
            if future is not None:
                if not future.done():
                    future.set_result(code)
            elif self.on_exit is None or not self.on_exit(pid, code):
                self._unclaimed[pid] = code
