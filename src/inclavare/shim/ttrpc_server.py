"""A ttrpc server on asyncio, and a small blocking client.

Each request runs as its own task, so a long call (Wait) does not hold up the others on the
same connection; responses go out whole, one at a time. A peer that sends garbage loses its
connection and nothing else: the server and the other connections go on.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from inclavare.shim import ttrpc

Handler = Callable[[bytes], Awaitable[bytes]]


class RpcError(Exception):
    """A call failed with a gRPC status code; the message is what the caller shows."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Server:
    """Serves {service name: {method name: handler}} on listening unix sockets."""

    def __init__(
        self, services: dict[str, dict[str, Handler]], log: Callable[[str], None] | None = None
    ) -> None:
        self.services = services
        self.log = log or (lambda _message: None)
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def serve(self, listener: socket.socket) -> None:
        server = await asyncio.start_unix_server(self._connection, sock=listener)
        self._servers.append(server)

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = ttrpc.FrameDecoder()
        write_lock = asyncio.Lock()
        calls: set[asyncio.Task[None]] = set()

        async def send(stream_id: int, response: ttrpc.Response) -> None:
            frame = ttrpc.encode_frame(
                stream_id, ttrpc.TYPE_RESPONSE, ttrpc.encode_response(response)
            )
            async with write_lock:
                writer.write(frame)
                await writer.drain()

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    if decoder.pending:
                        self.log(f"ttrpc: connection closed mid-frame ({decoder.pending} bytes)")
                    break
                for frame in decoder.feed(data):
                    if isinstance(frame, ttrpc.OversizedFrame):
                        status = ttrpc.Status(
                            ttrpc.RESOURCE_EXHAUSTED,
                            f"message length {frame.length} exceeds maximum message size of "
                            f"{ttrpc.MAX_MESSAGE_LENGTH}",
                        )
                        await send(frame.stream_id, ttrpc.Response(status))
                        continue
                    if frame.type != ttrpc.TYPE_REQUEST:
                        continue  # other message types are for future protocol versions
                    if frame.stream_id % 2 != 1:
                        raise ttrpc.ProtocolError(
                            f"stream id {frame.stream_id} is not odd (client-initiated)"
                        )
                    task = asyncio.create_task(self._call(frame, send))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
        except (ttrpc.ProtocolError, ConnectionError) as error:
            self.log(f"ttrpc: closing the connection: {error}")
        finally:
            for task in calls:
                task.cancel()
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _call(
        self, frame: ttrpc.Frame, send: Callable[[int, ttrpc.Response], Awaitable[None]]
    ) -> None:
        try:
            request = ttrpc.decode_request(frame.payload)
        except ttrpc.DecodeError as error:
            status = ttrpc.Status(ttrpc.INVALID_ARGUMENT, f"unmarshal request error: {error}")
            await _quietly(send(frame.stream_id, ttrpc.Response(status)))
            return
        methods = self.services.get(request.service)
        handler = methods.get(request.method) if methods is not None else None
        if methods is None:
            response = _failure(ttrpc.UNIMPLEMENTED, f"service {request.service}")
        elif handler is None:
            response = _failure(ttrpc.UNIMPLEMENTED, f"method {request.method}")
        else:
            try:
                response = ttrpc.Response(payload=await handler(request.payload))
            except RpcError as error:
                response = _failure(error.code, error.message)
            except ttrpc.DecodeError as error:
                response = _failure(ttrpc.INVALID_ARGUMENT, f"malformed {request.method}: {error}")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug: report it to the caller, keep serving
                self.log(f"ttrpc: {request.service}/{request.method}: {error!r}")
                response = _failure(ttrpc.INTERNAL, f"{type(error).__name__}: {error}")
        if len(response.payload) > ttrpc.MAX_MESSAGE_LENGTH - 64:
            response = _failure(ttrpc.RESOURCE_EXHAUSTED, "response exceeds the maximum size")
        await _quietly(send(frame.stream_id, response))


def _failure(code: int, message: str) -> ttrpc.Response:
    return ttrpc.Response(ttrpc.Status(code, message))


async def _quietly(sending: Awaitable[None]) -> None:
    try:
        await sending
    except (ConnectionError, OSError):
        pass  # the caller went away; its answer has nowhere to go


class Client:
    """A blocking ttrpc client for one unix socket (tests, `start`, event forwarding)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(path)
        except OSError:
            self._socket.close()
            raise
        self._decoder = ttrpc.FrameDecoder()
        self._next_stream = 1

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, service: str, method: str, payload: bytes) -> bytes:
        stream_id = self._next_stream
        self._next_stream += 2
        request = ttrpc.encode_request(ttrpc.Request(service, method, payload))
        self._socket.sendall(ttrpc.encode_frame(stream_id, ttrpc.TYPE_REQUEST, request))
        while True:
            data = self._socket.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for frame in self._decoder.feed(data):
                if isinstance(frame, ttrpc.OversizedFrame) or frame.stream_id != stream_id:
                    continue
                response = ttrpc.decode_response(frame.payload)
                if response.status.code != ttrpc.OK:
                    raise RpcError(response.status.code, response.status.message)
                return response.payload
