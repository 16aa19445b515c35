"""`run`: create, start, and (unless detached) wait for the container, as `runc run` does.

In the foreground rune stays the parent of the container's init, forwards the signals it
receives to it, and, when the spec asks for a terminal without a --console-socket, becomes
the terminal's other end itself: its own standard input and output are connected to the
container's pseudo-terminal.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError
from inclavare.oci.spec import load_spec
from inclavare.runtime.create import CreateOptions, create_container
from inclavare.runtime.lifecycle import delete_container, destroy, start, wait_for_exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.runtime.container import Container

# Signals rune keeps for itself: the ones it cannot catch and the ones it handles.
_NOT_FORWARDED = ("SIGKILL", "SIGSTOP", "SIGCHLD", "SIGWINCH")


class SignalForwarder:
    """Catches the signals rune receives from the start of `run`, and passes them on to the
    container's init once it runs (those that arrive earlier wait for it, as with runc)."""

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


def run_container(
    root: str, container_id: str, options: CreateOptions, detach: bool, keep: bool
) -> int:
    forwarder = None if detach else SignalForwarder()
    bundle = os.path.abspath(options.bundle or os.getcwd())
    options.bundle = bundle
    spec = load_spec(bundle)
    terminal_socket = -1
    if spec.process is not None and spec.process.terminal and not options.console_socket:
        if detach:
            raise InclavareError(
                "cannot allocate a terminal for a detached container without --console-socket"
            )
        import _socket

        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        terminal_socket = ours.detach()
        options.console_socket_fd = theirs.detach()
    try:
        container = create_container(root, container_id, options, spec)
    finally:
        if options.console_socket_fd >= 0:
            os.close(options.console_socket_fd)
    master = -1
    try:
        if terminal_socket >= 0:
            from inclavare.runtime.console import receive_fd

            master = receive_fd(terminal_socket)
            os.close(terminal_socket)
        start(container)
    except BaseException:
        destroy(container)
        raise
    if forwarder is None:
        return 0
    forwarder.forward_to(container.pid)
    code = _proxy_terminal(container, master) if master >= 0 else wait_for_exit(container)
    if not keep:
        delete_container(container, force=True)
    return code


def _proxy_terminal(container: Container, master: int) -> int:
    """Copy between rune's standard streams and the container's terminal until init exits."""
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
            pid, status = os.waitpid(container.pid, os.WNOHANG)
            if pid == container.pid:
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
