"""The configuration of an Enclave-TLS instance (upstream's `rats_tls_conf_t`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inclavare.attestation.certificate import Certificate
    from inclavare.attestation.collateral import Collateral
    from inclavare.attestation.policy import Policy
    from inclavare.tee.sim.sgx import EnclaveIdentity
    from inclavare.tls.attest import PeerAttestation
    from inclavare.tls.plugins import Attester, Verifier

# What the verification callback returns: None or True accepts the peer, False rejects it,
# a string rejects it with that reason.
VerificationCallback = Callable[["PeerAttestation"], "bool | str | None"]


@dataclass(frozen=True)
class Config:
    """How one side attests itself and judges its peer.

    `attester`, `verifier`, `tls` and `crypto` are plugin names (None: the highest-priority
    plugin that can run here; for the verifier: the one the peer's evidence type calls for).
    An attester or verifier may also be given as an instance, e.g. a `SimAttester` speaking
    for a launched enclave's identity.
    """

    attester: str | Attester | None = None
    verifier: str | Verifier | None = None
    tls: str | None = None
    crypto: str | None = None
    # Server: also attest the client. Client: attest itself when the server asks.
    mutual: bool = False
    key_type: str = "ec-p256"
    # Exchange evidence bound to the session's TLS exporter after the handshake (see
    # docs/enclave-tls.md). Peers that do not speak it (upstream rats-tls, Gramine) need False.
    session_evidence: bool = True
    policy: Policy | None = None
    # Accept evidence from the simulated TEE (also allowed by the policy's allow_simulated).
    allow_simulated: bool = False
    # Trust the simulated platform root of this host (when simulated evidence is allowed).
    trust_local_sim_root: bool = True
    # Roots trusted besides the vendors' pinned ones (e.g. another host's sim root).
    roots: tuple[Certificate, ...] = ()
    # Intermediate certificates (AMD ASK/ARK, ...), a VCEK/VLEK for SEV-SNP peers, collateral.
    ca_certificates: tuple[Certificate, ...] = ()
    endorsement_key: Certificate | None = None
    collateral: Collateral | None = None
    # Use the collateral a peer's certificate carries (extension 2.23.133.5.4.2) when none
    # is configured; it is signed by Intel and checked like any other.
    use_peer_endorsements: bool = True
    # The verification time (None: the current time at each verification), for checking
    # recorded certificates offline.
    at: datetime | None = None
    on_verified: VerificationCallback | None = None
    debug_enclave: bool = False
    sim_identity: EnclaveIdentity | None = None
    sim_dir: str | None = None
    # Bounds of one connection's establishment (TLS handshake and evidence exchange).
    handshake_timeout: float = 10.0
    certificate_validity: timedelta = field(default=timedelta(days=7))
