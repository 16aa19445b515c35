"""A simulated platform during one boot: what enclaves on this host ask of the "CPU".

`SimPlatform` holds the identity read from the platform store (store.py) and the boot id,
and offers the operations of the hardware: local reports (EREPORT) and their check, sealing
(EGETKEY with a seal key request), quotes (the quoting enclave), and the launch record a
PAL receives. It does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from inclavare.tee.sim import quote, sealing
from inclavare.tee.sim.identity import SIM_CPU_SVN
from inclavare.tee.sim.keys import POLICY_MRENCLAVE, ReportKeys
from inclavare.tee.sim.launch import launch_record
from inclavare.tee.sim.reports import create_report, verify_report
from inclavare.tee.sim.sgx import EnclaveIdentity, Report, TargetInfo, pad_report_data


@dataclass(frozen=True)
class SimPlatform:
    root_ca_pem: bytes
    pck_chain_pem: bytes
    pck_key_pem: bytes
    attestation_key_pem: bytes
    secret: bytes
    boot_id: str
    directory: str | None = None

    @cached_property
    def report_keys(self) -> ReportKeys:
        return ReportKeys.for_boot(self.secret, self.boot_id, SIM_CPU_SVN)

    # --- local attestation ---------------------------------------------------------------

    def create_report(
        self, identity: EnclaveIdentity, target: TargetInfo, report_data: bytes = b""
    ) -> bytes:
        """EREPORT: a 432-byte report of `identity` for `target`."""
        return create_report(self.report_keys, identity, target, report_data)

    def verify_report(self, report: bytes, target: TargetInfo) -> Report:
        """Check, for `target` on this host, a report made during this boot."""
        return verify_report(self.report_keys, report, target)

    # --- sealing -------------------------------------------------------------------------

    def seal(
        self,
        identity: EnclaveIdentity,
        data: bytes,
        policy: int = POLICY_MRENCLAVE,
        additional_data: bytes = b"",
    ) -> bytes:
        return sealing.seal(self.secret, identity, data, policy, additional_data)

    def unseal(self, identity: EnclaveIdentity, blob: bytes, additional_data: bytes = b"") -> bytes:
        return sealing.unseal(self.secret, identity, blob, additional_data)

    # --- remote attestation --------------------------------------------------------------

    @property
    def quoting_enclave_target_info(self) -> bytes:
        """The target info a report for the quoting enclave must be made with (512 bytes)."""
        return quote.QE_TARGET_INFO.to_bytes()

    def quote_report(self, report: bytes) -> bytes:
        """A quote of `report`, which must be a report for the quoting enclave."""
        return quote.create_quote(
            self.report_keys,
            report,
            self.attestation_key_pem,
            self.pck_key_pem,
            self.pck_chain_pem,
        )

    def quote(self, identity: EnclaveIdentity, nonce: bytes = b"") -> bytes:
        """A quote of the enclave `identity` whose REPORTDATA is `nonce`, zero-padded to 64."""
        report = self.create_report(identity, quote.QE_TARGET_INFO, pad_report_data(nonce))
        return self.quote_report(report)

    # --- launch --------------------------------------------------------------------------

    def launch_record(self, identity: EnclaveIdentity) -> bytes:
        """What a v3 PAL receives through pal_init's fd (launch.py)."""
        return launch_record(identity, self.report_keys)
