"""Fixtures of the simulated TEE's tests.

Every test runs with INCLAVARE_SIM_DIR in a temporary directory: no test ever touches the
host's /var/lib/inclavare/sim. One platform identity is shared by the whole session (tests
that need a fresh one use `fresh_sim_dir`), and RSA-3072 signing keys, slow to generate, are
made once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.tee.sim.platform import SimPlatform
from inclavare.tee.sim.sigstruct import generate_signing_key
from inclavare.tee.sim.store import SIM_DIR_VARIABLE, load_platform


@pytest.fixture(scope="session")
def session_sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform") / "sim"


@pytest.fixture(autouse=True)
def _sim_dir(session_sim_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SIM_DIR_VARIABLE, str(session_sim_dir))
    yield


@pytest.fixture
def fresh_sim_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "fresh-sim"
    monkeypatch.setenv(SIM_DIR_VARIABLE, str(directory))
    return directory


@pytest.fixture(scope="session")
def platform(session_sim_dir: Path) -> SimPlatform:
    return load_platform(session_sim_dir)


@pytest.fixture(scope="session")
def signing_key() -> bytes:
    return generate_signing_key()


@pytest.fixture(scope="session")
def other_signing_key() -> bytes:
    return generate_signing_key()
