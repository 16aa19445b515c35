"""The enclave side of the attestation service: the program an enclave container runs.

It serves Enclave-TLS (by default mutual: the client, inclavared, must attest too) and, in
each session, answers the attestation service protocol (protocol.py):

- `get-evidence` (nonce): a fresh X25519 key for secrets, then `evidence`: this program's
  certificate and evidence bound to its TLS key, the nonce and the secret key;
- `put-secret`: opens the secret sealed to that key (name and nonce must match) and keeps
  it in memory; answers `secret-accepted` without echoing anything of it;
- `connect`: answers `connected`, then the session carries application bytes: the sample
  application echoes them back.

Inside a sim enclave container the `sim` attester obtains quotes of the container's enclave
through the runtime's attestation channel, so the evidence is of the measured image.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inclavare.eaa import protocol
from inclavare.eaa.secret import SECRET_KEY_CLAIM, Sealed, SecretError, SecretKey

if TYPE_CHECKING:
    from inclavare.tls.aio import AsyncServer, AsyncSession
    from inclavare.tls.endpoint import EnclaveTls

READ_SIZE = 64 * 1024
IDLE_TIMEOUT = 60.0


@dataclass
class EnclaveService:
    tls: EnclaveTls
    idle_timeout: float = IDLE_TIMEOUT
    secrets: dict[str, bytes] = field(default_factory=dict)
    sessions: int = 0

    async def handle(self, session: AsyncSession) -> None:
        self.sessions += 1
        reader = protocol.FrameReader()
        secret_key: SecretKey | None = None
        nonce = b""
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    data = await session.read(READ_SIZE)
            except TimeoutError:
                log("session-idle", seconds=self.idle_timeout)
                return
            if not data:
                return
            try:
                messages = list(reader.feed(data))
            except protocol.ProtocolError as error:
                await _send(session, protocol.error_frame(str(error)))
                log("protocol-error", reason=str(error))
                return
            for message in messages:
                if message.type == "get-evidence":
                    nonce = message.bytes_of("nonce")
                    secret_key = SecretKey()
                    evidence = await asyncio.to_thread(
                        self.tls.evidence_for, nonce, {SECRET_KEY_CLAIM: secret_key.public}
                    )
                    certificate = self.tls.certificate
                    reply = protocol.message("evidence", certificate=certificate, evidence=evidence)
                    await _send(session, protocol.encode(reply))
                elif message.type == "put-secret":
                    name = message.text("name")
                    if secret_key is None:
                        await _send(session, protocol.error_frame("put-secret before get-evidence"))
                        return
                    sealed = Sealed(message.bytes_of("ephemeral"), message.bytes_of("sealed"))
                    try:
                        self.secrets[name] = secret_key.open(sealed, name, nonce)
                    except SecretError as error:
                        await _send(session, protocol.error_frame(str(error)))
                        log("secret-refused", name=name, reason=str(error))
                        return
                    log("secret-accepted", name=name, size=len(self.secrets[name]))
                    accepted = protocol.message("secret-accepted", name=name)
                    await _send(session, protocol.encode(accepted))
                elif message.type == "connect":
                    await _send(session, protocol.encode(protocol.message("connected")))
                    await self.application(session, reader.take_rest())
                    return
                else:
                    reason = f"unexpected {message.type} message"
                    await _send(session, protocol.error_frame(reason))
                    return

    async def application(self, session: AsyncSession, first: bytes) -> None:
        """The sample application: echo."""
        if first:
            session.write(first)
        while data := await session.read(READ_SIZE):
            session.write(data)
            await session.drain()


async def _send(session: AsyncSession, frame: bytes) -> None:
    session.write(frame)
    await session.drain()


def log(event: str, **fields: object) -> None:
    record = {"time": round(time.time(), 3), "program": "enclave-service", "event": event}
    record.update(fields)
    print(json.dumps(record), file=sys.stderr, flush=True)


async def serve(service: EnclaveService, address: str) -> AsyncServer:
    from inclavare.eaa.address import parse_address, start_session_server

    where = parse_address(address)

    def failed(peer: object, error: Exception) -> None:
        log("session-refused", peer=str(peer or ""), reason=str(error))

    return await start_session_server(service.tls, service.handle, where, failed)
