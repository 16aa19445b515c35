"""An Enclave-TLS instance: plugins chosen, key and certificate made, peers judged.

`EnclaveTls(config, server=...)` is upstream's `rats_tls_init`: it selects the attester, TLS
wrapper and crypto wrapper, makes this side's key and evidence certificate, and builds the TLS
context. It is shared by every connection of one side, from any thread; the blocking
(`inclavare.tls.blocking`) and asyncio (`inclavare.tls.aio`) drivers make connections with it.

How a peer is judged, in the handshake (a failure aborts it with a TLS alert):

1. its certificate is read (`certificate.read_certificate`): malformed certificates, CBOR
   and unknown evidence types are refused with the reason;
2. the verifier is the enforced one, or the highest-priority one for the evidence type;
3. `inclavare.attestation` verifies the evidence, its binding to the certificate's key and
   the certificate's signature and validity;
4. the policy is applied to the verdict, then the user's callback (without session
   evidence; with it, the callback comes after the session evidence is verified).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from inclavare.attestation.chain import SignatureCache
from inclavare.tls.attest import PeerAttestation
from inclavare.tls.certificate import (
    EVIDENCE_TYPE_OF_TEE,
    claims_buffer,
    evidence_tag,
    read_certificate,
    report_data_for,
    spki_of,
    tagged_evidence,
)
from inclavare.tls.config import Config
from inclavare.tls.errors import (
    CertificateFormatError,
    ConfigurationError,
    EnclaveTlsError,
    PeerRejected,
    PluginUnavailable,
)
from inclavare.tls.plugins import (
    ATTESTERS,
    CRYPTO_WRAPPERS,
    TLS_WRAPPERS,
    VERIFIERS,
    Attester,
    PluginOptions,
    Verifier,
)
from inclavare.tls.plugins.verifiers import NullVerifier

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

    from inclavare.attestation.certificate import Certificate
    from inclavare.attestation.inputs import VerificationInputs
    from inclavare.attestation.policy import Policy
    from inclavare.attestation.trust import TrustStore
    from inclavare.attestation.verdict import Verdict
    from inclavare.tls.certificate import EvidenceCertificate
    from inclavare.tls.transport import TlsConnection, TlsContext

MAX_SESSION_EVIDENCE = 128 * 1024
RENEW_BEFORE = timedelta(hours=1)


@dataclass
class PeerCheck:
    """One connection's judgement of its peer, filled in by the verification callback."""

    attestation: PeerAttestation | None = None
    reason: str | None = None
    checked: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class EnclaveTls:
    def __init__(self, config: Config, *, server: bool) -> None:
        self.config = config
        self.server = server
        self.options = PluginOptions(
            debug_enclave=config.debug_enclave,
            sim_identity=config.sim_identity,
            sim_dir=config.sim_dir,
        )
        for registry, chosen in (
            (ATTESTERS, config.attester),
            (VERIFIERS, config.verifier),
            (TLS_WRAPPERS, config.tls),
            (CRYPTO_WRAPPERS, config.crypto),
        ):
            if isinstance(chosen, str) and chosen not in registry.plugins():
                raise ConfigurationError(
                    f"unknown {registry.kind} {chosen!r} (known: {', '.join(registry.names())})"
                )
        self.tls_wrapper = (
            TLS_WRAPPERS.create(config.tls, self.options)
            if config.tls
            else TLS_WRAPPERS.select(self.options)
        )
        carries = self.tls_wrapper.carries_certificates
        self.attests = server or config.mutual
        self.verifies = (not server) or config.mutual
        self.session_evidence = config.session_evidence and carries
        if not carries:
            for role, chosen in (("attester", config.attester), ("verifier", config.verifier)):
                name = chosen if isinstance(chosen, str) or chosen is None else chosen.name
                if name not in (None, f"null{role}"):
                    raise ConfigurationError(
                        f"the {self.tls_wrapper.name} TLS wrapper exchanges no certificate: "
                        f"use the null{role} with it, not {name}"
                    )
        self.attester: Attester | None = None
        if self.attests:
            self.attester = self._attester(config.attester if carries else "nullattester")
        self._enforced: Verifier | None = None
        if self.verifies and not carries:
            self._enforced = VERIFIERS.create("nullverifier", self.options)
        elif self.verifies and config.verifier is not None:
            self._enforced = (
                config.verifier
                if isinstance(config.verifier, Verifier)
                else VERIFIERS.create(config.verifier, self.options)
            )
        if self.verifies and config.policy is not None and isinstance(self._enforced, NullVerifier):
            raise ConfigurationError("a policy cannot be applied with the null verifier")
        self._verifiers: dict[str, Verifier] = {}
        self._lock = threading.Lock()
        self.policy = self._effective_policy()
        self.allow_simulated = config.allow_simulated or (
            self.policy is not None and self.policy.allow_simulated
        )
        self._trust: TrustStore | None = None
        self._roots: tuple[Certificate, ...] = ()
        self._cache: SignatureCache | None = None

        self.crypto = None
        self.key: CertificateIssuerPrivateKeyTypes | None = None
        self.spki = b""
        self.certificate: bytes | None = None
        self._expires: datetime | None = None
        self._context: TlsContext | None = None
        if carries and self.attester is not None:
            self.crypto = (
                CRYPTO_WRAPPERS.create(config.crypto, self.options)
                if config.crypto
                else CRYPTO_WRAPPERS.select(self.options)
            )
            self.key = self.crypto.generate_key(config.key_type)
            self.spki = spki_of(self.key)
            self._issue_certificate()
        self._context = self._build_context()

    # --- this side ----------------------------------------------------------------------

    @property
    def attester_name(self) -> str | None:
        return self.attester.name if self.attester is not None else None

    @property
    def verifier_name(self) -> str | None:
        if not self.verifies:
            return None
        return self._enforced.name if self._enforced is not None else "auto"

    def _attester(self, chosen: str | Attester | None) -> Attester:
        if isinstance(chosen, Attester):
            try:
                chosen.init(self.options)
            except PluginUnavailable as error:
                raise PluginUnavailable(f"attester {chosen.name}: {error}") from None
            return chosen
        if chosen is not None:
            return ATTESTERS.create(chosen, self.options)
        return ATTESTERS.select(self.options)

    def _issue_certificate(self) -> None:
        """Collect evidence for this side's key and make its certificate."""
        assert self.attester is not None and self.crypto is not None and self.key is not None
        evidence: bytes | None = None
        endorsements: bytes | None = None
        if self.attester.evidence_type is not None:
            claims = claims_buffer(self.spki)
            raw = self.attester.collect_evidence(report_data_for(claims))
            evidence = tagged_evidence(evidence_tag(self.attester.evidence_type), raw, claims)
            endorsements = self.attester.collect_endorsements(raw)
        self.certificate = self.crypto.make_certificate(
            self.key, evidence, endorsements, self.attester.certificate_names()
        )
        self._expires = read_certificate(self.certificate).certificate.not_after

    def _build_context(self) -> TlsContext:
        from inclavare.tls.transport import TlsSettings

        settings = TlsSettings(
            server=self.server,
            certificate=self.certificate,
            private_key=self.key,
            request_peer_certificate=self.verifies,
            verify=self._verify_callback,
            session_evidence=self.session_evidence,
        )
        return self.tls_wrapper.context(settings)

    def new_connection(self, sock: object | None) -> TlsConnection:
        """A TLS connection over `sock` (None: memory buffers), with its peer check attached."""
        with self._lock:
            if self._expires is not None and datetime.now(UTC) > self._expires - RENEW_BEFORE:
                self._issue_certificate()
                self._context = self._build_context()
            context = self._context
        assert context is not None
        connection = context.connection(sock)  # type: ignore[arg-type]
        connection.app_data = PeerCheck()
        return connection

    def session_evidence_for(self, binder: bytes) -> bytes:
        """This side's evidence bound to the session `binder` (empty for the null attester)."""
        if self.attester is None or self.attester.evidence_type is None:
            return b""
        claims = claims_buffer(self.spki, nonce=binder)
        raw = self.attester.collect_evidence(report_data_for(claims))
        return tagged_evidence(evidence_tag(self.attester.evidence_type), raw, claims)

    def evidence_for(self, nonce: bytes, extra: Mapping[str, bytes] | None = None) -> bytes:
        """This side's tagged evidence bound to its key, `nonce` and `extra` claims, for a
        protocol above TLS (the attestation service); b"" for the null attester."""
        if self.attester is None or self.attester.evidence_type is None:
            return b""
        claims = claims_buffer(self.spki, nonce=nonce, extra=extra)
        raw = self.attester.collect_evidence(report_data_for(claims))
        return tagged_evidence(evidence_tag(self.attester.evidence_type), raw, claims)

    # --- the peer -----------------------------------------------------------------------

    def _verify_callback(self, check: object, leaf: bytes, chain: tuple[bytes, ...]) -> bool:
        if not isinstance(check, PeerCheck):
            return False
        if check.checked:
            return check.reason is None
        check.checked = True
        try:
            attestation = self.verify_certificate(leaf, chain)
            if not self.session_evidence:
                self.accept(attestation)
            check.attestation = attestation
        except PeerRejected as rejection:
            check.reason = str(rejection)
            return False
        except Exception as error:  # a bug must refuse the peer, not let it in
            check.reason = f"internal error while verifying the peer: {error!r}"
            return False
        return True

    def verify_certificate(
        self, leaf: bytes, chain: tuple[bytes, ...] = (), full: bool | None = None
    ) -> PeerAttestation:
        """Judge a peer certificate (DER); raise `PeerRejected` with the precise reason.

        `full` (default: unless session evidence will follow) verifies the certificate's
        evidence completely; otherwise its form, validity and key binding are checked and the
        session evidence is verified in full later.
        """
        try:
            certificate = read_certificate(leaf)
        except CertificateFormatError as error:
            raise PeerRejected(f"peer certificate: {error}") from None
        verifier = self.verifier_for(certificate.evidence_type)
        attestation = PeerAttestation(
            evidence_type=certificate.evidence_type,
            verifier=verifier.name,
            certificate=certificate.der,
            spki=certificate.spki,
            carriers=certificate.carriers,
        )
        if isinstance(verifier, NullVerifier):
            return attestation
        if full is None:
            full = not self.session_evidence
        if not full and certificate.tagged is not None:
            self._check_form(certificate)
            return attestation
        from inclavare.attestation.errors import AttestationInputError

        try:
            inputs = self.inputs(certificate)
            verdict = verifier.verify_certificate(certificate, chain, inputs)
        except (AttestationInputError, CertificateFormatError) as error:
            raise PeerRejected(str(error)) from None
        return replace(
            attestation, verdict=self._judge(verdict, verifier), certificate_verified=True
        )

    def _check_form(self, certificate: EvidenceCertificate) -> None:
        from inclavare.attestation.chain import check_validity
        from inclavare.attestation.errors import MalformedEvidence, VerificationFailed
        from inclavare.attestation.ratls import check_key_binding

        assert certificate.tagged is not None
        try:
            check_validity(certificate.certificate, self.config.at or datetime.now(UTC))
            check_key_binding(certificate.tagged, certificate.spki)
        except (VerificationFailed, MalformedEvidence) as error:
            raise PeerRejected(str(error)) from None

    def verify_session_evidence(
        self, attestation: PeerAttestation, evidence: bytes, binder: bytes
    ) -> PeerAttestation:
        """Judge the peer's session-bound evidence; raise `PeerRejected` with the reason."""
        verifier = self.verifier_for(attestation.evidence_type)
        if isinstance(verifier, NullVerifier):
            return attestation
        if not evidence:
            raise PeerRejected("the peer sent no session evidence")
        if len(evidence) > MAX_SESSION_EVIDENCE:
            raise PeerRejected(f"the peer's session evidence is too large ({len(evidence)} bytes)")
        from inclavare.attestation.errors import AttestationInputError

        try:
            inputs = self.inputs(read_certificate(attestation.certificate))
            verdict = verifier.verify_session_evidence(evidence, attestation.spki, binder, inputs)
        except (AttestationInputError, CertificateFormatError) as error:
            raise PeerRejected(f"session evidence: {error}") from None
        return attestation.with_session_verdict(self._judge(verdict, verifier))

    def accept(self, attestation: PeerAttestation) -> None:
        """The user's verdict on an attested peer, through the configured callback."""
        callback = self.config.on_verified
        if callback is None:
            return
        try:
            answer = callback(attestation)
        except Exception as error:
            raise PeerRejected(f"the verification callback failed: {error!r}") from None
        if answer is False:
            raise PeerRejected("rejected by the verification callback")
        if isinstance(answer, str):
            raise PeerRejected(f"rejected by the verification callback: {answer}")

    def verifier_for(self, evidence_type: str | None) -> Verifier:
        """The verifier for a peer's evidence type, or `PeerRejected` saying why none fits."""
        enforced = self._enforced
        if isinstance(enforced, NullVerifier):
            return enforced
        if evidence_type is None:
            raise PeerRejected("the peer's certificate carries no attestation evidence")
        if enforced is not None:
            if evidence_type not in enforced.evidence_types:
                raise PeerRejected(
                    f"evidence type {evidence_type} but the enforced verifier is {enforced.name}"
                )
            return enforced
        with self._lock:
            cached = self._verifiers.get(evidence_type)
            if cached is not None:
                return cached
            try:
                verifier = VERIFIERS.select(
                    self.options,
                    lambda plugin: (
                        evidence_type in plugin.evidence_types
                        and not issubclass(plugin, NullVerifier)
                    ),
                )
            except ConfigurationError:
                raise PeerRejected(
                    f"evidence type {evidence_type} but no {evidence_type} verifier"
                ) from None
            self._verifiers[evidence_type] = verifier
            return verifier

    def _judge(self, verdict: Verdict, verifier: Verifier) -> Verdict:
        if not verdict.verified:
            raise PeerRejected(verdict.reason or "the evidence did not verify")
        evidence_type = EVIDENCE_TYPE_OF_TEE.get(verdict.tee, verdict.tee)
        if evidence_type not in verifier.evidence_types:
            raise PeerRejected(f"evidence type {evidence_type} but the verifier is {verifier.name}")
        if self.policy is not None:
            verdict = self.policy.apply(verdict)
            if not verdict.verified:
                raise PeerRejected(verdict.reason or "rejected by the policy")
        return verdict

    def _effective_policy(self) -> Policy | None:
        policy = self.config.policy
        if policy is not None and self.config.allow_simulated:
            policy = policy.allowing_simulated()
        return policy

    def inputs(self, certificate: EvidenceCertificate) -> VerificationInputs:
        """The verification inputs for a peer certificate, at this moment."""
        from inclavare.attestation.inputs import VerificationInputs

        trust, roots, cache = self._trust_material()
        collateral = self.config.collateral
        if collateral is None and self.config.use_peer_endorsements and certificate.endorsements:
            collateral = certificate.endorsements.collateral()
        return VerificationInputs(
            at=self.config.at or datetime.now(UTC),
            trust=trust,
            pck_certificates=roots,
            endorsement_key=self.config.endorsement_key,
            ca_certificates=tuple(self.config.ca_certificates) + roots,
            collateral=collateral,
            allow_simulated=self.allow_simulated,
            cache=cache,
        )

    def _trust_material(self) -> tuple[TrustStore, tuple[Certificate, ...], SignatureCache]:
        with self._lock:
            if self._trust is None or self._cache is None:
                from inclavare.attestation.trust import TrustStore

                roots = list(self.config.roots)
                if self.allow_simulated and self.config.trust_local_sim_root:
                    roots.extend(_local_sim_roots(self.config.sim_dir))
                self._roots = tuple(roots)
                self._trust = TrustStore.with_extra_roots(
                    (root.spki_sha256, root.common_name) for root in roots
                )
                self._cache = _LockedSignatureCache()
            return self._trust, self._roots, self._cache


def _local_sim_roots(directory: str | None) -> list[Certificate]:
    from inclavare.attestation.certificate import parse_certificates
    from inclavare.attestation.errors import MalformedEvidence
    from inclavare.tee.sim.store import root_ca_path

    try:
        return parse_certificates(root_ca_path(directory).read_bytes())
    except (OSError, MalformedEvidence):
        return []


class _LockedSignatureCache(SignatureCache):
    """A signature cache shared by the threads of a blocking server."""

    def __init__(self) -> None:
        super().__init__()
        self._mutex = threading.Lock()

    def __contains__(self, key: bytes) -> bool:
        with self._mutex:
            return super().__contains__(key)

    def add(self, key: bytes) -> None:
        with self._mutex:
            super().add(key)


def describe_error(error: BaseException) -> str:
    """One line for an error of this package (or of the OS) met while connecting."""
    if isinstance(error, EnclaveTlsError):
        return str(error)
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"{type(error).__name__}: {error}"
