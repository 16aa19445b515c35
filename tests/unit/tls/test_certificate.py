"""The certificate format: what is written, what is read, and every malformed input."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.attestation.certificate import parse_certificates
from inclavare.cli import shelter
from inclavare.tee.sim.store import root_ca_path
from inclavare.tls.certificate import (
    MAX_CERTIFICATE_SIZE,
    OID_TCG_ENDORSEMENTS,
    OID_TCG_TAGGED_EVIDENCE,
    Endorsements,
    build_certificate,
    claims_buffer,
    decode_endorsements,
    read_certificate,
    report_data_for,
    spki_of,
    tagged_evidence,
)
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.errors import CertificateFormatError, PeerRejected
from inclavare.tls.plugins import PluginOptions
from inclavare.tls.plugins.attesters import SimAttester, sample_identity
from tests.unit.attestation.conftest import Vectors

from .conftest import SIM

GRAMINE = "ratls/ccc_gramine_cert.pem"
RATS_TLS = "ratls/ccc_rats_tls_cert.pem"
LEGACY = "ratls/ratstls_legacy_cert_sample.pem"
VECTOR_TIMES = {GRAMINE: None, RATS_TLS: "2023-06-01", LEGACY: None}
EXPECTED_MRENCLAVE = {
    GRAMINE: "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585",
    RATS_TLS: "38e1b40b8c68186f359c97ecb6a89965d9d8638f2df06fbe18e84d79a266c041",
    LEGACY: "144e81488fc3d59ddbe69b03bd939a3b938d85b6a7c9897e2b09808ade956574",
}


def _pem(der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _sim_evidence(spki: bytes, claims: bytes | None = None) -> bytes:
    attester = SimAttester()
    attester.init(PluginOptions())
    claims = claims if claims is not None else claims_buffer(spki)
    return tagged_evidence(60000, attester.collect_evidence(report_data_for(claims)), claims)


def _client(**changes: object) -> EnclaveTls:
    return EnclaveTls(replace(SIM, session_evidence=False, **changes), server=False)  # type: ignore[arg-type]


# --- written ---------------------------------------------------------------------------


def test_claims_are_the_interoperable_bytes() -> None:
    spki = b"\x30\x03\x01\x02\x03"
    digest = hashlib.sha256(spki).digest()
    assert claims_buffer(spki) == b"\xa1\x6bpubkey-hash\x58\x24\x82\x01\x58\x20" + digest
    assert report_data_for(claims_buffer(spki)) == hashlib.sha256(
        claims_buffer(spki)
    ).digest() + bytes(32)
    with_nonce = cbor2.loads(claims_buffer(spki, nonce=b"n" * 32))
    assert with_nonce == {"pubkey-hash": b"\x82\x01\x58\x20" + digest, "nonce": b"n" * 32}


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-3072"])
def test_certificate_carries_bound_sim_evidence(key_type: str) -> None:
    tls = EnclaveTls(replace(SIM, key_type=key_type), server=True)
    assert tls.certificate is not None
    certificate = read_certificate(tls.certificate)
    assert certificate.evidence_type == "sim" and certificate.simulated
    assert certificate.carriers == (f"TCG DICE tagged evidence {OID_TCG_TAGGED_EVIDENCE}",)
    assert certificate.tagged is not None and certificate.tagged.tag == 60000
    assert certificate.tagged.claims_buffer == claims_buffer(certificate.spki)
    extension = certificate.certificate.extension(OID_TCG_TAGGED_EVIDENCE)
    assert extension is not None and not extension.critical
    assert extension.value.startswith(b"\xd9\xea\x60\x82")
    attestation = _client().verify_certificate(tls.certificate)
    assert attestation.verified and attestation.certificate_verified
    assert attestation.claims["mrenclave"] == sample_identity().mr_enclave.hex()
    assert (
        attestation.claims["report_data"] == report_data_for(claims_buffer(certificate.spki)).hex()
    )


def test_certificate_passes_shelter_verify(
    tmp_path: Path, sim_server: EnclaveTls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim_server.certificate is not None
    path = tmp_path / "server.pem"
    path.write_bytes(_pem(sim_server.certificate))
    roots = str(root_ca_path())
    assert shelter.main(["verify", "--allow-sim", "--roots", roots, str(path)]) == 0
    assert "VERIFIED: sim evidence" in capsys.readouterr().out
    # Simulated evidence is refused unless allowed.
    assert shelter.main(["verify", "--roots", roots, str(path)]) == 1
    assert "simulated TEE" in capsys.readouterr().out


def test_debug_enclave_and_policy(tmp_path: Path) -> None:
    from inclavare.attestation.policy import load_policy

    tls = EnclaveTls(replace(SIM, debug_enclave=True), server=True)
    assert tls.certificate is not None
    with pytest.raises(PeerRejected, match="debug mode is not accepted"):
        _client(policy=load_policy(b"allow_simulated = true\n")).verify_certificate(tls.certificate)
    other = "ab" * 32
    policy = load_policy(
        f'allow_simulated = true\nallow_debug = true\n[sim]\nmrenclave = ["{other}"]\n'.encode()
    )
    with pytest.raises(PeerRejected) as rejected:
        _client(policy=policy).verify_certificate(tls.certificate)
    mrenclave = sample_identity(debug=True).mr_enclave.hex()
    assert str(rejected.value) == f"policy: mrenclave {mrenclave} is not an accepted value"


def test_endorsements_round_trip(vectors: object) -> None:
    assert isinstance(vectors, Vectors)
    endorsements = Endorsements(
        tcb_info=vectors.read("sgx/qvl_testroot_tcbInfo.json") + b"\0",
        tcb_issuer_chain=vectors.read("sgx/qvl_testroot_tcbSignChain.pem"),
        pck_crl=vectors.read("sgx/qvl_testroot_intermediateCaCrl.der"),
        root_ca_crl=vectors.read("sgx/qvl_testroot_rootCaCrl.der"),
        crl_issuer_chain=vectors.read("sgx/qvl_testroot_pckSignChain.pem"),
        qe_identity=vectors.read("sgx/qvl_testroot_qeIdentity.json"),
        qe_identity_issuer_chain=vectors.read("sgx/qvl_testroot_tcbSignChain.pem"),
    )
    encoded = endorsements.encode()
    assert encoded.startswith(b"\xd9\xea\x60\x88\x01")  # tag 60000, array of 8, version 1
    assert decode_endorsements(encoded) == endorsements
    collateral = endorsements.collateral()
    assert len(collateral.tcb_infos) == 1 and len(collateral.identities) == 1
    assert len(collateral.crls) == 2
    key = ec.generate_private_key(ec.SECP256R1())
    der = build_certificate(key, _sim_evidence(spki_of(key)), encoded)
    assert read_certificate(der).endorsements == endorsements
    assert f"TCG DICE endorsements {OID_TCG_ENDORSEMENTS}" in read_certificate(der).carriers


# --- the vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_MRENCLAVE))
def test_vector_certificates_are_read_and_verified(vectors: object, name: str) -> None:
    assert isinstance(vectors, Vectors)
    data = vectors.read(name)
    certificate = read_certificate(data)
    assert certificate.evidence_type == "sgx_ecdsa"
    oids = " ".join(certificate.carriers)
    if name == GRAMINE:
        assert OID_TCG_TAGGED_EVIDENCE in oids and "0.6.9.42.840.113741.1337.6" in oids
    elif name == RATS_TLS:
        assert certificate.carriers == (f"TCG DICE tagged evidence {OID_TCG_TAGGED_EVIDENCE}",)
    else:
        assert certificate.carriers == ("legacy quote 1.2.840.113741.1337.6",)
    at = VECTOR_TIMES[name]
    moment = datetime.fromisoformat(at).replace(tzinfo=UTC) if at else None
    client = _client(at=moment)
    attestation = client.verify_certificate(certificate.der)
    assert attestation.verifier == "sgx_ecdsa" and attestation.verified
    assert attestation.claims["mrenclave"] == EXPECTED_MRENCLAVE[name]
    # The same certificate with one byte of its quote changed is refused.
    quote_at = certificate.der.find(bytes.fromhex("03000200")) + 48 + 64
    tampered = (
        certificate.der[:quote_at]
        + bytes([certificate.der[quote_at] ^ 1])
        + certificate.der[quote_at + 1 :]
    )
    with pytest.raises(PeerRejected):
        client.verify_certificate(tampered)


def test_vector_is_refused_when_expired(vectors: object) -> None:
    assert isinstance(vectors, Vectors)
    with pytest.raises(PeerRejected, match="expired on 2024-02-22"):
        _client().verify_certificate(vectors.read(RATS_TLS))


# --- malformed input --------------------------------------------------------------------


def _with_extension(value: bytes, oid: str = OID_TCG_TAGGED_EVIDENCE) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now.replace(year=now.year - 1))
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


BAD_EVIDENCE = {
    "not CBOR": (b"\xff\x00garbage", "undecodable CBOR"),
    "CBOR but no tag": (cbor2.dumps([b"a", b"b"]), "not a CBOR tag"),
    "tag over a map": (cbor2.dumps(cbor2.CBORTag(60000, {"a": 1})), "array of two byte strings"),
    "trailing bytes": (
        cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps({"pubkey-hash": b"x"})])) + b"\0",
        "bytes after",
    ),
    "claims not a map": (
        cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps([1])])),
        "map with text keys",
    ),
    "no pubkey-hash": (
        cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps({"nonce": b"x"})])),
        "no pubkey-hash",
    ),
    "Hygon CSV": (
        cbor2.dumps(cbor2.CBORTag(0x1A7506, [b"q", cbor2.dumps({"pubkey-hash": b"x"})])),
        "unknown evidence type: CBOR tag 1733894 (Hygon CSV report)",
    ),
    "unknown tag": (
        cbor2.dumps(cbor2.CBORTag(61234, [b"q", cbor2.dumps({"pubkey-hash": b"x"})])),
        "unknown evidence type: CBOR tag 61234",
    ),
    "quote tag, no quote": (
        cbor2.dumps(cbor2.CBORTag(60000, [b"not a quote", cbor2.dumps({"pubkey-hash": b"x"})])),
        "no quote header",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EVIDENCE))
def test_malformed_evidence_extension_has_its_reason(case: str) -> None:
    value, reason = BAD_EVIDENCE[case]
    der = _with_extension(value)
    with pytest.raises(
        CertificateFormatError, match=reason.replace("(", r"\(").replace(")", r"\)")
    ):
        read_certificate(der)
    with pytest.raises(PeerRejected, match=r"^peer certificate: "):
        _client().verify_certificate(der)


def test_garbage_and_oversized_certificates() -> None:
    with pytest.raises(CertificateFormatError, match=r"not an X.509 certificate"):
        read_certificate(b"\x30\x82\x01\x00" + b"\x00" * 10)
    with pytest.raises(CertificateFormatError, match=r"not an X.509 certificate"):
        read_certificate(b"hello, I am a certificate")
    huge = _with_extension(b"\0" * MAX_CERTIFICATE_SIZE, "1.2.3.4")
    with pytest.raises(
        CertificateFormatError, match=f"certificate too large .* at most {MAX_CERTIFICATE_SIZE}"
    ):
        read_certificate(huge)
    plain = _with_extension(b"\0", "1.2.3.4")
    assert read_certificate(plain).evidence_type is None
    with pytest.raises(PeerRejected, match="carries no attestation evidence"):
        _client().verify_certificate(plain)


def test_evidence_for_another_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    der = build_certificate(key, _sim_evidence(spki_of(other)))
    expected = "the evidence's pubkey-hash is not the hash of the certificate's public key"
    with pytest.raises(PeerRejected, match=expected):
        _client().verify_certificate(der)
    with pytest.raises(PeerRejected, match=expected):  # the handshake's form check too
        _client().verify_certificate(der, full=False)
    # Evidence whose quote was made for other claims.
    claims = claims_buffer(spki_of(key))
    mismatched = tagged_evidence(60000, cbor2.loads(_sim_evidence(spki_of(other))).value[0], claims)
    with pytest.raises(PeerRejected, match="report data is not SHA-256 of the evidence claims"):
        _client().verify_certificate(build_certificate(key, mismatched))


def test_legacy_carriers_read_through_attestation(vectors: object) -> None:
    assert isinstance(vectors, Vectors)
    der = parse_certificates(vectors.read(LEGACY))[0].der
    assert read_certificate(der).tagged is None
    assert read_certificate(_pem(der)).der == der


def test_certificate_ending_with_a_zero_byte_is_read() -> None:
    """A DER certificate may end with 0x00 (its signature's last byte): not padding."""
    key = ec.generate_private_key(ec.SECP256R1())
    evidence = _sim_evidence(spki_of(key))
    for _ in range(4000):
        der = build_certificate(key, evidence)
        if der.endswith(b"\x00"):
            break
    else:
        pytest.skip("no signature ending with a zero byte was drawn")
    assert read_certificate(der).der == der
    assert _client().verify_certificate(der).verified
    assert parse_certificates(der + b"\x00\x00")[0].der == der  # NUL padding still accepted
