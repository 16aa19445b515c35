"""The Enclave-TLS certificate: an X.509 certificate whose extension carries TEE evidence
bound to the certificate's key. Written in the interoperable format; read in every format.

Written (the format of rats-tls, Gramine and the Intel SGX SDK, after the TCG DICE
specification and the CCC interoperable RA-TLS draft):

- extension 2.23.133.5.4.9 (non-critical, as every implementation writes it), whose value is
  CBOR `tag([bstr evidence, bstr claims])`: tag 60000 for an Intel quote (SGX, TDX, sim),
  0x1A7504 for an SEV-SNP report;
- `claims` is a CBOR map of text keys to byte strings: "pubkey-hash" holds the CBOR array
  `[1, SHA-256(DER SubjectPublicKeyInfo)]` (1 is SHA-256 in IANA's Named Information
  registry); "nonce", when present, a session-specific value;
- the evidence's report data is SHA-256(claims, exactly as embedded) followed by 32 zeros;
- optional endorsements in extension 2.23.133.5.4.2: CBOR `tag(60000, [uint version,
  bstr TCB info, bstr its issuer chain, bstr PCK CRL, bstr root CA CRL, bstr the CRLs'
  issuer chain, bstr QE identity, bstr its issuer chain, ? bstr creation time])`.

Read: the above, and the legacy carriers the attestation package understands (the quote
under 1.2.840.113741.1337.6, also in Gramine's mis-encoding, Intel SGX SDK's copy under
1.2.840.113741.1.13.1, attestation-service reports). Reading is pure and bounded: it says
which evidence a certificate carries and where, so the right verifier can be chosen; the
verification itself is `inclavare.attestation`'s.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from inclavare.attestation import ratls
from inclavare.attestation.certificate import Certificate, parse_certificates
from inclavare.attestation.errors import AttestationInputError, MalformedEvidence
from inclavare.attestation.intel_quote import looks_like_quote, quote_tee
from inclavare.tls.errors import CertificateFormatError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

    from inclavare.attestation.collateral import Collateral

OID_TCG_TAGGED_EVIDENCE = ratls.OID_TCG_TAGGED_EVIDENCE
OID_TCG_ENDORSEMENTS = "2.23.133.5.4.2"

TAG_INTEL_QUOTE = ratls.TAG_INTEL_QUOTE
TAG_SNP_REPORT = ratls.TAG_SNP_REPORT

# Evidence types, named as the verifiers that check them.
SGX_ECDSA = "sgx_ecdsa"
TDX_ECDSA = "tdx_ecdsa"
SNP = "snp"
SIM = "sim"
SGX_EPID = "sgx_epid"
EVIDENCE_TYPE_OF_TEE = {
    "sgx": SGX_ECDSA,
    "tdx": TDX_ECDSA,
    "snp": SNP,
    "sim": SIM,
    "epid": SGX_EPID,
}

# Bounds: a certificate with a TDX quote and its PEM chain is about 6 KiB, one with
# endorsements a few tens of KiB. OpenSSL refuses certificate messages above 100 KiB.
MAX_CERTIFICATE_SIZE = 128 * 1024
MAX_CLAIMS = 64
SHA256_ID = 1

KEY_TYPES = ("ec-p256", "rsa-3072")

_ENDORSEMENT_FIELDS = (
    "tcb_info",
    "tcb_issuer_chain",
    "pck_crl",
    "root_ca_crl",
    "crl_issuer_chain",
    "qe_identity",
    "qe_identity_issuer_chain",
)


# --- claims and evidence ---------------------------------------------------------------


def hash_entry(spki: bytes) -> bytes:
    """The CBOR hash entry `[1, SHA-256(spki)]` that "pubkey-hash" holds."""
    import cbor2

    return cbor2.dumps([SHA256_ID, hashlib.sha256(spki).digest()])


def claims_buffer(
    spki: bytes, nonce: bytes | None = None, extra: Mapping[str, bytes] | None = None
) -> bytes:
    """The serialised claims binding evidence to the key `spki` (and to `nonce`, if given).

    "pubkey-hash" comes first, so that without a nonce or extra claims the bytes are those
    Gramine and the Intel SGX SDK write.
    """
    import cbor2

    claims: dict[str, bytes] = {"pubkey-hash": hash_entry(spki)}
    if nonce is not None:
        claims["nonce"] = bytes(nonce)
    for key, value in (extra or {}).items():
        if key in claims:
            raise ValueError(f"claim {key!r} is reserved")
        claims[key] = bytes(value)
    return cbor2.dumps(claims)


def report_data_for(claims: bytes) -> bytes:
    """The 64 bytes of report data that bind evidence to `claims`."""
    return hashlib.sha256(claims).digest() + bytes(32)


def tagged_evidence(tag: int, evidence: bytes, claims: bytes) -> bytes:
    """CBOR `tag([evidence, claims])`, the value of extension 2.23.133.5.4.9."""
    import cbor2

    return cbor2.dumps(cbor2.CBORTag(tag, [bytes(evidence), bytes(claims)]))


# --- endorsements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endorsements:
    """Intel PCS collateral travelling with the evidence (the documents as served, as bytes)."""

    tcb_info: bytes
    tcb_issuer_chain: bytes
    pck_crl: bytes
    root_ca_crl: bytes
    crl_issuer_chain: bytes
    qe_identity: bytes
    qe_identity_issuer_chain: bytes
    creation_datetime: bytes | None = None
    version: int = 1

    def encode(self) -> bytes:
        import cbor2

        items: list[object] = [self.version]
        items.extend(bytes(getattr(self, name)) for name in _ENDORSEMENT_FIELDS)
        if self.creation_datetime is not None:
            items.append(bytes(self.creation_datetime))
        return cbor2.dumps(cbor2.CBORTag(TAG_INTEL_QUOTE, items))

    def collateral(self) -> Collateral:
        """The endorsements as the verifier's collateral (signatures are checked there)."""
        from inclavare.attestation.collateral import parse_collateral

        files = {
            f"endorsements.{name}": getattr(self, name).rstrip(b"\0")
            for name in _ENDORSEMENT_FIELDS
            if getattr(self, name).rstrip(b"\0")
        }
        try:
            return parse_collateral(files)
        except AttestationInputError as error:
            raise CertificateFormatError(f"endorsements extension: {error}") from None


def decode_endorsements(data: bytes) -> Endorsements:
    value = _decode_cbor(data, "endorsements extension")
    import cbor2

    if not isinstance(value, cbor2.CBORTag) or value.tag != TAG_INTEL_QUOTE:
        raise CertificateFormatError(
            f"endorsements extension {OID_TCG_ENDORSEMENTS} is not CBOR tag {TAG_INTEL_QUOTE}"
        )
    items = value.value
    if not isinstance(items, list | tuple) or len(items) not in (8, 9):
        raise CertificateFormatError("endorsements must be an array of 8 or 9 items")
    version, *fields = items
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CertificateFormatError("endorsements version must be an unsigned integer")
    if not all(isinstance(item, bytes) for item in fields):
        raise CertificateFormatError("endorsements items after the version must be byte strings")
    return Endorsements(
        tcb_info=fields[0],
        tcb_issuer_chain=fields[1],
        pck_crl=fields[2],
        root_ca_crl=fields[3],
        crl_issuer_chain=fields[4],
        qe_identity=fields[5],
        qe_identity_issuer_chain=fields[6],
        creation_datetime=fields[7] if len(fields) == 8 else None,
        version=version,
    )


def _decode_cbor(data: bytes, what: str) -> object:
    import cbor2

    try:
        decoder = cbor2.CBORDecoder(io.BytesIO(data))
        value = decoder.decode()
        if decoder.fp.tell() != len(data):
            raise CertificateFormatError(f"{what} has bytes after its CBOR value")
    except CertificateFormatError:
        raise
    except (
        cbor2.CBORError,
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,
        KeyError,
        IndexError,
        EOFError,
        MemoryError,
    ) as error:
        raise CertificateFormatError(f"{what}: undecodable CBOR ({error})") from None
    return value


# --- writing ---------------------------------------------------------------------------


def build_certificate(
    private_key: CertificateIssuerPrivateKeyTypes,
    evidence: bytes | None,
    endorsements: bytes | None = None,
    common_name: str = "Inclavare Enclave-TLS",
    organisation: str = "Inclavare Containers",
    valid_for: timedelta = timedelta(days=7),
    now: datetime | None = None,
) -> bytes:
    """A self-signed certificate of `private_key` (DER) carrying `evidence` (tagged).

    Signed with SHA-256 (ECDSA, or RSA PKCS#1 v1.5). Without evidence the certificate is an
    ordinary self-signed one, as the null attester presents.
    """
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    moment = now or datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(secrets.randbits(127) | 1)
        .not_valid_before(moment - timedelta(minutes=5))
        .not_valid_after(moment + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
    )
    if evidence is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_TCG_TAGGED_EVIDENCE), evidence),
            critical=False,
        )
    if endorsements is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_TCG_ENDORSEMENTS), endorsements),
            critical=False,
        )
    certificate = builder.sign(private_key, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.DER)


def spki_of(private_key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of a private key's public half."""
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceCertificate:
    """What a certificate carries: which evidence, in which extensions, for which key."""

    der: bytes
    certificate: Certificate
    evidence_type: str | None  # None: the certificate carries no evidence
    carriers: tuple[str, ...]
    tagged: ratls.TaggedEvidence | None
    endorsements: Endorsements | None

    @property
    def spki(self) -> bytes:
        return self.certificate.spki

    @property
    def simulated(self) -> bool:
        return self.evidence_type == SIM


def read_certificate(data: bytes) -> EvidenceCertificate:
    """Read a certificate (DER or PEM) and find its evidence; malformed input is an error."""
    return _read_certificate(bytes(data))


# The result is an immutable value of the bytes alone, and a client meets the same server
# certificate in every session: one reading per distinct certificate is enough.
@functools.lru_cache(maxsize=256)
def _read_certificate(data: bytes) -> EvidenceCertificate:
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise CertificateFormatError(
            f"certificate too large ({len(data)} bytes; at most {MAX_CERTIFICATE_SIZE})"
        )
    try:
        certificates = parse_certificates(data)
    except MalformedEvidence as error:
        raise CertificateFormatError(f"not an X.509 certificate: {error}") from None
    except RecursionError:
        raise CertificateFormatError("not an X.509 certificate: nested too deeply") from None
    if not certificates:
        raise CertificateFormatError("not an X.509 certificate: no certificate found")
    certificate = certificates[0]
    evidence_type: str | None = None
    carriers: list[str] = []
    tagged: ratls.TaggedEvidence | None = None
    endorsements: Endorsements | None = None
    for extension in certificate.extensions:
        oid = extension.oid
        if oid == OID_TCG_TAGGED_EVIDENCE:
            tagged = _read_tagged(extension.value)
            evidence_type = _tagged_type(tagged)
            carriers.append(f"TCG DICE tagged evidence {oid}")
        elif oid == OID_TCG_ENDORSEMENTS:
            endorsements = decode_endorsements(extension.value)
            carriers.append(f"TCG DICE endorsements {oid}")
        elif oid in (ratls.OID_LEGACY_QUOTE, ratls.OID_LEGACY_QUOTE_MISENCODED) or (
            oid == ratls.OID_SGX_SDK_QUOTE and looks_like_quote(extension.value)
        ):
            if not looks_like_quote(extension.value):
                raise CertificateFormatError(f"extension {oid} does not hold a DCAP quote")
            carriers.append(f"legacy quote {oid}")
            if tagged is None:
                evidence_type = EVIDENCE_TYPE_OF_TEE[quote_tee(extension.value)]
        elif oid in (
            ratls.OID_NETSCAPE_COMMENT,
            ratls.OID_IAS_REPORT,
            ratls.OID_IAS_REPORT_MISENCODED,
        ):
            carriers.append(f"attestation service report {oid}")
            if evidence_type is None:
                evidence_type = SGX_EPID
    return EvidenceCertificate(
        der=certificate.der,
        certificate=certificate,
        evidence_type=evidence_type,
        carriers=tuple(carriers),
        tagged=tagged,
        endorsements=endorsements,
    )


def _read_tagged(value: bytes) -> ratls.TaggedEvidence:
    try:
        tagged = ratls.parse_tagged_evidence(value)
    except MalformedEvidence as error:
        raise CertificateFormatError(
            f"evidence extension {OID_TCG_TAGGED_EVIDENCE}: {error}"
        ) from None
    if len(tagged.claims) > MAX_CLAIMS:
        raise CertificateFormatError(f"evidence claims hold more than {MAX_CLAIMS} entries")
    if not isinstance(tagged.claims.get("pubkey-hash"), bytes):
        raise CertificateFormatError("evidence claims have no pubkey-hash byte string")
    return tagged


def _tagged_type(tagged: ratls.TaggedEvidence) -> str:
    if tagged.tag == TAG_INTEL_QUOTE:
        if not looks_like_quote(tagged.evidence):
            raise CertificateFormatError("evidence tagged as an Intel quote has no quote header")
        return EVIDENCE_TYPE_OF_TEE[quote_tee(tagged.evidence)]
    if tagged.tag == TAG_SNP_REPORT:
        return SNP
    known = f" ({tagged.kind})" if tagged.kind != f"CBOR tag {tagged.tag}" else ""
    raise CertificateFormatError(f"unknown evidence type: CBOR tag {tagged.tag}{known}")


def evidence_tag(evidence_type: str) -> int:
    """The CBOR tag that carries evidence of `evidence_type`."""
    return TAG_SNP_REPORT if evidence_type == SNP else TAG_INTEL_QUOTE
