"""The asyncio API: many concurrent attested clients, refusals, deadlines, no task left."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from inclavare.attestation.policy import load_policy
from inclavare.tls import aio
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.errors import HandshakeTimeout, PeerRejected, RejectedByPeer

from .conftest import SIM, open_fds


async def _echo(session: aio.AsyncSession) -> None:
    while True:
        data = await session.read()
        if not data:
            return
        session.write(data)
        await session.drain()


def test_many_concurrent_mutual_clients(sim_server: EnclaveTls, sim_client: EnclaveTls) -> None:
    async def main() -> None:
        errors: list[Exception] = []
        fds = open_fds()
        server = await aio.start_server(
            sim_server, _echo, "127.0.0.1", 0, on_error=lambda address, error: errors.append(error)
        )

        async def client(number: int) -> bytes:
            session = await aio.open_connection(sim_client, *server.address)
            assert session.peer is not None and session.peer.session_bound
            message = b"client %d " % number * 100
            session.write(message)
            await session.drain()
            received = b""
            while len(received) < len(message):
                received += await session.read()
            await session.close()
            return received

        replies = await asyncio.gather(*(client(number) for number in range(60)))
        assert replies == [b"client %d " % number * 100 for number in range(60)]
        assert errors == []
        await server.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert open_fds() == fds

    asyncio.run(main())


def test_refusals_and_deadlines() -> None:
    async def main() -> None:
        errors: list[Exception] = []
        policy = load_policy(b"allow_simulated = true\n[sim]\nisv_prod_id = 7\n")
        server_tls = EnclaveTls(
            replace(SIM, mutual=True, policy=policy, handshake_timeout=0.5), server=True
        )
        server = await aio.start_server(
            server_tls, _echo, "127.0.0.1", 0, on_error=lambda address, error: errors.append(error)
        )
        client_tls = EnclaveTls(replace(SIM, mutual=True), server=False)
        with pytest.raises(RejectedByPeer, match="rejected this side's evidence"):
            await aio.open_connection(client_tls, *server.address)
        # A client that connects and says nothing is cut off at the deadline.
        reader, writer = await asyncio.open_connection(*server.address)
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if len(errors) >= 2:
                break
            await asyncio.sleep(0.02)
        assert isinstance(errors[0], PeerRejected)
        assert str(errors[0]) == "policy: isv_prod_id 1 is not an accepted value"
        assert isinstance(errors[1], HandshakeTimeout)
        await server.close()
        # The client side is bounded too.
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeTimeout):
            await aio.open_connection(client_tls, "127.0.0.1", port, timeout=0.3)
        silent.close()
        await silent.wait_closed()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


def test_blocking_and_asyncio_sides_interoperate(
    sim_server: EnclaveTls, sim_client: EnclaveTls
) -> None:
    from .conftest import Running

    running = Running(sim_server)
    try:

        async def main() -> None:
            session = await aio.open_connection(sim_client, *running.address)
            session.write(b"across")
            await session.drain()
            assert await session.read() == b"across"
            await session.close()

        asyncio.run(main())
    finally:
        running.stop()
