"""TLS wrappers (openssl, nulltls) and crypto wrappers (openssl, nullcrypto)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inclavare.tls.certificate import KEY_TYPES, build_certificate
from inclavare.tls.errors import ConfigurationError, PluginUnavailable
from inclavare.tls.plugins import CryptoWrapper, PluginOptions, TlsWrapper

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

    from inclavare.tls.transport import TlsContext, TlsSettings


class OpenSslTls(TlsWrapper):
    """TLS 1.3 through OpenSSL (pyOpenSSL), with the TLS exporter for session binding."""

    name = "openssl"
    priority = 25

    def init(self, options: PluginOptions) -> None:
        try:
            import OpenSSL.SSL  # noqa: F401
        except ImportError as error:
            raise PluginUnavailable(f"pyOpenSSL is not installed ({error})") from None

    def context(self, settings: TlsSettings) -> TlsContext:
        from inclavare.tls.transport import OpenSslContext

        return OpenSslContext(settings)


class NullTls(TlsWrapper):
    """No TLS: bytes travel in the clear and no certificate is exchanged (debugging only)."""

    name = "nulltls"
    priority = 0
    carries_certificates = False

    def context(self, settings: TlsSettings) -> TlsContext:
        from inclavare.tls.transport import NullContext

        return NullContext()


class OpenSslCrypto(CryptoWrapper):
    """Keys and certificates through `cryptography` (OpenSSL underneath)."""

    name = "openssl"
    priority = 25

    def generate_key(self, key_type: str) -> CertificateIssuerPrivateKeyTypes:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if key_type == "ec-p256":
            return ec.generate_private_key(ec.SECP256R1())
        if key_type == "rsa-3072":
            return rsa.generate_private_key(public_exponent=65537, key_size=3072)
        raise ConfigurationError(f"unknown key type {key_type!r} (known: {', '.join(KEY_TYPES)})")

    def make_certificate(
        self,
        key: CertificateIssuerPrivateKeyTypes,
        evidence: bytes | None,
        endorsements: bytes | None,
        names: tuple[str, str],
    ) -> bytes:
        common_name, organisation = names
        return build_certificate(key, evidence, endorsements, common_name, organisation)


class NullCrypto(CryptoWrapper):
    """Makes no keys: only usable with the nulltls wrapper, which needs none."""

    name = "nullcrypto"
    priority = 0

    def generate_key(self, key_type: str) -> CertificateIssuerPrivateKeyTypes:
        raise ConfigurationError("the nullcrypto wrapper makes no keys: use it only with nulltls")

    def make_certificate(
        self,
        key: CertificateIssuerPrivateKeyTypes,
        evidence: bytes | None,
        endorsements: bytes | None,
        names: tuple[str, str],
    ) -> bytes:
        raise ConfigurationError("the nullcrypto wrapper makes no certificates")


BUILTIN_TLS: tuple[type[TlsWrapper], ...] = (OpenSslTls, NullTls)
BUILTIN_CRYPTO: tuple[type[CryptoWrapper], ...] = (OpenSslCrypto, NullCrypto)
