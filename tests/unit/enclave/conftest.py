"""The enclave tests share the simulated TEE's fixtures: a temporary INCLAVARE_SIM_DIR for
every test, one platform identity per session, and session-wide signing keys."""

from tests.unit.tee.conftest import (
    _sim_dir,
    fresh_sim_dir,
    other_signing_key,
    platform,
    session_sim_dir,
    signing_key,
)

__all__ = [
    "_sim_dir",
    "fresh_sim_dir",
    "other_signing_key",
    "platform",
    "session_sim_dir",
    "signing_key",
]
