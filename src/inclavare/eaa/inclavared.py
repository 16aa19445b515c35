"""inclavared: the node daemon between off-cloud verifiers and confidential containers.

Each verifier session (shelter, over Enclave-TLS in which inclavared attests itself) gets
its own upstream session to the enclave (mutual Enclave-TLS: inclavared verifies the
enclave's evidence and policy in the handshake, and the enclave verifies inclavared's).
Requests of the attestation service protocol (protocol.py) are handled so:

- `get-evidence`: passed upstream; the enclave's `evidence` is verified here first (bound to
  the key of the upstream TLS session, so it is the endpoint inclavared talks to, and to the
  verifier's nonce, so it is fresh; the same enclave as the session's evidence; the policy),
  then sent on as `attestation` with inclavared's own evidence for the same nonce, which
  names the forwarded evidence by its hash. The verifier checks both itself: nothing
  inclavared concludes is taken on trust.
- `put-secret`: passed upstream unchanged (sealed to the enclave: inclavared cannot read it),
  and the answer passed back;
- `connect`: passed upstream; after `connected` the two sessions are joined and
  application bytes flow both ways until either side ends. inclavared decrypts and
  re-encrypts them, so it sees them: for application data it must not see, use the tunnel.

The tunnel listener (`--tunnel-listen`) is plain transport: a client's first frame is
`connect` (naming one of the configured enclaves), inclavared answers `connected` and from
then on copies bytes between the client and the enclave's address without looking at them.
The client runs Enclave-TLS with the enclave itself, end to end, through the tunnel: it
verifies the enclave's evidence directly and inclavared sees only ciphertext (and does no
cryptography for it).

A failure ends only its own session, with an `error` frame naming the reason; the daemon
goes on serving. Logs are JSON lines on standard error; metrics are served by metrics.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from inclavare.eaa import protocol
from inclavare.eaa.address import Address, open_session, start_session_server
from inclavare.eaa.evidence import (
    FORWARDED_EVIDENCE_CLAIM,
    EvidenceRejected,
    check_party,
    evidence_digest,
)
from inclavare.eaa.metrics import Metrics
from inclavare.eaa.splice import relay
from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.tls.aio import AsyncServer, AsyncSession
    from inclavare.tls.endpoint import EnclaveTls

READ_SIZE = 64 * 1024


class SessionEnded(InclavareError):
    """A session ends, with the reason sent to the verifier and logged."""

    def __init__(self, reason: str, outcome: str = "failed") -> None:
        super().__init__(reason)
        self.outcome = outcome


@dataclass
class Inclavared:
    downstream: EnclaveTls  # the verifiers' side: a server that attests itself
    upstream: EnclaveTls  # the enclaves' side: a mutual client with the enclave policy
    enclaves: Mapping[str, Address]  # name -> address; the first is the default
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    metrics: Metrics = field(default_factory=Metrics)
    log_stream: TextIO | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    servers: list[AsyncServer] = field(default_factory=list)
    # How long the daemon must stay without sessions before it gives memory back.
    trim_after: float = 1.0
    _trim: asyncio.TimerHandle | None = None
    tunnel_addresses: list[Address] = field(default_factory=list)
    tunnel_listeners: list[socket.socket] = field(default_factory=list)
    _tunnels: set[asyncio.Task[None]] = field(default_factory=set)

    # --- logging ---------------------------------------------------------------------------

    def log(self, event: str, **fields: object) -> None:
        record: dict[str, object] = {
            "time": round(time.time(), 3),
            "program": "inclavared",
            "event": event,
        }
        record.update(fields)
        stream = self.log_stream or sys.stderr
        print(json.dumps(record), file=stream, flush=True)

    # --- serving ---------------------------------------------------------------------------

    async def listen(self, address: Address) -> AsyncServer:
        def refused(peer: object, error: Exception) -> None:
            self.metrics.session_ends["handshake-refused"] += 1
            self.log("session-refused", peer=str(peer or ""), reason=str(error))

        if address.scheme == "unix":
            _remove_stale_socket(address.path)
        server = await start_session_server(
            self.downstream, self.handle, address, refused, backlog=1024
        )
        self.servers.append(server)
        return server

    async def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        for server in self.servers:
            await server.close()
        self.servers.clear()
        for task in list(self._tunnels):
            task.cancel()
        if self._tunnels:
            await asyncio.gather(*self._tunnels, return_exceptions=True)
        for listener in self.tunnel_listeners:
            listener.close()
        self.tunnel_listeners.clear()

    # --- the tunnel: end-to-end Enclave-TLS between a client and an enclave ----------------

    async def listen_tunnel(self, address: Address) -> tuple[str, int]:
        """Listen for tunnel clients; returns the bound address (host, port) or (path, 0)."""
        if address.scheme == "unix":
            _remove_stale_socket(address.path)
        listener = socket.socket(address.family, socket.SOCK_STREAM)
        if address.scheme == "tcp":
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(address.socket_address)
            listener.listen(1024)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.tunnel_listeners.append(listener)
        self._tunnels.add(asyncio.create_task(self._accept_tunnels(listener)))
        bound = listener.getsockname()
        return (bound, 0) if isinstance(bound, str) else (str(bound[0]), int(bound[1]))

    async def _accept_tunnels(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError as error:  # e.g. out of descriptors: say so, go on
                self.log("tunnel-accept-failed", reason=error.strerror or str(error))
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._tunnel(client))
            self._tunnels.add(task)
            task.add_done_callback(self._tunnels.discard)

    async def _tunnel(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        client.setblocking(False)
        number = next(self._ids)
        self.metrics.sessions_total += 1
        self.metrics.sessions_active += 1
        outcome, reason = "completed", ""
        upstream: socket.socket | None = None
        try:
            request = await self._tunnel_request(client)
            name = request.text("enclave") or next(iter(self.enclaves))
            address = self.enclaves.get(name)
            if address is None:
                known = ", ".join(self.enclaves)
                raise SessionEnded(f"unknown enclave {name!r} (this inclavared reaches: {known})")
            try:
                upstream = await _connect_raw(address, self.request_timeout)
            except (OSError, TimeoutError) as error:
                cause = getattr(error, "strerror", None) or "timed out"
                raise SessionEnded(
                    f"enclave {name} at {address}: {cause}", "enclave-failed"
                ) from None
            await loop.sock_sendall(client, protocol.encode(protocol.message("connected")))
            self.log("tunnel", session=number, enclave=name, address=str(address))
            await relay(
                client,
                upstream,
                self.metrics.bytes_forwarded,
                ("tunnel-to-enclave", "tunnel-to-client"),
            )
        except SessionEnded as ended:
            outcome, reason = ended.outcome, str(ended)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await loop.sock_sendall(client, protocol.error_frame(reason))
                    # Closing with unread bytes would reset the connection and could destroy
                    # the error frame before the client reads it: end writing, drain, close.
                    client.shutdown(socket.SHUT_WR)
                    while await loop.sock_recv(client, 65536):
                        pass
        except asyncio.CancelledError:
            outcome, reason = "cancelled", "inclavared is shutting down"
        except OSError as error:
            outcome, reason = "failed", f"tunnel: {error.strerror or error}"
        finally:
            client.close()
            if upstream is not None:
                upstream.close()
            self.metrics.sessions_active -= 1
            self.metrics.session_ends[outcome] += 1
            self.log("session-end", session=number, outcome=outcome, reason=reason, tunnel=True)

    async def _tunnel_request(self, client: socket.socket) -> protocol.Message:
        """The client's `connect` frame, read without taking a byte beyond it (what follows
        is the client's TLS, for the enclave)."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                header = await _receive_exactly(client, protocol.HEADER.size)
                (size,) = protocol.HEADER.unpack(header)
                if size > protocol.MAX_FRAME:
                    raise protocol.ProtocolError(
                        f"frame of {size} bytes exceeds the limit of {protocol.MAX_FRAME}"
                    )
                message = protocol.parse(await _receive_exactly(client, size))
        except TimeoutError:
            raise SessionEnded(f"no request within {self.idle_timeout:g} s", "idle") from None
        except EOFError:
            raise SessionEnded("the client closed before its request", "protocol-error") from None
        except protocol.ProtocolError as error:
            raise SessionEnded(f"tunnel: {error}", "protocol-error") from None
        if message.type != "connect":
            raise SessionEnded(f"tunnel: expected connect, not {message.type}", "protocol-error")
        return message

    # --- one verifier session ----------------------------------------------------------------

    async def handle(self, session: AsyncSession) -> None:
        number = next(self._ids)
        self.metrics.sessions_total += 1
        self.metrics.sessions_active += 1
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        self.log("session-start", session=number, verifier=_peer_text(session))
        upstream: AsyncSession | None = None
        outcome, reason = "completed", ""
        try:
            upstream = await self._serve(number, session)
        except SessionEnded as ended:
            outcome, reason = ended.outcome, str(ended)
            with contextlib.suppress(Exception):
                session.write(protocol.error_frame(reason))
                await session.drain()
        except asyncio.CancelledError:
            outcome, reason = "cancelled", "inclavared is shutting down"
            raise
        except Exception as error:  # a bug must end the session, not the daemon
            outcome, reason = "failed", f"internal error: {error!r}"
        finally:
            self.metrics.sessions_active -= 1
            self.metrics.session_ends[outcome] += 1
            if self.metrics.sessions_active == 0:
                # Not at once: collecting costs tens of milliseconds, which sessions arriving
                # one after another should not pay each time.
                loop = asyncio.get_running_loop()
                self._trim = loop.call_later(self.trim_after, _give_back_memory)
            self.log("session-end", session=number, outcome=outcome, reason=reason)
            if upstream is not None:
                with contextlib.suppress(Exception):
                    await upstream.close()

    async def _serve(self, number: int, session: AsyncSession) -> AsyncSession | None:
        """Answer the verifier's requests; return the upstream session for closing."""
        reader = protocol.FrameReader()
        upstream: AsyncSession | None = None
        upstream_reader = protocol.FrameReader()
        enclave = ""
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        data = await session.read(READ_SIZE)
                except TimeoutError:
                    raise SessionEnded(
                        f"no request within {self.idle_timeout:g} s", "idle"
                    ) from None
                if not data:
                    return upstream
                try:
                    messages = list(reader.feed(data))
                except protocol.ProtocolError as error:
                    raise SessionEnded(f"verifier: {error}", "protocol-error") from None
                for message in messages:
                    if message.type == "get-evidence":
                        name = message.text("enclave") or next(iter(self.enclaves))
                        if upstream is not None and name != enclave:
                            raise SessionEnded(
                                "one session attests one enclave; open another session"
                            )
                        if upstream is None:
                            enclave = name
                            upstream = await self._connect(number, name)
                        await self._attest(number, session, upstream, upstream_reader, message)
                    elif message.type == "put-secret":
                        if upstream is None:
                            raise SessionEnded("put-secret before get-evidence")
                        await self._relay(session, upstream, upstream_reader, message)
                    elif message.type == "connect":
                        if upstream is None:
                            enclave = next(iter(self.enclaves))
                            upstream = await self._connect(number, enclave)
                        await self._relay(session, upstream, upstream_reader, message)
                        # The reader stops at `connect`: what follows is application data.
                        await self._join(
                            session, upstream, reader.take_rest(), upstream_reader.take_rest()
                        )
                        return upstream
                    else:
                        raise SessionEnded(
                            f"verifier: unexpected {message.type} message", "protocol-error"
                        )
        except BaseException:
            if upstream is not None:
                with contextlib.suppress(Exception):
                    await upstream.close()
            raise

    async def _connect(self, number: int, name: str) -> AsyncSession:
        from inclavare.tls.errors import EnclaveTlsError

        address = self.enclaves.get(name)
        if address is None:
            raise SessionEnded(
                f"unknown enclave {name!r} (this inclavared reaches: {', '.join(self.enclaves)})"
            )
        try:
            upstream = await open_session(self.upstream, address)
        except EnclaveTlsError as error:
            self.metrics.verifications["enclave-session", "rejected"] += 1
            raise SessionEnded(f"enclave {name} at {address}: {error}", "enclave-failed") from None
        self.metrics.verifications["enclave-session", "verified"] += 1
        peer = upstream.peer
        self.log(
            "enclave-connected",
            session=number,
            enclave=name,
            address=str(address),
            mrenclave=_claim_hex(peer, "mrenclave"),
            simulated=bool(peer and peer.simulated),
        )
        return upstream

    async def _request(
        self, upstream: AsyncSession, reader: protocol.FrameReader, message: protocol.Message
    ) -> protocol.Message:
        """Send one request upstream and wait, bounded, for the one answer."""
        from inclavare.tls.errors import EnclaveTlsError

        upstream.write(protocol.encode(message))
        try:
            async with asyncio.timeout(self.request_timeout):
                await upstream.drain()
                while True:
                    data = await upstream.read(READ_SIZE)
                    if not data:
                        raise SessionEnded("the enclave closed its session", "enclave-failed")
                    answers = list(reader.feed(data))
                    if answers:
                        # Behind `connected` may come the application's first bytes (an
                        # application that speaks first); they are joined, not an answer.
                        surplus = reader.pending and answers[0].type not in protocol.SWITCHING
                        if len(answers) > 1 or surplus:
                            raise SessionEnded(
                                "the enclave answered more than it was asked", "enclave-failed"
                            )
                        return answers[0]
        except TimeoutError:
            raise SessionEnded(
                f"the enclave did not answer {message.type} within {self.request_timeout:g} s",
                "enclave-failed",
            ) from None
        except protocol.ProtocolError as error:
            raise SessionEnded(f"enclave: {error}", "enclave-failed") from None
        except EnclaveTlsError as error:
            raise SessionEnded(f"enclave session failed: {error}", "enclave-failed") from None

    async def _attest(
        self,
        number: int,
        session: AsyncSession,
        upstream: AsyncSession,
        upstream_reader: protocol.FrameReader,
        request: protocol.Message,
    ) -> None:
        started = time.monotonic()
        nonce = request.bytes_of("nonce")
        answer = await self._request(
            upstream, upstream_reader, protocol.message("get-evidence", nonce=nonce)
        )
        if answer.type == "error":
            raise SessionEnded(f"the enclave refused: {answer.text('reason')}", "enclave-failed")
        if answer.type != "evidence":
            raise SessionEnded(
                f"the enclave answered {answer.type} to get-evidence", "enclave-failed"
            )
        certificate, evidence = answer.bytes_of("certificate"), answer.bytes_of("evidence")
        try:
            attestation, _ = await asyncio.to_thread(
                check_party, self.upstream, certificate, evidence, nonce, "enclave", upstream.peer
            )
            _same_enclave(upstream, attestation)
        except EvidenceRejected as rejection:
            self.metrics.verifications["enclave", "rejected"] += 1
            self.log("enclave-rejected", session=number, reason=str(rejection))
            raise SessionEnded(str(rejection), "enclave-rejected") from None
        self.metrics.verifications["enclave", "verified"] += 1
        own = await asyncio.to_thread(
            self.downstream.evidence_for,
            nonce,
            {FORWARDED_EVIDENCE_CLAIM: evidence_digest(evidence)},
        )
        own_certificate = self.downstream.certificate
        reply = protocol.message(
            "attestation", enclave=(certificate, evidence), inclavared=(own_certificate, own)
        )
        session.write(protocol.encode(reply))
        await session.drain()
        elapsed = time.monotonic() - started
        self.metrics.observe_attestation(elapsed)
        self.log(
            "attested",
            session=number,
            mrenclave=_claim_hex(attestation, "mrenclave"),
            simulated=attestation.simulated,
            seconds=round(elapsed, 4),
        )

    async def _relay(
        self,
        session: AsyncSession,
        upstream: AsyncSession,
        upstream_reader: protocol.FrameReader,
        request: protocol.Message,
    ) -> None:
        answer = await self._request(upstream, upstream_reader, request)
        expected = {"put-secret": "secret-accepted", "connect": "connected"}[request.type]
        if answer.type == "error":
            raise SessionEnded(f"the enclave refused: {answer.text('reason')}", "enclave-failed")
        if answer.type != expected:
            raise SessionEnded(
                f"the enclave answered {answer.type} to {request.type}", "enclave-failed"
            )
        session.write(protocol.encode(answer))
        await session.drain()

    async def _join(
        self, session: AsyncSession, upstream: AsyncSession, to_enclave: bytes, to_verifier: bytes
    ) -> None:
        """Carry application bytes both ways until one side ends."""
        counters = self.metrics.bytes_forwarded

        async def pump(source: AsyncSession, sink: AsyncSession, first: bytes, name: str) -> None:
            data = first
            while True:
                if data:
                    sink.write(data)
                    counters[name] += len(data)
                    await sink.drain()
                data = await source.read(READ_SIZE)
                if not data:
                    return

        tasks = [
            asyncio.create_task(pump(session, upstream, to_enclave, "to-enclave")),
            asyncio.create_task(pump(upstream, session, to_verifier, "to-verifier")),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, ConnectionError):
                raise SessionEnded(f"forwarding failed: {error}", "forward-failed")


async def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


async def _connect_raw(address: Address, timeout: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, address.socket_address)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a daemon that died is removed; a live one is left alone (the
    listen then fails, saying the address is in use)."""
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
        except OSError:
            pass


def _give_back_memory() -> None:
    """After a burst of sessions, free their cycles (OpenSSL objects and callbacks) and
    return the heap's free pages, so that the daemon's size comes back down when idle."""
    import gc

    from inclavare.linux.syscalls import release_free_memory

    gc.collect()
    release_free_memory()


def _same_enclave(upstream: AsyncSession, attestation: object) -> None:
    from inclavare.tls.attest import PeerAttestation

    assert isinstance(attestation, PeerAttestation)
    session_value = _claim_hex(upstream.peer, "mrenclave")
    evidence_value = _claim_hex(attestation, "mrenclave")
    if session_value != evidence_value:
        raise EvidenceRejected(
            f"enclave: its evidence is of enclave {evidence_value}, but its TLS session's is "
            f"{session_value} (another enclave's evidence)"
        )


def _claim_hex(attestation: object, name: str) -> str:
    claims = getattr(attestation, "claims", None) or {}
    return str(claims.get(name, ""))


def _peer_text(session: AsyncSession) -> str:
    peer = session.peer
    if peer is None or peer.verdict is None:
        return "unattested"
    return f"{peer.evidence_type} {_claim_hex(peer, 'mrenclave')}".strip()
