"""The carrier: an ordinary container becomes an enclave container at Create.

A container whose process environment has RUNE_CARRIER (`native` or `wasm`, the built-in
enclave runtimes) is converted before `rune create`, in the root file system the shim just
mounted. How its enclave gets signed is the node's `config.toml` (inclavare.shim.config)
`enclave_runtime.signature_method`:

- "key" (the default, and the method when there is no config.toml): the entrypoint is
  measured and the measurement signed with a local key: the runtime options' `SigningKey`,
  else `enclave_runtime.signing_key`, else SIGNING_KEY;
- "server": measured here, signed by `rune-sign-server` (inclavare.shim.sign_client), whose
  certificate is verified against the configured CA or pinned key;
- "client": the image already carries a signature made off the node (`enclave-sign
  convert-image`): the shim runs the launch check on it now (signature, every trusted file
  as signed, the entrypoint among them, the runtime the carrier's) and, with
  `accepted_signers`, refuses a MRSIGNER that is not listed; nothing is signed.

For "key" and "server" the signature written to the root file system comes from the
conversion cache (inclavare.shim.cache) when the same manifest was signed by the same signer
before. The measurement is not skipped: it is the cache key (a tag names no content, and
`ctr` gives the shim no image digest), and hashing the entrypoint costs far less than a
signature from a server. rune measures again and checks the signature at every launch.

config.toml is read only when a container asks for a carrier, so a shim that runs ordinary
containers never imports any of this. Every failure is one line, `RUNE_CARRIER=X: ...`,
which containerd shows to its client.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError
from inclavare.shim import ttrpc
from inclavare.shim.ttrpc_server import RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from inclavare.shim.config import Config
    from inclavare.tee.sim.measurement import Manifest
    from inclavare.tee.sim.sigstruct import EnclaveSignature

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


def convert(
    bundle: str,
    carrier: str,
    signing_key: str = "",
    config_path: str = "",
    log: Callable[[str], None] | None = None,
) -> None:
    """Make the bundle an enclave bundle for the carrier; a one-line RpcError otherwise.

    `signing_key` is the runtime options' SigningKey, `config_path` their InclavareConfig
    (else INCLAVARE_CONFIG, else /etc/inclavare-containers/config.toml)."""
    runtime = RUNTIMES.get(carrier)
    if runtime is None:
        known = ", ".join(sorted(RUNTIMES))
        raise RpcError(
            ttrpc.INVALID_ARGUMENT, f"{VARIABLE}={carrier!r}: unknown carrier (known: {known})"
        )
    from inclavare.shim import config as configuration

    try:
        settings = configuration.load(
            configuration.config_path(config_path), required=bool(config_path)
        )
        _Conversion(os.path.abspath(bundle), runtime, settings, signing_key, log).run()
    except (InclavareError, ValueError) as error:
        raise RpcError(ttrpc.FAILED_PRECONDITION, f"{VARIABLE}={carrier}: {error}") from None


class _Conversion:
    def __init__(
        self,
        bundle: str,
        runtime: str,
        settings: Config,
        signing_key: str,
        log: Callable[[str], None] | None,
    ) -> None:
        self.bundle = bundle
        self.runtime = runtime
        self.settings = settings
        self.signing_key = signing_key
        self._log = log
        self.outcome = ""

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def debug(self, line: str) -> None:
        if self.settings.log_level == "debug":
            self.log(line)

    def run(self) -> None:
        if self.settings.signature_method == "client":
            self.check_presigned()
            return
        from inclavare.enclave.convert import convert_bundle

        conversion = convert_bundle(self.bundle, runtime=self.runtime, sign=self.cached_signature)
        self.debug(
            f"carrier: {os.path.basename(self.bundle)}: {self.runtime}, MRENCLAVE "
            f"{conversion.mr_enclave.hex()}, MRSIGNER {conversion.mr_signer.hex()}, {self.outcome}"
        )

    def cached_signature(self, manifest: Manifest) -> EnclaveSignature:
        from inclavare.shim.cache import ConversionCache, cache_key
        from inclavare.tee.sim.sigstruct import sign_enclave_with

        signer_id, make_signer = self.signer()
        cache = ConversionCache(
            self.settings.cache_directory, self.settings.cache_max_size, self.log
        )
        manifest_bytes = manifest.encode()
        key = cache_key(manifest_bytes, signer_id)
        signature = cache.get(key, manifest_bytes)
        if signature is not None and self.accepted(signature.sigstruct.mr_signer):
            self.outcome = "signature from the cache"
            return signature
        signature = sign_enclave_with(make_signer(), manifest)
        cache.put(key, signature)
        self.outcome = "signed"
        return signature

    def accepted(self, mr_signer: bytes) -> bool:
        return not self.settings.accepted_signers or mr_signer in self.settings.accepted_signers

    def signer(self) -> tuple[str, Callable[[], Any]]:
        """The signer's identity for the cache, and how to make the signer (only on a miss:
        a cache hit needs neither the key nor the server)."""
        if self.settings.signature_method == "server":
            server = self.settings.server
            assert server is not None

            def ask() -> Any:
                # ssl and http.client only on a miss
                from inclavare.shim.sign_client import server_signer

                return server_signer(server, self.settings.accepted_signers)

            return f"server {server.address}", ask
        import hashlib

        path = self.signing_key or (
            self.settings.signing_key if self.settings.path else SIGNING_KEY
        )
        try:
            with open(path, "rb") as key:
                key_pem = key.read()
        except OSError as error:
            raise InclavareError(f"signing key {path}: {error.strerror}") from None

        def make() -> Any:
            from inclavare.tee.sim.sigstruct import key_signer, mr_signer_of

            signer = key_signer(key_pem)

            def checked(material: bytes) -> tuple[bytes, int]:
                signature, modulus = signer(material)
                if not self.accepted(mr_signer_of(modulus)):
                    raise InclavareError(
                        f"signing key {path}: its MRSIGNER {mr_signer_of(modulus).hex()} is "
                        "not one of enclave_runtime.accepted_signers"
                    )
                return signature, modulus

            return checked

        # the file's digest names the key without parsing it (a cache hit parses nothing)
        return f"key {hashlib.sha256(key_pem).hexdigest()}", make

    def check_presigned(self) -> None:
        from inclavare.enclave.convert import bundle_program, set_enclave_env
        from inclavare.tee.sim.files import (
            SIGNATURE_PATH,
            LaunchRequest,
            find_entrypoint,
            launch_enclave,
        )
        from inclavare.tee.sim.measurement import RuntimeIdentity

        rootfs, program = bundle_program(self.bundle)
        signature_path = os.path.join(rootfs, SIGNATURE_PATH)
        if not os.path.isfile(signature_path):
            raise InclavareError(
                f"signature_method client: the image carries no enclave signature "
                f"(/{SIGNATURE_PATH}); sign it off the node with `enclave-sign convert-image`"
            )
        if not program.args:
            raise InclavareError("the container has no program to run (no Entrypoint or Cmd)")
        env = [entry for entry in program.env if not entry.startswith("ENCLAVE_")]
        entrypoint = find_entrypoint(str(rootfs), program.args[0], env, program.cwd or "/")
        launched = launch_enclave(
            LaunchRequest(
                str(rootfs),
                RuntimeIdentity.for_runtime_path(self.runtime),
                entrypoint,
                signature_path=signature_path,
            )
        )
        mr_signer = launched.signature.sigstruct.mr_signer
        if not self.accepted(mr_signer):
            raise InclavareError(
                f"signature_method client: the image's enclave is signed by MRSIGNER "
                f"{mr_signer.hex()}, which is not one of enclave_runtime.accepted_signers"
            )
        set_enclave_env(self.bundle, self.runtime)
        self.debug(
            f"carrier: {os.path.basename(self.bundle)}: pre-signed enclave, MRSIGNER "
            f"{mr_signer.hex()}"
        )
