"""Verification of Intel DCAP ECDSA quotes (SGX v3, SGX/TDX v4 and v5).

A quote holds when, in this order:

1. the attestation key signed the header and body;
2. the QE's report binds that key: its REPORTDATA is SHA-256(attestation key || QE auth
   data) followed by 32 zero bytes;
3. the PCK certificate signed the QE's report;
4. the PCK certificate chains to a pinned Intel SGX Root CA (or a root given explicitly);
5. the QE is Intel's (by its identity from collateral, or by Intel's published MRSIGNER and
   ISVPRODID when no collateral is given) and is not a debug enclave;
6. with collateral: no certificate of the chain is revoked, the TCB info and QE identity are
   signed by Intel and current, and the TCB status is computed from them.

Checks raise `VerificationFailed`; the caller turns the exception into a verdict.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from inclavare.attestation import collateral as pcs
from inclavare.attestation.certificate import Certificate, parse_certificates, verify_signature
from inclavare.attestation.chain import SignatureCache, VerifiedChain, verify_chain
from inclavare.attestation.errors import MalformedEvidence, MissingInput, VerificationFailed
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.intel_quote import (
    ATTESTATION_KEY_ECDSA_P256,
    CERT_PCK_CERT_CHAIN,
    CERT_PCK_CLEARTEXT,
    INTEL_QE_VENDOR_ID,
    SIM_QE_ISV_PROD_ID,
    SIM_QE_MR_SIGNER,
    Quote,
    SgxReportBody,
    TdReportBody,
)
from inclavare.attestation.pck import OID_SGX_EXTENSIONS, PckInfo, pck_info
from inclavare.attestation.signatures import ecdsa_verify_rs, p256_public_key
from inclavare.attestation.trust import Authority
from inclavare.attestation.verdict import TCB_NOT_EVALUATED, ClaimValue, Verdict

_CERTIFICATION_NAMES = {
    1: "PPID in clear text",
    2: "PPID encrypted with RSA-2048-OAEP",
    3: "PPID encrypted with RSA-3072-OAEP",
    4: "PCK leaf certificate",
    5: "PCK certificate chain",
    6: "QE report certification data",
    7: "platform manifest",
}


@dataclass(frozen=True)
class QuotingEnclave:
    """Intel's published identity of a quoting enclave."""

    name: str
    identity_id: str  # the id of its enclave identity in PCS collateral
    mr_signer: bytes
    isv_prod_id: int


INTEL_SGX_QE = QuotingEnclave(
    "Intel SGX QE3",
    "QE",
    bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff"),
    1,
)
INTEL_TD_QE = QuotingEnclave(
    "Intel TD QE",
    "TD_QE",
    bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"),
    2,
)

SIM_QE = QuotingEnclave("the simulated TEE's QE", "QE", SIM_QE_MR_SIGNER, SIM_QE_ISV_PROD_ID)

SIMULATED_WARNING = (
    "simulated TEE: the evidence proves no confidentiality or integrity against the host's root"
)


def check_quote(quote: Quote, inputs: VerificationInputs) -> Verdict:
    """Verify `quote` completely; raise `VerificationFailed` naming the first failed check."""
    warnings: list[str] = []
    if quote.attestation_key_type != ATTESTATION_KEY_ECDSA_P256:
        raise VerificationFailed(
            f"attestation key type {quote.attestation_key_type} is not supported "
            "(only 2, ECDSA P-256)"
        )
    if quote.is_simulated and not inputs.allow_simulated:
        raise VerificationFailed("the quote comes from a simulated TEE, which is not allowed")
    if quote.qe_vendor_id != INTEL_QE_VENDOR_ID and not quote.is_simulated:
        raise VerificationFailed(
            f"quote from an unknown quoting enclave vendor {quote.qe_vendor_id.hex()}"
        )
    if quote.is_simulated:
        warnings.append(SIMULATED_WARNING)
    if quote.trailing_bytes:
        warnings.append(f"{quote.trailing_bytes} bytes after the quote are not signed; ignored")

    attestation_key = p256_public_key(quote.attestation_key)
    if not ecdsa_verify_rs(attestation_key, quote.signature, quote.signed_region):
        raise VerificationFailed("the quote signature does not verify with its attestation key")

    certification = quote.certification
    qe_report = certification.qe_report
    expected_binding = hashlib.sha256(quote.attestation_key + certification.qe_auth_data).digest()
    if qe_report.report_data != expected_binding + bytes(32):
        raise VerificationFailed(
            "the QE report does not bind the attestation key "
            "(REPORTDATA is not SHA-256(attestation key || QE auth data))"
        )

    pck_leaf, pool = _pck_certificates(quote, inputs)
    if not _qe_report_signed_by(qe_report, certification.qe_report_signature, pck_leaf, inputs):
        raise VerificationFailed("the QE report signature does not verify with the PCK certificate")
    chain = verify_chain(pck_leaf, pool, inputs.trust, Authority.INTEL_SGX, inputs.at, inputs.cache)
    if not chain.anchor.vendor:
        warnings.append(f"chain ends at {chain.anchor.name!r}, a root given explicitly")
    platform = pck_info(pck_leaf)

    quoting_enclave = INTEL_TD_QE if quote.is_tdx else INTEL_SGX_QE
    if quote.is_simulated:
        quoting_enclave = SIM_QE
    if qe_report.debug:
        raise VerificationFailed("the quoting enclave is a debug enclave")
    if inputs.collateral is None:
        _check_quoting_enclave(qe_report, quoting_enclave, chain, warnings)
        tcb_status = TCB_NOT_EVALUATED
        warnings.append("no collateral: TCB status and revocation were not checked")
    else:
        tcb_status = evaluate_collateral(
            quote, quoting_enclave, chain, platform, inputs.collateral, inputs, warnings
        )

    claims = quote_claims(quote)
    claims["fmspc"] = platform.fmspc.hex()
    if quote.body.debug:
        warnings.append(f"the {'trust domain' if quote.is_tdx else 'enclave'} is in debug mode")
    return Verdict(
        verified=True,
        tee=quote.tee,
        claims=claims,
        tcb_status=tcb_status,
        chain=chain.subjects,
        warnings=tuple(warnings),
    )


def quote_claims(quote: Quote) -> dict[str, ClaimValue]:
    body = quote.body
    if isinstance(body, TdReportBody):
        return td_claims(body)
    return sgx_claims(body)


def sgx_claims(body: SgxReportBody) -> dict[str, ClaimValue]:
    return {
        "mrenclave": body.mr_enclave.hex(),
        "mrsigner": body.mr_signer.hex(),
        "isv_prod_id": body.isv_prod_id,
        "isv_svn": body.isv_svn,
        "debug": body.debug,
        "report_data": body.report_data.hex(),
        "attributes": body.attributes.hex(),
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": f"{body.misc_select:08x}",
        "config_id": body.config_id.hex(),
        "config_svn": body.config_svn,
    }


def td_claims(body: TdReportBody) -> dict[str, ClaimValue]:
    claims: dict[str, ClaimValue] = {
        "mr_td": body.mr_td.hex(),
        "rtmr0": body.rtmrs[0].hex(),
        "rtmr1": body.rtmrs[1].hex(),
        "rtmr2": body.rtmrs[2].hex(),
        "rtmr3": body.rtmrs[3].hex(),
        "mr_seam": body.mr_seam.hex(),
        "mr_signer_seam": body.mr_signer_seam.hex(),
        "mr_config_id": body.mr_config_id.hex(),
        "mr_owner": body.mr_owner.hex(),
        "mr_owner_config": body.mr_owner_config.hex(),
        "td_attributes": body.td_attributes.hex(),
        "seam_attributes": body.seam_attributes.hex(),
        "xfam": body.xfam.hex(),
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "debug": body.debug,
        "report_data": body.report_data.hex(),
    }
    if body.tee_tcb_svn2 is not None and body.mr_service_td is not None:
        claims["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        claims["mr_service_td"] = body.mr_service_td.hex()
    return claims


def _pck_certificates(
    quote: Quote, inputs: VerificationInputs
) -> tuple[Certificate, list[Certificate]]:
    """The PCK leaf and the certificates that may complete its chain."""
    certification = quote.certification
    pool = list(inputs.pck_certificates)
    if certification.certification_type in (CERT_PCK_CERT_CHAIN, CERT_PCK_CLEARTEXT):
        try:
            pool = parse_certificates(certification.certification_data, strict=True) + pool
        except MalformedEvidence as error:
            raise VerificationFailed(
                f"the PCK certificates in the quote are malformed: {error}"
            ) from None
    elif not pool:
        name = _CERTIFICATION_NAMES.get(certification.certification_type, "unknown")
        raise MissingInput(
            f"the quote carries no PCK certificate (certification data type "
            f"{certification.certification_type}, {name}); give the PCK chain with --pck-chain FILE"
        )
    leaves = _leaves(pool)
    if len(leaves) != 1:
        raise VerificationFailed(
            f"expected one PCK leaf certificate among the {len(pool)} given, found {len(leaves)}"
        )
    return leaves[0], pool


def _leaves(pool: Sequence[Certificate]) -> list[Certificate]:
    """PCK certificates that issue no other certificate of the pool (deduplicated)."""
    issuers = {certificate.issuer_der for certificate in pool if not certificate.is_self_issued}
    leaves: dict[bytes, Certificate] = {}
    for certificate in pool:
        if certificate.subject_der in issuers or certificate.is_self_issued:
            continue
        if certificate.extension(OID_SGX_EXTENSIONS) is not None:
            leaves.setdefault(certificate.der, certificate)
    return list(leaves.values())


def _qe_report_signed_by(
    qe_report: SgxReportBody, signature: bytes, pck: Certificate, inputs: VerificationInputs
) -> bool:
    # The QE report is the same for every quote made with one attestation key, so its
    # verification is remembered like a certificate's.
    key = SignatureCache.key(b"qe-report", qe_report.raw, signature, pck.spki)
    if inputs.cache is not None and key in inputs.cache:
        return True
    if not ecdsa_verify_rs(pck.public_key(), signature, qe_report.raw):
        return False
    if inputs.cache is not None:
        inputs.cache.add(key)
    return True


def _check_quoting_enclave(
    qe_report: SgxReportBody, expected: QuotingEnclave, chain: VerifiedChain, warnings: list[str]
) -> None:
    if qe_report.mr_signer == expected.mr_signer and qe_report.isv_prod_id == expected.isv_prod_id:
        return
    description = (
        f"the quoting enclave (MRSIGNER {qe_report.mr_signer.hex()}, ISVPRODID "
        f"{qe_report.isv_prod_id}) is not {expected.name}"
    )
    if chain.anchor.vendor:
        raise VerificationFailed(description)
    warnings.append(description)


# --- collateral ---------------------------------------------------------------------------


def evaluate_collateral(
    quote: Quote,
    quoting_enclave: QuotingEnclave,
    chain: VerifiedChain,
    platform: PckInfo,
    collateral: pcs.Collateral,
    inputs: VerificationInputs,
    warnings: list[str],
) -> str:
    """Check revocation, TCB info and QE identity; return the TCB status."""
    pool = list(collateral.certificates) + list(chain.certificates)
    check_revocation(chain.certificates, collateral, inputs, warnings)

    tee_id = "TDX" if quote.is_tdx else "SGX"
    tcb_info = collateral.tcb_info_for(tee_id, platform.fmspc, platform.pce_id)
    if tcb_info is None:
        raise VerificationFailed(
            f"the collateral holds no {tee_id} TCB info for FMSPC {platform.fmspc.hex()} "
            f"and PCE-ID {platform.pce_id.hex()}"
        )
    _check_signed_document(
        tcb_info.body,
        f"TCB info for FMSPC {platform.fmspc.hex()}",
        pool,
        collateral,
        inputs,
        warnings,
    )
    _check_current(
        f"TCB info for FMSPC {platform.fmspc.hex()}",
        tcb_info.issue_date,
        tcb_info.next_update,
        inputs.at,
    )

    identity = collateral.identity(quoting_enclave.identity_id)
    if identity is None:
        raise VerificationFailed(f"the collateral holds no {quoting_enclave.identity_id} identity")
    _check_signed_document(
        identity.body, f"{identity.id} identity", pool, collateral, inputs, warnings
    )
    _check_current(f"{identity.id} identity", identity.issue_date, identity.next_update, inputs.at)

    qe_report = quote.certification.qe_report
    qe_level = pcs.qe_identity_level(
        identity,
        qe_report.mr_signer,
        qe_report.isv_prod_id,
        qe_report.misc_select,
        qe_report.attributes,
        qe_report.isv_svn,
    )
    if isinstance(quote.body, TdReportBody):
        level = pcs.tdx_level(
            tcb_info, platform.tcb_components, platform.pce_svn, quote.body.tee_tcb_svn
        )
        module = pcs.tdx_module_status(
            tcb_info,
            quote.body.tee_tcb_svn,
            quote.body.mr_signer_seam,
            quote.body.seam_attributes,
        )
    else:
        level = pcs.sgx_level(tcb_info, platform.tcb_components, platform.pce_svn)
        module = None

    status = pcs.converge(level.status, qe_level.status)
    advisories = list(level.advisories) + list(qe_level.advisories)
    if module is not None:
        status = pcs.converge(status, module.status)
        advisories += module.advisories
    if status not in pcs.KNOWN_STATUSES:
        raise VerificationFailed(f"the TCB info gives an unknown TCB status {status!r}")
    if status == pcs.REVOKED:
        raise VerificationFailed("the platform's TCB is revoked (TCB status Revoked)")
    if advisories:
        warnings.append("security advisories: " + ", ".join(sorted(set(advisories))))
    return status


def check_revocation(
    chain: Sequence[Certificate],
    collateral: pcs.Collateral,
    inputs: VerificationInputs,
    warnings: list[str],
) -> None:
    """Check each certificate against the CRL of its issuer, when the collateral has one."""
    for certificate, issuer in itertools.pairwise(chain):
        crls = [crl for crl in collateral.crls if crl.issuer_der == issuer.subject_der]
        if not crls:
            warnings.append(f"no CRL from {issuer.common_name!r}: revocation not checked")
            continue
        for crl in crls:
            if not _crl_signed_by(crl, issuer, inputs.cache):
                raise VerificationFailed(
                    f"the CRL {crl.source} does not verify with the key of {issuer.common_name!r}"
                )
            _check_current(
                f"CRL of {issuer.common_name!r}", crl.this_update, crl.next_update, inputs.at
            )
            if certificate.serial in crl.revoked_serials:
                raise VerificationFailed(
                    f"certificate {certificate.common_name!r} (serial {certificate.serial:x}) "
                    f"is revoked by {issuer.common_name!r}"
                )


def _crl_signed_by(
    crl: pcs.RevocationList, issuer: Certificate, cache: SignatureCache | None
) -> bool:
    key = SignatureCache.key(b"crl", crl.der, issuer.spki)
    if cache is not None and key in cache:
        return True
    if not verify_signature(issuer.public_key(), crl.signature_algorithm, crl.signature, crl.tbs):
        return False
    if cache is not None:
        cache.add(key)
    return True


def _check_signed_document(
    body: pcs.SignedBody,
    name: str,
    pool: Sequence[Certificate],
    collateral: pcs.Collateral,
    inputs: VerificationInputs,
    warnings: list[str],
) -> None:
    """A PCS document must be signed by a certificate that chains to an Intel root."""
    for signer in pool:
        if signer.is_ca() or signer.is_self_issued:
            continue
        if ecdsa_verify_rs(signer.public_key(), body.signature, body.signed_bytes):
            chain = verify_chain(
                signer, pool, inputs.trust, Authority.INTEL_SGX, inputs.at, inputs.cache
            )
            check_revocation(chain.certificates, collateral, inputs, warnings)
            return
    raise VerificationFailed(
        f"the signature of the {name} ({body.source}) does not verify with any signing "
        "certificate in the collateral"
    )


def _check_current(name: str, issued: datetime, next_update: datetime | None, at: datetime) -> None:
    if at < issued:
        raise VerificationFailed(
            f"the {name} was issued on {issued.isoformat()}, after the verification time "
            f"{at.isoformat()}"
        )
    if next_update is not None and at > next_update:
        raise VerificationFailed(
            f"the {name} expired on {next_update.isoformat()} (verification time {at.isoformat()})"
        )
