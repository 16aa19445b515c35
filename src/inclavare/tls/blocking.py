"""The blocking API: sessions over sockets, a listener and a threaded server.

    tls = EnclaveTls(Config(attester="sim"), server=False)
    with connect(tls, ("127.0.0.1", 1234)) as session:
        print(session.peer.summary())
        session.sendall(b"hello")
        reply = session.recv(4096)

Every establishment (TCP accept or connect, TLS handshake, session-evidence exchange) is
bounded by the configuration's `handshake_timeout` as a whole, so a peer that sends one byte
at a time cannot hold a connection longer than that. A `Server` handles each connection in a
worker thread (at most `max_workers` at once); a refused peer is reported to `on_error` and
the server goes on serving the others.
"""

from __future__ import annotations

import errno
import functools
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.errors import ConnectionClosed, HandshakeError, PeerRejected
from inclavare.tls.handshake import Establishment, failure_after_handshake
from inclavare.tls.transport import TlsFailure, TransportClosed, WantRead, WantWrite

if TYPE_CHECKING:
    from types import TracebackType

    from inclavare.tls.attest import PeerAttestation
    from inclavare.tls.transport import TlsConnection

SEND_CHUNK = 256 * 1024


def _wait(sock: socket.socket, write: bool, deadline: float | None) -> None:
    """Wait until `sock` is readable (or writable); TimeoutError past `deadline`."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    while True:
        if deadline is None:
            timeout_ms = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            timeout_ms = max(1, int(remaining * 1000))
        if poller.poll(timeout_ms):
            return


def _drive(
    connection: TlsConnection,
    sock: socket.socket,
    operation: Callable[[], object],
    deadline: float | None,
    waiting: Callable[[], None] | None = None,
) -> object:
    while True:
        try:
            return operation()
        except WantRead:
            if waiting is not None:
                waiting()
            _wait(sock, False, deadline)
        except WantWrite:
            _wait(sock, True, deadline)


def establish(tls: EnclaveTls, sock: socket.socket, timeout: float | None = None) -> Session:
    """Run the handshake and the evidence exchange on a connected socket (which the session
    then owns; it is closed on failure). Raises a `HandshakeError` with the precise reason."""
    limit = tls.config.handshake_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    try:
        sock.setblocking(False)
        connection = tls.new_connection(sock)
    except BaseException:
        sock.close()
        raise
    setup = Establishment(tls, connection)
    try:
        _drive(connection, sock, connection.do_handshake, deadline, setup.handshake_waiting)
        exchange = setup.after_handshake()
        leftover = b""
        if exchange is not None:
            output = exchange.start()
            try:
                while True:
                    if output:
                        _send_all(connection, sock, output, deadline)
                    if exchange.done:
                        break
                    try:
                        data = _drive(connection, sock, lambda: connection.recv(65536), deadline)
                    except TransportClosed:
                        exchange.end_of_stream()
                    assert isinstance(data, bytes)
                    output = exchange.receive(data)
            except PeerRejected:
                if exchange.pending_output:
                    _try_send(connection, sock, exchange.pending_output, deadline)
                raise
            leftover = exchange.leftover
    except Exception as error:
        failure = setup.failure(error, limit)
        if isinstance(failure, PeerRejected):
            connection.close_notify()  # after a rejection in the handshake OpenSSL sent an alert
        sock.close()
        raise failure from None
    except BaseException:
        sock.close()
        raise
    # Without a timeout the socket blocks and OpenSSL waits in its own reads and writes, as
    # a plain TLS socket does; `settimeout` turns waiting with a deadline back on.
    sock.setblocking(True)
    return Session(tls, sock, connection, setup.peer, leftover)


def _send_all(
    connection: TlsConnection, sock: socket.socket, data: bytes, deadline: float | None
) -> None:
    view = memoryview(data)
    while view:
        sent = _drive(
            connection, sock, functools.partial(connection.send, view[:SEND_CHUNK]), deadline
        )
        assert isinstance(sent, int)
        view = view[sent:]


def _try_send(
    connection: TlsConnection, sock: socket.socket, data: bytes, deadline: float | None
) -> None:
    try:
        _send_all(
            connection, sock, data, min(deadline or time.monotonic() + 1, time.monotonic() + 1)
        )
    except (OSError, TimeoutError, TlsFailure, TransportClosed):
        pass


class Session:
    """An established Enclave-TLS session over a socket."""

    def __init__(
        self,
        tls: EnclaveTls,
        sock: socket.socket,
        connection: TlsConnection,
        peer: PeerAttestation | None,
        leftover: bytes = b"",
    ) -> None:
        self.tls = tls
        self.peer = peer
        self._sock = sock
        self._connection = connection
        self._leftover = leftover
        self._timeout: float | None = None
        self._closed = False

    @property
    def certificate(self) -> bytes | None:
        """The certificate this side presented (DER)."""
        return self.tls.certificate

    @property
    def protocol(self) -> str:
        return self._connection.describe()

    def settimeout(self, timeout: float | None) -> None:
        """Bound each recv and send (None: wait as long as it takes)."""
        self._timeout = timeout
        self._sock.setblocking(timeout is None)

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int = 65536) -> bytes:
        """Up to `size` bytes; b"" at the end of the stream. TimeoutError past the timeout."""
        if self._closed:
            raise ConnectionClosed("the session is closed")
        if self._leftover:
            data, self._leftover = self._leftover[:size], self._leftover[size:]
            return data
        try:
            received = _drive(
                self._connection, self._sock, lambda: self._connection.recv(size), self._deadline()
            )
        except TransportClosed:
            return b""
        except TlsFailure as error:
            raise failure_after_handshake(error) from None
        except ConnectionResetError:
            return b""
        assert isinstance(received, bytes)
        return received

    def recv_into(self, buffer: bytearray | memoryview) -> int:
        """Receive into `buffer`; the number of bytes, 0 at the end of the stream."""
        if self._leftover:
            count = min(len(buffer), len(self._leftover))
            buffer[:count] = self._leftover[:count]
            self._leftover = self._leftover[count:]
            return count
        if self._closed:
            raise ConnectionClosed("the session is closed")
        try:
            if self._timeout is None:  # a blocking socket: OpenSSL waits
                return self._connection.recv_into(buffer)
            received = _drive(
                self._connection,
                self._sock,
                lambda: self._connection.recv_into(buffer),
                self._deadline(),
            )
        except TransportClosed:
            return 0
        except TlsFailure as error:
            raise failure_after_handshake(error) from None
        except ConnectionResetError:
            return 0
        assert isinstance(received, int)
        return received

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ConnectionClosed("the session is closed")
        try:
            if self._timeout is None:  # a blocking socket: OpenSSL waits
                self._connection.sendall_blocking(
                    bytes(data) if isinstance(data, bytearray) else data
                )
            else:
                _send_all(self._connection, self._sock, bytes(data), self._deadline())
        except TlsFailure as error:
            raise failure_after_handshake(error) from None
        except (TransportClosed, BrokenPipeError, ConnectionResetError):
            raise self._closed_by_peer() from None

    def _closed_by_peer(self) -> Exception:
        """Why the peer closed: the alert it sent before closing, if it can still be read."""
        try:
            self._sock.setblocking(False)
            self._connection.recv(1)
        except TlsFailure as error:
            return failure_after_handshake(error)
        except (WantRead, WantWrite, TransportClosed, OSError):
            pass
        return ConnectionClosed("the peer closed the session")

    send = sendall

    def close_write(self) -> None:
        """End this side's stream (close_notify); the peer's data can still be received."""
        self._connection.close_notify()
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Send close_notify (best effort) and close the socket."""
        if self._closed:
            return
        self._closed = True
        self._connection.close_notify()
        self._sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def connect(tls: EnclaveTls, address: tuple[str, int], timeout: float | None = None) -> Session:
    """Connect to `address` and establish a session; the whole bounded by the timeout."""
    limit = tls.config.handshake_timeout if timeout is None else timeout
    started = time.monotonic()
    try:
        sock = socket.create_connection(address, timeout=limit)
    except TimeoutError:
        from inclavare.tls.errors import HandshakeTimeout

        raise HandshakeTimeout(
            f"cannot connect to {address[0]}:{address[1]} within {limit:g} s"
        ) from None
    except OSError as error:
        raise ConnectionClosed(
            f"cannot connect to {address[0]}:{address[1]}: {error.strerror or error}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return establish(tls, sock, max(0.001, limit - (time.monotonic() - started)))


class Listener:
    """A listening socket whose `accept()` returns established sessions."""

    def __init__(self, tls: EnclaveTls, address: tuple[str, int], backlog: int = 128) -> None:
        self.tls = tls
        self._sock = socket.create_server(address, backlog=backlog, reuse_port=False)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]

    def accept(self, timeout: float | None = None) -> Session:
        """The next client's session; a refused client raises its `HandshakeError`."""
        sock, _ = self._sock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return establish(self.tls, sock, timeout)

    def accept_socket(self) -> socket.socket:
        sock, _ = self._sock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Handler = Callable[[Session], None]
ErrorHandler = Callable[[tuple[str, int] | None, Exception], None]


class Server:
    """Serve Enclave-TLS sessions: each accepted connection is established and handled in a
    worker thread. `serve_forever()` returns after `shutdown()` (from another thread)."""

    def __init__(
        self,
        tls: EnclaveTls,
        address: tuple[str, int],
        handler: Handler,
        on_error: ErrorHandler | None = None,
        max_workers: int = 64,
    ) -> None:
        self.tls = tls
        self.listener = Listener(tls, address)
        self.address = self.listener.address
        self.handler = handler
        self.on_error = on_error
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="enclave-tls")
        self._stop_read, self._stop_write = socket.socketpair()
        self._stopping = threading.Event()

    def serve_forever(self) -> None:
        poller = select.poll()
        poller.register(self.listener.fileno(), select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        try:
            while not self._stopping.is_set():
                events = poller.poll()
                if any(fd == self._stop_read.fileno() for fd, _ in events):
                    break
                try:
                    sock = self.listener.accept_socket()
                except OSError as error:
                    if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        time.sleep(0.05)  # out of descriptors: let running sessions finish
                    continue
                self._pool.submit(self._serve_one, sock)
        finally:
            self._pool.shutdown(wait=True)
            self.listener.close()
            self._stop_read.close()
            self._stop_write.close()

    def _serve_one(self, sock: socket.socket) -> None:
        try:
            peer_address = sock.getpeername()[:2]
        except OSError:
            peer_address = None
        try:
            session = establish(self.tls, sock)
        except HandshakeError as error:
            self._report(peer_address, error)
            return
        except Exception as error:
            self._report(peer_address, error)
            return
        try:
            self.handler(session)
        except Exception as error:
            self._report(peer_address, error)
        finally:
            session.close()

    def _report(self, address: tuple[str, int] | None, error: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(address, error)
            except Exception:
                pass

    def shutdown(self) -> None:
        """Stop accepting; `serve_forever` returns once the running sessions have ended."""
        self._stopping.set()
        try:
            self._stop_write.send(b"x")
        except OSError:
            pass
