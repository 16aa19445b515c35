"""Remote attestation through inclavared, the verifier's side (`shelter remoteattestation`).

1. Enclave-TLS to inclavared: its certificate and session evidence are verified in the
   handshake with the inclavared policy (fresh for this session).
2. `get-evidence` with a fresh nonce; the answer carries the enclave's certificate and
   evidence and inclavared's evidence for the same nonce.
3. inclavared's evidence must be bound to the key of this very TLS session and name the
   forwarded enclave evidence by its hash; the enclave's evidence must be bound to the key
   of the enclave certificate and to the nonce, and pass the enclave policy. Each check is
   made here, with this side's roots and policies.
4. Optionally, a secret is sealed to the enclave's attested secret key and passed in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inclavare.eaa import protocol
from inclavare.eaa.address import Address, open_session, open_stream
from inclavare.eaa.evidence import (
    FORWARDED_EVIDENCE_CLAIM,
    EvidenceRejected,
    check_party,
    evidence_digest,
)
from inclavare.eaa.secret import SECRET_KEY_CLAIM, seal
from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.tls.aio import AsyncSession
    from inclavare.tls.attest import PeerAttestation
    from inclavare.tls.endpoint import EnclaveTls

READ_SIZE = 64 * 1024
NONCE_SIZE = 32


class Unreachable(InclavareError):
    """No attestation could be made: inclavared cannot be reached or broke the protocol."""


class NotTrusted(InclavareError):
    """A party's evidence was refused; the message says which and why."""


@dataclass(frozen=True)
class RemoteAttestation:
    nonce: bytes
    inclavared: PeerAttestation
    enclave: PeerAttestation
    secret_accepted: str | None = None

    @property
    def simulated(self) -> bool:
        return self.inclavared.simulated or self.enclave.simulated


async def remote_attest(
    address: Address,
    client_tls: EnclaveTls,
    enclave_verifier: EnclaveTls,
    nonce: bytes | None = None,
    enclave: str = "",
    secret: tuple[str, bytes] | None = None,
    timeout: float = 30.0,
) -> RemoteAttestation:
    """Attest the enclave behind inclavared at `address`. Raises `NotTrusted` when a party
    is refused and `Unreachable` when no verdict could be reached."""
    from inclavare.tls.errors import ConnectionClosed, HandshakeTimeout, PeerRejected

    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    try:
        session = await open_session(client_tls, address)
    except PeerRejected as rejection:
        raise NotTrusted(f"inclavared: {rejection}") from None
    except (ConnectionClosed, HandshakeTimeout) as error:
        raise Unreachable(f"inclavared at {address}: {error}") from None
    except InclavareError as error:
        raise Unreachable(f"inclavared at {address}: {error}") from None
    try:
        async with asyncio.timeout(timeout):
            return await _attest(session, enclave_verifier, nonce, enclave, secret)
    except TimeoutError:
        raise Unreachable(f"inclavared at {address} did not answer within {timeout:g} s") from None
    finally:
        await session.close()


async def _attest(
    session: AsyncSession,
    enclave_verifier: EnclaveTls,
    nonce: bytes,
    enclave: str,
    secret: tuple[str, bytes] | None,
) -> RemoteAttestation:
    assert session.peer is not None
    fields: dict[str, object] = {"nonce": nonce}
    if enclave:
        fields["enclave"] = enclave
    reader = protocol.FrameReader()
    answer = await _exchange(session, reader, protocol.message("get-evidence", **fields))
    if answer.type == "error":
        raise Unreachable(f"inclavared: {answer.text('reason')}")
    if answer.type != "attestation":
        raise Unreachable(f"inclavared answered {answer.type} to get-evidence")
    own_certificate, own_evidence = answer.party("inclavared")
    certificate, evidence = answer.party("enclave")
    try:
        inclavared, own_claims = await asyncio.to_thread(
            check_party,
            session.tls,
            own_certificate,
            own_evidence,
            nonce,
            "inclavared",
            session.peer,
        )
        if own_claims.get(FORWARDED_EVIDENCE_CLAIM) != evidence_digest(evidence):
            raise EvidenceRejected(
                "inclavared: its evidence does not vouch for the enclave evidence it forwarded"
            )
        attested, claims = await asyncio.to_thread(
            check_party, enclave_verifier, certificate, evidence, nonce, "enclave"
        )
    except EvidenceRejected as rejection:
        raise NotTrusted(str(rejection)) from None
    accepted = None
    if secret is not None:
        name, value = secret
        recipient = claims.get(SECRET_KEY_CLAIM)
        if recipient is None:
            raise NotTrusted("enclave: its evidence offers no secret-key claim")
        sealed = seal(recipient, value, name, nonce)
        request = protocol.message(
            "put-secret", name=name, ephemeral=sealed.ephemeral, sealed=sealed.ciphertext
        )
        reply = await _exchange(session, reader, request)
        if reply.type != "secret-accepted" or reply.text("name") != name:
            reason = reply.text("reason") if reply.type == "error" else reply.type
            raise Unreachable(f"the secret was not accepted: {reason}")
        accepted = name
    return RemoteAttestation(nonce, inclavared, attested, accepted)


async def _exchange(
    session: AsyncSession, reader: protocol.FrameReader, request: protocol.Message
) -> protocol.Message:
    from inclavare.tls.errors import EnclaveTlsError

    session.write(protocol.encode(request))
    try:
        await session.drain()
        while True:
            data = await session.read(READ_SIZE)
            if not data:
                raise Unreachable("inclavared closed the session without answering")
            for answer in reader.feed(data):
                return answer
    except protocol.ProtocolError as error:
        raise Unreachable(f"inclavared: {error}") from None
    except EnclaveTlsError as error:
        raise Unreachable(f"inclavared: {error}") from None


def measurements(attestation: PeerAttestation) -> dict[str, object]:
    """The identity claims of a verified party, for printing."""
    keys = ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug", "mrtd", "measurement")
    return {key: attestation.claims[key] for key in keys if key in attestation.claims}


def fingerprint(certificate: bytes) -> str:
    return hashlib.sha256(certificate).hexdigest()


async def open_tunnel(
    address: Address, tls: EnclaveTls, enclave: str = "", timeout: float = 30.0
) -> AsyncSession:
    """Enclave-TLS with the enclave itself through inclavared's tunnel listener: `tls`
    verifies the enclave's evidence (its policy applies) and inclavared relays ciphertext."""
    from inclavare.tls import aio

    fields: dict[str, object] = {"enclave": enclave} if enclave else {}
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await open_stream(address)
    except (OSError, TimeoutError) as error:
        reason = getattr(error, "strerror", None) or "timed out"
        raise Unreachable(f"inclavared tunnel at {address}: {reason}") from None
    try:
        writer.write(protocol.encode(protocol.message("connect", **fields)))
        async with asyncio.timeout(timeout):
            await writer.drain()
            header = await reader.readexactly(protocol.HEADER.size)
            (size,) = protocol.HEADER.unpack(header)
            if size > protocol.MAX_FRAME:
                raise Unreachable("inclavared tunnel: oversized answer")
            answer = protocol.parse(await reader.readexactly(size))
        if answer.type == "error":
            raise Unreachable(f"inclavared tunnel: {answer.text('reason')}")
        if answer.type != "connected":
            raise Unreachable(f"inclavared tunnel answered {answer.type} to connect")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, protocol.ProtocolError) as error:
        writer.close()
        raise Unreachable(f"inclavared tunnel at {address}: {error or 'timed out'}") from None
    except BaseException:
        writer.close()
        raise
    return await aio.establish(tls, reader, writer)
