"""RA-TLS certificates: X.509 certificates whose extensions carry TEE evidence bound to the
certificate's key.

Carriers understood:

- TCG DICE tagged evidence (OID 2.23.133.5.4.9), the interoperable format: a CBOR tag
  (60000 Intel quote, 0x1A7504 SEV-SNP report) over [evidence, claims]. The claims are a CBOR
  map whose "pubkey-hash" holds [hash algorithm, hash of the certificate's
  SubjectPublicKeyInfo]; the evidence's report data is SHA-256(claims) then zeros.
- The legacy quote extension 1.2.840.113741.1337.6, also in Gramine's mis-encoding (the OID
  written twice, which parsers read as 0.6.9.42.840.113741.1337.6): the raw quote, with report
  data SHA-256(SubjectPublicKeyInfo) (or, in old rats-tls, of the PKCS#1 RSA key) then zeros.
- Intel SGX SDK's copy of the quote under 1.2.840.113741.1.13.1 (the PCK extension's OID).
- EPID attestation-service reports (see `epid`).

Every carrier present must hold; the evidence of the TCG extension, when there is one, gives
the verdict's claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from inclavare.attestation import der
from inclavare.attestation.certificate import (
    Certificate,
    parse_certificates,
    rsa_pkcs1_public_key_der,
)
from inclavare.attestation.chain import check_validity
from inclavare.attestation.errors import MalformedEvidence, VerificationFailed
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.intel_quote import looks_like_quote, parse_quote, quote_tee
from inclavare.attestation.verdict import Tee, Verdict

OID_TCG_TAGGED_EVIDENCE = "2.23.133.5.4.9"
OID_LEGACY_QUOTE = "1.2.840.113741.1337.6"
OID_LEGACY_QUOTE_MISENCODED = "0.6.9.42.840.113741.1337.6"
OID_SGX_SDK_QUOTE = "1.2.840.113741.1.13.1"
OID_NETSCAPE_COMMENT = "2.16.840.1.113730.1.13"
OID_IAS_REPORT = "1.2.840.113741.1337.2"
OID_IAS_REPORT_MISENCODED = "0.6.9.42.840.113741.1337.2"

TAG_INTEL_QUOTE = 60000
TAG_INTEL_REPORT = 60001
TAG_SGX_EREPORT = 60002
TAG_SNP_REPORT = 0x1A7504
TAG_NAMES = {
    TAG_INTEL_QUOTE: "Intel TEE quote",
    TAG_INTEL_REPORT: "Intel TEE report",
    TAG_SGX_EREPORT: "SGX EREPORT",
    TAG_SNP_REPORT: "SEV-SNP report",
    0x1A7505: "AMD SEV report",
    0x1A7506: "Hygon CSV report",
}

# Named Information hash algorithm ids (IANA) used by "pubkey-hash".
HASH_ALGORITHMS = {1: "sha256", 7: "sha384", 8: "sha512"}

_TAG_PREFIXES: dict[bytes, Tee] = {
    b"\xd9\xea\x60": "sgx",
    b"\xd9\xea\x61": "sgx",
    b"\xd9\xea\x62": "sgx",
    b"\xda\x00\x1a\x75\x04": "snp",
}


@dataclass(frozen=True)
class TaggedEvidence:
    tag: int
    evidence: bytes
    claims_buffer: bytes  # the exact serialised claims, as hashed into the report data
    claims: Mapping[str, object]

    @property
    def kind(self) -> str:
        return TAG_NAMES.get(self.tag, f"CBOR tag {self.tag}")


def looks_like_certificate(data: bytes) -> bool:
    """PEM text (even with damaged armour) or a DER SEQUENCE."""
    if len(data) > 64 and data[0] == der.SEQUENCE and data[1] in (0x81, 0x82, 0x83):
        return True
    return data.lstrip().startswith(b"-") or b"-----BEGIN " in data or b"-----END " in data


def looks_like_tagged_evidence(data: bytes) -> bool:
    return any(data.startswith(prefix) for prefix in _TAG_PREFIXES)


def guess_tee(data: bytes) -> Tee:
    """The TEE a certificate or tagged evidence most likely comes from, for failed verdicts."""
    if looks_like_tagged_evidence(data):
        return _tagged_tee(data)
    try:
        certificate = parse_certificates(data)[0]
    except MalformedEvidence:
        return "sgx"
    for extension in certificate.extensions:
        if extension.oid == OID_TCG_TAGGED_EVIDENCE:
            return _tagged_tee(extension.value)
        if extension.oid in (OID_NETSCAPE_COMMENT, OID_IAS_REPORT, OID_IAS_REPORT_MISENCODED):
            return "epid"
    return "sgx"


def _tagged_tee(data: bytes) -> Tee:
    try:
        tagged = parse_tagged_evidence(data)
    except MalformedEvidence:
        return "snp" if data.startswith(b"\xda\x00\x1a\x75\x04") else "sgx"
    if tagged.tag == TAG_SNP_REPORT:
        return "snp"
    return quote_tee(tagged.evidence) if len(tagged.evidence) >= 8 else "sgx"


def parse_tagged_evidence(data: bytes) -> TaggedEvidence:
    """Decode `tag([evidence, claims])` and the claims map, strictly."""
    import io

    import cbor2

    try:
        decoder = cbor2.CBORDecoder(io.BytesIO(data))
        value = decoder.decode()
        if decoder.fp.tell() != len(data):
            raise MalformedEvidence("tagged evidence has bytes after its CBOR value")
        if not isinstance(value, cbor2.CBORTag):
            raise MalformedEvidence("tagged evidence is not a CBOR tag")
        content = value.value
        if (
            not isinstance(content, list | tuple)
            or len(content) != 2
            or not all(isinstance(item, bytes) for item in content)
        ):
            raise MalformedEvidence("tagged evidence must be an array of two byte strings")
        evidence, claims_buffer = content
        claims = cbor2.loads(claims_buffer)
    except MalformedEvidence:
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
    ) as error:
        raise MalformedEvidence(f"undecodable CBOR in tagged evidence: {error}") from None
    if not isinstance(claims, Mapping) or not all(isinstance(key, str) for key in claims):
        raise MalformedEvidence("tagged evidence claims must be a map with text keys")
    return TaggedEvidence(int(value.tag), evidence, claims_buffer, dict(claims))


def check_certificate(data: bytes, inputs: VerificationInputs) -> Verdict:
    certificates = parse_certificates(data)
    certificate = certificates[0]
    warnings: list[str] = []
    _check_certificate_signature(certificate, certificates[1:], inputs, warnings)
    check_validity(certificate, inputs.at)

    from inclavare.attestation import epid

    verdicts: list[Verdict] = []
    carriers: list[str] = []
    tcg_verdict: Verdict | None = None
    for extension in certificate.extensions:
        if extension.oid == OID_TCG_TAGGED_EVIDENCE:
            tcg_verdict = _check_tcg_extension(certificate, extension.value, inputs)
            verdicts.append(tcg_verdict)
            carriers.append("TCG DICE tagged evidence")
        elif extension.oid in (OID_LEGACY_QUOTE, OID_LEGACY_QUOTE_MISENCODED) or (
            extension.oid == OID_SGX_SDK_QUOTE and looks_like_quote(extension.value)
        ):
            verdicts.append(_check_legacy_quote(certificate, extension.value, inputs))
            carriers.append(f"quote extension {extension.oid}")
        elif extension.oid in (OID_NETSCAPE_COMMENT, OID_IAS_REPORT, OID_IAS_REPORT_MISENCODED):
            verdicts.append(epid.check_ias_certificate(certificate, inputs))
            carriers.append("attestation service report")
            break  # one report per certificate, however many extensions it spans
    if not verdicts:
        raise VerificationFailed(
            f"certificate {certificate.common_name!r} carries no attestation evidence"
        )
    primary = tcg_verdict or verdicts[0]
    for verdict in verdicts:
        for warning in verdict.warnings:
            if warning not in warnings:
                warnings.append(warning)
    if len(carriers) > 1:
        warnings.append("evidence verified in: " + ", ".join(carriers))
    return Verdict(
        verified=True,
        tee=primary.tee,
        claims=primary.claims,
        tcb_status=primary.tcb_status,
        chain=primary.chain,
        warnings=tuple(warnings),
    )


def _check_certificate_signature(
    certificate: Certificate,
    bundled: list[Certificate],
    inputs: VerificationInputs,
    warnings: list[str],
) -> None:
    """The certificate must be signed by its own key, or by an issuer given with it.

    Only certificates carrying an attestation-service report are let through without: their
    issuer is an enclave key published nowhere, and the report itself is signed by Intel.
    """
    if certificate.signature_verified_by(certificate.public_key()):
        return
    for issuer in [*bundled, *inputs.ca_certificates]:
        if issuer.subject_der == certificate.issuer_der and certificate.signature_verified_by(
            issuer.public_key()
        ):
            warnings.append(
                f"certificate {certificate.common_name!r} is issued by {issuer.subject}"
            )
            return
    if certificate.is_self_issued or not _carries_ias_report(certificate):
        raise VerificationFailed(
            f"the signature of certificate {certificate.common_name!r} does not verify with its "
            "own key or with a given issuer's"
        )
    warnings.append(
        f"certificate {certificate.common_name!r} is issued by {certificate.issuer}, "
        "whose key is not given: its signature was not checked"
    )


def _carries_ias_report(certificate: Certificate) -> bool:
    return any(
        extension.oid in (OID_NETSCAPE_COMMENT, OID_IAS_REPORT, OID_IAS_REPORT_MISENCODED)
        for extension in certificate.extensions
    )


def _check_tcg_extension(
    certificate: Certificate, value: bytes, inputs: VerificationInputs
) -> Verdict:
    return check_bound_tagged_evidence(value, certificate.spki, inputs)


def check_bound_tagged_evidence(
    data: bytes, spki: bytes, inputs: VerificationInputs, nonce: bytes | None = None
) -> Verdict:
    """Tagged evidence bound to the key `spki` (a DER SubjectPublicKeyInfo).

    The claims' pubkey-hash must be the hash of `spki`; when `nonce` is given, the claims'
    nonce must be exactly `nonce` (evidence made for another session or challenge fails).
    Raises `VerificationFailed` or `MalformedEvidence` naming the first failed check.
    """
    tagged = parse_tagged_evidence(data)
    check_key_binding(tagged, spki)
    if nonce is not None:
        claimed = tagged.claims.get("nonce")
        if not isinstance(claimed, bytes):
            raise VerificationFailed(
                "the evidence claims have no nonce, but a fresh one is required"
            )
        if claimed != nonce:
            raise VerificationFailed(
                "evidence replayed: its nonce is not the one expected (made for another session)"
            )
    verdict = _check_tagged(tagged, inputs)
    claims = dict(verdict.claims)
    claimed_nonce = tagged.claims.get("nonce")
    if isinstance(claimed_nonce, bytes):
        claims["nonce"] = claimed_nonce.hex()
    return Verdict(
        True, verdict.tee, None, claims, verdict.tcb_status, verdict.chain, verdict.warnings
    )


def check_key_binding(tagged: TaggedEvidence, spki: bytes) -> None:
    """The claims' pubkey-hash must be the hash of `spki` (a DER SubjectPublicKeyInfo)."""
    pubkey_hash = tagged.claims.get("pubkey-hash")
    if not isinstance(pubkey_hash, bytes):
        raise VerificationFailed("the evidence claims have no pubkey-hash")
    algorithm, digest = _hash_entry(pubkey_hash)
    if hashlib.new(algorithm, spki).digest() != digest:
        raise VerificationFailed(
            "the evidence's pubkey-hash is not the hash of the certificate's public key"
        )


def _hash_entry(encoded: bytes) -> tuple[str, bytes]:
    import cbor2

    try:
        entry = cbor2.loads(encoded)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, EOFError):
        raise MalformedEvidence("pubkey-hash is not a CBOR hash entry") from None
    if (
        not isinstance(entry, list | tuple)
        or len(entry) != 2
        or not isinstance(entry[0], int)
        or not isinstance(entry[1], bytes)
    ):
        raise MalformedEvidence("pubkey-hash must be [hash algorithm, hash value]")
    algorithm = HASH_ALGORITHMS.get(entry[0])
    if algorithm is None:
        raise VerificationFailed(f"pubkey-hash uses an unsupported hash algorithm {entry[0]}")
    return algorithm, entry[1]


def _check_tagged(tagged: TaggedEvidence, inputs: VerificationInputs) -> Verdict:
    """Verify the evidence inside tagged evidence and its binding to the claims."""
    binding = hashlib.sha256(tagged.claims_buffer).digest() + bytes(32)
    if tagged.tag == TAG_INTEL_QUOTE:
        from inclavare.attestation import dcap

        quote = parse_quote(tagged.evidence)
        if quote.body.report_data != binding:
            raise VerificationFailed(
                "the quote's report data is not SHA-256 of the evidence claims"
            )
        return dcap.check_quote(quote, inputs)
    if tagged.tag == TAG_SNP_REPORT:
        from inclavare.attestation import snp

        report = snp.parse_report(tagged.evidence)
        if report.report_data != binding:
            raise VerificationFailed(
                "the SEV-SNP report data is not SHA-256 of the evidence claims"
            )
        return snp.check_report(report, inputs)
    raise VerificationFailed(f"{tagged.kind} evidence cannot be verified remotely by this verifier")


def check_tagged_evidence(data: bytes, inputs: VerificationInputs) -> Verdict:
    """Tagged evidence on its own (outside a certificate): the claims binding is still checked."""
    tagged = parse_tagged_evidence(data)
    verdict = _check_tagged(tagged, inputs)
    return verdict.with_warnings("evidence outside a certificate: no key binding was checked")


def _check_legacy_quote(
    certificate: Certificate, value: bytes, inputs: VerificationInputs
) -> Verdict:
    from inclavare.attestation import dcap

    quote = parse_quote(value)
    report_data = quote.body.report_data
    accepted = [hashlib.sha256(certificate.spki).digest()]
    pkcs1 = rsa_pkcs1_public_key_der(certificate.spki)
    if pkcs1 is not None:
        accepted.append(hashlib.sha256(pkcs1).digest())
    if report_data[32:] != bytes(32) or report_data[:32] not in accepted:
        raise VerificationFailed(
            "the quote's report data is not the SHA-256 of the certificate's public key"
        )
    return dcap.check_quote(quote, inputs)
