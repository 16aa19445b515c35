"""Evidence above TLS: what the enclave, inclavared and shelter give and check for a nonce.

A party (the enclave or inclavared) proves itself for a verifier's nonce with its TLS
certificate and tagged evidence whose claims hold the hash of that certificate's key and the
nonce (the format of Enclave-TLS session evidence, docs/enclave-tls.md), plus claims of its
own: the enclave's "secret-key", inclavared's "enclave-evidence" (the SHA-256 of the enclave
evidence it forwards, so its evidence vouches for exactly that forwarding).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.tls.attest import PeerAttestation
    from inclavare.tls.endpoint import EnclaveTls

FORWARDED_EVIDENCE_CLAIM = "enclave-evidence"
MAX_CLAIMS = 16 * 1024


class EvidenceRejected(InclavareError):
    """Evidence of a party that does not verify, with the reason."""


def read_claims(tagged: bytes) -> dict[str, bytes]:
    """The claims of tagged evidence (CBOR `tag([evidence, claims])`), unchecked: call it on
    evidence that verified, whose report data binds these bytes."""
    import cbor2

    try:
        value = cbor2.loads(tagged)
        claims = cbor2.loads(value.value[1]) if len(value.value[1]) <= MAX_CLAIMS else None
    except Exception:
        raise EvidenceRejected("the evidence's claims cannot be read") from None
    if not isinstance(claims, dict) or not all(
        isinstance(key, str) and isinstance(item, bytes) for key, item in claims.items()
    ):
        raise EvidenceRejected("the evidence's claims are not a map of names to byte strings")
    return claims


def check_party(
    verifier: EnclaveTls,
    certificate: bytes,
    evidence: bytes,
    nonce: bytes,
    who: str,
    expected: PeerAttestation | None = None,
) -> tuple[PeerAttestation, dict[str, bytes]]:
    """Verify a party's certificate and its evidence for `nonce` with `verifier`'s roots and
    policy; with `expected` (the party's own TLS session), the certificate must be that
    session's. Returns the attestation and the verified claims."""
    from inclavare.tls.errors import PeerRejected

    try:
        if expected is not None:
            if certificate != expected.certificate:
                raise EvidenceRejected(
                    f"{who}: the evidence comes with another certificate than the one of its "
                    "TLS session (evidence relayed from another endpoint?)"
                )
            attestation = expected
        else:
            attestation = verifier.verify_certificate(certificate, full=False)
        attestation = verifier.verify_session_evidence(attestation, evidence, nonce)
    except PeerRejected as rejection:
        raise EvidenceRejected(f"{who}: {rejection}") from None
    if attestation.verdict is None:
        raise EvidenceRejected(f"{who}: no evidence was verified (a null verifier?)")
    return attestation, read_claims(evidence)


def evidence_digest(evidence: bytes) -> bytes:
    return hashlib.sha256(evidence).digest()
