"""The attestation service protocol spoken over Enclave-TLS by shelter, inclavared and the
enclave service (docs/attestation.md has the whole exchange).

Each message is a frame: a 4-byte big-endian length, then that many bytes of a UTF-8 JSON
object with `"version": 1` and a `"type"`. Binary values are base64 (`evidence`,
`certificate`, `sealed`) or hex (`nonce`, `ephemeral`). A frame above MAX_FRAME, bytes that
are not a JSON object, an unknown type or version, or a missing or malformed field is a
`ProtocolError` naming it; the connection then ends.

This module is pure: `FrameReader` takes bytes and gives messages, `encode` does the
reverse; nothing here reads or writes a socket.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from inclavare.errors import InclavareError

VERSION = 1
HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024
NONCE_MIN, NONCE_MAX = 16, 64
MAX_NAME = 128
MAX_REASON = 1024

# type -> {field: kind}; kinds: "nonce" (hex, 16-64 bytes), "b64", "hex32", "name", "text",
# "party" (an object with b64 `certificate` and `evidence`); a kind ending in "?" is optional.
MESSAGES: dict[str, dict[str, str]] = {
    # shelter -> inclavared -> enclave: evidence of the enclave for this nonce, please.
    # `enclave` names one of the enclaves inclavared is configured to reach (default: its
    # first); a verifier never chooses an arbitrary address (inclavared is no open relay).
    "get-evidence": {"nonce": "nonce", "enclave": "name?"},
    # enclave -> inclavared: its TLS certificate and evidence bound to its key and the nonce.
    "evidence": {"certificate": "b64", "evidence": "b64"},
    # inclavared -> shelter: the enclave's evidence as received, and inclavared's own.
    "attestation": {"enclave": "party", "inclavared": "party"},
    # shelter -> inclavared -> enclave: a secret sealed to the key in the enclave's evidence.
    "put-secret": {"name": "name", "ephemeral": "hex32", "sealed": "b64"},
    "secret-accepted": {"name": "name"},
    # Either direction of a session: application bytes follow, unframed, both ways.
    # On inclavared's tunnel listener (plain transport) `connect` names the enclave too.
    "connect": {"enclave": "name?"},
    "connected": {},
    "error": {"reason": "text"},
}


class ProtocolError(InclavareError):
    """A frame or message that breaks the attestation service protocol."""


@dataclass(frozen=True)
class Message:
    type: str
    fields: Mapping[str, object]

    def bytes_of(self, name: str) -> bytes:
        """A base64 or hex field, decoded (checked at parse time)."""
        value = self.fields[name]
        kind = MESSAGES[self.type][name].rstrip("?")
        assert isinstance(value, str)
        return bytes.fromhex(value) if kind in ("nonce", "hex32") else base64.b64decode(value)

    def text(self, name: str, default: str = "") -> str:
        value = self.fields.get(name, default)
        assert isinstance(value, str)
        return value

    def party(self, name: str) -> tuple[bytes, bytes]:
        """(certificate, evidence) of a "party" field."""
        value = self.fields[name]
        assert isinstance(value, Mapping)
        return base64.b64decode(value["certificate"]), base64.b64decode(value["evidence"])


def message(type: str, **fields: object) -> Message:
    """A message to send; bytes values are encoded as their field's kind says."""
    if type not in MESSAGES:
        raise ValueError(f"unknown message type {type!r}")
    schema = MESSAGES[type]
    encoded: dict[str, object] = {}
    for name, value in fields.items():
        kind = schema[name].rstrip("?")
        if kind == "party":
            assert isinstance(value, tuple)
            certificate, evidence = value
            encoded[name] = {"certificate": _b64(certificate), "evidence": _b64(evidence)}
        elif isinstance(value, bytes):
            encoded[name] = value.hex() if kind in ("nonce", "hex32") else _b64(value)
        else:
            encoded[name] = value
    result = Message(type, encoded)
    _check(result.type, dict(result.fields))
    return result


def encode(msg: Message) -> bytes:
    body = json.dumps(
        {"version": VERSION, "type": msg.type, **msg.fields}, separators=(",", ":")
    ).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"a {msg.type} message of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def error_frame(reason: str) -> bytes:
    return encode(message("error", reason=" ".join(reason.split())[:MAX_REASON]))


# After these, the bytes of the session are application data, no longer frames.
SWITCHING = frozenset({"connect", "connected"})


class FrameReader:
    """Bytes in, messages out. After a ProtocolError the reader is spent. After `connect` or
    `connected` it parses nothing more: what follows is kept for `take_rest`, even when the
    peer sent it in the same write (a client need not wait for `connected`)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._failed = False
        self._switched = False

    def feed(self, data: bytes) -> Iterator[Message]:
        if self._failed:
            raise ProtocolError("the connection already broke the protocol")
        self._buffer += data
        while not self._switched and len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self.max_frame:
                self._failed = True
                raise ProtocolError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
            if len(self._buffer) < HEADER.size + size:
                return
            body = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
            try:
                message = parse(body)
            except ProtocolError:
                self._failed = True
                raise
            self._switched = message.type in SWITCHING
            yield message

    def take_rest(self) -> bytes:
        """The bytes after the last frame (application data after `connect`)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    @property
    def pending(self) -> int:
        return len(self._buffer)


def parse(body: bytes) -> Message:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("a frame is not a UTF-8 JSON document") from None
    if not isinstance(document, dict):
        raise ProtocolError("a frame is not a JSON object")
    version = document.pop("version", None)
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this side speaks 1)")
    kind = document.pop("type", None)
    if not isinstance(kind, str) or kind not in MESSAGES:
        raise ProtocolError(f"unknown message type {kind!r}"[:200])
    _check(kind, document)
    return Message(kind, document)


def _check(kind: str, fields: dict[str, object]) -> None:
    schema = MESSAGES[kind]
    for name in fields:
        if name not in schema:
            raise ProtocolError(f"{kind}: unexpected field {name!r}"[:200])
    for name, field_kind in schema.items():
        if name not in fields:
            if field_kind.endswith("?"):
                continue
            raise ProtocolError(f"{kind}: missing field {name!r}")
        _check_field(kind, name, field_kind.rstrip("?"), fields[name])


def _check_field(kind: str, name: str, field_kind: str, value: object) -> None:
    where = f"{kind}: field {name!r}"
    if field_kind == "party":
        if not isinstance(value, dict) or set(value) != {"certificate", "evidence"}:
            raise ProtocolError(f"{where} must hold exactly certificate and evidence")
        for part in ("certificate", "evidence"):
            _check_field(kind, f"{name}.{part}", "b64", value[part])
        return
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a string")
    if field_kind == "text":
        if len(value) > MAX_REASON:
            raise ProtocolError(f"{where} is longer than {MAX_REASON} characters")
    elif field_kind == "name":
        if not value or len(value) > MAX_NAME or not value.isprintable():
            raise ProtocolError(f"{where} must be 1 to {MAX_NAME} printable characters")
    elif field_kind in ("nonce", "hex32"):
        try:
            size = len(bytes.fromhex(value))
        except ValueError:
            raise ProtocolError(f"{where} is not hexadecimal") from None
        low, high = (NONCE_MIN, NONCE_MAX) if field_kind == "nonce" else (32, 32)
        if not low <= size <= high:
            raise ProtocolError(f"{where} must be {low} to {high} bytes, not {size}")
    elif field_kind == "b64":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"{where} is not base64") from None
        if not decoded:
            raise ProtocolError(f"{where} is empty")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
