"""X.509 certificates read from their DER bytes, and the signature checks chains need.

Certificates are walked with the project's own DER reader rather than loaded by
`cryptography`: AMD's VCEKs have serial number 0 (which `cryptography` deprecates) and
Gramine's RA-TLS certificates cannot be loaded by it at all. `cryptography` is still what
checks every signature, from the raw bytes this module extracts.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING

from inclavare.attestation import der
from inclavare.attestation.errors import MalformedEvidence

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

OID_BASIC_CONSTRAINTS = "2.5.29.19"

_NAME_ATTRIBUTES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.5": "serialNumber",
    "1.2.840.113549.1.9.1": "emailAddress",
}

_HASHES = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_ECDSA = {
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}
_RSA_PKCS1 = {
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_MGF1 = "1.2.840.113549.1.1.8"
_ED25519 = "1.3.101.112"

PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\r\n\t ]*?)-----END CERTIFICATE-----"
)
_PEM_WHITESPACE = re.compile(rb"[\r\n\t ]*")


@dataclass(frozen=True)
class SignatureAlgorithm:
    """An AlgorithmIdentifier as found in a certificate: its OID and raw parameters."""

    oid: str
    parameters: bytes

    @property
    def name(self) -> str:
        if self.oid in _ECDSA:
            return f"ecdsa-with-{_ECDSA[self.oid].upper()}"
        if self.oid in _RSA_PKCS1:
            return f"{_RSA_PKCS1[self.oid]}WithRSAEncryption"
        if self.oid == _RSA_PSS:
            return "RSASSA-PSS"
        if self.oid == _ED25519:
            return "Ed25519"
        return self.oid


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the content of extnValue


@dataclass(frozen=True)
class Certificate:
    """The parts of an X.509 certificate a verifier needs, with the exact bytes they came from."""

    der: bytes
    tbs: bytes
    serial: int
    issuer_der: bytes
    subject_der: bytes
    not_before: datetime
    not_after: datetime
    spki: bytes
    signature_algorithm: SignatureAlgorithm
    signature: bytes
    extensions: tuple[Extension, ...] = field(repr=False)

    @classmethod
    def from_der(cls, data: bytes) -> Certificate:
        return _parse_certificate(bytes(data))

    @cached_property
    def subject(self) -> str:
        return format_name(self.subject_der)

    @cached_property
    def issuer(self) -> str:
        return format_name(self.issuer_der)

    @cached_property
    def spki_sha256(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo: how roots are pinned."""
        return hashlib.sha256(self.spki).hexdigest()

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @cached_property
    def common_name(self) -> str:
        return _common_name(self.subject_der) or self.subject

    @property
    def is_self_issued(self) -> bool:
        return self.issuer_der == self.subject_der

    def extension(self, oid: str) -> Extension | None:
        for extension in self.extensions:
            if extension.oid == oid:
                return extension
        return None

    def is_ca(self) -> bool | None:
        """The basicConstraints cA flag, or None when the extension is absent."""
        extension = self.extension(OID_BASIC_CONSTRAINTS)
        if extension is None:
            return None
        fields = der.parse_single(extension.value, "basicConstraints").children()
        return (
            bool(fields) and fields[0].tag == der.BOOLEAN and der.decode_boolean(fields[0].content)
        )

    def public_key(self) -> PublicKeyTypes:
        return self._public_key

    @cached_property
    def _public_key(self) -> PublicKeyTypes:
        return load_public_key(self.spki)

    def signature_verified_by(self, issuer_key: PublicKeyTypes) -> bool:
        return verify_signature(issuer_key, self.signature_algorithm, self.signature, self.tbs)


def load_public_key(spki: bytes) -> PublicKeyTypes:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        return load_der_public_key(spki)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise MalformedEvidence(f"unusable public key: {error}") from None


def parse_certificates(data: bytes, strict: bool = False) -> list[Certificate]:
    """Every certificate in `data`: PEM blocks, or one or more concatenated DER certificates.

    Strict parsing (for certificates inside signed evidence) allows nothing but whitespace
    around PEM blocks, so that no byte of the evidence goes unexamined.
    """
    return list(_parse_certificates(bytes(data), strict))


@functools.lru_cache(maxsize=256)
def _parse_certificates(data: bytes, strict: bool) -> tuple[Certificate, ...]:
    if data[:1] == bytes([der.SEQUENCE]) or b"-----BEGIN" not in data:
        # DER, even when a certificate holds PEM text (a quote's PCK chain) somewhere inside.
        # NULs after the last certificate (C strings) are padding; a certificate may itself
        # end with a zero byte (its signature's last byte), so nothing is stripped blindly.
        certificates = []
        offset = 0
        while offset < len(data) and data[offset:].strip(b"\x00"):
            tlv, offset = der.read_tlv(data, offset)
            certificates.append(Certificate.from_der(tlv.encoded))
        return tuple(certificates)
    data = data.rstrip(b"\x00")
    certificates = []
    position = 0
    for match in PEM_CERTIFICATE.finditer(data):
        if strict and not _PEM_WHITESPACE.fullmatch(data, position, match.start()):
            raise MalformedEvidence("unexpected text between PEM certificates")
        certificates.append(Certificate.from_der(_decode_base64(match.group(1))))
        position = match.end()
    if strict and not _PEM_WHITESPACE.fullmatch(data, position):
        raise MalformedEvidence("unexpected text after the PEM certificates")
    if not certificates:
        raise MalformedEvidence("PEM text holds no certificate")
    return tuple(certificates)


def _decode_base64(text: bytes) -> bytes:
    """Decode base64, accepting only its canonical form (one encoding per certificate)."""
    import base64
    import binascii

    joined = b"".join(text.split())
    try:
        decoded = base64.b64decode(joined, validate=True)
    except binascii.Error:
        raise MalformedEvidence("PEM certificate with invalid base64") from None
    if base64.b64encode(decoded) != joined:
        raise MalformedEvidence("PEM certificate with non-canonical base64")
    return decoded


# Certificates are immutable values, so one parse per distinct encoding is enough: a verifier
# sees the same PCK and AMD certificates again with every quote or report from a platform.
@functools.lru_cache(maxsize=1024)
def _parse_certificate(data: bytes) -> Certificate:
    outer = der.parse_single(data, "certificate").expect(der.SEQUENCE, "certificate")
    parts = outer.children()
    if len(parts) != 3:
        raise MalformedEvidence("certificate must have 3 parts")
    tbs, outer_algorithm, signature_value = parts
    tbs.expect(der.SEQUENCE, "tbsCertificate")
    fields = tbs.children()
    index = 0
    if fields and fields[0].tag == der.context(0):
        index = 1
    if len(fields) < index + 6:
        raise MalformedEvidence("tbsCertificate has too few fields")
    serial = der.decode_integer(fields[index].expect(der.INTEGER, "serialNumber").content)
    inner_algorithm = fields[index + 1].expect(der.SEQUENCE, "signature algorithm")
    if inner_algorithm.encoded != outer_algorithm.encoded:
        raise MalformedEvidence("certificate signature algorithm differs inside and outside TBS")
    issuer = fields[index + 2].expect(der.SEQUENCE, "issuer")
    validity = fields[index + 3].expect(der.SEQUENCE, "validity").children()
    subject = fields[index + 4].expect(der.SEQUENCE, "subject")
    spki = fields[index + 5].expect(der.SEQUENCE, "subjectPublicKeyInfo")
    if len(validity) != 2:
        raise MalformedEvidence("validity must hold two times")
    extensions: list[Extension] = []
    for extra in fields[index + 6 :]:
        if extra.tag == der.context(3):
            extensions.extend(_parse_extensions(extra))
    return Certificate(
        der=data,
        tbs=tbs.encoded,
        serial=serial,
        issuer_der=issuer.encoded,
        subject_der=subject.encoded,
        not_before=parse_time(validity[0]),
        not_after=parse_time(validity[1]),
        spki=spki.encoded,
        signature_algorithm=_parse_algorithm(outer_algorithm),
        signature=der.decode_bit_string(
            signature_value.expect(der.BIT_STRING, "signature").content
        ),
        extensions=tuple(extensions),
    )


def _parse_algorithm(tlv: der.Tlv) -> SignatureAlgorithm:
    parts = tlv.expect(der.SEQUENCE, "AlgorithmIdentifier").children()
    if not parts or len(parts) > 2:
        raise MalformedEvidence("malformed AlgorithmIdentifier")
    oid = der.decode_oid(parts[0].expect(der.OID, "algorithm").content)
    return SignatureAlgorithm(oid, parts[1].encoded if len(parts) == 2 else b"")


def _parse_extensions(wrapper: der.Tlv) -> list[Extension]:
    inner = wrapper.children()
    if len(inner) != 1:
        raise MalformedEvidence("extensions field must hold one SEQUENCE")
    sequence = inner[0]
    extensions = []
    for item in sequence.expect(der.SEQUENCE, "extensions").children():
        parts = item.expect(der.SEQUENCE, "extension").children()
        if len(parts) not in (2, 3):
            raise MalformedEvidence("malformed extension")
        oid = der.decode_oid(parts[0].expect(der.OID, "extnID").content)
        critical = len(parts) == 3 and der.decode_boolean(
            parts[1].expect(der.BOOLEAN, "critical").content
        )
        value = parts[-1].expect(der.OCTET_STRING, "extnValue").content
        extensions.append(Extension(oid, critical, value))
    return extensions


def parse_time(tlv: der.Tlv) -> datetime:
    try:
        text = tlv.content.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEvidence("non-ASCII time in certificate") from None
    if not text.endswith("Z"):
        raise MalformedEvidence(f"certificate time {text!r} is not in UTC")
    digits = text[:-1]
    try:
        if tlv.tag == der.UTC_TIME and len(digits) == 12:
            year = int(digits[:2])
            year += 1900 if year >= 50 else 2000
            rest = digits[2:]
        elif tlv.tag == der.GENERALIZED_TIME and len(digits) >= 14:
            year = int(digits[:4])
            rest = digits[4:14]
        else:
            raise ValueError
        return datetime(
            year,
            int(rest[0:2]),
            int(rest[2:4]),
            int(rest[4:6]),
            int(rest[6:8]),
            int(rest[8:10]),
            tzinfo=UTC,
        )
    except ValueError:
        raise MalformedEvidence(f"malformed certificate time {text!r}") from None


def _name_attributes(name_der: bytes) -> list[tuple[str, str]]:
    attributes = []
    for rdn in der.parse_single(name_der, "name").children():
        for attribute in rdn.expect(der.SET, "RDN").children():
            parts = attribute.expect(der.SEQUENCE, "attribute").children()
            if len(parts) != 2:
                raise MalformedEvidence("malformed name attribute")
            oid = der.decode_oid(parts[0].expect(der.OID, "attribute type").content)
            attributes.append((_NAME_ATTRIBUTES.get(oid, oid), der.decode_string(parts[1])))
    return attributes


def format_name(name_der: bytes) -> str:
    """A distinguished name in RFC 4514 order (most specific first), e.g. `CN=x,O=y,C=US`."""
    rendered = [f"{key}={_escape(value)}" for key, value in _name_attributes(name_der)]
    return ",".join(reversed(rendered))


def _common_name(name_der: bytes) -> str | None:
    for key, value in _name_attributes(name_der):
        if key == "CN":
            return value
    return None


def _escape(value: str) -> str:
    escaped = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def _hash_algorithm(name: str) -> HashAlgorithm:
    from cryptography.hazmat.primitives import hashes

    algorithms: dict[str, HashAlgorithm] = {
        "sha1": hashes.SHA1(),
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }
    return algorithms[name]


def _pss_parameters(parameters: bytes) -> tuple[str, str, int]:
    """(hash, MGF1 hash, salt length) of RSASSA-PSS parameters, with the RFC 4055 defaults."""
    hash_name, mgf_hash, salt = "sha1", "sha1", 20
    for item in der.parse_single(parameters, "RSASSA-PSS parameters").children():
        wrapped = item.children()
        if len(wrapped) != 1:
            raise MalformedEvidence("malformed RSASSA-PSS parameter")
        inner = wrapped[0]
        if item.tag == der.context(0):
            hash_name = _hash_name(inner)
        elif item.tag == der.context(1):
            mgf = inner.expect(der.SEQUENCE, "maskGenAlgorithm").children()
            if len(mgf) != 2 or der.decode_oid(mgf[0].content) != _MGF1:
                raise MalformedEvidence("RSASSA-PSS mask generation is not MGF1")
            mgf_hash = _hash_name(mgf[1])
        elif item.tag == der.context(2):
            salt = der.decode_integer(inner.expect(der.INTEGER, "saltLength").content)
    if salt < 0:
        raise MalformedEvidence("negative RSASSA-PSS salt length")
    return hash_name, mgf_hash, salt


def _hash_name(algorithm: der.Tlv) -> str:
    parts = algorithm.expect(der.SEQUENCE, "hash algorithm").children()
    oid = der.decode_oid(parts[0].expect(der.OID, "hash algorithm").content) if parts else ""
    if oid not in _HASHES:
        raise MalformedEvidence(f"unsupported hash algorithm {oid}")
    return _HASHES[oid]


def verify_signature(
    key: PublicKeyTypes, algorithm: SignatureAlgorithm, signature: bytes, message: bytes
) -> bool:
    """Whether `signature` over `message` verifies with `key` under a certificate algorithm."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if algorithm.oid in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(_hash_algorithm(_ECDSA[algorithm.oid])))
        elif algorithm.oid in _RSA_PKCS1 and isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature, message, padding.PKCS1v15(), _hash_algorithm(_RSA_PKCS1[algorithm.oid])
            )
        elif algorithm.oid == _RSA_PSS and isinstance(key, rsa.RSAPublicKey):
            hash_name, mgf_hash, salt = _pss_parameters(algorithm.parameters)
            pss = padding.PSS(mgf=padding.MGF1(_hash_algorithm(mgf_hash)), salt_length=salt)
            key.verify(signature, message, pss, _hash_algorithm(hash_name))
        elif algorithm.oid == _ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return False
    except InvalidSignature:
        return False
    except ValueError:  # a signature that is not even well-formed DER
        return False
    return True


def rsa_pkcs1_public_key_der(spki: bytes) -> bytes | None:
    """The PKCS#1 RSAPublicKey inside an RSA SubjectPublicKeyInfo (None for other keys)."""
    parts = der.parse_single(spki, "SubjectPublicKeyInfo").children()
    if len(parts) != 2:
        raise MalformedEvidence("malformed SubjectPublicKeyInfo")
    algorithm = parts[0].children()
    if not algorithm or der.decode_oid(algorithm[0].content) != "1.2.840.113549.1.1.1":
        return None
    return der.decode_bit_string(parts[1].content)


def public_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey bits of a SubjectPublicKeyInfo (for EC keys: the encoded point)."""
    parts = der.parse_single(spki, "SubjectPublicKeyInfo").children()
    if len(parts) != 2:
        raise MalformedEvidence("malformed SubjectPublicKeyInfo")
    return der.decode_bit_string(parts[1].expect(der.BIT_STRING, "subjectPublicKey").content)


def subjects(chain: Sequence[Certificate]) -> tuple[str, ...]:
    return tuple(certificate.subject for certificate in chain)
