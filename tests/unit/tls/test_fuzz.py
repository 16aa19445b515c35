"""Fuzzing the certificate and evidence parsers and the session-evidence state machine: any
input gives a value or the package's own error, never another exception."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.tls.attest import EVIDENCE, SessionExchange, frame
from inclavare.tls.certificate import (
    build_certificate,
    claims_buffer,
    decode_endorsements,
    read_certificate,
    spki_of,
    tagged_evidence,
)
from inclavare.tls.errors import CertificateFormatError, HandshakeError, PeerRejected

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = ec.generate_private_key(ec.SECP256R1())
SPKI = spki_of(KEY)
QUOTE_HEADER = b"\x03\x00\x02\x00" + bytes(8) + b"INCLAVARE-SIM-QE"
TEMPLATE = build_certificate(
    KEY, tagged_evidence(60000, QUOTE_HEADER + bytes(400), claims_buffer(SPKI))
)

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    try:
        read_certificate(data)
    except CertificateFormatError:
        pass


@FUZZ
@given(st.integers(min_value=0, max_value=len(TEMPLATE) - 1), st.binary(min_size=1, max_size=8))
def test_mutated_certificates(offset: int, patch: bytes) -> None:
    mutated = TEMPLATE[:offset] + patch + TEMPLATE[offset + len(patch) :]
    try:
        certificate = read_certificate(mutated)
    except CertificateFormatError:
        return
    assert certificate.der


@FUZZ
@given(st.integers(min_value=0, max_value=1 << 40), cbor_values, cbor_values)
def test_evidence_extension_contents(tag: int, first: object, second: object) -> None:
    value = cbor2.dumps(cbor2.CBORTag(tag, [first, second]))
    try:
        read_certificate(build_certificate(KEY, value))
    except CertificateFormatError:
        pass


@FUZZ
@given(cbor_values)
def test_endorsements(value: object) -> None:
    try:
        decode_endorsements(cbor2.dumps(cbor2.CBORTag(60000, value)))
    except CertificateFormatError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_session_exchange_messages(chunks: list[bytes], server: bool) -> None:
    def verify(evidence: bytes) -> None:
        if evidence != b"good":
            raise PeerRejected("bad evidence")

    exchange = SessionExchange(server, server, lambda: b"mine", verify)
    exchange.start()
    stream = b"".join(chunks)
    if chunks and chunks[0][:1] == b"\x01":
        stream = frame(EVIDENCE, b"\x00good") + stream
    try:
        for offset in range(0, len(stream), 7):
            exchange.receive(stream[offset : offset + 7])
    except HandshakeError:
        pass
