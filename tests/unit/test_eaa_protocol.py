"""The attestation service protocol (inclavare.eaa.protocol): every message round trips,
frames may arrive in any pieces, and anything malformed is a ProtocolError naming it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.eaa import protocol
from inclavare.eaa.protocol import MAX_FRAME, FrameReader, ProtocolError

NONCE = bytes(range(32))
KEY = bytes(range(100, 132))

SAMPLES: dict[str, dict[str, object]] = {
    "get-evidence": {"nonce": NONCE},
    "evidence": {"certificate": b"\x30\x82certificate", "evidence": b"\xd9tagged evidence"},
    "attestation": {"enclave": (b"cert-e", b"evid-e"), "inclavared": (b"cert-i", b"evid-i")},
    "put-secret": {"name": "db-password", "ephemeral": KEY, "sealed": b"\x00" * 40},
    "secret-accepted": {"name": "db-password"},
    "connect": {},
    "connected": {},
    "error": {"reason": "the enclave refused: because"},
}


def test_the_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(protocol.MESSAGES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_message_type_round_trips(kind: str) -> None:
    sent = protocol.message(kind, **SAMPLES[kind])
    frame = protocol.encode(sent)
    assert protocol.HEADER.unpack_from(frame)[0] == len(frame) - 4
    document = json.loads(frame[4:])
    assert document["version"] == 1 and document["type"] == kind
    (received,) = list(FrameReader().feed(frame))
    assert received == sent
    for name, value in SAMPLES[kind].items():
        if isinstance(value, bytes):
            assert received.bytes_of(name) == value
        elif isinstance(value, tuple):
            assert received.party(name) == value
        else:
            assert received.text(name) == value


def test_optional_enclave_name_round_trips() -> None:
    sent = protocol.message("get-evidence", nonce=NONCE, enclave="db")
    (received,) = list(FrameReader().feed(protocol.encode(sent)))
    assert received.text("enclave") == "db" and received.bytes_of("nonce") == NONCE
    (plain,) = list(
        FrameReader().feed(protocol.encode(protocol.message("get-evidence", nonce=NONCE)))
    )
    assert plain.text("enclave") == ""


def test_frames_fed_byte_by_byte_and_the_rest_is_kept() -> None:
    framed = sorted(set(SAMPLES) - protocol.SWITCHING)
    frames = [protocol.encode(protocol.message(kind, **SAMPLES[kind])) for kind in framed]
    stream = b"".join(frames) + b"app"  # less than a header: kept, not parsed
    reader = FrameReader()
    received = []
    for index in range(len(stream)):
        received += list(reader.feed(stream[index : index + 1]))
    assert [message.type for message in received] == framed
    assert reader.pending == 3
    assert reader.take_rest() == b"app"
    assert reader.pending == 0


@pytest.mark.parametrize("switch", sorted(protocol.SWITCHING))
def test_after_connect_the_bytes_are_application_data(switch: str) -> None:
    """Bytes behind `connect`/`connected`, in the same read or later, are never parsed as
    frames (here: what would be an oversized frame, and a well-formed frame)."""
    application = b"GET / HTTP/1.1\r\n\r\n" + protocol.encode(protocol.message("connected"))
    stream = protocol.encode(protocol.message("get-evidence", nonce=NONCE))
    stream += protocol.encode(protocol.message(switch)) + application
    for step in (1, 7, len(stream)):
        reader = FrameReader()
        received = []
        for index in range(0, len(stream), step):
            received += list(reader.feed(stream[index : index + step]))
        assert [message.type for message in received] == ["get-evidence", switch]
        assert reader.take_rest() == application
        assert list(reader.feed(b"\xff" * 10)) == []
        assert reader.take_rest() == b"\xff" * 10


def test_several_frames_in_one_read() -> None:
    frames = [
        protocol.encode(protocol.message("secret-accepted", name="a")),
        protocol.encode(protocol.message("error", reason="b")),
    ]
    assert [m.type for m in FrameReader().feed(b"".join(frames))] == ["secret-accepted", "error"]


def _frame(document: object) -> bytes:
    body = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return protocol.HEADER.pack(len(body)) + body


def _error_of(frame: bytes) -> str:
    reader = FrameReader()
    with pytest.raises(ProtocolError) as caught:
        list(reader.feed(frame))
    # A reader that saw a broken frame is spent, whatever comes next.
    with pytest.raises(ProtocolError, match="already broke the protocol"):
        list(reader.feed(protocol.encode(protocol.message("connect"))))
    return str(caught.value)


def _doc(kind: object, **fields: object) -> dict[str, object]:
    return {"version": 1, "type": kind, **fields}


GOOD_B64 = "AAEC"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x00\x00\x00\x03abc", "a frame is not a UTF-8 JSON document"),
        (_frame(b"\xff\xfe{}"), "a frame is not a UTF-8 JSON document"),
        (_frame([1, 2]), "a frame is not a JSON object"),
        (_frame({"type": "connect"}), "unsupported protocol version None (this side speaks 1)"),
        (_frame(_doc("connect", version=2)), "unsupported protocol version 2 (this side speaks 1)"),
        (_frame(_doc("connect", version="1")), "unsupported protocol version '1'"),
        (_frame({"version": 1}), "unknown message type None"),
        (_frame(_doc("hello")), "unknown message type 'hello'"),
        (_frame(_doc(7)), "unknown message type 7"),
        (_frame(_doc("connect", extra=1)), "connect: unexpected field 'extra'"),
        (_frame(_doc("get-evidence")), "get-evidence: missing field 'nonce'"),
        (_frame(_doc("get-evidence", nonce="zz" * 16)), "field 'nonce' is not hexadecimal"),
        (
            _frame(_doc("get-evidence", nonce="00" * 15)),
            "field 'nonce' must be 16 to 64 bytes, not 15",
        ),
        (_frame(_doc("get-evidence", nonce="00" * 65)), "must be 16 to 64 bytes, not 65"),
        (_frame(_doc("get-evidence", nonce=123)), "get-evidence: field 'nonce' must be a string"),
        (
            _frame(_doc("get-evidence", nonce="00" * 32, enclave="x" * 129)),
            "get-evidence: field 'enclave' must be 1 to 128 printable characters",
        ),
        (
            _frame(_doc("get-evidence", nonce="00" * 32, enclave="")),
            "field 'enclave' must be 1 to 128 printable characters",
        ),
        (
            _frame(_doc("get-evidence", nonce="00" * 32, enclave="a\nb")),
            "field 'enclave' must be 1 to 128 printable characters",
        ),
        (
            _frame(_doc("evidence", certificate="!!", evidence=GOOD_B64)),
            "field 'certificate' is not base64",
        ),
        (
            _frame(_doc("evidence", certificate=GOOD_B64, evidence="")),
            "evidence: field 'evidence' is empty",
        ),
        (_frame(_doc("evidence", certificate=GOOD_B64)), "evidence: missing field 'evidence'"),
        (
            _frame(_doc("attestation", enclave={"certificate": GOOD_B64}, inclavared={})),
            "attestation: field 'enclave' must hold exactly certificate and evidence",
        ),
        (
            _frame(
                _doc(
                    "attestation",
                    enclave={"certificate": GOOD_B64, "evidence": "%%"},
                    inclavared={"certificate": GOOD_B64, "evidence": GOOD_B64},
                )
            ),
            "attestation: field 'enclave.evidence' is not base64",
        ),
        (
            _frame(_doc("put-secret", name="n", ephemeral="00" * 31, sealed=GOOD_B64)),
            "put-secret: field 'ephemeral' must be 32 to 32 bytes, not 31",
        ),
        (_frame(_doc("error", reason="x" * 1025)), "error: field 'reason' is longer than 1024"),
        (_frame(_doc("error", reason=None)), "error: field 'reason' must be a string"),
    ],
)
def test_malformed_frames_are_named(frame: bytes, message: str) -> None:
    assert message in _error_of(frame)


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    reader = FrameReader()
    with pytest.raises(ProtocolError, match=f"frame of {MAX_FRAME + 1} bytes exceeds the limit"):
        list(reader.feed(protocol.HEADER.pack(MAX_FRAME + 1)))
    with pytest.raises(ProtocolError, match="already broke"):
        list(reader.feed(b""))
    small = FrameReader(max_frame=10)
    with pytest.raises(ProtocolError, match="frame of 11 bytes exceeds the limit of 10"):
        list(small.feed(protocol.HEADER.pack(11)))


def test_an_overlong_unknown_type_is_cut_in_the_message() -> None:
    assert len(_error_of(_frame(_doc("x" * 5000)))) <= 200


def test_messages_to_send_are_checked_too() -> None:
    with pytest.raises(ValueError, match="unknown message type 'nope'"):
        protocol.message("nope")
    with pytest.raises(ProtocolError, match="must be 16 to 64 bytes, not 4"):
        protocol.message("get-evidence", nonce=b"1234")
    with pytest.raises(ProtocolError, match="missing field 'name'"):
        protocol.message("secret-accepted")
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.encode(protocol.message("evidence", certificate=b"c", evidence=b"e" * MAX_FRAME))


def test_error_frames_are_one_line_and_bounded() -> None:
    (message,) = list(FrameReader().feed(protocol.error_frame("first\nsecond\t third " * 200)))
    reason = message.text("reason")
    assert "\n" not in reason and reason.startswith("first second third")
    assert len(reason) == protocol.MAX_REASON


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_arbitrary_bytes_give_messages_or_a_protocol_error(chunks: list[bytes]) -> None:
    reader = FrameReader(max_frame=4096)
    for chunk in chunks:
        try:
            list(reader.feed(chunk))
        except ProtocolError:
            with pytest.raises(ProtocolError):
                list(reader.feed(b"\x00\x00\x00\x02{}"))
            return


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(protocol.MESSAGES)),
    st.dictionaries(
        st.sampled_from(
            [
                "nonce",
                "enclave",
                "certificate",
                "evidence",
                "name",
                "ephemeral",
                "sealed",
                "reason",
                "inclavared",
                "version",
                "other",
            ]
        ),
        _json_values | st.sampled_from(["00" * 32, GOOD_B64, "", "zz"]),
        max_size=5,
    ),
)
def test_arbitrary_json_objects_parse_or_are_refused(kind: str, fields: dict[str, object]) -> None:
    """Well-formed JSON with fields of any shape: a message whose accessors work, or a
    ProtocolError (never a KeyError, TypeError or binascii.Error)."""
    reader = FrameReader()
    try:
        messages = list(reader.feed(_frame({"version": 1, "type": kind, **fields})))
    except ProtocolError:
        return
    (received,) = messages
    for name, field_kind in protocol.MESSAGES[kind].items():
        if name not in received.fields:
            continue
        if field_kind.rstrip("?") in ("nonce", "hex32", "b64"):
            received.bytes_of(name)
        elif field_kind == "party":
            received.party(name)
        else:
            received.text(name)
