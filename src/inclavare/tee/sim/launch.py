"""The launch check (SGX's EINIT) of a sim enclave, and what a launched enclave hands its PAL.

`check_launch` is pure: given the enclave's signature file, the runtime that is about to run
it and the digests of the trusted files as they are now, it either returns the launched
enclave's identity or refuses with the reason, naming the file that differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from inclavare.tee.sim.errors import LaunchRefused, MalformedStructure, SimError
from inclavare.tee.sim.keys import ReportKeys
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity
from inclavare.tee.sim.sgx import (
    FLAG_INIT,
    SECS_SIZE,
    Attributes,
    EnclaveIdentity,
    secs,
)
from inclavare.tee.sim.sigstruct import EnclaveSignature

LAUNCH_RECORD_MAGIC = b"INCLAVARE-LNCH-1"
LAUNCH_RECORD_SIZE = 4192


@dataclass(frozen=True)
class LaunchedEnclave:
    """An enclave that passed the launch check: its identity, manifest and signature."""

    identity: EnclaveIdentity
    signature: EnclaveSignature
    signed: bool  # False when it was signed at launch with a throwaway key (DEBUG)

    @property
    def manifest(self) -> Manifest:
        return self.signature.manifest

    @property
    def mr_enclave(self) -> bytes:
        return self.identity.mr_enclave

    @property
    def mr_signer(self) -> bytes:
        return self.identity.mr_signer

    @property
    def debug(self) -> bool:
        return self.identity.debug

    def describe(self) -> str:
        """One line for logs; it says that the enclave is simulated."""
        return (
            f"simulated enclave (sim TEE, no protection against the host's root): "
            f"runtime {self.manifest.runtime}, MRENCLAVE {self.mr_enclave.hex()}, "
            f"MRSIGNER {self.mr_signer.hex()}, ISVPRODID {self.identity.isv_prod_id}, "
            f"ISVSVN {self.identity.isv_svn}, "
            + ("debug" if self.debug else "production")
            + ("" if self.signed else ", signed at launch with a throwaway key")
        )


def check_launch(
    signature: EnclaveSignature,
    runtime: RuntimeIdentity,
    measured: Mapping[str, bytes | None],
    required: Iterable[str] = (),
    signed: bool = True,
) -> LaunchedEnclave:
    """Launch the enclave described by `signature`, or refuse.

    `measured` maps each trusted path of the manifest to the SHA-256 of the file found now
    (None when it is missing). `required` paths (the entrypoint) must be trusted files.
    """
    try:
        signature.verify()
    except SimError as error:
        raise LaunchRefused(f"enclave launch refused: {error}") from None
    manifest = signature.manifest
    if manifest.runtime != runtime:
        raise LaunchRefused(
            f"enclave launch refused: it was measured for runtime {manifest.runtime}, not {runtime}"
        )
    for file in manifest.files:
        found = measured.get(file.path)
        if found is None:
            raise LaunchRefused(f"enclave launch refused: trusted file {file.path} is missing")
        if found != file.sha256:
            raise LaunchRefused(
                f"enclave launch refused: trusted file {file.path} differs from the signed "
                f"measurement (signed SHA-256 {file.sha256.hex()}, found {found.hex()})"
            )
    for path in required:
        if manifest.digest_of(path) is None:
            raise LaunchRefused(
                f"enclave launch refused: {path} is not among the enclave's trusted files"
            )
    sigstruct = signature.sigstruct
    identity = EnclaveIdentity(
        mr_enclave=sigstruct.enclave_hash,
        mr_signer=sigstruct.mr_signer,
        attributes=Attributes(sigstruct.attributes.flags | FLAG_INIT, sigstruct.attributes.xfrm),
        isv_prod_id=sigstruct.isv_prod_id,
        isv_svn=sigstruct.isv_svn,
        misc_select=sigstruct.misc_select,
    )
    return LaunchedEnclave(identity, signature, signed)


def launch_record(identity: EnclaveIdentity, keys: ReportKeys) -> bytes:
    """What a launched enclave's PAL receives (v3 pal_init's fd): its SECS and report keys.

    0     4096  SECS of the enclave (sgx.py)
    4096  16    ASCII "INCLAVARE-LNCH-1"
    4112  16    CPUSVN of the platform
    4128  32    KEYID of this boot's reports
    4160  32    report root key of this boot (a secret of the simulated platform)
    """
    return secs(identity) + LAUNCH_RECORD_MAGIC + keys.cpu_svn + keys.key_id + keys.root


def parse_launch_record(record: bytes) -> tuple[EnclaveIdentity, ReportKeys]:
    """The enclave identity and the report keys in a launch record."""
    record = bytes(record)
    if len(record) != LAUNCH_RECORD_SIZE or record[SECS_SIZE : SECS_SIZE + 16] != (
        LAUNCH_RECORD_MAGIC
    ):
        raise MalformedStructure("not an enclave launch record (INCLAVARE-LNCH-1)")
    page = record[:SECS_SIZE]
    identity = EnclaveIdentity(
        mr_enclave=page[64:96],
        mr_signer=page[128:160],
        attributes=Attributes.parse(page[48:64]),
        isv_prod_id=int.from_bytes(page[256:258], "little"),
        isv_svn=int.from_bytes(page[258:260], "little"),
        misc_select=int.from_bytes(page[20:24], "little"),
        config_id=page[192:256],
        config_svn=int.from_bytes(page[260:262], "little"),
    )
    keys = ReportKeys(root=record[4160:4192], key_id=record[4128:4160], cpu_svn=record[4112:4128])
    return identity, keys
