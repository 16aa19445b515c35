"""The identity of a simulated platform: its certificates and keys, created once per host.

    Inclavare Sim Root CA (simulated TEE)              self-signed, ECDSA P-256
      Inclavare Sim PCK Platform CA (simulated TEE)    signed by the root
        Inclavare Sim PCK Certificate (simulated TEE)  signed by the platform CA; carries the
                                                       SGX extension (PPID, TCB, PCE-ID, FMSPC)

The PCK leaf key signs the quoting enclave's report; the attestation key (P-256) signs quotes.
The two CA keys are used only here, to issue the two certificates below them, and are then
forgotten: nothing can issue another certificate under this root. The platform secret (32
random bytes) is the root of report and sealing keys (keys.py).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

ROOT_CA_FILE = "root-ca.pem"
PCK_CHAIN_FILE = "pck-chain.pem"
PCK_KEY_FILE = "pck-leaf.key"
ATTESTATION_KEY_FILE = "attestation.key"
SECRET_FILE = "platform-secret"
PLATFORM_FILES = (ROOT_CA_FILE, PCK_CHAIN_FILE, PCK_KEY_FILE, ATTESTATION_KEY_FILE, SECRET_FILE)
SECRET_FILES = (PCK_KEY_FILE, ATTESTATION_KEY_FILE, SECRET_FILE)

ORGANIZATION = "Inclavare Containers (simulated TEE, no hardware protection)"
ROOT_NAME = "Inclavare Sim Root CA (simulated TEE)"
PCK_CA_NAME = "Inclavare Sim PCK Platform CA (simulated TEE)"
PCK_NAME = "Inclavare Sim PCK Certificate (simulated TEE)"
NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)

# The TCB the simulated platform claims; its PCK certificate and reports say the same.
SIM_CPU_SVN = bytes(16)
SIM_PCE_SVN = 1
SIM_QE_SVN = 1
SIM_PCE_ID = bytes(2)
SIM_FMSPC = b"\x00\x00\x00SIM"

OID_SGX_EXTENSIONS = "1.2.840.113741.1.13.1"


def create_platform_identity(now: datetime | None = None) -> dict[str, bytes]:
    """The files of a new platform identity, by name (see PLATFORM_FILES)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = (now or datetime.now(UTC)).replace(microsecond=0)
    not_before = now - timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    pck_ca_key = ec.generate_private_key(ec.SECP256R1())
    pck_key = ec.generate_private_key(ec.SECP256R1())
    attestation_key = ec.generate_private_key(ec.SECP256R1())

    root = _certificate(ROOT_NAME, root_key, ROOT_NAME, root_key, not_before, path_length=1)
    pck_ca = _certificate(PCK_CA_NAME, pck_ca_key, ROOT_NAME, root_key, not_before, path_length=0)
    sgx_extension = x509.UnrecognizedExtension(
        x509.ObjectIdentifier(OID_SGX_EXTENSIONS), sgx_extension_value(os.urandom(16))
    )
    pck = _certificate(
        PCK_NAME, pck_key, PCK_CA_NAME, pck_ca_key, not_before, extension=sgx_extension
    )

    def pem(certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(serialization.Encoding.PEM)

    def private(key: EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    return {
        ROOT_CA_FILE: pem(root),
        PCK_CHAIN_FILE: pem(pck) + pem(pck_ca) + pem(root),
        PCK_KEY_FILE: private(pck_key),
        ATTESTATION_KEY_FILE: private(attestation_key),
        SECRET_FILE: os.urandom(32),
    }


def _certificate(
    subject: str,
    subject_key: EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: EllipticCurvePrivateKey,
    not_before: datetime,
    path_length: int | None = None,
    extension: x509.UnrecognizedExtension | None = None,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            ]
        )

    is_ca = path_length is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=not is_ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
    )
    if extension is not None:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def sgx_extension_value(ppid: bytes) -> bytes:
    """DER of the PCK certificate's SGX extension for the simulated platform's TCB."""
    base = OID_SGX_EXTENSIONS
    tcb = [_pair(f"{base}.2.{index}", _integer(0)) for index in range(1, 17)]
    tcb.append(_pair(f"{base}.2.17", _integer(SIM_PCE_SVN)))
    tcb.append(_pair(f"{base}.2.18", _tlv(0x04, SIM_CPU_SVN)))
    return _sequence(
        _pair(f"{base}.1", _tlv(0x04, ppid)),
        _pair(f"{base}.2", _sequence(*tcb)),
        _pair(f"{base}.3", _tlv(0x04, SIM_PCE_ID)),
        _pair(f"{base}.4", _tlv(0x04, SIM_FMSPC)),
        _pair(f"{base}.5", _tlv(0x0A, b"\x00")),
    )


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _sequence(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _pair(oid: str, value: bytes) -> bytes:
    from inclavare.attestation.der import encode_oid

    return _sequence(_tlv(0x06, encode_oid(oid)), value)
