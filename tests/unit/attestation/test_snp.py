"""SEV-SNP: real reports verify with VCEK and VLEK; the negative certificates fail."""

from __future__ import annotations

import pytest

from inclavare.attestation.chain import verify_chain
from inclavare.attestation.errors import MissingInput
from inclavare.attestation.snp import (
    SIGNED_SIZE,
    TcbVersion,
    endorsement_key_info,
    parse_report,
)
from inclavare.attestation.trust import AMD_ARK_MILAN, AMD_ARK_TURIN, Authority, TrustStore
from inclavare.attestation.verdict import Verdict
from inclavare.attestation.verifier import verify_evidence

from .conftest import Vectors, moment

MILAN_CHAIN = "snp/amd_milan_ask_ark.pem"

GOSEV_CLAIMS = {
    "measurement": (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
        "6bdf8a9ece31a5a608eb0cf2e4872b01"
    ),
    "report_data": "0102030405" + "00" * 59,
    "host_data": "00" * 32,
    "chip_id": (
        "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e5378618"
        "4ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
    ),
    "policy": 0xB0000,
    "debug": True,
    "vmpl": 0,
    "guest_svn": 0,
    "reported_tcb": {"boot_loader": 2, "tee": 0, "snp": 5, "microcode": 68},
    "id_key_digest": "00" * 48,
    "product": "Milan",
    "signing_key": "vcek",
    "version": 2,
    "firmware": "1.49.3",
}
TRUSTEE_VCEK_CLAIMS = {
    "measurement": (
        "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
        "23500644e0e692e6be917f9050d3d38c"
    ),
    "report_data": "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2" + "00" * 32,
    "chip_id": (
        "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f"
        "8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"
    ),
    "policy": 0x3001F,
    "debug": False,
    "vmpl": 0,
    "guest_svn": 4,
    "reported_tcb": {"boot_loader": 3, "tee": 0, "snp": 8, "microcode": 115},
    "current_tcb": {"boot_loader": 3, "tee": 0, "snp": 8, "microcode": 206},
    "family_id": "01" + "00" * 15,
    "image_id": "02" + "00" * 15,
    "firmware": "1.52.4",
}
TRUSTEE_VLEK_CLAIMS = {
    "measurement": (
        "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4"
        "e8c9af857f5ceeb5a493df2a570d7bf0"
    ),
    "report_data": (
        "819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd5"
        "4e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca"
    ),
    "chip_id": "00" * 64,
    "policy": 0x30000,
    "vmpl": 1,
    "guest_svn": 0,
    "reported_tcb": {"boot_loader": 4, "tee": 0, "snp": 24, "microcode": 217},
    "signing_key": "vlek",
    "version": 3,
    "platform_info": 0x27,
    "firmware": "1.55.29",
}


def _verify(vectors: Vectors, report: str, vek: str, chain: str, at: str | None = None) -> Verdict:
    return verify_evidence(vectors.read(report), vectors.inputs(at=at, vek=vek, ca=(chain,)))


def test_go_sev_guest_milan_report(vectors: Vectors) -> None:
    verdict = _verify(
        vectors, "snp/gosevguest_milan_report.bin", "snp/gosevguest_milan_vcek.der", MILAN_CHAIN
    )
    assert verdict.verified, verdict.reason
    assert verdict.tee == "snp"
    for key, value in GOSEV_CLAIMS.items():
        assert verdict.claims[key] == value, key
    assert [subject.split(",")[0] for subject in verdict.chain] == [
        "CN=SEV-VCEK",
        "CN=SEV-Milan",
        "CN=ARK-Milan",
    ]
    assert verdict.tcb_status == "not evaluated"


def test_trustee_vcek_report(vectors: Vectors) -> None:
    verdict = _verify(vectors, "snp/trustee_report_vcek.bin", "snp/trustee_vcek.der", MILAN_CHAIN)
    assert verdict.verified, verdict.reason
    for key, value in TRUSTEE_VCEK_CLAIMS.items():
        assert verdict.claims[key] == value, key


def test_trustee_vlek_report_at_a_time_its_vlek_was_valid(vectors: Vectors) -> None:
    verdict = _verify(
        vectors,
        "snp/trustee_report_vlek.bin",
        "snp/trustee_vlek.der",
        "snp/amd_milan_asvk_ark_vlek.pem",
        at="2025-06-01T00:00:00Z",
    )
    assert verdict.verified, verdict.reason
    for key, value in TRUSTEE_VLEK_CLAIMS.items():
        assert verdict.claims[key] == value, key
    assert verdict.chain[1].startswith("CN=SEV-VLEK-Milan")


def test_expired_vlek_says_when(vectors: Vectors) -> None:
    verdict = _verify(
        vectors,
        "snp/trustee_report_vlek.bin",
        "snp/trustee_vlek.der",
        "snp/amd_milan_asvk_ark_vlek.pem",
        at="2026-11-28T00:00:00Z",
    )
    assert not verdict.verified
    assert "'SEV-VLEK' expired on 2025-12-10" in str(verdict.reason)


def test_vlek_against_the_vcek_signing_key_chain_fails(vectors: Vectors) -> None:
    verdict = _verify(
        vectors, "snp/trustee_report_vlek.bin", "snp/trustee_vlek.der", MILAN_CHAIN, at="2025-06-01"
    )
    assert not verdict.verified


@pytest.mark.parametrize(
    ("vek", "chain", "reason"),
    [
        (
            "snp/trustee_vcek.der",
            "snp/amd_genoa_ask_ark.pem",
            "is not among the given certificates",
        ),
        ("snp/trustee_vcek_invalid_legacy.der", MILAN_CHAIN, "report signature does not verify"),
        ("snp/trustee_vcek_invalid_new.der", MILAN_CHAIN, "report signature does not verify"),
        ("snp/gosevguest_milan_vcek.der", MILAN_CHAIN, "report signature does not verify"),
    ],
)
def test_negative_certificates_fail(vectors: Vectors, vek: str, chain: str, reason: str) -> None:
    verdict = _verify(vectors, "snp/trustee_report_vcek.bin", vek, chain)
    assert not verdict.verified
    assert reason in str(verdict.reason)
    assert verdict.claims == {}


def test_invalid_certificates_also_fail_their_chain(vectors: Vectors) -> None:
    pool = vectors.certificates(MILAN_CHAIN)
    for name in ("snp/trustee_vcek_invalid_legacy.der", "snp/trustee_vcek_invalid_new.der"):
        with pytest.raises(Exception, match="does not verify"):
            verify_chain(
                vectors.certificate(name),
                pool,
                TrustStore(),
                Authority.AMD_SEV,
                moment("2024-01-01"),
            )


def test_both_hwid_encodings_are_read(vectors: Vectors) -> None:
    raw = endorsement_key_info(vectors.certificate("snp/trustee_vcek_invalid_legacy.der"))
    wrapped = endorsement_key_info(vectors.certificate("snp/trustee_vcek_invalid_new.der"))
    real = endorsement_key_info(vectors.certificate("snp/trustee_vcek.der"))
    assert raw.hw_id is not None and len(raw.hw_id) == 64
    assert wrapped.hw_id is not None and len(wrapped.hw_id) == 64
    assert real.hw_id == bytes.fromhex(TRUSTEE_VCEK_CLAIMS["chip_id"])  # type: ignore[arg-type]
    # The legacy synthetic certificate writes ucodeSPL as a 2-byte INTEGER.
    assert raw.levels["microcode"] >= 0x80


def test_vcek_and_vlek_extensions(vectors: Vectors) -> None:
    vcek = endorsement_key_info(vectors.certificate("snp/gosevguest_milan_vcek.der"))
    assert (vcek.kind, vcek.product_name, vcek.product) == ("VCEK", "Milan-B0", "Milan")
    assert vcek.levels == {"boot_loader": 2, "tee": 0, "snp": 5, "microcode": 68}
    vlek = endorsement_key_info(vectors.certificate("snp/trustee_vlek.der"))
    assert (vlek.kind, vlek.product, vlek.hw_id) == ("VLEK", "Milan", None)
    assert vlek.csp_id == "CN=cc-us-east-2.amazonaws.com"


def test_turin_vcek_chains_to_the_turin_ark_only(vectors: Vectors) -> None:
    vcek = vectors.certificate("snp/virtee_turin_vcek.der")
    info = endorsement_key_info(vcek)
    assert info.product == "Turin"
    assert info.hw_id is not None and len(info.hw_id) == 8
    assert "fmc" in info.levels
    at = moment("2025-06-01")
    chain = verify_chain(
        vcek, vectors.certificates("snp/amd_turin_ask_ark.pem"), TrustStore(), Authority.AMD_SEV, at
    )
    assert chain.anchor == AMD_ARK_TURIN
    for other in ("snp/amd_milan_ask_ark.pem", "snp/amd_genoa_ask_ark.pem"):
        with pytest.raises(Exception, match="not among the given certificates"):
            verify_chain(vcek, vectors.certificates(other), TrustStore(), Authority.AMD_SEV, at)


def test_ark_pins_are_the_keys_of_the_vendor_files(vectors: Vectors) -> None:
    ark = vectors.certificates(MILAN_CHAIN)[1]
    assert ark.spki_sha256 == AMD_ARK_MILAN.spki_sha256


def test_tcb_layouts_differ_for_turin() -> None:
    raw = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert TcbVersion.decode(raw, "Milan").as_claim() == {
        "boot_loader": 1,
        "tee": 2,
        "snp": 7,
        "microcode": 8,
    }
    assert TcbVersion.decode(raw, "Turin").as_claim() == {
        "boot_loader": 2,
        "tee": 3,
        "snp": 4,
        "microcode": 8,
        "fmc": 1,
    }


def test_report_without_vcek_needs_one(vectors: Vectors) -> None:
    with pytest.raises(MissingInput, match="--vcek"):
        verify_evidence(vectors.read("snp/trustee_report_vcek.bin"), vectors.inputs())


def test_report_fields(vectors: Vectors) -> None:
    report = parse_report(vectors.read("snp/trustee_report_vlek.bin"))
    assert report.cpuid == (0x19, 0x01, 0x01)
    assert report.signing_key == "VLEK"
    assert report.committed_version == (1, 55, 29)


def _flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def test_flipping_any_byte_of_the_report_fails(vectors: Vectors) -> None:
    data = vectors.read("snp/trustee_report_vcek.bin")
    inputs = vectors.inputs(vek="snp/trustee_vcek.der", ca=(MILAN_CHAIN,))
    offsets = list(range(0, SIGNED_SIZE, 5)) + list(range(SIGNED_SIZE, len(data), 11))
    for offset in offsets:
        verdict = verify_evidence(_flipped(data, offset), inputs)
        assert not verdict.verified, f"flipping byte {offset} still verified"
        assert verdict.reason


def test_flipping_bytes_of_the_vcek_fails(vectors: Vectors) -> None:
    from inclavare.attestation.certificate import Certificate
    from inclavare.attestation.errors import MalformedEvidence

    evidence = vectors.read("snp/trustee_report_vcek.bin")
    vcek = vectors.read("snp/trustee_vcek.der")
    base = vectors.inputs(ca=(MILAN_CHAIN,))
    for offset in range(0, len(vcek), 9):
        try:
            tampered = Certificate.from_der(_flipped(vcek, offset))
        except MalformedEvidence:
            continue  # an unreadable --vcek is an input error, reported before verification
        from dataclasses import replace

        verdict = verify_evidence(evidence, replace(base, endorsement_key=tampered))
        assert not verdict.verified, f"flipping byte {offset} of the VCEK still verified"


def test_truncated_report_fails(vectors: Vectors) -> None:
    data = vectors.read("snp/trustee_report_vcek.bin")
    inputs = vectors.inputs(vek="snp/trustee_vcek.der", ca=(MILAN_CHAIN,))
    for length in (0x38, 0x100, SIGNED_SIZE, len(data) - 1):
        verdict = verify_evidence(data[:length], inputs)
        assert not verdict.verified
        assert "truncated" in str(verdict.reason)
