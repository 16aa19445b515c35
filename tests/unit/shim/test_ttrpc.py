"""ttrpc framing and envelopes (sans-IO), and the asyncio server against hostile peers."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inclavare.shim import ttrpc
from inclavare.shim.ttrpc_server import Client, RpcError, Server

texts = st.text(max_size=40)
requests = st.builds(
    ttrpc.Request,
    service=texts,
    method=texts,
    payload=st.binary(max_size=200),
    timeout_nano=st.integers(min_value=0, max_value=2**63 - 1),
    metadata=st.lists(st.tuples(texts, texts), max_size=4).map(tuple),
)
statuses = st.builds(ttrpc.Status, code=st.integers(min_value=0, max_value=16), message=texts)


@given(requests)
def test_request_round_trip(request: ttrpc.Request) -> None:
    assert ttrpc.decode_request(ttrpc.encode_request(request)) == request


@given(statuses, st.binary(max_size=200))
def test_response_round_trip(status: ttrpc.Status, payload: bytes) -> None:
    response = ttrpc.Response(status, payload)
    assert ttrpc.decode_response(ttrpc.encode_response(response)) == response


def test_known_bytes() -> None:
    """The header layout: length, stream id (big-endian uint32), type, flags."""
    frame = ttrpc.encode_frame(3, ttrpc.TYPE_REQUEST, b"abc", flags=0)
    assert frame == b"\x00\x00\x00\x03\x00\x00\x00\x03\x01\x00abc"
    request = ttrpc.encode_request(ttrpc.Request("s", "m", b"p", 5, (("k", "v"),)))
    assert request == b"\x0a\x01s\x12\x01m\x1a\x01p\x20\x05\x2a\x06\x0a\x01k\x12\x01v"


@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=300)), max_size=6),
    st.integers(min_value=1, max_value=50),
)
def test_frames_survive_any_chunking(frames: list[tuple[int, bytes]], chunk: int) -> None:
    stream = b"".join(ttrpc.encode_frame(sid, ttrpc.TYPE_REQUEST, data) for sid, data in frames)
    decoder = ttrpc.FrameDecoder()
    decoded: list[ttrpc.Frame | ttrpc.OversizedFrame] = []
    for start in range(0, len(stream), chunk):
        decoded += decoder.feed(stream[start : start + chunk])
    assert decoded == [ttrpc.Frame(sid, ttrpc.TYPE_REQUEST, 0, data) for sid, data in frames]
    assert decoder.pending == 0


def test_an_oversized_frame_is_skipped_and_reported() -> None:
    too_big = ttrpc.MAX_MESSAGE_LENGTH + 1
    stream = struct.pack(">IIBB", too_big, 7, 1, 0) + b"x" * too_big
    stream += ttrpc.encode_frame(9, ttrpc.TYPE_REQUEST, b"next")
    decoder = ttrpc.FrameDecoder()
    decoded: list[ttrpc.Frame | ttrpc.OversizedFrame] = []
    for start in range(0, len(stream), 1 << 20):
        decoded += decoder.feed(stream[start : start + (1 << 20)])
    assert decoded == [
        ttrpc.OversizedFrame(7, 1, too_big),
        ttrpc.Frame(9, ttrpc.TYPE_REQUEST, 0, b"next"),
    ]
    with pytest.raises(ValueError, match="exceeds"):
        ttrpc.encode_frame(1, ttrpc.TYPE_RESPONSE, b"x" * too_big)


@given(st.binary(max_size=300))
def test_garbage_envelopes_raise_only_decode_error(data: bytes) -> None:
    for decode in (ttrpc.decode_request, ttrpc.decode_response):
        try:
            decode(data)
        except ttrpc.DecodeError:
            pass


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05ab", "truncated length-delimited"),
        (b"\x0a", "truncated varint"),
        (b"\x0a\x02\xff\xfe", "invalid UTF-8"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x08\x01", "service: wrong wire type 0"),
        (b"\x00", "field number 0"),
        (b"\x20" + b"\xff" * 11, "longer than 10 bytes"),
    ],
)
def test_malformed_requests_name_the_problem(data: bytes, reason: str) -> None:
    with pytest.raises(ttrpc.DecodeError, match=reason):
        ttrpc.decode_request(data)


# --- the server -------------------------------------------------------------------------------


@pytest.fixture
def server_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "ttrpc.sock")

    def echo(payload: bytes) -> bytes:
        return payload[::-1]

    def fail(payload: bytes) -> bytes:
        raise RpcError(ttrpc.NOT_FOUND, f"no such thing: {payload.decode()}")

    def slow(payload: bytes) -> bytes:
        time.sleep(0.2)
        return b"slow"

    def bug(payload: bytes) -> bytes:
        raise KeyError("oops")

    server = Server({"test.Echo": {"Echo": echo, "Fail": fail, "Slow": slow, "Bug": bug}})
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    thread = threading.Thread(target=server.serve_forever, args=(listener,), daemon=True)
    thread.start()
    yield path
    server.close()
    thread.join(5)
    listener.close()
    assert not thread.is_alive()


def test_calls_and_errors(server_socket: str) -> None:
    with Client(server_socket) as client:
        assert client.call("test.Echo", "Echo", b"abc") == b"cba"
        with pytest.raises(RpcError) as failed:
            client.call("test.Echo", "Fail", b"x")
        assert (failed.value.code, failed.value.message) == (ttrpc.NOT_FOUND, "no such thing: x")
        with pytest.raises(RpcError) as missing:
            client.call("test.Echo", "Nope", b"")
        assert (missing.value.code, missing.value.message) == (ttrpc.UNIMPLEMENTED, "method Nope")
        with pytest.raises(RpcError) as unknown:
            client.call("other.Service", "Echo", b"")
        assert unknown.value.code == ttrpc.UNIMPLEMENTED
        assert unknown.value.message == "service other.Service"
        with pytest.raises(RpcError) as bug:
            client.call("test.Echo", "Bug", b"")
        assert bug.value.code == ttrpc.INTERNAL and "KeyError" in bug.value.message


def _raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, ttrpc.Response]:
    decoder = ttrpc.FrameDecoder()
    while True:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for frame in decoder.feed(data):
            assert isinstance(frame, ttrpc.Frame)
            return frame.stream_id, ttrpc.decode_response(frame.payload)


def test_concurrent_calls_on_one_connection_answer_out_of_order(server_socket: str) -> None:
    sock = _raw(server_socket)
    for stream_id, method in ((1, "Slow"), (3, "Echo")):
        request = ttrpc.encode_request(ttrpc.Request("test.Echo", method, b"ab"))
        sock.sendall(ttrpc.encode_frame(stream_id, ttrpc.TYPE_REQUEST, request))
    assert _read_response(sock) == (3, ttrpc.Response(payload=b"ba"))
    assert _read_response(sock) == (1, ttrpc.Response(payload=b"slow"))
    sock.close()


def test_malformed_request_gets_invalid_argument(server_socket: str) -> None:
    sock = _raw(server_socket)
    sock.sendall(ttrpc.encode_frame(1, ttrpc.TYPE_REQUEST, b"\x0a\x05ab"))
    stream_id, response = _read_response(sock)
    assert stream_id == 1 and response.status.code == ttrpc.INVALID_ARGUMENT
    assert "truncated" in response.status.message
    sock.close()


def test_oversized_frame_gets_resource_exhausted_and_the_connection_goes_on(
    server_socket: str,
) -> None:
    sock = _raw(server_socket)
    too_big = ttrpc.MAX_MESSAGE_LENGTH + 10
    sock.sendall(struct.pack(">IIBB", too_big, 1, 1, 0) + b"\0" * too_big)
    stream_id, response = _read_response(sock)
    assert stream_id == 1 and response.status.code == ttrpc.RESOURCE_EXHAUSTED
    request = ttrpc.encode_request(ttrpc.Request("test.Echo", "Echo", b"xy"))
    sock.sendall(ttrpc.encode_frame(3, ttrpc.TYPE_REQUEST, request))
    assert _read_response(sock) == (3, ttrpc.Response(payload=b"yx"))
    sock.close()


@pytest.mark.parametrize(
    "garbage",
    [
        ttrpc.encode_frame(2, ttrpc.TYPE_REQUEST, b""),  # even stream id: not a client's
        b"\x00\x00\x00\x10\x00\x00",  # a truncated header, then EOF
        b"\x00\x00\x00\x10\x00\x00\x00\x01\x01\x00abc",  # a truncated payload, then EOF
    ],
)
def test_garbage_closes_that_connection_only(server_socket: str, garbage: bytes) -> None:
    with Client(server_socket) as bystander:
        sock = _raw(server_socket)
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed, no answer
        sock.close()
        assert bystander.call("test.Echo", "Echo", b"ok") == b"ko"
    with Client(server_socket) as newcomer:
        assert newcomer.call("test.Echo", "Echo", b"12") == b"21"


def test_unknown_message_types_are_ignored(server_socket: str) -> None:
    sock = _raw(server_socket)
    sock.sendall(ttrpc.encode_frame(1, 9, b"whatever"))
    request = ttrpc.encode_request(ttrpc.Request("test.Echo", "Echo", b"ab"))
    sock.sendall(ttrpc.encode_frame(3, ttrpc.TYPE_REQUEST, request))
    assert _read_response(sock) == (3, ttrpc.Response(payload=b"ba"))
    sock.close()


# --- the hand-written envelopes against the protobuf runtime -----------------------------------


@given(requests)
def test_requests_match_the_protobuf_runtime(request: ttrpc.Request) -> None:
    from inclavare.shim.proto import ttrpc_pb2

    generated = ttrpc_pb2.Request(
        service=request.service,
        method=request.method,
        payload=request.payload,
        timeout_nano=request.timeout_nano,
        metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in request.metadata],
    )
    assert ttrpc.encode_request(request) == generated.SerializeToString(deterministic=True)
    parsed = ttrpc_pb2.Request.FromString(ttrpc.encode_request(request))
    assert parsed == generated


@given(statuses, st.binary(max_size=200))
def test_responses_match_the_protobuf_runtime(status: ttrpc.Status, payload: bytes) -> None:
    from inclavare.shim.proto import ttrpc_pb2

    generated = ttrpc_pb2.Response(payload=payload)
    if status != ttrpc.Status():
        generated.status.code = status.code
        generated.status.message = status.message
    encoded = ttrpc.encode_response(ttrpc.Response(status, payload))
    assert encoded == generated.SerializeToString(deterministic=True)
    assert ttrpc.decode_response(generated.SerializeToString()) == ttrpc.Response(status, payload)


def test_a_peer_that_stopped_sending_still_gets_its_answers(server_socket: str) -> None:
    sock = _raw(server_socket)
    request = ttrpc.encode_request(ttrpc.Request("test.Echo", "Slow", b""))
    sock.sendall(ttrpc.encode_frame(1, ttrpc.TYPE_REQUEST, request))
    sock.shutdown(socket.SHUT_WR)
    assert _read_response(sock) == (1, ttrpc.Response(payload=b"slow"))
    assert sock.recv(10) == b""  # then the server closes
    sock.close()
