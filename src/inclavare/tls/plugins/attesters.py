"""Attesters: where this side's evidence comes from.

- `sgx_ecdsa`: inside an SGX enclave run by Gramine, through its `/dev/attestation` files
  (write the report data to `user_report_data`, read the DCAP quote from `quote`).
- `tdx_ecdsa` and `snp`: inside a TDX trust domain or an SEV-SNP guest, through the kernel's
  configfs-tsm interface (`/sys/kernel/config/tsm/report`, Linux 6.7 and later): make a report
  entry, write the report data to `inblob`, read the quote or report from `outblob`. Where only
  the older `/dev/tdx_guest` or `/dev/sev-guest` device exists, they say so.
- `sim`: the software TEE (`inclavare.tee.sim`). Its quotes say they are simulated. Inside
  a sim enclave container it asks the enclave runtime through the process's attestation
  channel (INCLAVARE_ATTESTATION_FD), so the quotes are of that enclave; elsewhere it quotes
  with the host's sim platform for the identity it is given (by default the sample one).
- `nullattester`: no evidence; the certificate is a plain self-signed one.

An attester that cannot work on this host raises `PluginUnavailable` from `init` with the
reason, so that automatic selection moves on and a named selection explains itself.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from inclavare.tls.certificate import SGX_ECDSA, SIM, SNP, TDX_ECDSA
from inclavare.tls.errors import EnclaveTlsError, PluginUnavailable
from inclavare.tls.plugins import Attester, PluginOptions

if TYPE_CHECKING:
    from inclavare.tee.sim.platform import SimPlatform
    from inclavare.tee.sim.sgx import EnclaveIdentity

REPORT_DATA_SIZE = 64
MAX_EVIDENCE_SIZE = 64 * 1024

# The sample programs run outside an enclave container, so no launch gives them an enclave
# identity. They speak for a documented, reproducible one: MRENCLAVE is the measurement
# manifest (docs/sim-tee.md) of runtime builtin:native@1 with one trusted file,
# SAMPLE_ENCLAVE_PATH, whose content is SAMPLE_ENCLAVE_CONTENT; MRSIGNER is SHA-256 of
# SAMPLE_SIGNER_LABEL (a label, not an RSA modulus: no key signs this enclave).
SAMPLE_ENCLAVE_PATH = "/usr/bin/enclave-tls-sample"
SAMPLE_ENCLAVE_CONTENT = b"inclavare enclave-tls sample enclave, version 1\n"
SAMPLE_SIGNER_LABEL = b"inclavare enclave-tls sample signer"
SAMPLE_ISV_PROD_ID = 1
SAMPLE_ISV_SVN = 1


def sample_identity(debug: bool = False) -> EnclaveIdentity:
    """The sim enclave identity the sample programs (and tests) attest to."""
    from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity, TrustedFile
    from inclavare.tee.sim.sgx import (
        FLAG_DEBUG,
        FLAG_INIT,
        FLAG_MODE64BIT,
        Attributes,
        EnclaveIdentity,
    )

    manifest = Manifest.of(
        RuntimeIdentity("builtin:native", "1"),
        [TrustedFile(SAMPLE_ENCLAVE_PATH, hashlib.sha256(SAMPLE_ENCLAVE_CONTENT).digest())],
    )
    flags = FLAG_INIT | FLAG_MODE64BIT | (FLAG_DEBUG if debug else 0)
    return EnclaveIdentity(
        mr_enclave=manifest.mr_enclave,
        mr_signer=hashlib.sha256(SAMPLE_SIGNER_LABEL).digest(),
        attributes=Attributes(flags),
        isv_prod_id=SAMPLE_ISV_PROD_ID,
        isv_svn=SAMPLE_ISV_SVN,
    )


class NullAttester(Attester):
    name = "nullattester"
    priority = 0
    evidence_type = None

    def collect_evidence(self, report_data: bytes) -> bytes:
        raise EnclaveTlsError("the null attester collects no evidence")

    def certificate_names(self) -> tuple[str, str]:
        return "Inclavare Enclave-TLS (no attestation)", "Inclavare Containers"


class SimAttester(Attester):
    name = "sim"
    priority = 10
    evidence_type = SIM

    def __init__(self, identity: EnclaveIdentity | None = None) -> None:
        self.identity = identity
        self._platform: SimPlatform | None = None
        self._channel: int | None = None

    def init(self, options: PluginOptions) -> None:
        from inclavare.tee.sim.channel import channel_fd
        from inclavare.tee.sim.errors import SimError
        from inclavare.tee.sim.store import load_platform

        try:
            if self.identity is None and options.sim_identity is None:
                self._channel = channel_fd()
                if self._channel is not None:
                    return
            self._platform = load_platform(options.sim_dir)
        except SimError as error:
            raise PluginUnavailable(f"unavailable on this host: {error}") from None
        if self.identity is None:
            self.identity = options.sim_identity or sample_identity(options.debug_enclave)

    def collect_evidence(self, report_data: bytes) -> bytes:
        if self._channel is not None:
            from inclavare.tee.sim.channel import request_quote
            from inclavare.tee.sim.errors import SimError

            try:
                return _bounded(request_quote(self._channel, report_data), "quote")
            except SimError as error:
                raise EnclaveTlsError(f"sim: {error}") from None
        if self._platform is None or self.identity is None:
            raise EnclaveTlsError("the sim attester was not initialised")
        return self._platform.quote(self.identity, report_data)

    def certificate_names(self) -> tuple[str, str]:
        return (
            "Inclavare Enclave-TLS sim (simulated TEE)",
            "Inclavare Containers (simulated TEE, no hardware protection)",
        )


class SgxEcdsaAttester(Attester):
    """SGX DCAP quotes through Gramine's /dev/attestation pseudo-files."""

    name = "sgx_ecdsa"
    priority = 52
    evidence_type = SGX_ECDSA

    def __init__(self) -> None:
        self._root = Path("/dev/attestation")

    def init(self, options: PluginOptions) -> None:
        self._root = Path(options.attestation_dir)
        try:
            kind = (self._root / "attestation_type").read_text().strip()
        except OSError:
            raise PluginUnavailable(
                f"unavailable on this host: no {self._root} (not inside an SGX enclave run by "
                "Gramine)"
            ) from None
        if kind != "dcap":
            raise PluginUnavailable(
                f"unavailable on this host: {self._root} offers {kind!r} attestation, not dcap"
            )

    def collect_evidence(self, report_data: bytes) -> bytes:
        try:
            (self._root / "user_report_data").write_bytes(report_data)
            quote = (self._root / "quote").read_bytes()
        except OSError as error:
            raise EnclaveTlsError(
                f"sgx_ecdsa: cannot obtain a quote from {self._root}: {error.strerror or error}"
            ) from None
        return _bounded(quote, "quote")


class _ConfigfsTsmAttester(Attester):
    """Evidence through configfs-tsm: one report entry per request."""

    provider: ClassVar[str] = ""
    device_option: ClassVar[str] = ""
    guest: ClassVar[str] = ""

    def __init__(self) -> None:
        self._root = Path("/sys/kernel/config/tsm/report")

    def init(self, options: PluginOptions) -> None:
        self._root = Path(options.tsm_report_dir)
        device = Path(getattr(options, self.device_option))
        if not self._root.is_dir():
            if device.exists():
                raise PluginUnavailable(
                    f"unavailable on this host: {device} exists but configfs-tsm ({self._root}) "
                    "does not; evidence is collected through configfs-tsm (Linux 6.7 or later)"
                )
            raise PluginUnavailable(
                f"unavailable on this host: not {self.guest} (no {device}, no {self._root})"
            )
        entry = self._new_entry()
        try:
            provider = (entry / "provider").read_text().strip()
        except OSError as error:
            raise PluginUnavailable(
                f"unavailable on this host: cannot read the configfs-tsm provider: "
                f"{error.strerror or error}"
            ) from None
        finally:
            _remove_entry(entry)
        if provider != self.provider:
            raise PluginUnavailable(
                f"unavailable on this host: configfs-tsm provider is {provider!r}, "
                f"not {self.provider!r}"
            )

    def _new_entry(self) -> Path:
        entry = self._root / f"inclavare-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(entry)
        except OSError as error:
            raise PluginUnavailable(
                f"unavailable on this host: cannot create a configfs-tsm report in {self._root}: "
                f"{error.strerror or error}"
            ) from None
        return entry

    def collect_evidence(self, report_data: bytes) -> bytes:
        entry = self._new_entry()
        try:
            (entry / "inblob").write_bytes(report_data)
            evidence = (entry / "outblob").read_bytes()
        except OSError as error:
            raise EnclaveTlsError(
                f"{self.name}: configfs-tsm report failed: {error.strerror or error}"
            ) from None
        finally:
            _remove_entry(entry)
        return _bounded(evidence, "evidence")


def _remove_entry(entry: Path) -> None:
    try:
        os.rmdir(entry)
    except OSError:
        pass


class TdxEcdsaAttester(_ConfigfsTsmAttester):
    name = "tdx_ecdsa"
    priority = 42
    evidence_type = TDX_ECDSA
    provider = "tdx_guest"
    device_option = "tdx_guest_device"
    guest = "a TDX trust domain"


class SnpAttester(_ConfigfsTsmAttester):
    name = "snp"
    priority = 42
    evidence_type = SNP
    provider = "sev_guest"
    device_option = "sev_guest_device"
    guest = "an SEV-SNP guest"


def _bounded(evidence: bytes, what: str) -> bytes:
    if not evidence or len(evidence) > MAX_EVIDENCE_SIZE:
        raise EnclaveTlsError(f"the TEE returned an unusable {what} ({len(evidence)} bytes)")
    return evidence


BUILTIN: tuple[type[Attester], ...] = (
    SgxEcdsaAttester,
    TdxEcdsaAttester,
    SnpAttester,
    SimAttester,
    NullAttester,
)
