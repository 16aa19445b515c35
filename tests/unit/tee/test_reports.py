"""Local reports: SGX's layout, MACed for one target enclave during one boot."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.intel_quote import SgxReportBody
from inclavare.tee.sim.errors import MalformedStructure, ReportInvalid, SimError
from inclavare.tee.sim.keys import ReportKeys, cmac_aes128, hkdf_sha256
from inclavare.tee.sim.platform import SimPlatform
from inclavare.tee.sim.sgx import (
    FLAG_DEBUG,
    FLAG_INIT,
    FLAG_MODE64BIT,
    REPORT_SIZE,
    Attributes,
    EnclaveIdentity,
    Report,
    TargetInfo,
)

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ENCLAVE = EnclaveIdentity(
    mr_enclave=hashlib.sha256(b"enclave").digest(),
    mr_signer=hashlib.sha256(b"signer").digest(),
    attributes=Attributes(FLAG_INIT | FLAG_MODE64BIT | FLAG_DEBUG),
    isv_prod_id=5,
    isv_svn=2,
)
VERIFIER = replace(ENCLAVE, mr_enclave=hashlib.sha256(b"verifier").digest())
TARGET = TargetInfo.of(VERIFIER)


def test_report_layout_is_sgx_report_t(platform: SimPlatform) -> None:
    raw = platform.create_report(ENCLAVE, TARGET, b"hello")
    assert len(raw) == REPORT_SIZE
    body = SgxReportBody.parse(raw[:384])  # the attestation package's independent parser
    assert body.mr_enclave == ENCLAVE.mr_enclave
    assert body.mr_signer == ENCLAVE.mr_signer
    assert (body.isv_prod_id, body.isv_svn) == (5, 2)
    assert body.debug
    assert body.report_data == b"hello" + bytes(59)
    assert raw[384:400] == b"SIMULATED-REPORT"


def test_the_mac_is_the_documented_derivation(platform: SimPlatform) -> None:
    """Recomputed here from docs/sim-tee.md, from the platform secret and the boot id."""
    raw = platform.create_report(ENCLAVE, TARGET, b"")
    root = hkdf_sha256(platform.secret, platform.boot_id.encode(), b"inclavare-sim report root", 32)
    key_id = b"SIMULATED-REPORT" + hkdf_sha256(root, b"", b"inclavare-sim report key id", 16)
    info = (
        b"inclavare-sim report key"
        + TARGET.mr_enclave
        + TARGET.attributes.to_bytes()
        + struct.pack("<I", TARGET.misc_select)
    )
    key = hkdf_sha256(root, key_id, info, 16)
    assert raw[384:416] == key_id
    assert raw[416:432] == cmac_aes128(key, raw[:384])


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    expected = (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert hkdf_sha256(ikm, salt, info, 42).hex() == expected


def test_the_target_verifies_the_report(platform: SimPlatform) -> None:
    report = platform.verify_report(platform.create_report(ENCLAVE, TARGET, b"x"), TARGET)
    assert report.identity == ENCLAVE
    assert report.report_data[:1] == b"x"


def test_every_byte_of_a_report_is_protected(platform: SimPlatform) -> None:
    raw = platform.create_report(ENCLAVE, TARGET, b"nonce")
    for position in range(REPORT_SIZE):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        with pytest.raises(ReportInvalid):
            platform.verify_report(bytes(tampered), TARGET)


def test_another_target_cannot_verify_it(platform: SimPlatform) -> None:
    raw = platform.create_report(ENCLAVE, TARGET, b"")
    for other in (
        TargetInfo.of(ENCLAVE),
        replace(TARGET, attributes=Attributes(FLAG_INIT | FLAG_MODE64BIT)),
        replace(TARGET, misc_select=1),
    ):
        with pytest.raises(ReportInvalid, match="MAC does not verify"):
            platform.verify_report(raw, other)


def test_another_boot_or_platform_cannot_verify_it(platform: SimPlatform) -> None:
    raw = platform.create_report(ENCLAVE, TARGET, b"")
    for keys in (
        ReportKeys.for_boot(platform.secret, "another-boot", bytes(16)),
        ReportKeys.for_boot(bytes(32), platform.boot_id, bytes(16)),
    ):
        with pytest.raises(ReportInvalid):
            replace(platform, boot_id="x").verify_report(raw, TARGET)
        from inclavare.tee.sim.reports import verify_report

        with pytest.raises(ReportInvalid):
            verify_report(keys, raw, TARGET)


def test_report_data_is_at_most_64_bytes(platform: SimPlatform) -> None:
    with pytest.raises(MalformedStructure, match="report data is 65 bytes"):
        platform.create_report(ENCLAVE, TARGET, bytes(65))


def test_target_info_round_trips_and_is_strict() -> None:
    raw = TARGET.to_bytes()
    assert len(raw) == 512
    assert TargetInfo.parse(raw) == TARGET
    with pytest.raises(MalformedStructure, match="non-zero reserved"):
        TargetInfo.parse(raw[:200] + b"\1" + raw[201:])
    with pytest.raises(MalformedStructure, match="must be 512 bytes"):
        TargetInfo.parse(raw[:-1])


@BOUNDED
@given(st.binary(max_size=600))
def test_arbitrary_target_info_and_reports_parse_or_fail_cleanly(data: bytes) -> None:
    for parse in (TargetInfo.parse, Report.parse):
        try:
            parse(data)
        except SimError:
            pass


@BOUNDED
@given(st.binary(min_size=512, max_size=512))
def test_any_valid_target_info_round_trips(data: bytes) -> None:
    try:
        target = TargetInfo.parse(data)
    except MalformedStructure:
        return
    assert target.to_bytes() == data
