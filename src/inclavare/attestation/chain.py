"""Certificate chains: from a leaf, through the certificates at hand, to a pinned root.

Certificates are matched by issuer and subject, and confirmed by signature, never taken in
the order they arrived: Intel's sample TDX quote stores its chain root first. Every
certificate is checked against the verification time, which is an explicit input; an expired
or not yet valid certificate fails with its name and date.

Signature checks of certificates are remembered in a `SignatureCache` keyed by the exact bytes
of the certificate and of the issuer's key, so many quotes from one platform check their PCK
chain once. Time and revocation are checked every time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from inclavare.attestation.certificate import Certificate
from inclavare.attestation.errors import VerificationFailed
from inclavare.attestation.trust import Anchor, Authority, TrustStore

MAX_CHAIN_LENGTH = 6


class SignatureCache:
    """Remembers signature checks that succeeded, keyed by everything that was checked."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def key(*parts: bytes) -> bytes:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    def __contains__(self, key: bytes) -> bool:
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._verified[key] = None
        self._verified.move_to_end(key)
        while len(self._verified) > self._capacity:
            self._verified.popitem(last=False)


@dataclass(frozen=True)
class VerifiedChain:
    certificates: tuple[Certificate, ...]  # leaf first, root last
    anchor: Anchor

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(certificate.subject for certificate in self.certificates)

    @property
    def leaf(self) -> Certificate:
        return self.certificates[0]


def check_validity(certificate: Certificate, at: datetime) -> None:
    if at < certificate.not_before:
        raise VerificationFailed(
            f"certificate {certificate.common_name!r} is not valid before "
            f"{certificate.not_before.isoformat()} (verification time {at.isoformat()})"
        )
    if at > certificate.not_after:
        raise VerificationFailed(
            f"certificate {certificate.common_name!r} expired on "
            f"{certificate.not_after.isoformat()} (verification time {at.isoformat()})"
        )


def is_signed_by(
    certificate: Certificate, issuer: Certificate, cache: SignatureCache | None
) -> bool:
    key = SignatureCache.key(b"certificate", certificate.der, issuer.spki)
    if cache is not None and key in cache:
        return True
    if not certificate.signature_verified_by(issuer.public_key()):
        return False
    if cache is not None:
        cache.add(key)
    return True


def verify_chain(
    leaf: Certificate,
    pool: Sequence[Certificate],
    trust: TrustStore,
    authority: Authority,
    at: datetime,
    cache: SignatureCache | None = None,
) -> VerifiedChain:
    """Build the chain of `leaf` from `pool`, check every signature and date, end at an anchor."""
    path = [leaf]
    current = leaf
    while True:
        check_validity(current, at)
        anchor = trust.anchor_for(current.spki_sha256, authority)
        if anchor is not None:
            # The root is trusted for its key; its certificate must still be the one that key
            # signed, so that no byte of the chain goes unchecked.
            if not is_signed_by(current, current, cache):
                raise VerificationFailed(
                    f"root certificate {current.common_name!r} is not signed by its own key"
                )
            return VerifiedChain(tuple(path), anchor)
        if current.is_self_issued:
            raise VerificationFailed(
                f"certificate chain ends at {current.common_name!r} "
                f"(public key SHA-256 {current.spki_sha256}), which is not a trusted root "
                f"for {authority.value}"
            )
        if len(path) >= MAX_CHAIN_LENGTH:
            raise VerificationFailed(f"certificate chain of {leaf.common_name!r} is too long")
        current = _find_issuer(current, pool, cache)
        if any(current.der == seen.der for seen in path):
            raise VerificationFailed(f"certificate chain of {leaf.common_name!r} has a loop")
        path.append(current)


def _find_issuer(
    certificate: Certificate, pool: Sequence[Certificate], cache: SignatureCache | None
) -> Certificate:
    candidates = [
        candidate
        for candidate in pool
        if candidate.subject_der == certificate.issuer_der and candidate.der != certificate.der
    ]
    if not candidates:
        raise VerificationFailed(
            f"the issuer of certificate {certificate.common_name!r} "
            f"({certificate.issuer}) is not among the given certificates"
        )
    for candidate in candidates:
        if candidate.is_ca() is False:
            continue
        if is_signed_by(certificate, candidate, cache):
            return candidate
    raise VerificationFailed(
        f"the signature of certificate {certificate.common_name!r} does not verify "
        f"with the key of its issuer {candidates[0].common_name!r}"
    )
