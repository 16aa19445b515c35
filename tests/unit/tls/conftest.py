"""Fixtures of the Enclave-TLS tests: a simulated platform in a temporary directory, endpoint
factories, a blocking echo server run in a thread, and counters of what could leak.

Every test runs with INCLAVARE_SIM_DIR in a temporary directory shared by the session; the
vectors are read in place from <repo>/../shared/vectors (or INCLAVARE_VECTORS).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from inclavare.tee.sim.store import DEFAULT_SIM_DIR, SIM_DIR_VARIABLE, load_platform
from inclavare.tls.blocking import Server, Session
from inclavare.tls.config import Config
from inclavare.tls.endpoint import EnclaveTls
from tests.unit.attestation.conftest import Vectors, vectors_dir


@pytest.fixture(scope="session")
def session_sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    host_store = Path(DEFAULT_SIM_DIR)
    existed = host_store.exists()
    directory = tmp_path_factory.mktemp("tls-platform") / "sim"
    load_platform(directory)
    yield directory
    assert existed or not host_store.exists(), f"a test created the host's {host_store}"


@pytest.fixture(autouse=True)
def _sim_dir(session_sim_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SIM_DIR_VARIABLE, str(session_sim_dir))
    yield


@pytest.fixture(scope="session")
def vectors() -> Vectors:
    root = vectors_dir()
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"RA-TLS vectors not found at {root} (set INCLAVARE_VECTORS)")
    return Vectors(root)


SIM = Config(attester="sim", allow_simulated=True, handshake_timeout=5.0)


@pytest.fixture(scope="session")
def sim_server(session_sim_dir: Path) -> EnclaveTls:
    """A sim-attesting server (mutual, session evidence), made once for the session."""
    return EnclaveTls(replace(SIM, mutual=True, sim_dir=str(session_sim_dir)), server=True)


@pytest.fixture(scope="session")
def sim_client(session_sim_dir: Path) -> EnclaveTls:
    return EnclaveTls(replace(SIM, mutual=True, sim_dir=str(session_sim_dir)), server=False)


def echo(session: Session) -> None:
    session.settimeout(5)
    while True:
        data = session.recv()
        if not data:
            return
        session.sendall(data)


class Running:
    """A blocking server running in a thread, with the errors it reported."""

    def __init__(self, tls: EnclaveTls, handler: Callable[[Session], None] = echo) -> None:
        self.errors: list[Exception] = []
        self.server = Server(tls, ("127.0.0.1", 0), handler, on_error=self._on_error)
        self.address = self.server.address
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._seen = threading.Condition()

    def _on_error(self, address: Any, error: Exception) -> None:
        with self._seen:
            self.errors.append(error)
            self._seen.notify_all()

    def wait_errors(self, count: int, timeout: float = 10.0) -> list[Exception]:
        with self._seen:
            self._seen.wait_for(lambda: len(self.errors) >= count, timeout)
            return list(self.errors)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(tls: EnclaveTls, handler: Callable[[Session], None] = echo) -> Running:
        server = Running(tls, handler)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
