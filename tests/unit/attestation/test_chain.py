"""Certificate chains built here, with keys made for the test: order, dates, roots, CRLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attestation import der
from inclavare.attestation.certificate import Certificate, parse_certificates
from inclavare.attestation.chain import SignatureCache, verify_chain
from inclavare.attestation.collateral import Collateral, parse_crl
from inclavare.attestation.dcap import check_revocation
from inclavare.attestation.errors import MalformedEvidence, VerificationFailed
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.trust import Authority, TrustStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def parsed(self) -> Certificate:
        return Certificate.from_der(self.certificate.public_bytes(serialization.Encoding.DER))


def _issue(
    subject: str,
    issuer: Issued | None,
    ca: bool,
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=365),
    serial: int = 1,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.certificate.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


@pytest.fixture(scope="module")
def hierarchy() -> tuple[Issued, Issued, Issued]:
    root = _issue("Test Root", None, ca=True)
    intermediate = _issue("Test Intermediate", root, ca=True)
    leaf = _issue("Test Leaf", intermediate, ca=False, serial=0x1234)
    return root, intermediate, leaf


def _trust(root: Issued) -> TrustStore:
    parsed = root.parsed
    return TrustStore.with_extra_roots([(parsed.spki_sha256, parsed.common_name)])


def test_chain_is_built_whatever_the_order(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    root, intermediate, leaf = hierarchy
    chain = verify_chain(
        leaf.parsed, [root.parsed, intermediate.parsed], _trust(root), Authority.INTEL_SGX, NOW
    )
    assert chain.subjects == ("CN=Test Leaf", "CN=Test Intermediate", "CN=Test Root")
    assert not chain.anchor.vendor


def test_unpinned_root_is_refused(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    root, intermediate, leaf = hierarchy
    with pytest.raises(VerificationFailed, match="not a trusted root"):
        verify_chain(
            leaf.parsed, [root.parsed, intermediate.parsed], TrustStore(), Authority.INTEL_SGX, NOW
        )


def test_missing_intermediate(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    root, _, leaf = hierarchy
    with pytest.raises(VerificationFailed, match="is not among the given certificates"):
        verify_chain(leaf.parsed, [root.parsed], _trust(root), Authority.INTEL_SGX, NOW)


def test_impostor_intermediate_with_the_same_name(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    root, _, leaf = hierarchy
    impostor = _issue("Test Intermediate", root, ca=True)
    with pytest.raises(VerificationFailed, match="does not verify"):
        verify_chain(
            leaf.parsed, [root.parsed, impostor.parsed], _trust(root), Authority.INTEL_SGX, NOW
        )


def test_expiry_and_not_yet_valid_name_certificate_and_date() -> None:
    root = _issue("Old Root", None, ca=True)
    expired = _issue("Expired Leaf", root, ca=False, not_after=NOW - timedelta(days=2))
    future = _issue("Future Leaf", root, ca=False, not_before=NOW + timedelta(days=2))
    with pytest.raises(VerificationFailed, match=r"'Expired Leaf' expired on 2029-12-30"):
        verify_chain(expired.parsed, [root.parsed], _trust(root), Authority.INTEL_SGX, NOW)
    with pytest.raises(VerificationFailed, match=r"'Future Leaf' is not valid before 2030-01-03"):
        verify_chain(future.parsed, [root.parsed], _trust(root), Authority.INTEL_SGX, NOW)


def test_leaf_cannot_issue(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    root, intermediate, leaf = hierarchy
    grandchild = _issue("Grandchild", leaf, ca=False)
    with pytest.raises(VerificationFailed):
        verify_chain(
            grandchild.parsed,
            [root.parsed, intermediate.parsed, leaf.parsed],
            _trust(root),
            Authority.INTEL_SGX,
            NOW,
        )


def test_signature_cache_remembers_only_successes(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    root, intermediate, leaf = hierarchy
    cache = SignatureCache(capacity=2)
    pool = [root.parsed, intermediate.parsed]
    verify_chain(leaf.parsed, pool, _trust(root), Authority.INTEL_SGX, NOW, cache)
    assert len(cache._verified) == 2  # bounded: three signatures, capacity two
    impostor = _issue("Test Intermediate", root, ca=True)
    with pytest.raises(VerificationFailed):
        verify_chain(
            leaf.parsed,
            [root.parsed, impostor.parsed],
            _trust(root),
            Authority.INTEL_SGX,
            NOW,
            cache,
        )


def _crl(issuer: Issued, revoked: list[int], next_update: datetime) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(NOW - timedelta(days=1))
        .next_update(next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(days=1))
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _revocation(hierarchy: tuple[Issued, Issued, Issued], crl: bytes) -> list[str]:
    root, intermediate, leaf = hierarchy
    chain = verify_chain(
        leaf.parsed, [root.parsed, intermediate.parsed], _trust(root), Authority.INTEL_SGX, NOW
    )
    collateral = Collateral((), (), (parse_crl(crl, "test.crl"),), ())
    warnings: list[str] = []
    check_revocation(chain.certificates, collateral, VerificationInputs(at=NOW), warnings)
    return warnings


def test_revoked_certificate(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    crl = _crl(hierarchy[1], [0x1234], NOW + timedelta(days=30))
    with pytest.raises(VerificationFailed, match=r"'Test Leaf' \(serial 1234\) is revoked"):
        _revocation(hierarchy, crl)


def test_current_crl_without_the_leaf(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    warnings = _revocation(hierarchy, _crl(hierarchy[1], [0x9999], NOW + timedelta(days=30)))
    assert warnings == ["no CRL from 'Test Root': revocation not checked"]


def test_expired_crl(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    with pytest.raises(VerificationFailed, match="CRL of 'Test Intermediate' expired"):
        _revocation(hierarchy, _crl(hierarchy[1], [], NOW - timedelta(hours=1)))


def test_crl_signed_by_someone_else(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    forger = Issued(ec.generate_private_key(ec.SECP256R1()), hierarchy[1].certificate)
    with pytest.raises(VerificationFailed, match="does not verify"):
        _revocation(hierarchy, _crl(forger, [], NOW + timedelta(days=30)))


def test_pem_parsing_is_strict_inside_evidence(hierarchy: tuple[Issued, Issued, Issued]) -> None:
    pem = hierarchy[0].certificate.public_bytes(serialization.Encoding.PEM)
    assert len(parse_certificates(pem + b"\n\x00", strict=True)) == 1
    with pytest.raises(MalformedEvidence, match="unexpected text"):
        parse_certificates(pem + b"junk", strict=True)
    assert len(parse_certificates(b"Bag Attributes\n" + pem)) == 1
    body = pem.split(b"\n")
    last = body[-3]  # the last base64 line, ending in padding when its bits are unused
    if last.endswith(b"="):
        stripped = last.rstrip(b"=")
        twisted = stripped[:-1] + bytes([stripped[-1] ^ 0x01]) + last[len(stripped) :]
        with pytest.raises(MalformedEvidence):
            parse_certificates(pem.replace(last, twisted))


def test_der_reader_rejects_non_canonical_lengths() -> None:
    with pytest.raises(MalformedEvidence, match="shortest"):
        der.read_tlv(bytes([0x04, 0x81, 0x05]) + b"hello")
    with pytest.raises(MalformedEvidence, match="indefinite"):
        der.read_tlv(bytes([0x30, 0x80, 0, 0]))
    with pytest.raises(MalformedEvidence, match="runs past"):
        der.read_tlv(bytes([0x04, 0x05, 1]))
    tlv, end = der.read_tlv(bytes([0x04, 0x02, 0xAB, 0xCD, 0xFF]))
    assert (tlv.content, end) == (b"\xab\xcd", 4)
