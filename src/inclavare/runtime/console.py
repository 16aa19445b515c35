"""The container's terminal.

With `process.terminal`, the pseudo-terminal is opened inside the container (on its own devpts
instance), the slave side becomes the process's controlling terminal and standard streams, and
the master side is sent over the `--console-socket` with SCM_RIGHTS, the message carrying the
terminal's name, as runc does. Whoever listens on that socket (containerd's shim, conmon, or
`rune run` itself) then owns the terminal.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import struct

from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.linux.constants import MS_BIND

_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414
_TIOCGWINSZ = 0x5413


def connect_console_socket(path: str) -> int:
    """Connect to the AF_UNIX socket at path (--console-socket); the descriptor is returned."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as error:
        sock.close()
        raise InclavareError(f"connect to console socket {path}: {error.strerror}") from None
    return int(sock.detach())


def set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, _TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def copy_size(source_fd: int, target_fd: int) -> None:
    size = fcntl.ioctl(source_fd, _TIOCGWINSZ, b"\0" * 8)
    fcntl.ioctl(target_fd, _TIOCSWINSZ, size)


def send_fd(socket_fd: int, fd: int, name: str) -> None:
    sock = _socket.socket(fileno=socket_fd)
    try:
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", fd))]
        sock.sendmsg([name.encode()], ancillary)
    finally:
        sock.detach()


def receive_fd(socket_fd: int) -> int:
    sock = _socket.socket(fileno=socket_fd)
    try:
        size = struct.calcsize("i")
        _, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(size))
    finally:
        sock.detach()
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            return int(struct.unpack("i", data[:size])[0])
    raise OSError("no file descriptor received on the console socket")


def setup_container_terminal(
    socket_fd: int, size: tuple[int | None, int | None] | None, bind_console: bool
) -> None:
    """Inside the container's mount namespace: open the pty, hand its master out, and make
    the slave this process's controlling terminal and standard streams. The init's terminal
    is also the container's /dev/console (bind_console), as on a real system."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    if size is not None and size[0] and size[1]:
        set_size(master, size[0], size[1])
    if bind_console:
        console = "/dev/console"
        if not os.path.exists(console):
            os.close(os.open(console, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        syscalls.mount(name, console, None, MS_BIND, None)
    send_fd(socket_fd, master, name)
    os.close(master)
    os.close(socket_fd)
    fcntl.ioctl(slave, _TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
