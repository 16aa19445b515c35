"""containerd's ttrpc wire protocol, sans-IO: bytes in, frames and messages out.

A frame is a 10-byte header (payload length and stream id as big-endian uint32, a message
type byte and a flags byte) followed by the payload. A request frame carries a protobuf
`Request{service=1, method=2, payload=3, timeout_nano=4, metadata=5}`, a response frame a
`Response{status=1, payload=2}` with a google.rpc.Status `{code=1, message=2}`. Payloads over
4 MiB are refused: the decoder skips them and reports an `OversizedFrame`, so that the server
can answer RESOURCE_EXHAUSTED and go on with the next frame, as containerd's peers do.

The envelopes are small and fixed, so they are encoded here by hand; the protobuf runtime is
only needed for the service's own messages.
"""

from __future__ import annotations

import struct

HEADER_LENGTH = 10
MAX_MESSAGE_LENGTH = 4 << 20

TYPE_REQUEST = 1
TYPE_RESPONSE = 2

_HEADER = struct.Struct(">IIBB")

# gRPC status codes (google.rpc.Code) used by the shim
OK = 0
UNKNOWN = 2
INVALID_ARGUMENT = 3
NOT_FOUND = 5
ALREADY_EXISTS = 6
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14


class ProtocolError(Exception):
    """The peer sent bytes that are not ttrpc; the connection cannot go on."""


class DecodeError(ValueError):
    """A protobuf message is malformed (truncated, bad wire type, bad UTF-8)."""


class _Value:
    """A small immutable record: equal when its fields are (a dataclass without the import
    cost, which every shim's start would pay)."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({values})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class Frame(_Value):
    __slots__ = ("flags", "payload", "stream_id", "type")

    def __init__(self, stream_id: int, type: int, flags: int, payload: bytes) -> None:
        self._set(stream_id=stream_id, type=type, flags=flags, payload=payload)

    stream_id: int
    type: int
    flags: int
    payload: bytes


class OversizedFrame(_Value):
    """A frame whose payload exceeded MAX_MESSAGE_LENGTH; its bytes were discarded."""

    __slots__ = ("length", "stream_id", "type")

    def __init__(self, stream_id: int, type: int, length: int) -> None:
        self._set(stream_id=stream_id, type=type, length=length)

    stream_id: int
    type: int
    length: int


class Status(_Value):
    __slots__ = ("code", "message")

    def __init__(self, code: int = OK, message: str = "") -> None:
        self._set(code=code, message=message)

    code: int
    message: str


class Request(_Value):
    __slots__ = ("metadata", "method", "payload", "service", "timeout_nano")

    def __init__(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        timeout_nano: int = 0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._set(
            service=service,
            method=method,
            payload=payload,
            timeout_nano=timeout_nano,
            metadata=metadata,
        )

    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: tuple[tuple[str, str], ...]


class Response(_Value):
    __slots__ = ("payload", "status")

    def __init__(self, status: Status | None = None, payload: bytes = b"") -> None:
        self._set(status=status if status is not None else Status(), payload=payload)

    status: Status
    payload: bytes


def encode_frame(stream_id: int, message_type: int, payload: bytes, flags: int = 0) -> bytes:
    if len(payload) > MAX_MESSAGE_LENGTH:
        raise ValueError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_LENGTH}")
    return _HEADER.pack(len(payload), stream_id, message_type, flags) + payload


class FrameDecoder:
    """Splits a byte stream into frames. feed() returns what became complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = 0  # bytes of an oversized payload still to throw away

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        self._buffer += data
        frames: list[Frame | OversizedFrame] = []
        while True:
            if self._skipping:
                dropped = min(self._skipping, len(self._buffer))
                del self._buffer[:dropped]
                self._skipping -= dropped
                if self._skipping:
                    return frames
            if len(self._buffer) < HEADER_LENGTH:
                return frames
            length, stream_id, message_type, flags = _HEADER.unpack_from(self._buffer)
            if length > MAX_MESSAGE_LENGTH:
                del self._buffer[:HEADER_LENGTH]
                self._skipping = length
                frames.append(OversizedFrame(stream_id, message_type, length))
                continue
            if len(self._buffer) < HEADER_LENGTH + length:
                return frames
            payload = bytes(self._buffer[HEADER_LENGTH : HEADER_LENGTH + length])
            del self._buffer[: HEADER_LENGTH + length]
            frames.append(Frame(stream_id, message_type, flags, payload))

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame (a truncated tail at EOF)."""
        return len(self._buffer) + self._skipping


# --- the protobuf wire format, as much of it as the envelopes need ---------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if offset >= len(data):
            raise DecodeError("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, offset
    raise DecodeError("varint longer than 10 bytes")


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field; varints as int, the rest as bytes."""
    found: list[tuple[int, int, int | bytes]] = []
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: int | bytes
        if wire_type == 0:
            value, offset = _read_varint(data, offset)
        elif wire_type == 1 or wire_type == 5:
            size = 8 if wire_type == 1 else 4
            if offset + size > len(data):
                raise DecodeError("truncated fixed-width field")
            value = data[offset : offset + size]
            offset += size
        elif wire_type == 2:
            size, offset = _read_varint(data, offset)
            if offset + size > len(data):
                raise DecodeError("truncated length-delimited field")
            value = data[offset : offset + size]
            offset += size
        else:
            raise DecodeError(f"unsupported wire type {wire_type}")
        found.append((number, wire_type, value))
    return found


def bytes_field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value & 0xFFFFFFFFFFFFFFFF)


def _text(value: int | bytes, wire_type: int, what: str) -> str:
    if wire_type != 2 or not isinstance(value, bytes):
        raise DecodeError(f"{what}: wrong wire type {wire_type}")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: invalid UTF-8") from None


def _blob(value: int | bytes, wire_type: int, what: str) -> bytes:
    if wire_type != 2 or not isinstance(value, bytes):
        raise DecodeError(f"{what}: wrong wire type {wire_type}")
    return value


def _number(value: int | bytes, wire_type: int, what: str) -> int:
    if wire_type != 0 or not isinstance(value, int):
        raise DecodeError(f"{what}: wrong wire type {wire_type}")
    return value


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


def encode_request(request: Request) -> bytes:
    out = bytearray()
    if request.service:
        out += bytes_field(1, request.service.encode())
    if request.method:
        out += bytes_field(2, request.method.encode())
    if request.payload:
        out += bytes_field(3, request.payload)
    if request.timeout_nano:
        out += varint_field(4, request.timeout_nano)
    for key, value in request.metadata:
        pair = (bytes_field(1, key.encode()) if key else b"") + (
            bytes_field(2, value.encode()) if value else b""
        )
        out += bytes_field(5, pair)
    return bytes(out)


def decode_request(data: bytes) -> Request:
    service = method = ""
    payload = b""
    timeout = 0
    metadata: list[tuple[str, str]] = []
    for number, wire_type, value in fields(data):
        if number == 1:
            service = _text(value, wire_type, "service")
        elif number == 2:
            method = _text(value, wire_type, "method")
        elif number == 3:
            payload = _blob(value, wire_type, "payload")
        elif number == 4:
            timeout = _signed64(_number(value, wire_type, "timeout_nano"))
        elif number == 5:
            key = text = ""
            for inner, inner_type, inner_value in fields(_blob(value, wire_type, "metadata")):
                if inner == 1:
                    key = _text(inner_value, inner_type, "metadata key")
                elif inner == 2:
                    text = _text(inner_value, inner_type, "metadata value")
            metadata.append((key, text))
    return Request(service, method, payload, timeout, tuple(metadata))


def encode_status(status: Status) -> bytes:
    out = bytearray()
    if status.code:
        out += varint_field(1, status.code)
    if status.message:
        out += bytes_field(2, status.message.encode())
    return bytes(out)


def decode_status(data: bytes) -> Status:
    code, message = OK, ""
    for number, wire_type, value in fields(data):
        if number == 1:
            code = _signed32(_number(value, wire_type, "status code"))
        elif number == 2:
            message = _text(value, wire_type, "status message")
    return Status(code, message)


def encode_response(response: Response) -> bytes:
    out = bytearray()
    status = encode_status(response.status)
    if status:
        out += bytes_field(1, status)
    if response.payload:
        out += bytes_field(2, response.payload)
    return bytes(out)


def decode_response(data: bytes) -> Response:
    status = Status()
    payload = b""
    for number, wire_type, value in fields(data):
        if number == 1:
            status = decode_status(_blob(value, wire_type, "status"))
        elif number == 2:
            payload = _blob(value, wire_type, "payload")
    return Response(status, payload)
