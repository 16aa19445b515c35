"""Enclave signatures: SGX's SIGSTRUCT with RSA-3072/e=3, and the signature file around it."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.tee.sim.errors import MalformedStructure, SignatureInvalid, SimError
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity, TrustedFile
from inclavare.tee.sim.sigstruct import (
    SIGSTRUCT_SIZE,
    EnclaveSignature,
    key_signer,
    mr_signer_of,
    parse_signature_file,
    parse_sigstruct,
    sign_enclave,
    sign_enclave_with,
    sign_with_throwaway_key,
)

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

MANIFEST = Manifest.of(
    RuntimeIdentity("builtin:native", "1"),
    [TrustedFile("/bin/app", hashlib.sha256(b"app").digest())],
)


@pytest.fixture(scope="module")
def signature(signing_key: bytes) -> EnclaveSignature:
    return sign_enclave(signing_key, MANIFEST, isv_prod_id=0x1234, isv_svn=7)


def test_signature_verifies_and_carries_the_signed_fields(signature: EnclaveSignature) -> None:
    signature.verify()
    sigstruct = signature.sigstruct
    assert sigstruct.enclave_hash == MANIFEST.mr_enclave
    assert (sigstruct.isv_prod_id, sigstruct.isv_svn, sigstruct.debug) == (0x1234, 7, False)
    assert len(sigstruct.raw) == SIGSTRUCT_SIZE


def test_mrsigner_is_the_sha256_of_the_little_endian_modulus(
    signature: EnclaveSignature, signing_key: bytes
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(signing_key, password=None)
    modulus = key.public_key().public_numbers().n  # type: ignore[union-attr]
    expected = hashlib.sha256(modulus.to_bytes(384, "little")).digest()
    assert signature.sigstruct.mr_signer == expected


def test_signature_is_standard_pkcs1_over_the_two_signed_regions(
    signature: EnclaveSignature, signing_key: bytes
) -> None:
    """Checked with `cryptography`, independently of the project's own e=3 verification."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(signing_key, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    raw = signature.sigstruct.raw
    assert raw[0:16] == bytes.fromhex("06000000e10000000000010000000000")
    assert struct.unpack_from("<I", raw, 512) == (3,)
    big_endian_signature = raw[516:900][::-1]
    key.public_key().verify(
        big_endian_signature, raw[0:128] + raw[900:1028], padding.PKCS1v15(), hashes.SHA256()
    )
    assert raw[960:992] == MANIFEST.mr_enclave
    assert struct.unpack_from("<HH", raw, 1024) == (0x1234, 7)


def test_signature_file_round_trips(signature: EnclaveSignature) -> None:
    parsed = parse_signature_file(signature.encode())
    parsed.verify()
    assert parsed.manifest == MANIFEST
    assert parsed.sigstruct.raw == signature.sigstruct.raw


def test_every_byte_of_the_signature_file_is_checked(signature: EnclaveSignature) -> None:
    encoded = signature.encode()
    for position in range(len(encoded)):
        tampered = bytearray(encoded)
        tampered[position] ^= 0xFF
        with pytest.raises(SimError):
            parse_signature_file(bytes(tampered)).verify()


@pytest.mark.parametrize(
    ("offset", "field"),
    [(928, "DEBUG attribute"), (1024, "ISVPRODID"), (1026, "ISVSVN"), (960, "MRENCLAVE")],
)
def test_signed_fields_cannot_change(signature: EnclaveSignature, offset: int, field: str) -> None:
    raw = bytearray(signature.sigstruct.raw)
    raw[offset] ^= 0x02
    with pytest.raises(SignatureInvalid, match="does not verify"):
        parse_sigstruct(bytes(raw)).verify()


def test_another_key_gives_another_mrsigner(
    signature: EnclaveSignature, other_signing_key: bytes
) -> None:
    other = sign_enclave(other_signing_key, MANIFEST, isv_prod_id=0x1234, isv_svn=7)
    other.verify()
    assert other.sigstruct.mr_signer != signature.sigstruct.mr_signer
    assert other.sigstruct.enclave_hash == signature.sigstruct.enclave_hash


def test_a_manifest_swapped_under_a_signature_is_refused(signature: EnclaveSignature) -> None:
    other = Manifest.of(MANIFEST.runtime, [TrustedFile("/bin/evil", bytes(32))])
    swapped = EnclaveSignature(signature.sigstruct, other, other.encode())
    with pytest.raises(SignatureInvalid, match="does not match the signed ENCLAVEHASH"):
        parse_signature_file(swapped.encode()).verify()


def test_unsigned_enclaves_get_a_throwaway_key_and_debug() -> None:
    first = sign_with_throwaway_key(MANIFEST)
    first.verify()
    assert first.sigstruct.debug
    second = sign_with_throwaway_key(MANIFEST)
    assert first.sigstruct.mr_signer != second.sigstruct.mr_signer


def test_keys_sgx_cannot_use_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    rsa2048 = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(SignatureInvalid, match="RSA-2048 with exponent 65537; SGX requires"):
        sign_enclave(rsa2048, MANIFEST)
    with pytest.raises(SignatureInvalid, match="not an RSA key"):
        sign_enclave(pem(ec.generate_private_key(ec.SECP256R1())), MANIFEST)
    with pytest.raises(SignatureInvalid, match="not an unencrypted PEM private key"):
        sign_enclave(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", MANIFEST)


def test_a_signer_callable_signs_as_the_key_does(signing_key: bytes) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 5, 1, tzinfo=UTC)
    seen: list[bytes] = []
    key = key_signer(signing_key)

    def remote(material: bytes) -> tuple[bytes, int]:
        seen.append(material)
        return key(material)

    by_key = sign_enclave(signing_key, MANIFEST, 3, 4, when=when)
    by_callable = sign_enclave_with(remote, MANIFEST, 3, 4, when=when)
    assert by_callable.encode() == by_key.encode()
    assert seen == [by_key.sigstruct.signed_bytes]
    assert mr_signer_of(by_key.sigstruct.modulus) == by_key.sigstruct.mr_signer


def test_a_signer_answer_that_does_not_verify_is_refused(signing_key: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = key_signer(signing_key)
    other = rsa.generate_private_key(public_exponent=3, key_size=3072).public_key()

    def wrong_modulus(material: bytes) -> tuple[bytes, int]:
        return key(material)[0], other.public_numbers().n

    def garbage(material: bytes) -> tuple[bytes, int]:
        return b"\x01" * 384, key(material)[1]

    def short_key(material: bytes) -> tuple[bytes, int]:
        return b"\x01", (1 << 2047) + 1

    for signer in (wrong_modulus, garbage):
        with pytest.raises(SignatureInvalid, match="the signer's signature does not verify"):
            sign_enclave_with(signer, MANIFEST)
    with pytest.raises(SignatureInvalid, match="the signer's key is RSA-2048 with exponent 3"):
        sign_enclave_with(short_key, MANIFEST)


def test_product_id_and_version_must_fit_16_bits(signing_key: bytes) -> None:
    with pytest.raises(MalformedStructure, match="ISVSVN 65536 does not fit 16 bits"):
        sign_enclave(signing_key, MANIFEST, isv_svn=65536)


@BOUNDED
@given(st.binary(max_size=2100))
def test_arbitrary_signature_files_fail_cleanly(data: bytes) -> None:
    for candidate in (data, b"INCLAVARE-SIGN-1" + data):
        with pytest.raises(SimError):
            parse_signature_file(candidate).verify()


@BOUNDED
@given(
    position=st.integers(min_value=0, max_value=SIGSTRUCT_SIZE - 1),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_sigstructs_fail_or_are_unchanged(
    signature: EnclaveSignature, position: int, value: int
) -> None:
    raw = bytearray(signature.sigstruct.raw)
    raw[position] = value
    try:
        parse_sigstruct(bytes(raw)).verify()
    except SimError:
        return
    assert bytes(raw) == signature.sigstruct.raw
