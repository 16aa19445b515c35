"""A ttrpc server on threads, and a small blocking client.

Each connection has a thread reading its frames, and each request runs in a thread of its
own, so a long call (Wait) does not hold up the others on the same connection; responses go
out whole, one at a time. A peer that sends garbage loses its connection and nothing else:
the server and the other connections go on. Threads, not asyncio: importing asyncio (it
brings ssl, logging, concurrent.futures) would add tens of milliseconds to the start of
every shim, which is on the critical path of every container.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from inclavare.shim import ttrpc

Handler = Callable[[bytes], bytes]
# how long a connection whose peer stopped sending waits for the answers of its calls
CALL_WAIT = 30.0


class RpcError(Exception):
    """A call failed with a gRPC status code; the message is what the caller shows."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Server:
    """Serves {service name: {method name: handler}} on a listening unix socket."""

    def __init__(
        self, services: dict[str, dict[str, Handler]], log: Callable[[str], None] | None = None
    ) -> None:
        self.services = services
        self.log = log or (lambda _message: None)
        self._listener: socket.socket | None = None
        self._closing = False

    def serve_forever(self, listener: socket.socket) -> None:
        """Accept connections until close(); each is served by threads of its own."""
        self._listener = listener
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                if self._closed():
                    return
                continue
            threading.Thread(target=self._connection, args=(connection,), daemon=True).start()

    def _closed(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
            except OSError:
                pass

    def _connection(self, connection: socket.socket) -> None:
        decoder = ttrpc.FrameDecoder()
        write_lock = threading.Lock()

        def send(stream_id: int, response: ttrpc.Response) -> None:
            frame = ttrpc.encode_frame(
                stream_id, ttrpc.TYPE_RESPONSE, ttrpc.encode_response(response)
            )
            try:
                with write_lock:
                    connection.sendall(frame)
            except OSError:
                pass  # the caller went away; its answer has nowhere to go

        calls: list[threading.Thread] = []
        try:
            while True:
                data = connection.recv(65536)
                if not data:
                    if decoder.pending:
                        self.log(f"ttrpc: connection closed mid-frame ({decoder.pending} bytes)")
                    # the peer is done sending, not necessarily done reading: its answers
                    for call in calls:
                        call.join(CALL_WAIT)
                    break
                for frame in decoder.feed(data):
                    if isinstance(frame, ttrpc.OversizedFrame):
                        status = ttrpc.Status(
                            ttrpc.RESOURCE_EXHAUSTED,
                            f"message length {frame.length} exceeds maximum message size of "
                            f"{ttrpc.MAX_MESSAGE_LENGTH}",
                        )
                        send(frame.stream_id, ttrpc.Response(status))
                        continue
                    if frame.type != ttrpc.TYPE_REQUEST:
                        continue  # other message types are for future protocol versions
                    if frame.stream_id % 2 != 1:
                        raise ttrpc.ProtocolError(
                            f"stream id {frame.stream_id} is not odd (client-initiated)"
                        )
                    call = threading.Thread(target=self._call, args=(frame, send), daemon=True)
                    call.start()
                    calls = [c for c in calls if c.is_alive()]
                    calls.append(call)
        except (ttrpc.ProtocolError, OSError) as error:
            self.log(f"ttrpc: closing the connection: {error}")
        finally:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            with write_lock:
                connection.close()

    def _call(self, frame: ttrpc.Frame, send: Callable[[int, ttrpc.Response], None]) -> None:
        try:
            request = ttrpc.decode_request(frame.payload)
        except ttrpc.DecodeError as error:
            status = ttrpc.Status(ttrpc.INVALID_ARGUMENT, f"unmarshal request error: {error}")
            send(frame.stream_id, ttrpc.Response(status))
            return
        methods = self.services.get(request.service)
        handler = methods.get(request.method) if methods is not None else None
        if methods is None:
            response = _failure(ttrpc.UNIMPLEMENTED, f"service {request.service}")
        elif handler is None:
            response = _failure(ttrpc.UNIMPLEMENTED, f"method {request.method}")
        else:
            try:
                response = ttrpc.Response(payload=handler(request.payload))
            except RpcError as error:
                response = _failure(error.code, error.message)
            except ttrpc.DecodeError as error:
                response = _failure(ttrpc.INVALID_ARGUMENT, f"malformed {request.method}: {error}")
            except Exception as error:  # a bug: report it to the caller, keep serving
                self.log(f"ttrpc: {request.service}/{request.method}: {error!r}")
                response = _failure(ttrpc.INTERNAL, f"{type(error).__name__}: {error}")
        if len(response.payload) > ttrpc.MAX_MESSAGE_LENGTH - 64:
            response = _failure(ttrpc.RESOURCE_EXHAUSTED, "response exceeds the maximum size")
        send(frame.stream_id, response)


def _failure(code: int, message: str) -> ttrpc.Response:
    return ttrpc.Response(ttrpc.Status(code, message))


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
