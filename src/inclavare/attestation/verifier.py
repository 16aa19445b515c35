"""The entry point: recognise the kind of evidence from its bytes and verify it.

`verify_evidence` always returns a `Verdict` for evidence it recognises, whatever is wrong
with it; it raises an `AttestationInputError` only when the bytes are no known evidence format
or an input the evidence needs is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from inclavare.attestation.errors import (
    MalformedEvidence,
    UnrecognisedEvidence,
    VerificationFailed,
)
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.verdict import Tee, Verdict


def detect(evidence: bytes) -> tuple[Tee, str]:
    """The TEE and the format name of `evidence`, judged from its bytes.

    Each format is recognised by more than one feature, so that evidence with one damaged
    byte is still recognised (and then fails verification with a reason) rather than
    reported as an unknown format.
    """
    from inclavare.attestation import intel_quote, ratls, snp

    if intel_quote.looks_like_quote(evidence):
        return intel_quote.quote_tee(evidence), "quote"
    if ratls.looks_like_tagged_evidence(evidence):
        return ratls.guess_tee(evidence), "tagged-evidence"
    if ratls.looks_like_certificate(evidence):
        return ratls.guess_tee(evidence), "certificate"
    if snp.looks_like_azure_hcl_report(evidence):
        return "snp", "azure-hcl-report"
    if snp.looks_like_report(evidence):
        return "snp", "snp-report"
    raise UnrecognisedEvidence(
        "the evidence is not a recognised format (SGX/TDX quote, SEV-SNP report, "
        "RA-TLS or EPID certificate)"
    )


def verify_evidence(evidence: bytes, inputs: VerificationInputs) -> Verdict:
    """Verify `evidence` with `inputs`; the verdict says whether it holds and why not."""
    evidence = bytes(evidence)
    tee, kind = detect(evidence)
    checker = _CHECKERS[kind]
    try:
        return checker(evidence, inputs)
    except (VerificationFailed, MalformedEvidence) as failure:
        return Verdict.failure(tee, str(failure))


def verify_bound_evidence(
    evidence: bytes, spki: bytes, inputs: VerificationInputs, nonce: bytes | None = None
) -> Verdict:
    """Verify TCG tagged evidence taken out of its carrier, bound to an expected key.

    `evidence` is the CBOR-tagged `[evidence, claims]` of extension 2.23.133.5.4.9, received
    on its own (e.g. evidence an attested TLS peer sent for one session); `spki` is the DER
    SubjectPublicKeyInfo its claims must name in "pubkey-hash", `nonce` the value its
    "nonce" claim must hold, if any. Raises `UnrecognisedEvidence` for bytes that are not
    tagged evidence; every other failure is a verdict.
    """
    from inclavare.attestation import ratls

    evidence = bytes(evidence)
    if not ratls.looks_like_tagged_evidence(evidence):
        raise UnrecognisedEvidence("the evidence is not CBOR-tagged TEE evidence")
    try:
        return ratls.check_bound_tagged_evidence(evidence, bytes(spki), inputs, nonce)
    except (VerificationFailed, MalformedEvidence) as failure:
        return Verdict.failure(ratls.guess_tee(evidence), str(failure))


def _check_quote(evidence: bytes, inputs: VerificationInputs) -> Verdict:
    from inclavare.attestation import dcap, intel_quote

    return dcap.check_quote(intel_quote.parse_quote(evidence), inputs)


def _check_snp_report(evidence: bytes, inputs: VerificationInputs) -> Verdict:
    from inclavare.attestation import snp

    return snp.check_report(snp.parse_report(evidence), inputs)


def _check_azure_hcl_report(evidence: bytes, inputs: VerificationInputs) -> Verdict:
    from inclavare.attestation import snp

    return snp.check_azure_hcl_report(evidence, inputs)


def _check_certificate(evidence: bytes, inputs: VerificationInputs) -> Verdict:
    from inclavare.attestation import ratls

    return ratls.check_certificate(evidence, inputs)


def _check_tagged_evidence(evidence: bytes, inputs: VerificationInputs) -> Verdict:
    from inclavare.attestation import ratls

    return ratls.check_tagged_evidence(evidence, inputs)


_CHECKERS: dict[str, Callable[[bytes, VerificationInputs], Verdict]] = {
    "quote": _check_quote,
    "snp-report": _check_snp_report,
    "azure-hcl-report": _check_azure_hcl_report,
    "certificate": _check_certificate,
    "tagged-evidence": _check_tagged_evidence,
}
