"""EPID: attestation-service reports carried by Integritee RA certificates."""

from __future__ import annotations

import pytest

from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.epid import OID_NETSCAPE_COMMENT, check_ias_report
from inclavare.attestation.errors import MalformedEvidence, MissingInput, VerificationFailed
from inclavare.attestation.trust import INTEL_ATTESTATION_REPORT_SIGNING_CA
from inclavare.attestation.verifier import verify_evidence

from .conftest import Vectors

IAS_CA = "intel-roots/intel_sgx_attestation_report_signing_ca.pem"
MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"

CASES = {
    "epid/integritee_ra_dump_cert_TEST4.der": (
        "2020-05-01",
        "ConfigurationNeeded",
        "7a3454ec8f42e265cb5be7dfd111e1d95ac6076ed82a0948b2e2a45cf17b62a0",
    ),
    "epid/integritee_ra_dump_cert_TEST6.der": (
        "2020-05-01",
        "ConfigurationNeeded",
        "f4dedfc9e5fcc48443332bc9b23161c34a3c3f5a692eaffdb228db27b704d9d1",
    ),
    "epid/integritee_test_ra_cert_MRSIGNER1_MRENCLAVE1.der": (
        "2020-03-01",
        "OutOfDate",
        "3efcbbe83c876ccc574e23a9f1ed6ad9fbf163bd8a9d56884d5b5d17c0688ca7",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ias_reports_verify(vectors: Vectors, name: str) -> None:
    at, status, mrenclave = CASES[name]
    verdict = verify_evidence(vectors.read(name), vectors.inputs(at=at, ca=(IAS_CA,)))
    assert verdict.verified, verdict.reason
    assert verdict.tee == "epid"
    assert verdict.tcb_status == status
    assert verdict.claims["mrenclave"] == mrenclave
    assert verdict.claims["mrsigner"] == MRSIGNER
    assert [subject.split(",")[0] for subject in verdict.chain] == [
        "CN=Intel SGX Attestation Report Signing",
        "CN=Intel SGX Attestation Report Signing CA",
    ]


def test_report_data_bindings(vectors: Vectors) -> None:
    bound = verify_evidence(
        vectors.read("epid/integritee_test_ra_cert_MRSIGNER1_MRENCLAVE1.der"),
        vectors.inputs(at="2020-03-01", ca=(IAS_CA,)),
    )
    assert not any("not bound" in warning for warning in bound.warnings)
    # The newer certificates bind an ed25519 enclave signing key, published beside them.
    unbound = verify_evidence(
        vectors.read("epid/integritee_ra_dump_cert_TEST4.der"),
        vectors.inputs(at="2020-05-01", ca=(IAS_CA,)),
    )
    assert any("not bound" in warning for warning in unbound.warnings)
    signing_key = vectors.read("epid/integritee_enclave-signing-pubkey-TEST4.bin")
    assert str(unbound.claims["report_data"]).startswith(signing_key.hex())


def test_ias_root_pin_is_the_key_of_the_vendor_file(vectors: Vectors) -> None:
    assert (
        vectors.certificate(IAS_CA).spki_sha256 == INTEL_ATTESTATION_REPORT_SIGNING_CA.spki_sha256
    )


def test_without_the_ias_ca_it_is_an_input_error(vectors: Vectors) -> None:
    with pytest.raises(MissingInput, match="--ca-chain"):
        verify_evidence(
            vectors.read("epid/integritee_ra_dump_cert_TEST4.der"), vectors.inputs(at="2020-05-01")
        )


def test_expired_report_signing_certificate(vectors: Vectors) -> None:
    name = "epid/integritee_ra_dump_cert_TEST4.der"
    verdict = verify_evidence(vectors.read(name), vectors.inputs(at="2020-07-01", ca=(IAS_CA,)))
    assert verdict.verified
    later = verify_evidence(vectors.read(name), vectors.inputs(at="2026-11-28", ca=(IAS_CA,)))
    assert not later.verified
    assert "expired on" in str(later.reason)


def _report_parts(vectors: Vectors, name: str) -> tuple[bytes, bytes, bytes]:
    import base64

    certificate = parse_certificates(vectors.read(name))[0]
    extension = certificate.extension(OID_NETSCAPE_COMMENT)
    assert extension is not None
    report, signature, signer = extension.value.split(b"|")
    return report, base64.b64decode(signature), base64.b64decode(signer)


def test_flipping_bytes_of_the_signed_report_fails(vectors: Vectors) -> None:
    report, signature, signer = _report_parts(vectors, "epid/integritee_ra_dump_cert_TEST6.der")
    inputs = vectors.inputs(at="2020-05-01", ca=(IAS_CA,))
    signers = parse_certificates(signer)
    assert check_ias_report(report, signature, signers, inputs).verified
    for offset in range(0, len(report), 29):
        tampered = report[:offset] + bytes([report[offset] ^ 0x01]) + report[offset + 1 :]
        with pytest.raises((VerificationFailed, MalformedEvidence)):
            check_ias_report(tampered, signature, signers, inputs)
    for offset in range(0, len(signature), 31):
        tampered = signature[:offset] + bytes([signature[offset] ^ 0x01]) + signature[offset + 1 :]
        with pytest.raises(VerificationFailed, match="signature does not verify"):
            check_ias_report(report, tampered, signers, inputs)


def test_tampered_carrier_is_a_failed_verdict(vectors: Vectors) -> None:
    name = "epid/integritee_ra_dump_cert_TEST6.der"
    data = vectors.read(name)
    marker = data.index(b"isvEnclaveQuoteBody")
    tampered = data[:marker] + b"X" + data[marker + 1 :]
    verdict = verify_evidence(tampered, vectors.inputs(at="2020-05-01", ca=(IAS_CA,)))
    assert not verdict.verified
    assert verdict.tee == "epid"
