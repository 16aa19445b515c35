"""Verifiers: every one checks evidence with `inclavare.attestation`, the project's only verifier.

A verifier plugin decides which evidence it takes (its `evidence_types`) and hands the bytes to
the attestation package with the inputs of the connection (time, roots, collateral, whether
simulated evidence is allowed). The null verifier checks nothing; what it lets through is
labelled unverified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inclavare.tls.certificate import SGX_ECDSA, SGX_EPID, SIM, SNP, TDX_ECDSA
from inclavare.tls.plugins import Verifier

if TYPE_CHECKING:
    from inclavare.attestation.inputs import VerificationInputs
    from inclavare.attestation.verdict import Verdict
    from inclavare.tls.certificate import EvidenceCertificate


class AttestationVerifier(Verifier):
    """Verification through `inclavare.attestation` (certificate carriers and bare evidence)."""

    def verify_certificate(
        self, certificate: EvidenceCertificate, chain: tuple[bytes, ...], inputs: VerificationInputs
    ) -> Verdict:
        from inclavare.attestation.verifier import verify_evidence

        # The leaf followed by the issuers the peer sent, as concatenated DER.
        return verify_evidence(certificate.der + b"".join(chain), inputs)

    def verify_session_evidence(
        self, evidence: bytes, spki: bytes, nonce: bytes, inputs: VerificationInputs
    ) -> Verdict:
        from inclavare.attestation.verifier import verify_bound_evidence

        return verify_bound_evidence(evidence, spki, inputs, nonce)


class SgxEcdsaVerifier(AttestationVerifier):
    name = "sgx_ecdsa"
    priority = 52
    evidence_types = frozenset({SGX_ECDSA})


class TdxEcdsaVerifier(AttestationVerifier):
    name = "tdx_ecdsa"
    priority = 42
    evidence_types = frozenset({TDX_ECDSA})


class SnpVerifier(AttestationVerifier):
    name = "snp"
    priority = 42
    evidence_types = frozenset({SNP})


class SgxEpidVerifier(AttestationVerifier):
    """Legacy attestation-service (EPID) reports in old RA-TLS certificates."""

    name = "sgx_epid"
    priority = 20
    evidence_types = frozenset({SGX_EPID})


class SimVerifier(AttestationVerifier):
    """Quotes of the software TEE: genuine only if simulated evidence is allowed."""

    name = "sim"
    priority = 10
    evidence_types = frozenset({SIM})


class NullVerifier(Verifier):
    """Accepts any peer without checking anything; its peers are reported as unverified."""

    name = "nullverifier"
    priority = 0
    evidence_types = frozenset({SGX_ECDSA, TDX_ECDSA, SNP, SIM, SGX_EPID})


BUILTIN: tuple[type[Verifier], ...] = (
    SgxEcdsaVerifier,
    TdxEcdsaVerifier,
    SnpVerifier,
    SgxEpidVerifier,
    SimVerifier,
    NullVerifier,
)
