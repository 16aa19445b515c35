"""Intel SGX EPID attestation: reports of Intel's attestation service (IAS), legacy.

An EPID quote cannot be checked offline; what can be checked is IAS's report about it: a JSON
document signed (RSA PKCS#1 v1.5, SHA-256, over its exact bytes) by "Intel SGX Attestation
Report Signing", whose certificate chains to the pinned Intel SGX Attestation Report Signing
CA. The report carries the first 432 bytes of the quote: its header and the enclave's report
body.

RA-TLS certificates carry the report in one of two ways: the Netscape Comment extension
holding `report|base64(signature)|base64(DER signing certificate)` (Integritee, Teaclave), or
the sgx-ra-tls extensions 1.2.840.113741.1337.2 (report), .4 (signing certificate) and .5
(signature).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from inclavare.attestation import der
from inclavare.attestation.certificate import (
    Certificate,
    SignatureAlgorithm,
    parse_certificates,
    public_key_bits,
    verify_signature,
)
from inclavare.attestation.chain import verify_chain
from inclavare.attestation.errors import MalformedEvidence, MissingInput, VerificationFailed
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.intel_quote import SgxReportBody
from inclavare.attestation.trust import Authority
from inclavare.attestation.verdict import ClaimValue, Verdict

OID_NETSCAPE_COMMENT = "2.16.840.1.113730.1.13"
_RA_TLS_ARC = ("1.2.840.113741.1337.", "0.6.9.42.840.113741.1337.")
REPORT, SIGNING_CERTIFICATE, SIGNATURE = "2", "4", "5"

_SHA256_WITH_RSA = SignatureAlgorithm("1.2.840.113549.1.1.11", b"")

# isvEnclaveQuoteStatus -> TCB status; statuses missing here mean the quote is not genuine.
QUOTE_STATUSES = {
    "OK": "UpToDate",
    "SW_HARDENING_NEEDED": "SWHardeningNeeded",
    "CONFIGURATION_NEEDED": "ConfigurationNeeded",
    "CONFIGURATION_AND_SW_HARDENING_NEEDED": "ConfigurationAndSWHardeningNeeded",
    "GROUP_OUT_OF_DATE": "OutOfDate",
}

QUOTE_BODY_SIZE = 432


@dataclass(frozen=True)
class EpidQuoteHeader:
    version: int
    sign_type: int
    epid_group_id: bytes
    qe_svn: int
    pce_svn: int
    extended_epid_group_id: int
    basename: bytes


@dataclass(frozen=True)
class IasReport:
    raw: bytes
    id: str
    timestamp: datetime
    version: int
    quote_status: str
    header: EpidQuoteHeader
    body: SgxReportBody
    nonce: str | None
    advisory_ids: tuple[str, ...]


def parse_ias_report(raw: bytes) -> IasReport:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedEvidence(f"attestation report is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise MalformedEvidence("attestation report is not a JSON object")
    try:
        quote = base64.b64decode(document["isvEnclaveQuoteBody"], validate=True)
        timestamp = datetime.fromisoformat(str(document["timestamp"]))
        status = str(document["isvEnclaveQuoteStatus"])
        version = int(document.get("version", 0))
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise MalformedEvidence(f"attestation report lacks a valid field: {error}") from None
    if len(quote) != QUOTE_BODY_SIZE:
        raise MalformedEvidence(
            f"attestation report quote body must be {QUOTE_BODY_SIZE} bytes, got {len(quote)}"
        )
    header = EpidQuoteHeader(
        version=int.from_bytes(quote[0:2], "little"),
        sign_type=int.from_bytes(quote[2:4], "little"),
        epid_group_id=quote[4:8],
        qe_svn=int.from_bytes(quote[8:10], "little"),
        pce_svn=int.from_bytes(quote[10:12], "little"),
        extended_epid_group_id=int.from_bytes(quote[12:16], "little"),
        basename=quote[16:48],
    )
    nonce = document.get("nonce")
    return IasReport(
        raw=raw,
        id=str(document.get("id", "")),
        timestamp=timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC),
        version=version,
        quote_status=status,
        header=header,
        body=SgxReportBody.parse(quote[48:]),
        nonce=None if nonce is None else str(nonce),
        advisory_ids=tuple(str(item) for item in document.get("advisoryIDs", ()) or ()),
    )


def check_ias_report(
    raw_report: bytes,
    signature: bytes,
    signing_certificates: list[Certificate],
    inputs: VerificationInputs,
) -> Verdict:
    report = parse_ias_report(raw_report)
    pool = signing_certificates + list(inputs.ca_certificates)
    if not signing_certificates:
        raise VerificationFailed("the attestation report comes without its signing certificate")
    signer = signing_certificates[0]
    if not verify_signature(signer.public_key(), _SHA256_WITH_RSA, signature, raw_report):
        raise VerificationFailed(
            f"the attestation report signature does not verify with {signer.common_name!r}"
        )
    if not any(
        inputs.trust.anchor_for(certificate.spki_sha256, Authority.INTEL_IAS)
        for certificate in pool
    ):
        raise MissingInput(
            "checking an attestation report needs the Intel SGX Attestation Report Signing CA "
            "certificate: give it with --ca-chain FILE"
        )
    chain = verify_chain(signer, pool, inputs.trust, Authority.INTEL_IAS, inputs.at, inputs.cache)
    if report.timestamp > inputs.at:
        raise VerificationFailed(
            f"the attestation report is dated {report.timestamp.isoformat()}, after the "
            f"verification time {inputs.at.isoformat()}"
        )
    tcb_status = QUOTE_STATUSES.get(report.quote_status)
    if tcb_status is None:
        raise VerificationFailed(
            f"the attestation service rejected the quote: {report.quote_status}"
        )
    warnings = []
    if not chain.anchor.vendor:
        warnings.append(f"chain ends at {chain.anchor.name!r}, a root given explicitly")
    if report.advisory_ids:
        warnings.append("security advisories: " + ", ".join(report.advisory_ids))
    if report.body.debug:
        warnings.append("the enclave is in debug mode")
    return Verdict(
        verified=True,
        tee="epid",
        claims=epid_claims(report),
        tcb_status=tcb_status,
        chain=chain.subjects,
        warnings=tuple(warnings),
    )


def epid_claims(report: IasReport) -> dict[str, ClaimValue]:
    body = report.body
    claims: dict[str, ClaimValue] = {
        "mrenclave": body.mr_enclave.hex(),
        "mrsigner": body.mr_signer.hex(),
        "isv_prod_id": body.isv_prod_id,
        "isv_svn": body.isv_svn,
        "debug": body.debug,
        "report_data": body.report_data.hex(),
        "attributes": body.attributes.hex(),
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": f"{body.misc_select:08x}",
        "quote_status": report.quote_status,
        "epid_group_id": report.header.epid_group_id.hex(),
        "timestamp": report.timestamp.isoformat(),
    }
    if report.nonce is not None:
        claims["nonce"] = report.nonce
    return claims


def check_ias_certificate(certificate: Certificate, inputs: VerificationInputs) -> Verdict:
    """An RA-TLS certificate carrying an attestation report; checks the key binding too."""
    raw_report, signature, signers = _report_from_certificate(certificate)
    verdict = check_ias_report(raw_report, signature, signers, inputs)
    report_data = bytes.fromhex(str(verdict.claims["report_data"]))
    if _binds_key(report_data, certificate):
        return verdict
    return verdict.with_warnings("the report data is not bound to this certificate's public key")


def _binds_key(report_data: bytes, certificate: Certificate) -> bool:
    import hashlib

    point = public_key_bits(certificate.spki)
    if point[:1] == b"\x04" and report_data[: len(point) - 1] == point[1:]:
        return True  # report data = the EC point x || y
    return report_data == hashlib.sha256(certificate.spki).digest() + bytes(32)


def _report_from_certificate(certificate: Certificate) -> tuple[bytes, bytes, list[Certificate]]:
    comment = certificate.extension(OID_NETSCAPE_COMMENT)
    if comment is not None:
        value = comment.value
        if value[:1] == bytes([der.IA5_STRING]):  # some writers wrap it in an IA5String
            value = der.parse_single(value, "Netscape comment").content
        parts = value.split(b"|")
        if len(parts) != 3:
            raise MalformedEvidence(
                "attestation report extension must be report|signature|certificate"
            )
        return (
            parts[0],
            _b64(parts[1], "report signature"),
            parse_certificates(_b64(parts[2], "signing certificate")),
        )
    fields: dict[str, bytes] = {}
    for extension in certificate.extensions:
        for arc in _RA_TLS_ARC:
            if extension.oid.startswith(arc):
                fields.setdefault(extension.oid[len(arc) :], extension.value)
    if REPORT not in fields or SIGNATURE not in fields or SIGNING_CERTIFICATE not in fields:
        raise MalformedEvidence("certificate lacks the attestation report, its signature or signer")
    signature = fields[SIGNATURE]
    if len(signature) not in (256, 384, 512):
        signature = _b64(signature, "report signature")
    return fields[REPORT], signature, parse_certificates(fields[SIGNING_CERTIFICATE])


def _b64(value: bytes, name: str) -> bytes:
    try:
        return base64.b64decode(b"".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvidence(f"{name} is not valid base64") from None
