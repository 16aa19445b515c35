"""What rune does while a container's process runs in the foreground (`run`, `exec`):
pass signals on to it, and be the other end of its terminal."""

from __future__ import annotations

import os

# Signals rune keeps for itself: the ones it cannot catch and the ones it handles.
_NOT_FORWARDED = ("SIGKILL", "SIGSTOP", "SIGCHLD", "SIGWINCH")


class SignalForwarder:
    """Catches the signals rune receives from the start of `run` or `exec`, and passes them on
    to the process once it runs (those that arrive earlier wait for it, as with runc)."""

    def __init__(self) -> None:
        import _signal

        self.pid = 0
        self.pending: list[int] = []
        skipped = {getattr(_signal, name) for name in _NOT_FORWARDED}
        for signal_number in range(1, _signal.NSIG):
            if signal_number in skipped:
                continue
            try:
                _signal.signal(signal_number, self._received)
            except (OSError, ValueError):
                pass  # signals reserved by the C library (32, 33)

    def _received(self, signal_number: int, frame: object) -> None:
        if self.pid:
            self._send(signal_number)
        else:
            self.pending.append(signal_number)

    def _send(self, signal_number: int) -> None:
        try:
            os.kill(self.pid, signal_number)
        except ProcessLookupError:
            pass

    def forward_to(self, pid: int) -> None:
        self.pid = pid
        while self.pending:
            self._send(self.pending.pop(0))


def proxy_terminal(master: int, pid: int) -> int:
    """Copy between rune's standard streams and a container's terminal until the process
    `pid` (rune's child) exits; return its exit code, 128+N for signal N."""
    import select
    import termios
    import tty

    from inclavare.runtime.console import copy_size

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSANOW)  # TCSAFLUSH would discard what was already typed
        copy_size(0, master)
    reading = [0, master]
    try:
        while True:
            exited, status = os.waitpid(pid, os.WNOHANG)
            if exited == pid:
                _drain(master)
                return (
                    128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                )
            ready, _, _ = select.select(reading, [], [], 0.05)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the container closed its terminal
                    data = b""
                if not data:
                    reading.remove(master)
                else:
                    os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    reading.remove(0)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)


def _drain(master: int) -> None:
    import select

    while select.select([master], [], [], 0)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(1, data)
