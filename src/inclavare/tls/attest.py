"""What a connection knows of its peer, and the session-evidence exchange. Pure (no I/O).

Session-bound evidence: once the TLS 1.3 handshake is complete, each attesting side sends
evidence whose claims are {"pubkey-hash": hash of its certificate's key, "nonce": the
session's TLS exporter value}, in the same CBOR-tagged form as the certificate extension.
The exporter value is derived from the session's key schedule, which is unique per session
and known only to its two ends, so evidence recorded in one session, or obtained from the TEE
by a relay for another session, fails in this one ("evidence replayed").

Messages travel as TLS application data before any byte of the application, in frames of a
type byte and a 3-byte big-endian length:

    0x01 EVIDENCE  flags (bit 0: "send me yours") + tagged evidence (empty: none)
    0x02 ACCEPTED  empty
    0x03 REJECTED  empty (the reason stays with the side that rejected)

Server-only attestation: server EVIDENCE, then the client's ACCEPTED or REJECTED. Mutual:
server EVIDENCE (flag set), client EVIDENCE (which implies it accepted the server), then the
server's ACCEPTED or REJECTED. Each side's API returns the connection only after its last
message, so the application never sees a byte from an unverified peer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NoReturn

from inclavare.tls.errors import PeerRejected, ProtocolError, RejectedByPeer

if TYPE_CHECKING:
    from inclavare.attestation.verdict import ClaimValue, Verdict

EVIDENCE = 0x01
ACCEPTED = 0x02
REJECTED = 0x03
FLAG_WANT_PEER_EVIDENCE = 0x01
MAX_FRAME = 256 * 1024
HEADER = 4

UNVERIFIED_WARNING = "the null verifier accepted this peer without checking its evidence"


@dataclass(frozen=True)
class PeerAttestation:
    """The peer as verified: its evidence type, the verifier used and the verdict.

    `verdict` is the verdict that admitted the peer: of its session-bound evidence when
    `session_bound`, else of its certificate's evidence; None when the null verifier let the
    peer in unchecked. With session evidence, the certificate's own evidence is checked for
    form and key binding during the handshake and not verified a second time
    (`certificate_verified` is False): the session evidence, from the same TEE for the same
    key, is verified in full and proves more.
    """

    evidence_type: str | None
    verifier: str
    certificate: bytes  # DER of the peer's certificate
    spki: bytes
    carriers: tuple[str, ...] = ()
    verdict: Verdict | None = None
    session_bound: bool = False
    certificate_verified: bool = False

    @property
    def verified(self) -> bool:
        return self.verdict is not None and self.verdict.verified

    @property
    def simulated(self) -> bool:
        return self.evidence_type == "sim"

    @property
    def claims(self) -> Mapping[str, ClaimValue]:
        return self.verdict.claims if self.verdict is not None else {}

    def with_session_verdict(self, verdict: Verdict) -> PeerAttestation:
        return replace(self, verdict=verdict, session_bound=True)

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {
            "evidence_type": self.evidence_type,
            "verifier": self.verifier,
            "verified": self.verified,
            "simulated": self.simulated,
            "session_bound": self.session_bound,
            "certificate_verified": self.certificate_verified,
            "carriers": list(self.carriers),
        }
        if self.verdict is not None:
            document["verdict"] = self.verdict.to_json()
        else:
            document["warnings"] = [UNVERIFIED_WARNING]
        return document

    def summary(self) -> str:
        if self.verdict is None:
            return f"peer NOT VERIFIED ({UNVERIFIED_WARNING})"
        heading = f"peer verified by {self.verifier}: {self.evidence_type} evidence"
        if self.simulated:
            heading += " (SIMULATED TEE: no hardware protection)"
        heading += (
            ", bound to this session" if self.session_bound else ", not bound to this session"
        )
        return "\n".join([heading, *("  " + line for line in self.verdict.summary().splitlines())])


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError("frame payload too large")
    return bytes([kind]) + len(payload).to_bytes(3, "big") + payload


class SessionExchange:
    """The session-evidence messages of one side, as a state machine over bytes.

    `start()` gives what to send first; `receive(data)` consumes bytes from the peer and gives
    what to send next. When `done`, `leftover` holds application bytes that arrived behind the
    last message. A failure raises `PeerRejected` (this side refused the peer),
    `RejectedByPeer` or `ProtocolError`; `pending_output` is then what to send before closing.
    """

    def __init__(
        self,
        server: bool,
        want_peer_evidence: bool,
        own_evidence: Callable[[], bytes],
        verify_peer: Callable[[bytes], None],
    ) -> None:
        self.server = server
        self.want_peer_evidence = want_peer_evidence
        self._own_evidence = own_evidence
        self._verify_peer = verify_peer
        self._buffer = bytearray()
        self._state = "start"
        self.done = False
        self.leftover = b""
        self.pending_output = b""

    def start(self) -> bytes:
        if self.server:
            flags = FLAG_WANT_PEER_EVIDENCE if self.want_peer_evidence else 0
            self._state = "server-wait"
            return frame(EVIDENCE, bytes([flags]) + self._own_evidence())
        self._state = "client-wait-evidence"
        return b""

    def receive(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        self._buffer += data
        output = bytearray()
        while True:
            if self._finished():  # _handle may have finished the exchange
                self.leftover = bytes(self._buffer)
                self._buffer.clear()
                break
            message = self._next_frame()
            if message is None:
                break
            output += self._handle(*message)
        return bytes(output)

    def _finished(self) -> bool:
        return self.done

    def end_of_stream(self) -> None:
        """The peer closed the connection before the exchange finished."""
        raise ProtocolError(
            "the peer closed the connection during the session-evidence exchange"
            + (" (it may have rejected this side)" if self._state != "start" else "")
        )

    def _next_frame(self) -> tuple[int, bytes] | None:
        if len(self._buffer) < HEADER:
            return None
        kind = self._buffer[0]
        length = int.from_bytes(self._buffer[1:4], "big")
        if kind not in (EVIDENCE, ACCEPTED, REJECTED):
            raise ProtocolError(
                f"the peer sent no session-evidence message (first byte {kind:#04x}): "
                "does it exchange session-bound evidence?"
            )
        if length > MAX_FRAME:
            raise ProtocolError(f"session-evidence message too large ({length} bytes)")
        if len(self._buffer) < HEADER + length:
            return None
        payload = bytes(self._buffer[HEADER : HEADER + length])
        del self._buffer[: HEADER + length]
        return kind, payload

    def _reject(self, reason: str) -> NoReturn:
        self.pending_output = frame(REJECTED)
        raise PeerRejected(reason)

    def _handle(self, kind: int, payload: bytes) -> bytes:
        state = self._state
        if kind == REJECTED:
            peer = "client" if self.server else "server"
            raise RejectedByPeer(f"the {peer} rejected this side's evidence")
        if state == "client-wait-evidence":
            if kind != EVIDENCE or not payload:
                raise ProtocolError("expected the server's session evidence")
            flags, evidence = payload[0], payload[1:]
            try:
                self._verify_peer(evidence)
            except PeerRejected as rejection:
                self._reject(str(rejection))
            if flags & FLAG_WANT_PEER_EVIDENCE:
                self._state = "client-wait-accept"
                return frame(EVIDENCE, bytes([0]) + self._own_evidence())
            self.done = True
            return frame(ACCEPTED)
        if state == "client-wait-accept":
            if kind != ACCEPTED or payload:
                raise ProtocolError("expected the server's acceptance")
            self.done = True
            return b""
        if state == "server-wait":
            if self.want_peer_evidence:
                if kind != EVIDENCE or not payload:
                    raise ProtocolError("expected the client's session evidence")
                try:
                    self._verify_peer(payload[1:])
                except PeerRejected as rejection:
                    self._reject(str(rejection))
                self.done = True
                return frame(ACCEPTED)
            if kind != ACCEPTED or payload:
                raise ProtocolError("expected the client's acceptance")
            self.done = True
            return b""
        raise ProtocolError(f"unexpected session-evidence message {kind:#04x}")
