"""The attestation chain for real: shelter -> inclavared -> the enclave service in a sim
enclave container run by rune, each a process of its own; the verdicts, the refusals, and
what inclavared does with bad input, dying containers and many sessions at once."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.eaa import protocol, service_image
from inclavare.eaa.address import parse_address
from inclavare.eaa.remote import Unreachable, open_tunnel, remote_attest
from inclavare.tls import aio
from inclavare.tls.config import Config
from inclavare.tls.endpoint import EnclaveTls
from tests.integration.conftest import Rune, processes_rooted_in
from tests.integration.eaa_support import (
    InclavaredProcess,
    ServiceEnclave,
    copy_rootfs,
    shelter,
)

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "platform"


@pytest.fixture(autouse=True)
def _sim_platform(sim_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(sim_dir))


@pytest.fixture(scope="module")
def service_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(service_image.BUSYBOX):
        pytest.skip("busybox-static is not installed: run `make install`")
    rootfs = tmp_path_factory.mktemp("service-image") / "rootfs"
    service_image.build_rootfs(rootfs)
    return rootfs


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inclavare.cli.enclave_sign import main as enclave_sign

    key = tmp_path_factory.mktemp("keys") / "enclave-key.pem"
    assert enclave_sign(["genkey", str(key)]) == 0
    return key


def new_enclave(directory: Path, rootfs: Path, key: Path, sim_dir: Path) -> ServiceEnclave:
    bundle = directory / "bundle"
    bundle.mkdir()
    copy_rootfs(rootfs, bundle / "rootfs")
    enclave = ServiceEnclave(bundle, key, sim_dir)
    enclave.configure()
    enclave.sign()
    return enclave


@pytest.fixture(scope="module")
def module_rune(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rune]:
    rune = Rune(tmp_path_factory.mktemp("rune") / "state")
    yield rune
    for entry in rune.root.glob("*"):
        rune("delete", "--force", entry.name, check=False)


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    service_rootfs: Path,
    signing_key: Path,
    sim_dir: Path,
    module_rune: Rune,
) -> Iterator[ServiceEnclave]:
    """One enclave service container for the module's tests that do not end it."""
    os.environ["INCLAVARE_SIM_DIR"] = str(sim_dir)
    directory = tmp_path_factory.mktemp("enclave")
    enclave = new_enclave(directory, service_rootfs, signing_key, sim_dir)
    enclave.start(module_rune, "eaa-main")
    yield enclave
    module_rune("delete", "--force", "eaa-main", check=False)
    assert not processes_rooted_in(enclave.bundle)


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, running: ServiceEnclave
) -> Iterator[InclavaredProcess]:
    directory = tmp_path_factory.mktemp("inclavared")
    process = InclavaredProcess.start(
        directory,
        "--listen",
        "tcp://127.0.0.1:0",
        "--connect",
        running.address,
        "--allow-sim",
        "--attester",
        "sim",
        "--metrics",
        "127.0.0.1:0",
        "--timeout",
        "5",
        "--tunnel-listen",
        "tcp://127.0.0.1:0",
    )
    yield process
    assert process.stop() == 0, process.text()


def test_the_chain_is_verified_and_a_secret_reaches_the_enclave(
    running: ServiceEnclave, daemon: InclavaredProcess, tmp_path: Path
) -> None:
    policy = running.policy(tmp_path / "policy.json")
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cr3t value")
    nonce = os.urandom(32).hex()
    result = shelter(
        "remoteattestation",
        "--addr",
        daemon.address,
        "--policy",
        str(policy),
        "--allow-sim",
        "--nonce",
        nonce,
        "--secret",
        f"db-password={secret}",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["verified"] and document["simulated"]
    assert document["nonce"] == nonce
    assert document["enclave"]["measurements"]["mrenclave"] == running.signed["mrenclave"]
    assert document["enclave"]["measurements"]["mrsigner"] == running.signed["mrsigner"]
    assert document["secret_accepted"] == "db-password"
    # The enclave opened the secret (it logs its name and size, never the value).
    deadline = time.monotonic() + 5
    while '"secret-accepted"' not in running.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"name": "db-password", "size": 12' in running.log()
    assert "s3cr3t" not in running.log() + daemon.text()

    text = shelter(
        "remoteattestation", "--addr", daemon.address, "--policy", str(policy), "--allow-sim"
    )
    assert text.returncode == 0, text.stderr
    assert text.stdout.rstrip().endswith("VERIFIED (simulated TEE)")
    assert f"mrenclave: {running.signed['mrenclave']}" in text.stdout


def test_simulated_evidence_is_refused_unless_allowed(daemon: InclavaredProcess) -> None:
    result = shelter("remoteattestation", "--addr", daemon.address)
    assert result.returncode == 1
    assert "inclavared: the quote comes from a simulated TEE, which is not allowed" in result.stderr


def test_a_wrong_policy_is_refused_with_the_reason(
    running: ServiceEnclave, daemon: InclavaredProcess, tmp_path: Path
) -> None:
    policy = running.policy(tmp_path / "policy.json", mrenclave=["00" * 32])
    result = shelter(
        "remoteattestation", "--addr", daemon.address, "--policy", str(policy), "--allow-sim"
    )
    assert result.returncode == 1
    assert f"enclave: policy: mrenclave {running.signed['mrenclave']}" in result.stderr
    assert "REJECTED" in result.stdout

    unreadable = tmp_path / "bad.toml"
    unreadable.write_text("mrenclave = [\n")
    result = shelter(
        "remoteattestation", "--addr", daemon.address, "--policy", str(unreadable), "--allow-sim"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("shelter remoteattestation: --policy")
    assert "Traceback" not in result.stderr


def test_unreachable_inclavared_and_bad_flags(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = shelter("remoteattestation", "--addr", f"tcp://127.0.0.1:{port}", "--allow-sim")
    assert result.returncode == 3
    assert "cannot connect to 127.0.0.1" in result.stderr
    result = shelter("remoteattestation", "--addr", f"unix://{tmp_path}/none.sock")
    assert result.returncode == 3
    for flags, message in (
        (["--addr", "http://x"], "the scheme must be tcp:// or unix://"),
        (["--addr", "tcp://127.0.0.1:1", "--nonce", "zz"], "--nonce 'zz' is not hexadecimal"),
        (["--addr", "tcp://127.0.0.1:1", "--nonce", "00"], "--nonce must be 16 to 64 bytes"),
        (["--addr", "tcp://127.0.0.1:1", "--secret", "x"], "--secret is NAME=FILE"),
    ):
        result = shelter("remoteattestation", *flags)
        assert result.returncode == 2, flags
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_an_inclavared_without_evidence_is_refused(running: ServiceEnclave, tmp_path: Path) -> None:
    plain = InclavaredProcess.start(
        tmp_path,
        "--listen",
        "tcp://127.0.0.1:0",
        "--connect",
        running.address,
        "--allow-sim",
        "--attester",
        "nullattester",
    )
    try:
        result = shelter("remoteattestation", "--addr", plain.address, "--allow-sim")
        assert result.returncode == 1
        assert "inclavared: the peer's certificate carries no attestation evidence" in (
            result.stderr
        )
    finally:
        assert plain.stop() == 0


def test_a_tampered_image_does_not_launch_and_a_resigned_one_is_rejected(
    tmp_path: Path,
    service_rootfs: Path,
    signing_key: Path,
    sim_dir: Path,
    running: ServiceEnclave,
    daemon: InclavaredProcess,
) -> None:
    rune = Rune(tmp_path / "state")
    enclave = new_enclave(tmp_path, service_rootfs, signing_key, sim_dir)
    script = enclave.rootfs / service_image.ENTRY_SCRIPT.lstrip("/")
    text = script.read_text()
    script.unlink()  # a hard link to the shared image: replace, never write through it
    script.write_text(text + "# changed\n")

    output = tmp_path / "run.out"
    refused = rune.detached(
        "run", "-d", "-b", str(enclave.bundle), "tampered", output=output, check=False
    )
    assert refused.returncode != 0
    assert "trusted file /opt/inclavare/enclave-service.py differs from the signed" in (
        refused.stderr
    )
    assert not (rune.root / "tampered").exists()

    # Signed again by someone else's key: it launches, and shelter refuses it.
    from inclavare.cli.enclave_sign import main as enclave_sign

    other_key = tmp_path / "other.pem"
    assert enclave_sign(["genkey", str(other_key)]) == 0
    enclave.sign(other_key)
    enclave.start(rune, "resigned")
    try:
        other = InclavaredProcess.start(
            tmp_path,
            "--listen",
            "tcp://127.0.0.1:0",
            "--connect",
            enclave.address,
            "--allow-sim",
            "--attester",
            "sim",
        )
        try:
            policy = running.policy(tmp_path / "policy.json")
            result = shelter(
                "remoteattestation", "--addr", other.address, "--policy", str(policy), "--allow-sim"
            )
            assert result.returncode == 1
            assert f"enclave: policy: mrenclave {enclave.signed['mrenclave']} is not" in (
                result.stderr
            )
        finally:
            assert other.stop() == 0
    finally:
        rune("delete", "--force", "resigned", check=False)
    assert not processes_rooted_in(enclave.bundle)


def _client(handshake_timeout: float = 10.0) -> tuple[EnclaveTls, EnclaveTls]:
    config = Config(
        attester="nullattester", allow_simulated=True, handshake_timeout=handshake_timeout
    )
    client = EnclaveTls(config, server=False)
    checker = EnclaveTls(Config(attester="nullattester", allow_simulated=True), server=False)
    return client, checker


async def _raw_session(address: str) -> aio.AsyncSession:
    where = parse_address(address)
    client, _ = _client()
    return await aio.open_connection(client, where.host, where.port)


def _session_ends(daemon: InclavaredProcess, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        ends = [e for e in daemon.events() if e["event"] == "session-end"]
        if len(ends) >= count or time.monotonic() > deadline:
            assert len(ends) == count
            return ends
        time.sleep(0.1)


def _frame(body: bytes) -> bytes:
    return protocol.HEADER.pack(len(body)) + body


def _one_answer(session: aio.AsyncSession, frame: bytes) -> protocol.Message | None:
    async def run() -> protocol.Message | None:
        session.write(frame)
        await session.drain()
        reader = protocol.FrameReader()
        while data := await session.read():
            for message in reader.feed(data):
                return message
        return None

    return asyncio.get_event_loop().run_until_complete(run())


def test_inclavared_survives_garbage_oversized_frames_and_silent_clients(
    running: ServiceEnclave, tmp_path: Path
) -> None:
    daemon = InclavaredProcess.start(
        tmp_path,
        "--listen",
        "tcp://127.0.0.1:0",
        "--connect",
        running.address,
        "--allow-sim",
        "--attester",
        "sim",
        "--idle-timeout",
        "1",
        "--timeout",
        "2",
    )
    where = parse_address(daemon.address)
    try:
        descriptors = daemon.open_descriptors()
        # Not TLS at all.
        with socket.create_connection((where.host, where.port)) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(3000))
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
        # Plain TLS without Enclave-TLS's evidence exchange.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((where.host, where.port)) as raw:
            try:
                with context.wrap_socket(raw) as wrapped:
                    wrapped.settimeout(5)
                    wrapped.sendall(b"\x00\x00\x00\x05hello")
                    while wrapped.recv(100):
                        pass
            except (ssl.SSLError, OSError):
                pass  # refused during or after the handshake: either is right

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            # An oversized frame, a frame that is not JSON, an unknown type: each one is
            # answered with an error naming it, and the session ends.
            for frame, reason in (
                ((10 * 1024 * 1024).to_bytes(4, "big"), "exceeds the limit"),
                (b"\x00\x00\x00\x03abc", "not a UTF-8 JSON document"),
                (_frame(b'{"version":1,"type":"x"}'), "unknown message type"),
                (_frame(b'{"version":9,"a":1}'), "unsupported protocol"),
            ):
                session = loop.run_until_complete(_raw_session(daemon.address))
                answer = _one_answer(session, frame)
                assert answer is not None and answer.type == "error", frame
                assert reason in answer.text("reason")
                loop.run_until_complete(session.close())
            # A client that says nothing is cut off by the idle timeout.
            session = loop.run_until_complete(_raw_session(daemon.address))
            started = time.monotonic()
            answer = _one_answer(session, b"")
            assert answer is not None and "no request within 1 s" in answer.text("reason")
            assert time.monotonic() - started < 10
            loop.run_until_complete(session.close())
        finally:
            loop.close()
            asyncio.set_event_loop(None)

        # The daemon still serves, and holds no more descriptors than before.
        result = shelter("remoteattestation", "--addr", daemon.address, "--allow-sim")
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 5
        while daemon.open_descriptors() > descriptors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.open_descriptors() <= descriptors
        outcomes = [e.get("outcome") for e in daemon.events() if e["event"] == "session-end"]
        assert outcomes.count("protocol-error") == 4 and "idle" in outcomes
    finally:
        assert daemon.stop() == 0


def test_a_container_that_dies_ends_only_its_sessions(
    tmp_path: Path, service_rootfs: Path, signing_key: Path, sim_dir: Path
) -> None:
    rune = Rune(tmp_path / "state")
    doomed = new_enclave(tmp_path, service_rootfs, signing_key, sim_dir)
    doomed.start(rune, "doomed")
    with socket.socket(socket.AF_UNIX) as stale:  # left by a daemon that died: replaced
        stale.bind(f"{tmp_path}/inclavared.sock")
    daemon = InclavaredProcess.start(
        tmp_path,
        "--listen",
        f"unix://{tmp_path}/inclavared.sock",
        "--connect",
        doomed.address,
        "--allow-sim",
        "--attester",
        "sim",
        "--timeout",
        "3",
    )
    try:
        client, checker = _client()
        address = parse_address(daemon.address)

        async def scenario() -> None:
            first = await remote_attest(address, client, checker)
            assert first.enclave.claims["mrenclave"] == doomed.signed["mrenclave"]
            session = await aio.open_unix_connection(client, address.path)
            reader = protocol.FrameReader()
            session.write(protocol.encode(protocol.message("connect")))
            await session.drain()
            connected = next(iter(reader.feed(await session.read())))
            assert connected.type == "connected"
            session.write(b"echo me")
            await session.drain()
            assert await session.read() == b"echo me"
            rune("kill", "doomed", "KILL")
            # The joined session ends when the enclave's side does.
            async with asyncio.timeout(10):
                while await session.read():
                    pass
            await session.close()
            with pytest.raises(Unreachable, match="cannot connect to"):
                await remote_attest(address, client, checker)

        asyncio.run(scenario())
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
        assert not Path(f"{tmp_path}/inclavared.sock").exists()
    finally:
        daemon.stop()
        rune("delete", "--force", "doomed", check=False)
    assert not processes_rooted_in(doomed.bundle)


def test_metrics_count_sessions_and_verifications(daemon: InclavaredProcess) -> None:
    assert shelter("remoteattestation", "--addr", daemon.address, "--allow-sim").returncode == 0
    with urllib.request.urlopen(daemon.metrics, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["inclavared_sessions_total"] >= 1
    assert values["inclavared_sessions_active"] == 0
    assert values['inclavared_verifications_total{party="enclave",result="verified"}'] >= 1
    assert values["inclavared_attestation_seconds_count"] >= 1


def test_two_hundred_concurrent_sessions_through_one_inclavared(
    running: ServiceEnclave, tmp_path: Path
) -> None:
    daemon = InclavaredProcess.start(
        tmp_path,
        "--listen",
        "tcp://127.0.0.1:0",
        "--connect",
        running.address,
        "--allow-sim",
        "--attester",
        "sim",
        "--timeout",
        "60",
    )
    address = parse_address(daemon.address)
    client, checker = _client(handshake_timeout=60.0)
    policy_path = running.policy(tmp_path / "policy.json")
    from inclavare.attestation.policy import load_policy

    checker = EnclaveTls(
        Config(
            attester="nullattester",
            allow_simulated=True,
            policy=load_policy(policy_path.read_bytes(), str(policy_path)),
        ),
        server=False,
    )

    async def wave(count: int) -> list[object]:
        return await asyncio.gather(
            *(remote_attest(address, client, checker, timeout=120) for _ in range(count)),
            return_exceptions=True,
        )

    try:
        warm = asyncio.run(wave(20))
        assert all(not isinstance(result, BaseException) for result in warm), warm
        gc.collect()
        time.sleep(1.5)  # past the idle second after which the daemon gives memory back
        baseline = daemon.rss_kib()
        results = asyncio.run(wave(200))
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} failed, e.g. {failures[0]!r}"
        assert all(
            r.enclave.claims["mrenclave"] == running.signed["mrenclave"]  # type: ignore[attr-defined]
            for r in results
        )
        _session_ends(daemon, 220)
        peak = daemon.rss_kib()
        # A second wave of the same size must not need more memory than the first: what the
        # sessions took was given back (allocator pools are reused, not grown).
        asyncio.run(wave(200))
        ends = _session_ends(daemon, 420)
        assert all(e["outcome"] == "completed" for e in ends)
        # Memory is given back once the daemon has been idle for a second.
        deadline = time.monotonic() + 15
        while (after := daemon.rss_kib()) > baseline * 1.25 and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"inclavared RSS: {baseline} KiB idle, {peak} KiB after 200, {after} KiB after 400")
        assert after <= baseline * 1.25, (baseline, peak, after)
    finally:
        assert daemon.stop() == 0


def test_the_tunnel_carries_end_to_end_enclave_tls(
    running: ServiceEnclave, daemon: InclavaredProcess, tmp_path: Path
) -> None:
    """Through the tunnel the client itself verifies the enclave (its policy applies) and
    inclavared only copies bytes."""
    from inclavare.attestation.policy import load_policy

    policy_path = running.policy(tmp_path / "policy.json")
    policy = load_policy(policy_path.read_bytes(), str(policy_path))
    # The service wants its clients attested (mutual), as inclavared is: a sim client.
    client = EnclaveTls(
        Config(attester="sim", mutual=True, allow_simulated=True, policy=policy), server=False
    )
    wrong = EnclaveTls(
        Config(
            attester="sim",
            mutual=True,
            allow_simulated=True,
            policy=load_policy(
                b'{"mrenclave": ["' + b"00" * 32 + b'"], "allow_simulated": true}', "other.json"
            ),
        ),
        server=False,
    )
    tunnel = parse_address(daemon.tunnel)

    async def scenario() -> None:
        session = await open_tunnel(tunnel, client)
        assert session.peer is not None
        assert session.peer.claims["mrenclave"] == running.signed["mrenclave"]
        reader = protocol.FrameReader()
        session.write(protocol.encode(protocol.message("connect")) + b"first bytes")
        await session.drain()
        messages: list[protocol.Message] = []
        while not messages:
            data = await session.read()
            assert data, "the tunnel ended before connected"
            messages = list(reader.feed(data))
        assert messages[0].type == "connected"
        received = reader.take_rest()
        while len(received) < len(b"first bytes"):
            received += await session.read()
        assert received == b"first bytes"
        await session.close()

        from inclavare.tls.errors import PeerRejected

        with pytest.raises(PeerRejected, match="policy: mrenclave"):
            await open_tunnel(tunnel, wrong)
        with pytest.raises(Unreachable, match="unknown enclave 'nope'"):
            await open_tunnel(tunnel, client, enclave="nope")
        # Garbage instead of `connect`: that connection ends, the tunnel listener goes on.
        reader_, writer = await asyncio.open_connection(tunnel.host, tunnel.port)
        writer.write(b"\xff" * 64)
        await writer.drain()
        assert b"exceeds the limit" in await reader_.read()
        writer.close()
        again = await open_tunnel(tunnel, client)
        await again.close()

    asyncio.run(scenario())
    assert '"tunnel-to-enclave"' not in daemon.text()  # no application bytes in its logs
