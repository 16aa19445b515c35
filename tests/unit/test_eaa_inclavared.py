"""inclavared in process against enclaves that misbehave: replayed evidence, another
enclave's certificate or evidence, silence, a session closed mid-request, garbage. Each
ends its own session with the reason, the metrics count it, and the next session is served;
and shelter's side refuses an inclavared whose own evidence does not vouch for what it
forwards. Real Enclave-TLS over loopback with the sim attester; no task or socket is left."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from inclavare.eaa import protocol
from inclavare.eaa.address import Address
from inclavare.eaa.evidence import FORWARDED_EVIDENCE_CLAIM, evidence_digest
from inclavare.eaa.inclavared import Inclavared
from inclavare.eaa.remote import NotTrusted, Unreachable, remote_attest
from inclavare.eaa.secret import SECRET_KEY_CLAIM, SecretKey
from inclavare.eaa.service import EnclaveService
from inclavare.tee.sim.store import SIM_DIR_VARIABLE, load_platform
from inclavare.tls import aio
from inclavare.tls.config import Config
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.plugins.attesters import sample_identity

Handler = Callable[[aio.AsyncSession], Awaitable[None]]


@dataclass
class Parties:
    enclave: EnclaveTls  # the enclave service's side: mutual server, sim
    other_enclave: EnclaveTls  # another enclave (a debug build of the sample)
    downstream: EnclaveTls  # inclavared towards verifiers
    upstream: EnclaveTls  # inclavared towards enclaves: mutual client
    client: EnclaveTls  # shelter: attests nothing
    checker: EnclaveTls  # shelter's judge of the enclave's evidence


@pytest.fixture(scope="module")
def module_sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("eaa-platform") / "sim"
    load_platform(directory)
    return directory


@pytest.fixture(autouse=True)
def _sim_dir(module_sim_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIM_DIR_VARIABLE, str(module_sim_dir))


@pytest.fixture(scope="module")
def parties(module_sim_dir: Path) -> Parties:
    sim = Config(
        attester="sim", allow_simulated=True, handshake_timeout=5.0, sim_dir=str(module_sim_dir)
    )
    null = Config(attester="nullattester", allow_simulated=True, handshake_timeout=5.0)
    return Parties(
        enclave=EnclaveTls(replace(sim, mutual=True), server=True),
        other_enclave=EnclaveTls(
            replace(sim, mutual=True, sim_identity=sample_identity(debug=True)), server=True
        ),
        downstream=EnclaveTls(sim, server=True),
        upstream=EnclaveTls(replace(sim, mutual=True), server=False),
        client=EnclaveTls(null, server=False),
        checker=EnclaveTls(null, server=False),
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def read_request(session: aio.AsyncSession) -> protocol.Message | None:
    reader = protocol.FrameReader()
    while data := await session.read():
        for message in reader.feed(data):
            return message
    return None


@dataclass
class Chain:
    daemon: Inclavared
    address: Address
    log: io.StringIO

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    async def idle(self) -> None:
        """Until every session inclavared started has ended (they end after the client)."""
        for _ in range(500):
            if self.daemon.metrics.sessions_active == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("inclavared's sessions did not end")


@asynccontextmanager
async def chain(
    parties: Parties, enclaves: dict[str, Handler], request_timeout: float = 5.0
) -> AsyncIterator[Chain]:
    """Fake enclaves (name -> handler) on loopback, inclavared in front of them; on exit all
    are closed and nothing may be left: no task, no descriptor."""
    fds = open_fds()
    servers = []
    addresses = {}
    for name, handler in enclaves.items():
        server = await aio.start_server(parties.enclave, handler, "127.0.0.1", 0)
        servers.append(server)
        addresses[name] = Address("tcp", *server.address)
    log = io.StringIO()
    daemon = Inclavared(
        downstream=parties.downstream,
        upstream=parties.upstream,
        enclaves=addresses,
        request_timeout=request_timeout,
        log_stream=log,
    )
    listening = await daemon.listen(Address("tcp", "127.0.0.1", 0))
    running = Chain(daemon, Address("tcp", *listening.address), log)
    try:
        yield running
        await running.idle()
    finally:
        await daemon.close()
        for server in servers:
            await server.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert open_fds() == fds


def good(parties: Parties) -> Handler:
    return EnclaveService(parties.enclave).handle


def answering(make_answer: Callable[[bytes], Awaitable[bytes] | bytes]) -> Handler:
    """An enclave that answers get-evidence with the bytes `make_answer(nonce)` gives."""

    async def handle(session: aio.AsyncSession) -> None:
        request = await read_request(session)
        if request is None or request.type != "get-evidence":
            return
        answer = make_answer(request.bytes_of("nonce"))
        if not isinstance(answer, bytes):
            answer = await answer
        session.write(answer)
        await session.drain()
        while await session.read():
            pass

    return handle


def evidence_frame(tls: EnclaveTls, nonce: bytes, certificate: bytes | None = None) -> bytes:
    evidence = tls.evidence_for(nonce, {SECRET_KEY_CLAIM: SecretKey().public})
    assert tls.certificate is not None
    return protocol.encode(
        protocol.message("evidence", certificate=certificate or tls.certificate, evidence=evidence)
    )


async def attest(parties: Parties, address: Address, enclave: str) -> object:
    return await remote_attest(
        address, parties.client, parties.checker, enclave=enclave, timeout=20
    )


async def expect_refusal(
    parties: Parties, running: Chain, enclave: str, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as caught:
        await attest(parties, running.address, enclave)
    assert reason in str(caught.value)
    # The daemon goes on: the next session, to a good enclave, is verified.
    result = await attest(parties, running.address, "good")
    assert result.enclave.claims["mrenclave"]  # type: ignore[attr-defined]


def test_replayed_evidence_is_refused_and_counted(parties: Parties) -> None:
    async def main() -> None:
        replayed = answering(lambda nonce: evidence_frame(parties.enclave, os.urandom(32)))
        async with chain(parties, {"good": good(parties), "replay": replayed}) as running:
            await expect_refusal(
                parties,
                running,
                "replay",
                Unreachable,
                "inclavared: enclave: evidence replayed: its nonce is not the one expected "
                "(made for another session)",
            )
            await running.idle()
            metrics = running.daemon.metrics
            assert metrics.verifications["enclave", "rejected"] == 1
            assert metrics.verifications["enclave", "verified"] == 1
            assert metrics.session_ends["enclave-rejected"] == 1
            assert metrics.session_ends["completed"] == 1
            assert (
                'inclavared_verifications_total{party="enclave",result="rejected"} 1'
                in metrics.render()
            )
            rejected = [e for e in running.events() if e["event"] == "enclave-rejected"]
            assert len(rejected) == 1 and "evidence replayed" in str(rejected[0]["reason"])

    asyncio.run(main())


def test_another_enclaves_certificate_or_evidence_is_refused(parties: Parties) -> None:
    other = parties.other_enclave

    async def main() -> None:
        enclaves = {
            "good": good(parties),
            # Another enclave's certificate with its evidence for this very nonce.
            "impostor": answering(lambda nonce: evidence_frame(other, nonce)),
            # The session's certificate, with evidence another enclave made for the nonce.
            "mixed": answering(
                lambda nonce: evidence_frame(other, nonce, certificate=parties.enclave.certificate)
            ),
        }
        async with chain(parties, enclaves) as running:
            await expect_refusal(
                parties,
                running,
                "impostor",
                Unreachable,
                "inclavared: enclave: the evidence comes with another certificate than the one "
                "of its TLS session (evidence relayed from another endpoint?)",
            )
            await expect_refusal(
                parties,
                running,
                "mixed",
                Unreachable,
                "the evidence's pubkey-hash is not the hash of the certificate's public key",
            )
            await running.idle()
            assert running.daemon.metrics.verifications["enclave", "rejected"] == 2
            assert running.daemon.metrics.session_ends["enclave-rejected"] == 2

    asyncio.run(main())


def test_a_silent_enclave_ends_only_its_own_session(parties: Parties) -> None:
    async def main() -> None:
        async def silent(session: aio.AsyncSession) -> None:
            await read_request(session)
            await asyncio.sleep(3600)  # a container that hangs; the server's close ends it

        async with chain(
            parties, {"good": good(parties), "silent": silent}, request_timeout=1.0
        ) as running:
            stuck = asyncio.create_task(attest(parties, running.address, "silent"))
            # While that session waits, others to the good enclave are served.
            for _ in range(3):
                await attest(parties, running.address, "good")
            assert not stuck.done()
            with pytest.raises(Unreachable) as caught:
                await stuck
            assert str(caught.value) == (
                "inclavared: the enclave did not answer get-evidence within 1 s"
            )
            await running.idle()
            assert running.daemon.metrics.session_ends["enclave-failed"] == 1
            assert running.daemon.metrics.session_ends["completed"] == 3

    asyncio.run(main())


def test_an_enclave_that_closes_mid_request_or_sends_garbage(parties: Parties) -> None:
    async def main() -> None:
        async def closes(session: aio.AsyncSession) -> None:
            await read_request(session)  # and the server closes the session on return

        enclaves = {
            "good": good(parties),
            "closes": closes,
            "garbage": answering(lambda nonce: b"\x00\x00\x00\x05hello"),
            "oversized": answering(lambda nonce: (10**7).to_bytes(4, "big")),
            "wrong-type": answering(lambda nonce: protocol.encode(protocol.message("connected"))),
            "two-answers": answering(lambda nonce: evidence_frame(parties.enclave, nonce) * 2),
            "refuses": answering(lambda nonce: protocol.error_frame("no evidence today")),
        }
        expected = {
            "closes": "inclavared: the enclave closed its session",
            "garbage": "inclavared: enclave: a frame is not a UTF-8 JSON document",
            "oversized": "inclavared: enclave: frame of 10000000 bytes exceeds the limit",
            "wrong-type": "inclavared: the enclave answered connected to get-evidence",
            "two-answers": "inclavared: the enclave answered more than it was asked",
            "refuses": "inclavared: the enclave refused: no evidence today",
        }
        async with chain(parties, enclaves) as running:
            for name, reason in expected.items():
                await expect_refusal(parties, running, name, Unreachable, reason)
            await running.idle()
            ends = running.daemon.metrics.session_ends
            assert ends["enclave-failed"] == len(expected)
            assert ends["completed"] == len(expected)

    asyncio.run(main())


def test_an_unknown_enclave_name_is_refused(parties: Parties) -> None:
    async def main() -> None:
        async with chain(parties, {"good": good(parties)}) as running:
            await expect_refusal(
                parties,
                running,
                "elsewhere",
                Unreachable,
                "inclavared: unknown enclave 'elsewhere' (this inclavared reaches: good)",
            )

    asyncio.run(main())


def test_application_data_flows_after_connect(parties: Parties) -> None:
    async def main() -> None:
        async with chain(parties, {"good": good(parties)}) as running:
            session = await aio.open_connection(
                parties.client, running.address.host, running.address.port
            )
            session.write(protocol.encode(protocol.message("connect")))
            await session.drain()
            answer = await read_request(session)
            assert answer is not None and answer.type == "connected"
            payload = os.urandom(300_000)
            session.write(payload)
            await session.drain()
            echoed = b""
            while len(echoed) < len(payload):
                echoed += await session.read()
            assert echoed == payload
            await session.close()
            await running.idle()
            forwarded = running.daemon.metrics.bytes_forwarded
            assert forwarded["to-enclave"] == forwarded["to-verifier"] == len(payload)

    asyncio.run(main())


# --- shelter's side against an inclavared that does not vouch ---------------------------


@asynccontextmanager
async def fake_inclavared(
    parties: Parties, own_claims: Callable[[bytes], dict[str, bytes]], own_certificate: bytes
) -> AsyncIterator[Address]:
    """An Enclave-TLS server speaking inclavared's side of the protocol by hand: the
    enclave's real evidence for the nonce, and its own evidence with the claims given."""

    async def handle(session: aio.AsyncSession) -> None:
        request = await read_request(session)
        assert request is not None and request.type == "get-evidence"
        nonce = request.bytes_of("nonce")
        evidence = parties.enclave.evidence_for(nonce)
        own = parties.downstream.evidence_for(nonce, own_claims(evidence))
        assert parties.enclave.certificate is not None
        reply = protocol.message(
            "attestation",
            enclave=(parties.enclave.certificate, evidence),
            inclavared=(own_certificate, own),
        )
        session.write(protocol.encode(reply))
        await session.drain()

    fds = open_fds()
    server = await aio.start_server(parties.downstream, handle, "127.0.0.1", 0)
    try:
        yield Address("tcp", *server.address)
    finally:
        await server.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert open_fds() == fds


def test_an_inclavared_whose_evidence_does_not_vouch_is_not_trusted(parties: Parties) -> None:
    own_certificate = parties.downstream.certificate
    assert own_certificate is not None
    cases: list[tuple[Callable[[bytes], dict[str, bytes]], bytes, str]] = [
        (
            lambda evidence: {FORWARDED_EVIDENCE_CLAIM: evidence_digest(b"other evidence")},
            own_certificate,
            "inclavared: its evidence does not vouch for the enclave evidence it forwarded",
        ),
        (
            lambda evidence: {},
            own_certificate,
            "inclavared: its evidence does not vouch for the enclave evidence it forwarded",
        ),
        (
            lambda evidence: {FORWARDED_EVIDENCE_CLAIM: evidence_digest(evidence)},
            parties.enclave.certificate or b"",
            "inclavared: the evidence comes with another certificate than the one of its TLS "
            "session",
        ),
    ]

    async def main() -> None:
        for claims, certificate, reason in cases:
            async with fake_inclavared(parties, claims, certificate) as address:
                with pytest.raises(NotTrusted) as caught:
                    await remote_attest(address, parties.client, parties.checker, timeout=20)
                assert reason in str(caught.value)
        # The same hand-made server, vouching properly, is trusted: the refusals above are
        # the claims' doing.
        async with fake_inclavared(
            parties,
            lambda evidence: {FORWARDED_EVIDENCE_CLAIM: evidence_digest(evidence)},
            own_certificate,
        ) as address:
            result = await remote_attest(address, parties.client, parties.checker, timeout=20)
            assert result.enclave.verdict is not None and result.inclavared.verdict is not None

    asyncio.run(main())


def test_application_bytes_sent_with_connect_are_forwarded(parties: Parties) -> None:
    """A client may send its first application bytes right behind `connect` (in the same
    write, without waiting for `connected`): they are application data, not frames."""

    async def main() -> None:
        async with chain(parties, {"good": good(parties)}) as running:
            session = await aio.open_connection(
                parties.client, running.address.host, running.address.port
            )
            payload = b"GET / HTTP/1.1\r\nHost: enclave\r\n\r\n"
            session.write(protocol.encode(protocol.message("connect")) + payload)
            await session.drain()
            reader = protocol.FrameReader()
            received = b""
            answer = None
            while len(received) < len(payload):
                data = await session.read()
                assert data, f"the session ended: {running.events()[-1]}"
                if answer is None:
                    answer = next(iter(reader.feed(data)), None)
                    data = reader.take_rest() if answer is not None else b""
                received += data
            assert answer is not None and answer.type == "connected"
            assert received == payload
            await session.close()

    asyncio.run(main())


def test_an_application_that_speaks_first_is_forwarded(parties: Parties) -> None:
    """An enclave application may greet first, in the same write as `connected`."""

    async def main() -> None:
        banner = b"220 enclave ready\r\n"

        async def greeter(session: aio.AsyncSession) -> None:
            request = await read_request(session)
            assert request is not None and request.type == "connect"
            session.write(protocol.encode(protocol.message("connected")) + banner)
            await session.drain()
            while await session.read():
                pass

        async with chain(parties, {"good": greeter}) as running:
            session = await aio.open_connection(
                parties.client, running.address.host, running.address.port
            )
            session.write(protocol.encode(protocol.message("connect")))
            await session.drain()
            reader = protocol.FrameReader()
            received = b""
            answer = None
            while len(received) < len(banner):
                data = await session.read()
                assert data, f"the session ended: {running.events()[-1]}"
                if answer is None:
                    answer = next(iter(reader.feed(data)), None)
                    data = reader.take_rest() if answer is not None else b""
                received += data
            assert answer is not None and answer.type == "connected"
            assert received == banner
            await session.close()

    asyncio.run(main())


def test_with_mutual_verifiers_must_attest_themselves(
    parties: Parties, module_sim_dir: Path
) -> None:
    sim = Config(
        attester="sim", allow_simulated=True, handshake_timeout=5.0, sim_dir=str(module_sim_dir)
    )
    attesting_client = EnclaveTls(replace(sim, mutual=True), server=False)

    async def main() -> None:
        server = await aio.start_server(parties.enclave, good(parties), "127.0.0.1", 0)
        daemon = Inclavared(
            downstream=EnclaveTls(replace(sim, mutual=True), server=True),
            upstream=parties.upstream,
            enclaves={"good": Address("tcp", *server.address)},
            log_stream=io.StringIO(),
        )
        listening = await daemon.listen(Address("tcp", "127.0.0.1", 0))
        address = Address("tcp", *listening.address)
        try:
            with pytest.raises(Unreachable, match="certificate required"):
                await remote_attest(address, parties.client, parties.checker, timeout=20)
            result = await remote_attest(address, attesting_client, parties.checker, timeout=20)
            assert result.enclave.claims["mrenclave"]
        finally:
            await daemon.close()
            await server.close()

    asyncio.run(main())


def test_closing_ends_open_sessions_at_once(parties: Parties) -> None:
    """What SIGTERM does: stop accepting and end the sessions still open, without waiting
    for their clients."""

    async def main() -> None:
        async with chain(parties, {"good": good(parties)}) as running:
            session = await aio.open_connection(
                parties.client, running.address.host, running.address.port
            )
            for _ in range(100):
                if running.daemon.metrics.sessions_active:
                    break
                await asyncio.sleep(0.01)
            assert running.daemon.metrics.sessions_active == 1
            async with asyncio.timeout(5):
                await running.daemon.close()
                assert await session.read() == b""
            await session.close()
            ends = [e for e in running.events() if e["event"] == "session-end"]
            assert [e["outcome"] for e in ends] == ["cancelled"]

    asyncio.run(main())
