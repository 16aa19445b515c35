"""A process's standard streams, between the fifos containerd made and the process.

Without a terminal the process gets pipes; with one, `rune` hands the pty master over the
console socket. One thread per process moves the bytes.

An output fifo is opened for writing once containerd's reader is there (as the runc shim
does): a fifo that nobody holds open drops what it holds, so writing and closing before the
reader arrived would lose the output. The wait is bounded; with no reader after it, the fifo
is opened read-write and output waits there for a reader. A reader that goes away loses the
rest of the output; the process is never blocked by it. An output reaching end-of-file closes
its fifo, which is the end-of-file containerd's reader waits for. The stdin fifo is opened
read-only without blocking: Linux reports no hang-up on it until a writer has come and gone,
so its end-of-file (or containerd's CloseIO) is what closes the process's standard input.
"""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import socket
import sys
import threading
import time

from inclavare.runtime.console import receive_fd, set_size

READER_WAIT = 3.0
DRAIN_WAIT = 1.0
_FIONREAD = 0x541B


def _open_fifo(path: str) -> int:
    deadline = time.monotonic() + READER_WAIT
    delay = 0.0005
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if time.monotonic() > deadline:
                return os.open(path, os.O_RDWR | os.O_CLOEXEC)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
            continue
        os.set_blocking(fd, True)
        return fd


def _wait_drained(fd: int, limit: float) -> None:
    """Wait until the reader took everything written to the fifo fd, for at most limit.

    Closing the last writer while the reader is not in the fifo (its open interrupted and
    restarted by a signal, say) would drop the data, or leave the restarted open waiting for
    a writer that never comes; while the writer stays, the reader's open completes."""
    deadline = time.monotonic() + limit
    pending = bytearray(4)
    delay = 0.0005
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(fd, _FIONREAD, pending)
        except OSError:
            return
        if int.from_bytes(pending, sys.byteorder) == 0:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _private_directory() -> str:
    """A new directory only root can enter, for a console socket (tempfile costs a
    noticeable import at the shim's start)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(base, f"rune-console-{os.urandom(8).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def _open_input_fifo(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


class ProcessIO:
    def __init__(self, stdin: str, stdout: str, stderr: str, terminal: bool) -> None:
        self.terminal = terminal
        self._routes: dict[int, int | None] = {}  # source -> destination (None: discard)
        self._inputs: set[int] = set()
        self._owned: set[int] = set()  # descriptors this object closes at the end
        self._child: list[int] = []  # the child's ends, closed once it has them
        self._console_dir = ""
        self._console_listener: socket.socket | None = None
        self.console_socket = ""
        self.master = -1
        self._stdin_destination = -1
        self._stdin_fifo = self._stdout_fifo = self._stderr_fifo = -1
        self.child_stdio = (-1, -1, -1)
        self._wake_read, self._wake_write = os.pipe()
        self._stdin_closing = False
        self._stopping = False
        self._outputs_done = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._setup(stdin, stdout, stderr)
        except BaseException:
            self.close()
            raise

    def _own(self, fd: int) -> int:
        self._owned.add(fd)
        return fd

    def _setup(self, stdin: str, stdout: str, stderr: str) -> None:
        if stdin:
            self._stdin_fifo = self._own(_open_input_fifo(stdin))
        if stdout:
            self._stdout_fifo = self._own(_open_fifo(stdout))
        if stderr and not self.terminal:
            self._stderr_fifo = self._own(_open_fifo(stderr))
        if self.terminal:
            self._console_dir = _private_directory()
            self.console_socket = os.path.join(self._console_dir, "console.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._console_listener = listener
            listener.bind(self.console_socket)
            listener.listen(1)
            listener.settimeout(30)
            null = self._null()
            self.child_stdio = (null, null, null)
        else:
            self.child_stdio = (
                self._pipe_in() if stdin else self._null(),
                self._pipe_out(self._stdout_fifo) if stdout else self._null(),
                self._pipe_out(self._stderr_fifo) if stderr else self._null(),
            )

    def _null(self) -> int:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._child.append(fd)
        return fd

    def _pipe_in(self) -> int:
        read_end, write_end = os.pipe()
        self._child.append(read_end)
        self._owned.add(write_end)
        self._routes[self._stdin_fifo] = write_end
        self._inputs.add(self._stdin_fifo)
        self._stdin_destination = write_end
        return read_end

    def _pipe_out(self, fifo: int) -> int:
        read_end, write_end = os.pipe()
        self._child.append(write_end)
        self._owned.add(read_end)
        self._routes[read_end] = fifo
        return write_end

    def receive_console(self) -> None:
        """After `rune create/exec` returned: take the pty master it sent."""
        assert self._console_listener is not None
        connection, _ = self._console_listener.accept()
        try:
            self.master = receive_fd(connection.fileno())
        finally:
            connection.close()
            self._close_console_socket()
        self._owned.add(self.master)
        self._routes[self.master] = self._stdout_fifo if self._stdout_fifo >= 0 else None
        if self._stdin_fifo >= 0:
            self._routes[self._stdin_fifo] = self.master
            self._inputs.add(self._stdin_fifo)

    def _close_console_socket(self) -> None:
        if self._console_listener is not None:
            self._console_listener.close()
            self._console_listener = None
        if self._console_dir:
            try:
                os.unlink(self.console_socket)
            except OSError:
                pass
            os.rmdir(self._console_dir)
            self._console_dir = ""

    def started(self) -> None:
        """The child holds its ends now: drop ours and start moving bytes."""
        for fd in self._child:
            os.close(fd)
        self._child = []
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def resize(self, width: int, height: int) -> None:
        if self.master >= 0:
            set_size(self.master, height, width)

    def close_stdin(self) -> None:
        if self._stopping:
            return
        self._stdin_closing = True
        os.write(self._wake_write, b"i")

    def wait_outputs(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        return self._outputs_done.wait(timeout)

    def close(self) -> None:
        """Stop copying and close everything (the process is gone or being deleted)."""
        if self._stopping:
            return
        self._stopping = True
        if self._thread is not None:
            os.write(self._wake_write, b"x")
            self._thread.join(5)
        for fd in [*self._child, *self._owned, self._wake_read, self._wake_write]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._child, self._owned = [], set()
        self._close_console_socket()

    def _copy(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_read, selectors.EVENT_READ)
        for source in self._routes:
            selector.register(source, selectors.EVENT_READ)
        outputs = {source for source in self._routes if source not in self._inputs}
        if not outputs:
            self._outputs_done.set()
        try:
            while not self._stopping:
                for key, _ in selector.select():
                    source = int(key.fd)
                    if source == self._wake_read:
                        os.read(self._wake_read, 64)
                        if self._stdin_closing:
                            self._drain_input()
                            self._stop_input(selector)
                        continue
                    if source not in self._routes:
                        continue  # stopped earlier in this batch (CloseIO and EOF together)
                    try:
                        data = os.read(source, 65536)
                    except OSError as error:
                        if error.errno == errno.EAGAIN:
                            continue
                        data = b""  # EIO: the terminal's last holder closed it
                    if data:
                        self._deliver(source, data)
                        continue
                    selector.unregister(source)
                    if source == self._stdin_fifo:
                        self._stop_input(selector)
                    elif source in outputs:
                        outputs.discard(source)
                        self._finish_output(source)
                        if not outputs:
                            self._outputs_done.set()
        finally:
            selector.close()
            self._outputs_done.set()

    def _deliver(self, source: int, data: bytes) -> None:
        destination = self._routes.get(source)
        if destination is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(destination, view) :]
        except OSError:
            self._routes[source] = None  # the reader is gone: drop the rest

    def _drain_input(self) -> None:
        """CloseIO comes once the client wrote all it had (its writer may still be open):
        what is in the stdin fifo is delivered before the process's stdin is closed."""
        if self._stdin_fifo not in self._routes:
            return
        while True:
            try:
                data = os.read(self._stdin_fifo, 65536)
            except OSError:
                return
            if not data:
                return
            self._deliver(self._stdin_fifo, data)

    def _stop_input(self, selector: selectors.BaseSelector) -> None:
        if self._stdin_fifo in self._routes:
            try:
                selector.unregister(self._stdin_fifo)
            except KeyError:
                pass
            self._routes.pop(self._stdin_fifo, None)
        if self._stdin_destination >= 0:
            self._close_owned(self._stdin_destination)

    def _finish_output(self, source: int) -> None:
        destination = self._routes.pop(source, None)
        if source != self.master:  # the master also takes stdin; it goes at close()
            self._close_owned(source)
        if destination is not None and destination != self.master:
            _wait_drained(destination, DRAIN_WAIT)
            self._close_owned(destination)

    def _close_owned(self, fd: int) -> None:
        if fd in self._owned:
            self._owned.discard(fd)
            os.close(fd)
