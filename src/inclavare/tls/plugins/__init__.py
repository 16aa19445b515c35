"""The four plugin classes of Enclave-TLS and their registry.

As upstream, an Enclave-TLS instance is made of an attester (collects this side's evidence), a
verifier (checks the peer's), a TLS wrapper (the TLS implementation) and a crypto wrapper (keys
and certificates). Each plugin has a name and a priority. Without a name, the plugin chosen is
the highest-priority one whose `init` succeeds; a named plugin that cannot run is an error that
says why. On the verifying side the verifier follows the evidence type of the peer's
certificate (a TDX quote goes to `tdx_ecdsa`) unless one was enforced by name.

Built-in plugins, by kind (priority):

- attesters: sgx_ecdsa (52), tdx_ecdsa (42), snp (42), sim (10), nullattester (0);
- verifiers: sgx_ecdsa (52), tdx_ecdsa (42), snp (42), sgx_epid (20), sim (10),
  nullverifier (0);
- TLS wrappers: openssl (25), nulltls (0);
- crypto wrappers: openssl (25, `cryptography`), nullcrypto (0).

Third-party plugins register as Python entry points in the groups
`inclavare.tls.attesters`, `inclavare.tls.verifiers`, `inclavare.tls.tls_wrappers` and
`inclavare.tls.crypto_wrappers`; each entry point names a subclass of the matching base class
below. A built-in name cannot be taken over by an entry point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from inclavare.tls.errors import ConfigurationError, PluginUnavailable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

    from inclavare.attestation.inputs import VerificationInputs
    from inclavare.attestation.verdict import Verdict
    from inclavare.tee.sim.sgx import EnclaveIdentity
    from inclavare.tls.certificate import EvidenceCertificate
    from inclavare.tls.transport import TlsContext, TlsSettings


@dataclass(frozen=True)
class PluginOptions:
    """What plugins may need besides their name: given by the configuration."""

    debug_enclave: bool = False
    # The enclave the sim attester speaks for (None: the documented sample identity).
    sim_identity: EnclaveIdentity | None = None
    sim_dir: str | None = None
    # Roots of the Linux interfaces hardware attesters use (tests point them elsewhere).
    tsm_report_dir: str = "/sys/kernel/config/tsm/report"
    attestation_dir: str = "/dev/attestation"
    tdx_guest_device: str = "/dev/tdx_guest"
    sev_guest_device: str = "/dev/sev-guest"
    extra: dict[str, object] = field(default_factory=dict)


class Plugin:
    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    kind: ClassVar[str] = ""

    def init(self, options: PluginOptions) -> None:
        """Prepare to work on this host; raise `PluginUnavailable` saying why it cannot."""


class Attester(Plugin):
    """Collects this side's evidence, with the given report data bound into it."""

    kind = "attester"
    # The evidence type produced (a verifier's name); None for the null attester.
    evidence_type: ClassVar[str | None] = None

    def collect_evidence(self, report_data: bytes) -> bytes:
        """Raw evidence (a quote or a report) whose report data is `report_data` (64 bytes)."""
        raise NotImplementedError

    def collect_endorsements(self, evidence: bytes) -> bytes | None:
        """Encoded endorsements (extension 2.23.133.5.4.2) for `evidence`, if any."""
        return None

    def certificate_names(self) -> tuple[str, str]:
        """The common name and organisation of the certificates made for this attester."""
        return f"Inclavare Enclave-TLS ({self.name})", "Inclavare Containers"


class Verifier(Plugin):
    """Checks the peer's evidence through `inclavare.attestation`."""

    kind = "verifier"
    evidence_types: ClassVar[frozenset[str]] = frozenset()

    def verify_certificate(
        self, certificate: EvidenceCertificate, chain: tuple[bytes, ...], inputs: VerificationInputs
    ) -> Verdict:
        raise NotImplementedError

    def verify_session_evidence(
        self, evidence: bytes, spki: bytes, nonce: bytes, inputs: VerificationInputs
    ) -> Verdict:
        raise NotImplementedError


class CryptoWrapper(Plugin):
    """Makes this side's key and its certificate."""

    kind = "crypto wrapper"

    def generate_key(self, key_type: str) -> CertificateIssuerPrivateKeyTypes:
        raise NotImplementedError

    def make_certificate(
        self,
        key: CertificateIssuerPrivateKeyTypes,
        evidence: bytes | None,
        endorsements: bytes | None,
        names: tuple[str, str],
    ) -> bytes:
        raise NotImplementedError


class TlsWrapper(Plugin):
    """The TLS implementation: makes the context connections are created from."""

    kind = "TLS wrapper"
    carries_certificates: ClassVar[bool] = True

    def context(self, settings: TlsSettings) -> TlsContext:
        raise NotImplementedError


P = TypeVar("P", bound=Plugin)

ENTRY_POINT_GROUPS = {
    "attester": "inclavare.tls.attesters",
    "verifier": "inclavare.tls.verifiers",
    "TLS wrapper": "inclavare.tls.tls_wrappers",
    "crypto wrapper": "inclavare.tls.crypto_wrappers",
}


class Registry(Generic[P]):
    """The plugins of one kind: built-ins first, then entry points (loaded once)."""

    def __init__(self, base: type[P], builtins: Callable[[], list[type[P]]]) -> None:
        self.base = base
        self._builtins = builtins
        self._loaded: dict[str, type[P]] | None = None
        self._load_errors: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return self.base.kind

    def plugins(self) -> dict[str, type[P]]:
        """Every plugin of this kind by name, highest priority first."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return dict(self._loaded)

    def _load(self) -> dict[str, type[P]]:
        found: dict[str, type[P]] = {}
        for plugin in self._builtins():
            found[plugin.name] = plugin
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINT_GROUPS[self.kind]):
            try:
                loaded = entry.load()
            except Exception as error:  # a broken third-party plugin must not break the rest
                self._load_errors[entry.name] = f"cannot load {entry.value}: {error}"
                continue
            if not (isinstance(loaded, type) and issubclass(loaded, self.base)):
                self._load_errors[entry.name] = f"{entry.value} is not a {self.base.__name__}"
                continue
            if not loaded.name or loaded.name in found:
                self._load_errors[entry.name] = (
                    f"{entry.value} has no name or takes the name {loaded.name!r} already used"
                )
                continue
            found[loaded.name] = loaded
        return dict(sorted(found.items(), key=lambda item: -item[1].priority))

    def names(self) -> list[str]:
        return list(self.plugins())

    def create(self, name: str, options: PluginOptions) -> P:
        """The plugin `name`, initialised; errors say what is unknown or unavailable."""
        plugins = self.plugins()
        plugin = plugins.get(name)
        if plugin is None:
            detail = self._load_errors.get(name)
            if detail is not None:
                raise ConfigurationError(f"{self.kind} {name!r}: {detail}")
            raise ConfigurationError(f"unknown {self.kind} {name!r} (known: {', '.join(plugins)})")
        instance = plugin()
        try:
            instance.init(options)
        except PluginUnavailable as error:
            raise PluginUnavailable(f"{self.kind} {name}: {error}") from None
        return instance

    def select(
        self, options: PluginOptions, accept: Callable[[type[P]], bool] = lambda plugin: True
    ) -> P:
        """The highest-priority plugin (among those `accept`ed) whose init succeeds."""
        failures = []
        for name, plugin in self.plugins().items():
            if not accept(plugin):
                continue
            instance = plugin()
            try:
                instance.init(options)
            except PluginUnavailable as error:
                failures.append(f"{name}: {error}")
                continue
            return instance
        raise ConfigurationError(
            f"no {self.kind} can run here" + (f" ({'; '.join(failures)})" if failures else "")
        )


def _builtin_attesters() -> list[type[Attester]]:
    from inclavare.tls.plugins import attesters

    return list(attesters.BUILTIN)


def _builtin_verifiers() -> list[type[Verifier]]:
    from inclavare.tls.plugins import verifiers

    return list(verifiers.BUILTIN)


def _builtin_tls_wrappers() -> list[type[TlsWrapper]]:
    from inclavare.tls.plugins import wrappers

    return list(wrappers.BUILTIN_TLS)


def _builtin_crypto_wrappers() -> list[type[CryptoWrapper]]:
    from inclavare.tls.plugins import wrappers

    return list(wrappers.BUILTIN_CRYPTO)


ATTESTERS: Registry[Attester] = Registry(Attester, _builtin_attesters)
VERIFIERS: Registry[Verifier] = Registry(Verifier, _builtin_verifiers)
TLS_WRAPPERS: Registry[TlsWrapper] = Registry(TlsWrapper, _builtin_tls_wrappers)
CRYPTO_WRAPPERS: Registry[CryptoWrapper] = Registry(CryptoWrapper, _builtin_crypto_wrappers)
