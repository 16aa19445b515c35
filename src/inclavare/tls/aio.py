"""The asyncio API: sessions over asyncio streams, and a server.

    tls = EnclaveTls(Config(), server=False)
    session = await open_connection(tls, "127.0.0.1", 1234)
    session.write(b"hello")
    await session.drain()
    reply = await session.read()
    await session.close()

    server = await start_server(tls_server, handler, "127.0.0.1", 0)
    ...
    await server.close()   # stops accepting, cancels running handlers, waits for them

TLS runs over memory buffers (the same OpenSSL engine and the same checks as the blocking
API); each establishment is bounded by the configuration's `handshake_timeout`. Evidence is
verified on the event loop thread, inside the handshake: a sim quote takes a fraction of a
millisecond.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from inclavare.tls.attest import PeerAttestation
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.errors import ConnectionClosed, HandshakeError, HandshakeTimeout, PeerRejected
from inclavare.tls.handshake import Establishment, failure_after_handshake
from inclavare.tls.transport import TlsConnection, TlsFailure, TransportClosed, WantRead

READ_SIZE = 65536


async def _flush(connection: TlsConnection, writer: asyncio.StreamWriter) -> None:
    data = connection.outgoing()
    if data:
        writer.write(data)
        await writer.drain()


async def _read(
    connection: TlsConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int
) -> bytes:
    """Decrypted bytes; raises TransportClosed at the end of the stream."""
    while True:
        try:
            return connection.recv(size)
        except WantRead:
            pass
        await _flush(connection, writer)
        data = await reader.read(READ_SIZE)
        if not data:
            raise TransportClosed(clean=False)
        connection.feed(data)


def _write(connection: TlsConnection, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[connection.send(view) :]


async def establish(
    tls: EnclaveTls,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timeout: float | None = None,
) -> AsyncSession:
    """Run the handshake and the evidence exchange over connected streams (which the session
    then owns; they are closed on failure). Raises a `HandshakeError` with the reason."""
    limit = tls.config.handshake_timeout if timeout is None else timeout
    connection = tls.new_connection(None)
    setup = Establishment(tls, connection)
    leftover = b""
    try:
        async with asyncio.timeout(limit):
            while True:
                try:
                    connection.do_handshake()
                    break
                except WantRead:
                    setup.handshake_waiting()
                await _flush(connection, writer)
                data = await reader.read(READ_SIZE)
                if not data:
                    raise TransportClosed(clean=False)
                connection.feed(data)
            await _flush(connection, writer)
            exchange = setup.after_handshake()
            if exchange is not None:
                output = exchange.start()
                try:
                    while True:
                        if output:
                            _write(connection, output)
                            await _flush(connection, writer)
                        if exchange.done:
                            break
                        try:
                            received = await _read(connection, reader, writer, READ_SIZE)
                        except TransportClosed:
                            exchange.end_of_stream()
                        output = exchange.receive(received)
                except PeerRejected:
                    if exchange.pending_output:
                        _write(connection, exchange.pending_output)
                    raise
                leftover = exchange.leftover
    except Exception as error:
        failure = setup.failure(error, limit)
        if isinstance(failure, PeerRejected):
            connection.close_notify()
        await _abort(connection, writer)
        raise failure from None
    except BaseException:
        writer.transport.abort()
        raise
    return AsyncSession(tls, reader, writer, connection, setup.peer, leftover)


async def _abort(connection: TlsConnection, writer: asyncio.StreamWriter) -> None:
    """Send what OpenSSL queued (an alert, close_notify), then close, within a second."""
    try:
        data = connection.outgoing()
        if data and not writer.is_closing():
            writer.write(data)
            async with asyncio.timeout(1):
                await writer.drain()
    except (OSError, TimeoutError, ConnectionError):
        pass
    if writer.is_closing():
        writer.transport.abort()
    else:
        writer.close()
    try:
        async with asyncio.timeout(1):
            await writer.wait_closed()
    except (OSError, TimeoutError, ConnectionError):
        writer.transport.abort()


class AsyncSession:
    """An established Enclave-TLS session over asyncio streams."""

    def __init__(
        self,
        tls: EnclaveTls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: TlsConnection,
        peer: PeerAttestation | None,
        leftover: bytes = b"",
    ) -> None:
        self.tls = tls
        self.peer = peer
        self._reader = reader
        self._writer = writer
        self._connection = connection
        self._leftover = leftover
        self._closed = False

    @property
    def certificate(self) -> bytes | None:
        return self.tls.certificate

    @property
    def protocol(self) -> str:
        return self._connection.describe()

    async def read(self, size: int = READ_SIZE) -> bytes:
        """Up to `size` bytes; b"" at the end of the stream."""
        if self._leftover:
            data, self._leftover = self._leftover[:size], self._leftover[size:]
            return data
        if self._closed:
            raise ConnectionClosed("the session is closed")
        try:
            return await _read(self._connection, self._reader, self._writer, size)
        except TransportClosed:
            return b""
        except TlsFailure as error:
            raise failure_after_handshake(error) from None
        except ConnectionResetError:
            return b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ConnectionClosed("the session is closed")
        try:
            _write(self._connection, bytes(data) if isinstance(data, bytearray) else data)
        except TlsFailure as error:
            raise failure_after_handshake(error) from None
        outgoing = self._connection.outgoing()
        if outgoing:
            self._writer.write(outgoing)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            raise ConnectionClosed("the peer closed the session") from None

    async def close(self) -> None:
        """Send close_notify and close the stream (within a second)."""
        if self._closed:
            return
        self._closed = True
        self._connection.close_notify()
        await _abort(self._connection, self._writer)


async def open_connection(
    tls: EnclaveTls, host: str, port: int, timeout: float | None = None
) -> AsyncSession:
    limit = tls.config.handshake_timeout if timeout is None else timeout
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise HandshakeTimeout(f"cannot connect to {host}:{port} within {limit:g} s") from None
    except OSError as error:
        raise ConnectionClosed(
            f"cannot connect to {host}:{port}: {error.strerror or error}"
        ) from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return await establish(tls, reader, writer, timeout)


AsyncHandler = Callable[[AsyncSession], Awaitable[None]]
ErrorHandler = Callable[[tuple[str, int] | None, Exception], None]


class AsyncServer:
    """Serves Enclave-TLS sessions; each client runs in its own task."""

    def __init__(
        self, tls: EnclaveTls, handler: AsyncHandler, on_error: ErrorHandler | None
    ) -> None:
        self.tls = tls
        self.handler = handler
        self.on_error = on_error
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        address = writer.get_extra_info("peername")
        peer = tuple(address[:2]) if address else None
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                session = await establish(self.tls, reader, writer)
            except HandshakeError as error:
                self._report(peer, error)
                return
            try:
                await self.handler(session)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._report(peer, error)
            finally:
                await session.close()
        finally:
            if task is not None:
                self.tasks.discard(task)

    def _report(self, address: object, error: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(address, error)  # type: ignore[arg-type]
            except Exception:
                pass

    async def close(self) -> None:
        """Stop accepting, cancel the running sessions and wait until they are gone."""
        if self._server is not None:
            self._server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> AsyncServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_server(
    tls: EnclaveTls,
    handler: AsyncHandler,
    host: str,
    port: int,
    on_error: ErrorHandler | None = None,
    backlog: int = 128,
) -> AsyncServer:
    server = AsyncServer(tls, handler, on_error)
    server._server = await asyncio.start_server(server._client, host, port, backlog=backlog)
    sockets = server._server.sockets
    if sockets:
        bound = sockets[0].getsockname()
        server.address = (str(bound[0]), int(bound[1]))
    else:
        server.address = (host, port)
    return server


async def open_unix_connection(
    tls: EnclaveTls, path: str, timeout: float | None = None
) -> AsyncSession:
    """Enclave-TLS over a unix stream socket (e.g. to a container's socket on the host)."""
    limit = tls.config.handshake_timeout if timeout is None else timeout
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_unix_connection(path)
    except TimeoutError:
        raise HandshakeTimeout(f"cannot connect to {path} within {limit:g} s") from None
    except OSError as error:
        raise ConnectionClosed(f"cannot connect to {path}: {error.strerror or error}") from None
    return await establish(tls, reader, writer, timeout)


async def start_unix_server(
    tls: EnclaveTls,
    handler: AsyncHandler,
    path: str,
    on_error: ErrorHandler | None = None,
    backlog: int = 128,
) -> AsyncServer:
    server = AsyncServer(tls, handler, on_error)
    server._server = await asyncio.start_unix_server(server._client, path, backlog=backlog)
    server.address = (path, 0)
    return server
