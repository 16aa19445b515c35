"""Everything a verification depends on besides the evidence, given explicitly.

Nothing is read from files, the network or the clock inside the verifiers: the caller says
what time it is, which roots are trusted, which certificates and collateral come with the
evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from inclavare.attestation.certificate import Certificate
from inclavare.attestation.chain import SignatureCache
from inclavare.attestation.collateral import Collateral
from inclavare.attestation.trust import TrustStore


@dataclass(frozen=True)
class VerificationInputs:
    at: datetime
    trust: TrustStore = field(default_factory=TrustStore)
    # PCK certificates for quotes whose certification data does not carry the chain.
    pck_certificates: tuple[Certificate, ...] = ()
    # The VCEK or VLEK that signed an SEV-SNP report.
    endorsement_key: Certificate | None = None
    # Intermediate and root certificates: AMD's ASK/ASVK and ARK, the IAS CA.
    ca_certificates: tuple[Certificate, ...] = ()
    collateral: Collateral | None = None
    # Evidence from the simulated TEE is refused unless this is set (by policy or flag).
    allow_simulated: bool = False
    cache: SignatureCache | None = None
