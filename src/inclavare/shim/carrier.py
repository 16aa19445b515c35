"""The carrier: an ordinary container becomes an enclave container at Create.

A container whose process environment has RUNE_CARRIER (`native` or `wasm`, the built-in
enclave runtimes) is converted before `rune create`: its entrypoint is measured in the root
file system the shim just mounted, the measurement is signed with the shim's signing key,
the signature is written into the root file system and the enclave settings into
config.json (inclavare.enclave.convert does the work). rune then launches it as a sim
enclave and checks the signature at every launch.

The signing key is the runtime options' `SigningKey` (see runtime_options in service.py),
else SIGNING_KEY. Not here yet: the signing server, conversion caching, and
config.toml (issue 8).
"""

from __future__ import annotations

import importlib
import os

from inclavare.errors import InclavareError
from inclavare.shim import ttrpc
from inclavare.shim.ttrpc_server import RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VARIABLE = "RUNE_CARRIER"
RUNTIMES = {"native": "builtin:native", "wasm": "builtin:wasm"}
SIGNING_KEY = "/etc/inclavare-containers/enclave-signing-key.pem"


def requested(config: dict[str, Any]) -> str | None:
    """The RUNE_CARRIER value of the bundle's process environment, if any."""
    process = config.get("process")
    env = process.get("env") if isinstance(process, dict) else None
    if not isinstance(env, list):
        return None
    found = None
    for entry in env:
        if isinstance(entry, str) and entry.startswith(f"{VARIABLE}="):
            found = entry.split("=", 1)[1]
    return found


def convert(bundle: str, carrier: str, signing_key: str) -> None:
    """Make the bundle an enclave bundle for the carrier; a one-line RpcError otherwise."""
    runtime = RUNTIMES.get(carrier)
    if runtime is None:
        known = ", ".join(sorted(RUNTIMES))
        raise RpcError(
            ttrpc.INVALID_ARGUMENT, f"{VARIABLE}={carrier!r}: unknown carrier (known: {known})"
        )
    try:
        # looked up by name: without inclavare.enclave.convert the shim still runs
        # ordinary containers, and says so to a container that asks for a carrier
        conversion = importlib.import_module("inclavare.enclave.convert")
    except ImportError:
        raise RpcError(
            ttrpc.FAILED_PRECONDITION, f"{VARIABLE}={carrier}: this build cannot convert bundles"
        ) from None
    path = signing_key or SIGNING_KEY
    try:
        with open(path, "rb") as key:
            key_pem = key.read()
    except OSError as error:
        raise RpcError(
            ttrpc.FAILED_PRECONDITION,
            f"{VARIABLE}={carrier}: signing key {path}: {error.strerror}",
        ) from None
    try:
        conversion.convert_bundle(os.path.abspath(bundle), runtime=runtime, key_pem=key_pem)
    except (InclavareError, ValueError) as error:
        raise RpcError(ttrpc.FAILED_PRECONDITION, f"{VARIABLE}={carrier}: {error}") from None
