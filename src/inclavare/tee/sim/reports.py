"""Local reports (EREPORT and its check) on the simulated platform.

A report describes an enclave to one target enclave of the same host, during one boot: its
MAC is made with the target's report key (see keys.py), so only the platform, on behalf of
that target, can check it. The report layout is SGX's `sgx_report_t` (432 bytes).
"""

from __future__ import annotations

import hmac

from inclavare.tee.sim.errors import ReportInvalid
from inclavare.tee.sim.keys import ReportKeys, cmac_aes128
from inclavare.tee.sim.sgx import (
    REPORT_BODY_SIZE,
    EnclaveIdentity,
    Report,
    TargetInfo,
    report_body,
)


def create_report(
    keys: ReportKeys, identity: EnclaveIdentity, target: TargetInfo, report_data: bytes = b""
) -> bytes:
    """The report of `identity` for `target`, carrying `report_data` (at most 64 bytes)."""
    body = report_body(identity, keys.cpu_svn, report_data)
    mac = cmac_aes128(keys.report_key(target), body)
    return body + keys.key_id + mac


def verify_report(keys: ReportKeys, raw: bytes, target: TargetInfo) -> Report:
    """The parsed report, if its MAC holds for `target` on this platform during this boot."""
    report = Report.parse(raw)
    expected = cmac_aes128(keys.report_key(target, report.key_id), report.raw[:REPORT_BODY_SIZE])
    if not hmac.compare_digest(expected, report.mac):
        raise ReportInvalid(
            "the local report's MAC does not verify: it was not made on this platform during "
            f"this boot for the target enclave {target.mr_enclave.hex()}, or it was altered"
        )
    return report
