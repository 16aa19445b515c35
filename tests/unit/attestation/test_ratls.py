"""RA-TLS certificates: every carrier, the key binding, and certificates `cryptography` refuses."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attestation import der
from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.errors import MalformedEvidence
from inclavare.attestation.ratls import (
    OID_LEGACY_QUOTE,
    OID_TCG_TAGGED_EVIDENCE,
    TAG_INTEL_QUOTE,
    parse_tagged_evidence,
)
from inclavare.attestation.verifier import verify_evidence

from .conftest import Vectors

GRAMINE = "ratls/ccc_gramine_cert.pem"
RATS_TLS = "ratls/ccc_rats_tls_cert.pem"
LEGACY = "ratls/ratstls_legacy_cert_sample.pem"
RATS_TLS_VALID_AT = "2023-06-01T00:00:00Z"

EXPECTED = {
    GRAMINE: {
        "mrenclave": "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585",
        "mrsigner": "adc53501f21ced9b998e37a7a18e061c63e00315045fa57a49c18ef0a30d02ca",
        "isv_prod_id": 0,
        "isv_svn": 0,
        "attributes": "0700000000000000e700000000000000",
        "debug": True,
        "fmspc": "00606a000000",
    },
    RATS_TLS: {
        "mrenclave": "38e1b40b8c68186f359c97ecb6a89965d9d8638f2df06fbe18e84d79a266c041",
        "mrsigner": "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
        "isv_prod_id": 0,
        "isv_svn": 0,
        "attributes": "0700000000000000e700000000000000",
        "debug": True,
    },
    LEGACY: {
        "mrenclave": "144e81488fc3d59ddbe69b03bd939a3b938d85b6a7c9897e2b09808ade956574",
        "mrsigner": "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
        "isv_prod_id": 0,
        "isv_svn": 0,
        "attributes": "0500000000000000e700000000000000",
        "debug": False,  # flags 0x05: INIT and MODE64BIT, DEBUG (bit 1) clear
    },
}
AT = {GRAMINE: None, RATS_TLS: RATS_TLS_VALID_AT, LEGACY: None}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ratls_certificates_verify_with_their_claims(vectors: Vectors, name: str) -> None:
    verdict = verify_evidence(vectors.read(name), vectors.inputs(at=AT[name]))
    assert verdict.verified, verdict.reason
    assert verdict.tee == "sgx"
    for key, value in EXPECTED[name].items():
        assert verdict.claims[key] == value, key
    assert verdict.chain[-1].endswith("CN=Intel SGX Root CA")


def test_tcg_binding_is_sha256_of_the_claims(vectors: Vectors) -> None:
    certificate = parse_certificates(vectors.read(RATS_TLS))[0]
    extension = certificate.extension(OID_TCG_TAGGED_EVIDENCE)
    assert extension is not None
    tagged = parse_tagged_evidence(extension.value)
    assert tagged.tag == TAG_INTEL_QUOTE
    assert set(tagged.claims) == {"pubkey-hash", "key_0", "key_1"}
    verdict = verify_evidence(vectors.read(RATS_TLS), vectors.inputs(at=RATS_TLS_VALID_AT))
    assert (
        verdict.claims["report_data"]
        == hashlib.sha256(tagged.claims_buffer).hexdigest() + "00" * 32
    )
    assert hashlib.sha256(certificate.spki).hexdigest() == (
        "72c0b70c2092741a4cfda0c2465487faf132998617b0aad53118aa5d6e180006"
    )


def test_gramine_certificate_is_read_without_cryptography(vectors: Vectors) -> None:
    data = vectors.read(GRAMINE)
    with pytest.raises(ValueError):
        x509.load_pem_x509_certificate(data)
    certificate = parse_certificates(data)[0]
    oids = [extension.oid for extension in certificate.extensions]
    assert "0.6.9.42.840.113741.1337.6" in oids
    assert OID_TCG_TAGGED_EVIDENCE in oids
    assert (
        certificate.spki_sha256
        == "5a5a5b2d177433048e9d62409d1acc4ec526c06e294d09e69a36cff9369e4851"
    )
    verdict = verify_evidence(data, vectors.inputs())
    assert any("0.6.9.42.840.113741.1337.6" in warning for warning in verdict.warnings)


def test_expired_ratls_certificate_fails_with_date(vectors: Vectors) -> None:
    verdict = verify_evidence(vectors.read(RATS_TLS), vectors.inputs(at="2026-11-28"))
    assert not verdict.verified
    assert "'RATS-TLS' expired on 2024-02-22" in str(verdict.reason)


def _flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def _der(vectors: Vectors, name: str) -> bytes:
    return parse_certificates(vectors.read(name))[0].der


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_flipping_any_byte_of_the_certificate_fails(vectors: Vectors, name: str) -> None:
    data = _der(vectors, name)
    inputs = vectors.inputs(at=AT[name])
    for offset in range(0, len(data), 17):
        tampered = _flipped(data, offset)
        try:
            verdict = verify_evidence(tampered, inputs)
        except MalformedEvidence:  # pragma: no cover - the verifier turns these into verdicts
            raise
        except Exception as error:  # an unrecognisable outer header is an input error
            assert offset < 4, f"byte {offset}: {error!r}"
            continue
        assert not verdict.verified, f"flipping byte {offset} of {name} still verified"


def _self_signed_with_extensions(
    extensions: list[tuple[str, bytes]], key: ec.EllipticCurvePrivateKey
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
    )
    for oid, value in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_evidence_moved_to_another_key_fails_the_binding(vectors: Vectors) -> None:
    """Genuine evidence copied into a certificate for another key must not verify."""
    key = ec.generate_private_key(ec.SECP256R1())
    for name, oid in ((RATS_TLS, OID_TCG_TAGGED_EVIDENCE), (LEGACY, OID_LEGACY_QUOTE)):
        original = parse_certificates(vectors.read(name))[0]
        extension = original.extension(oid)
        assert extension is not None
        impostor = _self_signed_with_extensions([(oid, extension.value)], key)
        verdict = verify_evidence(impostor, vectors.inputs())
        assert not verdict.verified
        assert "public key" in str(verdict.reason), verdict.reason


def test_tampered_claims_break_the_report_data_binding(vectors: Vectors) -> None:
    """Rewriting a custom claim keeps the pubkey-hash but breaks SHA-256(claims)."""
    import cbor2

    original = parse_certificates(vectors.read(RATS_TLS))[0]
    extension = original.extension(OID_TCG_TAGGED_EVIDENCE)
    assert extension is not None
    tagged = parse_tagged_evidence(extension.value)
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = dict(tagged.claims)
    claims["pubkey-hash"] = cbor2.dumps([1, hashlib.sha256(spki).digest()])
    forged = cbor2.dumps(cbor2.CBORTag(TAG_INTEL_QUOTE, [tagged.evidence, cbor2.dumps(claims)]))
    impostor = _self_signed_with_extensions([(OID_TCG_TAGGED_EVIDENCE, forged)], key)
    verdict = verify_evidence(impostor, vectors.inputs())
    assert not verdict.verified
    assert "SHA-256 of the evidence claims" in str(verdict.reason)


def test_certificate_without_evidence_fails(vectors: Vectors) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verdict = verify_evidence(_self_signed_with_extensions([], key), vectors.inputs())
    assert not verdict.verified
    assert "carries no attestation evidence" in str(verdict.reason)


def test_tagged_evidence_on_its_own(vectors: Vectors) -> None:
    original = parse_certificates(vectors.read(GRAMINE))[0]
    extension = original.extension(OID_TCG_TAGGED_EVIDENCE)
    assert extension is not None
    verdict = verify_evidence(extension.value, vectors.inputs())
    assert verdict.verified, verdict.reason
    assert any("no key binding" in warning for warning in verdict.warnings)


def test_oid_encodings() -> None:
    assert der.decode_oid(der.encode_oid("2.23.133.5.4.9")) == "2.23.133.5.4.9"
    misencoded = bytes.fromhex("06092a864886f84d8a3906")
    assert der.decode_oid(misencoded) == "0.6.9.42.840.113741.1337.6"
    assert der.encode_oid(OID_LEGACY_QUOTE) == misencoded[2:]
