"""rune spec: write a default config.json into the bundle, as `runc spec` does."""

from __future__ import annotations

import os

from inclavare.cli.goflags import Flag
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = ""
DESCRIPTION = """\
   Writes config.json for a container that runs "sh" on a terminal, with its root filesystem
   in the bundle's "rootfs" directory. Edit it, then "rune run ID" in the bundle.
   With --enclave the container is an enclave container: its process environment sets
   ENCLAVE_TYPE (sim: the simulated TEE, no protection against the host's root),
   ENCLAVE_RUNTIME_PATH (builtin:native, builtin:wasm or the host path of a PAL),
   ENCLAVE_RUNTIME_ARGS and ENCLAVE_RUNTIME_LOGLEVEL; sign it with "enclave-sign sign"."""
ARGUMENTS = (0, 0)
FLAGS = [
    Flag("bundle, b", str, "path to the root of the bundle directory"),
    Flag("rootless", bool, "generate a configuration for a rootless container"),
    Flag("enclave", bool, "generate a configuration for an enclave container"),
    Flag("enclave-type", str, "with --enclave: sim or intelSgx", "sim"),
    Flag(
        "enclave-runtime",
        str,
        "with --enclave: builtin:native, builtin:wasm or a PAL's host path",
        "builtin:native",
    ),
]


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare import lightjson
    from inclavare.oci.default_spec import default_spec, make_rootless

    spec = default_spec()
    if options.rootless:
        spec = make_rootless(spec, os.getuid(), os.getgid())
    if options.enclave:
        spec = _enclave_template(spec, options.enclave_type, options.enclave_runtime)
    path = os.path.join(options.bundle, "config.json")
    if os.path.exists(path):
        raise InclavareError(f"File {path} exists. Remove it first")
    try:
        with open(path, "x") as config_file:
            config_file.write(lightjson.dumps(spec, indent="\t"))
    except OSError as error:
        raise InclavareError(f"write {path}: {error.strerror}") from None
    return 0


def _enclave_template(spec: dict[str, Any], enclave_type: str, runtime: str) -> dict[str, Any]:
    """The default configuration as an enclave container: the ENCLAVE_* settings in the
    process environment, checked as create would check them (devices aside)."""
    from inclavare.enclave.config import resolve_enclave

    spec["process"]["env"] += [
        f"ENCLAVE_TYPE={enclave_type}",
        f"ENCLAVE_RUNTIME_PATH={runtime}",
        "ENCLAVE_RUNTIME_ARGS=",
        "ENCLAVE_RUNTIME_LOGLEVEL=info",
    ]
    resolve_enclave(spec, path_exists=lambda _: True)
    return spec
