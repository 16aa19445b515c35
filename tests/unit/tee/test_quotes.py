"""Simulated quotes: SGX ECDSA v3 bytes that the project's verifier and `shelter verify` check
like hardware quotes, refused unless simulated evidence is allowed."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.chain import SignatureCache
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.intel_quote import CERT_PCK_CERT_CHAIN, parse_quote
from inclavare.attestation.trust import TrustStore
from inclavare.attestation.verifier import verify_evidence
from inclavare.cli.shelter import main as shelter
from inclavare.tee.sim.errors import ReportInvalid
from inclavare.tee.sim.platform import SimPlatform
from inclavare.tee.sim.quote import QE_TARGET_INFO, SIM_QE_IDENTITY
from inclavare.tee.sim.sgx import FLAG_INIT, FLAG_MODE64BIT, Attributes, EnclaveIdentity, TargetInfo

ENCLAVE = EnclaveIdentity(
    mr_enclave=hashlib.sha256(b"enclave").digest(),
    mr_signer=hashlib.sha256(b"signer").digest(),
    attributes=Attributes(FLAG_INIT | FLAG_MODE64BIT),
    isv_prod_id=11,
    isv_svn=4,
)
NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")


def inputs(platform: SimPlatform, allow: bool = True, cache: bool = False) -> VerificationInputs:
    roots = parse_certificates(platform.root_ca_pem)
    return VerificationInputs(
        at=datetime.now(UTC),
        trust=TrustStore.with_extra_roots((root.spki_sha256, root.common_name) for root in roots),
        allow_simulated=allow,
        cache=SignatureCache() if cache else None,
    )


@pytest.fixture(scope="module")
def quote(platform: SimPlatform) -> bytes:
    return platform.quote(ENCLAVE, NONCE)


def test_the_quote_is_sgx_quote_v3_with_a_pem_chain(quote: bytes, platform: SimPlatform) -> None:
    parsed = parse_quote(quote)
    assert (parsed.version, parsed.attestation_key_type) == (3, 2)
    assert parsed.qe_vendor_id == b"INCLAVARE-SIM-QE"
    assert parsed.is_simulated and parsed.tee == "sim"
    assert parsed.certification.certification_type == CERT_PCK_CERT_CHAIN
    assert parsed.certification.certification_data == platform.pck_chain_pem
    assert parsed.certification.qe_report.mr_signer == SIM_QE_IDENTITY.mr_signer
    assert parsed.trailing_bytes == 0
    assert struct.unpack_from("<I", quote, 432)[0] == len(quote) - 436


def test_the_verifier_accepts_it_when_simulation_is_allowed(
    quote: bytes, platform: SimPlatform
) -> None:
    verdict = verify_evidence(quote, inputs(platform))
    assert verdict.verified, verdict.reason
    assert verdict.tee == "sim"
    claims = verdict.claims
    assert claims["mrenclave"] == ENCLAVE.mr_enclave.hex()
    assert claims["mrsigner"] == ENCLAVE.mr_signer.hex()
    assert (claims["isv_prod_id"], claims["isv_svn"], claims["debug"]) == (11, 4, False)
    assert claims["report_data"] == (NONCE + bytes(48)).hex()
    assert any("simulated TEE" in warning for warning in verdict.warnings)
    assert not any("quoting enclave" in warning for warning in verdict.warnings)


def test_the_verifier_refuses_it_otherwise(quote: bytes, platform: SimPlatform) -> None:
    refused = verify_evidence(quote, inputs(platform, allow=False))
    assert (refused.verified, refused.tee) == (False, "sim")
    assert "simulated TEE, which is not allowed" in str(refused.reason)
    unrooted = verify_evidence(
        quote, VerificationInputs(at=datetime.now(UTC), allow_simulated=True)
    )
    assert not unrooted.verified
    assert "Inclavare Sim Root CA (simulated TEE)" in str(unrooted.reason)
    assert "not a trusted root" in str(unrooted.reason)


def test_another_hosts_root_does_not_verify_it(quote: bytes, tmp_path: Path) -> None:
    from inclavare.tee.sim.store import load_platform

    other = load_platform(tmp_path / "other-host")
    verdict = verify_evidence(quote, inputs(other))
    assert not verdict.verified
    assert "not a trusted root" in str(verdict.reason)


def test_every_byte_of_the_quote_is_checked(quote: bytes, platform: SimPlatform) -> None:
    checks = inputs(platform, cache=True)
    for position in range(len(quote)):
        tampered = bytearray(quote)
        tampered[position] ^= 0xFF
        verdict = verify_evidence(bytes(tampered), checks)
        assert not verdict.verified, f"byte {position} changed and the quote still verifies"


def test_a_quote_needs_a_report_for_the_quoting_enclave(platform: SimPlatform) -> None:
    elsewhere = platform.create_report(ENCLAVE, TargetInfo.of(ENCLAVE), NONCE)
    with pytest.raises(ReportInvalid, match="MAC does not verify"):
        platform.quote_report(elsewhere)
    rebooted = replace(platform, boot_id="another boot")
    with pytest.raises(ReportInvalid):
        rebooted.quote_report(platform.create_report(ENCLAVE, QE_TARGET_INFO, NONCE))


def test_the_quoting_enclave_target_info(platform: SimPlatform) -> None:
    assert TargetInfo.parse(platform.quoting_enclave_target_info) == QE_TARGET_INFO


# --- shelter verify ------------------------------------------------------------------------


def run_shelter(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = shelter(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def quote_file(quote: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "quote.dat"
    path.write_bytes(quote)
    return path


def test_shelter_verifies_with_allow_sim(
    quote_file: Path, platform: SimPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    root = f"{platform.directory}/root-ca.pem"
    code, out, _ = run_shelter(
        ["verify", "--json", "--roots", root, "--allow-sim", str(quote_file)], capsys
    )
    assert code == 0
    verdict = json.loads(out)
    assert (verdict["verified"], verdict["tee"]) == (True, "sim")
    assert verdict["claims"]["report_data"].startswith(NONCE.hex())
    assert any("simulated" in warning for warning in verdict["warnings"])


def test_shelter_refuses_without_allow_sim(
    quote_file: Path, platform: SimPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    root = f"{platform.directory}/root-ca.pem"
    code, out, _ = run_shelter(["verify", "--json", "--roots", root, str(quote_file)], capsys)
    assert code == 1
    verdict = json.loads(out)
    assert (verdict["verified"], verdict["tee"]) == (False, "sim")
    assert "simulated" in verdict["reason"]


def test_shelter_refuses_a_tampered_quote(
    quote_file: Path, platform: SimPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(quote_file.read_bytes())
    data[64 + 5] ^= 0x01  # a byte of MRENCLAVE
    quote_file.write_bytes(bytes(data))
    root = f"{platform.directory}/root-ca.pem"
    code, out, _ = run_shelter(["verify", "--roots", root, "--allow-sim", str(quote_file)], capsys)
    assert code == 1
    assert "quote signature does not verify" in out


def test_allow_sim_applies_to_a_policy(
    quote_file: Path, platform: SimPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sim]\nmrenclave = ["{ENCLAVE.mr_enclave.hex()}"]\nisv_prod_id = 11\n')
    root = f"{platform.directory}/root-ca.pem"
    base = ["verify", "--roots", root, "--policy", str(policy), str(quote_file)]
    code, out, _ = run_shelter([*base, "--allow-sim"], capsys)
    assert code == 0, out
    code, out, _ = run_shelter(base, capsys)
    assert code == 1
    policy.write_text(f'[sim]\nmrenclave = ["{"00" * 32}"]\n')
    code, out, _ = run_shelter([*base, "--allow-sim"], capsys)
    assert code == 1
    assert "policy: mrenclave" in out
