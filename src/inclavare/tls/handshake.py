"""What both drivers do around the TLS handshake: the checks after it, the session-evidence
exchange set-up, and the translation of failures into precise errors. Pure (no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inclavare.tls.attest import PeerAttestation, SessionExchange
from inclavare.tls.endpoint import EnclaveTls, PeerCheck
from inclavare.tls.errors import (
    HandshakeError,
    HandshakeTimeout,
    PeerRejected,
    ProtocolError,
    RejectedByPeer,
)
from inclavare.tls.transport import ALPN_SESSION_EVIDENCE, TlsFailure, TransportClosed

if TYPE_CHECKING:
    from inclavare.tls.transport import TlsConnection


class Establishment:
    """The state of one connection between its TCP connection and its first application byte."""

    def __init__(self, tls: EnclaveTls, connection: TlsConnection) -> None:
        self.tls = tls
        self.connection = connection
        check = connection.app_data
        self.check: PeerCheck = check if isinstance(check, PeerCheck) else PeerCheck()
        self.peer: PeerAttestation | None = None
        self.exchange: SessionExchange | None = None
        self._early: tuple[bytes, bytes] | None = None
        self._early_tried = False

    def handshake_waiting(self) -> None:
        """Called whenever the handshake waits for the peer. A server collects its session
        evidence as soon as the session's exporter value exists (its Finished is out), while
        the client processes the server's flight: the two costs overlap."""
        if self._early_tried or not self.tls.server or not self.tls.session_evidence:
            return
        binder = self.connection.early_binder()
        if binder is None:
            return
        self._early_tried = True
        self._early = (binder, self.tls.session_evidence_for(binder))

    def _own_evidence(self, binder: bytes) -> bytes:
        if self._early is not None and self._early[0] == binder:
            return self._early[1]
        return self.tls.session_evidence_for(binder)

    def after_handshake(self) -> SessionExchange | None:
        """Check what the handshake established; the session exchange to run, if any."""
        tls, check = self.tls, self.check
        if check.reason is not None:
            raise PeerRejected(check.reason)
        if tls.verifies and tls.tls_wrapper.carries_certificates and check.attestation is None:
            raise PeerRejected("the peer presented no certificate")
        self.peer = check.attestation
        if not tls.session_evidence:
            return None
        if self.connection.selected_alpn() != ALPN_SESSION_EVIDENCE:
            peer = "client" if tls.server else "server"
            raise PeerRejected(
                f"the {peer} does not exchange session-bound evidence (an upstream RATS-TLS or "
                "Gramine peer?); accepting it needs session evidence turned off"
            )
        binder = self.connection.binder()
        assert binder is not None

        def verify_peer(evidence: bytes) -> None:
            if self.peer is None:
                raise PeerRejected("the peer's certificate was not verified")
            attestation = tls.verify_session_evidence(self.peer, evidence, binder)
            tls.accept(attestation)
            self.peer = attestation

        self.exchange = SessionExchange(
            server=tls.server,
            want_peer_evidence=tls.server and tls.config.mutual,
            own_evidence=lambda: self._own_evidence(binder),
            verify_peer=verify_peer,
        )
        return self.exchange

    def failure(self, error: BaseException, timeout: float) -> HandshakeError:
        """The precise error for a failed establishment."""
        reason = self.check.reason
        if isinstance(error, HandshakeError):
            return error
        if isinstance(error, TimeoutError):
            stage = "the session-evidence exchange" if self.exchange else "the TLS handshake"
            return HandshakeTimeout(f"{stage} did not complete within {timeout:.3g} s")
        if reason is not None:
            return PeerRejected(reason)
        if isinstance(error, TlsFailure):
            alert = error.alert_from_peer
            if alert is not None:
                return RejectedByPeer(f"the peer refused the handshake (TLS alert: {alert})")
            return ProtocolError(f"TLS handshake failed: {error}")
        if isinstance(error, TransportClosed):
            if self.exchange is not None:
                return ProtocolError(
                    "the peer closed the connection during the session-evidence exchange"
                )
            return ProtocolError("the peer closed the connection during the TLS handshake")
        if isinstance(error, OSError):
            return ProtocolError(f"connection failed: {error.strerror or error}")
        return ProtocolError(f"connection failed: {type(error).__name__}: {error}")


def failure_after_handshake(error: TlsFailure) -> Exception:
    """A TLS failure on an established session: an alert from the peer, or a broken stream."""
    from inclavare.tls.errors import ConnectionClosed

    alert = error.alert_from_peer
    if alert is not None:
        return RejectedByPeer(f"the peer ended the session (TLS alert: {alert})")
    return ConnectionClosed(f"TLS failure: {error}")
