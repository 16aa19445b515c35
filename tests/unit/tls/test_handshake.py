"""Handshakes over loopback with the blocking API: attested sessions, every refusal with its
precise reason, hostile peers, and nothing left behind."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from inclavare.attestation.policy import load_policy
from inclavare.tls.attest import PeerAttestation
from inclavare.tls.blocking import Session, connect
from inclavare.tls.certificate import build_certificate, claims_buffer, spki_of
from inclavare.tls.config import Config
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.errors import (
    ConnectionClosed,
    HandshakeTimeout,
    PeerRejected,
    ProtocolError,
    RejectedByPeer,
)
from inclavare.tls.plugins.attesters import sample_identity

from .conftest import SIM, Running, open_fds
from .test_certificate import BAD_EVIDENCE, _sim_evidence, _with_extension

MRENCLAVE = sample_identity().mr_enclave.hex()
Serve = Callable[..., Running]


def _round_trip(
    tls: EnclaveTls, running: Running, message: bytes = b"ping"
) -> PeerAttestation | None:
    with connect(tls, running.address) as session:
        session.sendall(message)
        assert session.recv() == message
        return session.peer


def _recording(peers: list[PeerAttestation | None]) -> Callable[[Session], None]:
    def handler(session: Session) -> None:
        peers.append(session.peer)
        session.sendall(session.recv())

    return handler


# --- attested sessions -------------------------------------------------------------------


def test_sim_to_sim_mutual_with_session_evidence(
    sim_server: EnclaveTls, sim_client: EnclaveTls, serve: Serve
) -> None:
    server_saw: list[PeerAttestation | None] = []
    running = serve(sim_server, _recording(server_saw))
    peer = _round_trip(sim_client, running)
    for attestation in (peer, server_saw[0]):
        assert attestation is not None and attestation.verified and attestation.session_bound
        assert attestation.evidence_type == "sim" and attestation.verifier == "sim"
        assert attestation.simulated and attestation.claims["mrenclave"] == MRENCLAVE
        assert "nonce" in attestation.claims  # the session's exporter value
    assert peer is not None and server_saw[0] is not None
    assert peer.claims["nonce"] == server_saw[0].claims["nonce"]
    assert peer.certificate == sim_server.certificate
    assert "SIMULATED TEE" in peer.summary()


@pytest.mark.parametrize("mutual", [False, True])
def test_certificate_evidence_only(serve: Serve, mutual: bool) -> None:
    config = replace(SIM, mutual=mutual, session_evidence=False)
    server_saw: list[PeerAttestation | None] = []
    running = serve(EnclaveTls(config, server=True), _recording(server_saw))
    client = EnclaveTls(replace(config, attester="sim" if mutual else None), server=False)
    peer = _round_trip(client, running)
    assert peer is not None and peer.verified and peer.certificate_verified
    assert not peer.session_bound
    if mutual:
        assert server_saw[0] is not None and server_saw[0].verified
    else:
        assert server_saw == [None]


def test_server_only_with_session_evidence(sim_server: EnclaveTls, serve: Serve) -> None:
    server = EnclaveTls(SIM, server=True)
    client = EnclaveTls(Config(allow_simulated=True), server=False)
    assert client.attester is None and client.certificate is None
    peer = _round_trip(client, serve(server))
    assert peer is not None and peer.session_bound


def test_verification_callback_sees_claims_and_can_refuse(serve: Serve) -> None:
    seen: list[PeerAttestation] = []
    running = serve(EnclaveTls(SIM, server=True))

    def accept(attestation: PeerAttestation) -> bool:
        seen.append(attestation)
        return True

    _round_trip(EnclaveTls(replace(SIM, attester=None, on_verified=accept), server=False), running)
    assert seen[0].claims["mrenclave"] == MRENCLAVE and seen[0].session_bound
    refusing = EnclaveTls(replace(SIM, on_verified=lambda peer: "not today"), server=False)
    with pytest.raises(PeerRejected, match=r"^rejected by the verification callback: not today$"):
        connect(refusing, running.address)
    assert isinstance(running.wait_errors(1)[0], RejectedByPeer)


# --- refusals ---------------------------------------------------------------------------


def test_replayed_session_evidence_is_refused(serve: Serve) -> None:
    class Replaying(EnclaveTls):
        """A server that stole its key and replays evidence it recorded once."""

        recorded: bytes | None = None

        def session_evidence_for(self, binder: bytes) -> bytes:
            if self.recorded is None:
                self.recorded = super().session_evidence_for(binder)
            return self.recorded

    running = serve(Replaying(SIM, server=True))
    client = EnclaveTls(SIM, server=False)
    assert _round_trip(client, running) is not None  # the recorded session itself is genuine
    with pytest.raises(
        PeerRejected, match=r"^evidence replayed: its nonce is not the one expected"
    ):
        connect(client, running.address)
    error = running.wait_errors(1)[0]
    assert isinstance(error, RejectedByPeer) and "client rejected" in str(error)


@pytest.mark.parametrize("session_evidence", [True, False])
def test_policy_refusal_has_its_reason_and_the_peer_an_alert(
    serve: Serve, session_evidence: bool
) -> None:
    other = "ab" * 32
    policy = load_policy(f'allow_simulated = true\n[sim]\nmrenclave = ["{other}"]\n'.encode())
    config = replace(SIM, session_evidence=session_evidence, mutual=True)
    running = serve(EnclaveTls(replace(config, policy=policy), server=True))
    client = EnclaveTls(config, server=False)
    reason = f"policy: mrenclave {MRENCLAVE} is not an accepted value"
    try:
        with connect(client, running.address) as session:
            session.sendall(b"x")
            session.recv()
        raise AssertionError("the server accepted a client its policy refuses")
    except RejectedByPeer as refused:
        expected = "rejected this side's evidence" if session_evidence else "TLS alert"
        assert expected in str(refused)
    except ConnectionClosed:
        # Without session evidence the client's handshake ends before the server judges it;
        # a write racing the server's abort can meet a reset that discards the alert.
        assert not session_evidence
    error = running.wait_errors(1)[0]
    assert isinstance(error, PeerRejected) and str(error) == reason
    # And the client side refuses a server its own policy does not accept.
    strict = EnclaveTls(replace(config, policy=policy), server=False)
    good = serve(EnclaveTls(config, server=True))
    with pytest.raises(PeerRejected, match=f"^{reason}$"):
        connect(strict, good.address)


def test_simulated_evidence_is_refused_unless_allowed(serve: Serve) -> None:
    running = serve(EnclaveTls(SIM, server=True))
    strict = EnclaveTls(Config(session_evidence=False), server=False)
    with pytest.raises(PeerRejected, match="simulated TEE, which is not allowed"):
        connect(strict, running.address)
    strict_session = EnclaveTls(Config(), server=False)
    with pytest.raises(PeerRejected, match="simulated TEE, which is not allowed"):
        connect(strict_session, running.address)


def test_enforced_verifier_must_match_the_evidence(serve: Serve) -> None:
    running = serve(EnclaveTls(SIM, server=True))
    client = EnclaveTls(replace(SIM, verifier="tdx_ecdsa"), server=False)
    with pytest.raises(
        PeerRejected, match=r"^evidence type sim but the enforced verifier is tdx_ecdsa$"
    ):
        connect(client, running.address)


def test_session_evidence_must_be_spoken_by_both(serve: Serve) -> None:
    fresh = serve(EnclaveTls(SIM, server=True))
    legacy_client = EnclaveTls(replace(SIM, session_evidence=False), server=False)
    with connect(legacy_client, fresh.address) as session:  # verified its certificate
        session.sendall(b"x")
        assert session.recv() == b""  # then the server closed: it requires session evidence
    assert "client does not exchange session-bound evidence" in str(fresh.wait_errors(1)[0])
    legacy = serve(EnclaveTls(replace(SIM, session_evidence=False), server=True))
    with pytest.raises(PeerRejected, match="the server does not exchange session-bound evidence"):
        connect(EnclaveTls(SIM, server=False), legacy.address)


# --- hostile certificates served by a bare TLS server ----------------------------------


def _bare_server(
    certificate: bytes, key: ec.EllipticCurvePrivateKey
) -> tuple[tuple[str, int], threading.Thread]:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.use_certificate(x509.load_der_x509_certificate(certificate))
    context.use_privatekey(key)
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        sock, _ = listener.accept()
        connection = SSL.Connection(context, sock)
        connection.set_accept_state()
        try:
            connection.do_handshake()
            connection.recv(16)
        except SSL.Error:
            pass
        sock.close()
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[:2], thread


CERT_ONLY = replace(SIM, session_evidence=False)


def _refused_by_client(
    certificate: bytes, key: ec.EllipticCurvePrivateKey, config: Config = CERT_ONLY
) -> str:
    address, thread = _bare_server(certificate, key)
    try:
        with pytest.raises(PeerRejected) as refused:
            connect(EnclaveTls(config, server=False), address)
    finally:
        thread.join(10)
    return str(refused.value)


def test_certificate_for_another_key_is_refused_in_the_handshake() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    certificate = build_certificate(key, _sim_evidence(spki_of(other)))
    reason = "the evidence's pubkey-hash is not the hash of the certificate's public key"
    assert _refused_by_client(certificate, key) == reason
    assert _refused_by_client(certificate, key, SIM) == reason


def test_garbage_evidence_and_unknown_types_are_refused_in_the_handshake() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # _with_extension signs with its own key; rebuild on `key` from the same extension value.
    for value, reason in (
        (b"\xff\xfe\xfd", "undecodable CBOR"),
        (BAD_EVIDENCE["Hygon CSV"][0], "unknown evidence type: CBOR tag 1733894"),
    ):
        crafted = x509.load_der_x509_certificate(_with_extension(value))
        from cryptography.hazmat.primitives import hashes, serialization

        builder = (
            x509.CertificateBuilder()
            .subject_name(crafted.subject)
            .issuer_name(crafted.issuer)
            .public_key(key.public_key())
            .serial_number(9)
            .not_valid_before(crafted.not_valid_before_utc)
            .not_valid_after(crafted.not_valid_after_utc)
        )
        for extension in crafted.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        assert reason in _refused_by_client(der, key)


def test_huge_certificate_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = claims_buffer(spki_of(key))
    from inclavare.tls.certificate import tagged_evidence

    huge = build_certificate(
        key, tagged_evidence(60000, b"\x03\x00\x02\x00" + bytes(200_000), claims)
    )
    address, thread = _bare_server(huge, key)
    try:
        with pytest.raises(ProtocolError, match=r"excessive message size|too large"):
            connect(EnclaveTls(CERT_ONLY, server=False), address)
    finally:
        thread.join(10)


# --- hostile clients --------------------------------------------------------------------


def _raw(address: tuple[str, int], payload: bytes, close: bool = True) -> socket.socket:
    sock = socket.create_connection(address)
    if payload:
        sock.sendall(payload)
    if close:
        sock.close()
    return sock


def _client_hello(tls: EnclaveTls) -> bytes:
    """The first flight of a real client, captured from memory buffers."""
    from inclavare.tls.transport import WantRead

    connection = tls.new_connection(None)
    with pytest.raises(WantRead):
        connection.do_handshake()
    return connection.outgoing()


def test_hostile_clients_are_refused_and_others_served(sim_client: EnclaveTls) -> None:
    server = EnclaveTls(replace(SIM, handshake_timeout=1.5, mutual=True), server=True)
    threads = threading.active_count()
    running = Running(server)
    _round_trip(sim_client, running)
    fds = open_fds()
    hello = _client_hello(sim_client)
    _raw(running.address, hello[: len(hello) // 2])  # truncated handshake
    _raw(running.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not TLS
    _raw(running.address, b"")  # connects and leaves
    _raw(running.address, b"\x16\x03\x01\xff\xff" + bytes(100))  # absurd record length
    errors = running.wait_errors(4)
    assert len(errors) == 4 and all(isinstance(error, ProtocolError) for error in errors)
    assert any("closed the connection during the TLS handshake" in str(e) for e in errors)
    assert any("TLS handshake failed" in str(e) for e in errors)
    # A slow client (one byte at a time) is cut off at the handshake deadline...
    slow = _raw(running.address, b"", close=False)
    started = time.monotonic()
    peer_meanwhile = _round_trip(sim_client, running)  # ...while others are served
    assert peer_meanwhile is not None and peer_meanwhile.verified
    for byte in hello[:20]:
        try:
            slow.send(bytes([byte]))
        except OSError:
            break
        time.sleep(0.1)
    timeout = running.wait_errors(5)[4]
    assert isinstance(timeout, HandshakeTimeout), timeout
    assert str(timeout) == "the TLS handshake did not complete within 1.5 s"
    assert time.monotonic() - started < 5
    slow.close()
    _round_trip(sim_client, running)
    time.sleep(0.2)
    assert open_fds() <= fds
    running.stop()
    assert threading.active_count() == threads


def test_client_gives_up_on_a_silent_server() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        client = EnclaveTls(replace(SIM, handshake_timeout=0.5), server=False)
        fds = open_fds()
        started = time.monotonic()
        with pytest.raises(HandshakeTimeout, match=r"did not complete within 0.5 s"):
            connect(client, listener.getsockname()[:2])
        assert time.monotonic() - started < 2
        assert open_fds() == fds
    finally:
        listener.close()


def test_no_thread_or_descriptor_left_after_a_server_stops(
    sim_server: EnclaveTls, sim_client: EnclaveTls
) -> None:
    threads, fds = threading.active_count(), open_fds()
    running = Running(sim_server)
    for _ in range(5):
        _round_trip(sim_client, running)
    _raw(running.address, b"junk")
    running.wait_errors(1)
    running.stop()
    assert threading.active_count() == threads
    assert open_fds() <= fds


def test_nulltls_passes_bytes_through(serve: Serve) -> None:
    config = Config(tls="nulltls", crypto="nullcrypto", mutual=True)
    running = serve(EnclaveTls(config, server=True))
    client = EnclaveTls(config, server=False)
    assert client.verifier_name == "nullverifier"
    assert _round_trip(client, running) is None


def test_verification_time_is_an_input(serve: Serve) -> None:
    running = serve(EnclaveTls(SIM, server=True))
    future = datetime(2100, 1, 1, tzinfo=UTC)
    client = EnclaveTls(replace(SIM, at=future), server=False)
    with pytest.raises(PeerRejected, match="expired on"):
        connect(client, running.address)
