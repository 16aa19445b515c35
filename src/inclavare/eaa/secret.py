"""Secrets sealed to an attested enclave, so that inclavared, which forwards them, cannot
read them.

The enclave puts a fresh X25519 public key in the claims of the evidence it gives for a
verifier's nonce (claim "secret-key"); the evidence binds the claims, so the key is the
enclave's. The verifier seals a secret to it: an ephemeral X25519 key, the shared secret
through HKDF-SHA256 (salt: the verifier's nonce; info: both public keys) into an AES-256-GCM
key; the associated data is the secret's name. Only the enclave that holds the private key
can open it, only for that name, and a sealed secret does not open under another nonce.
"""

from __future__ import annotations

from dataclasses import dataclass

from inclavare.errors import InclavareError

SECRET_KEY_CLAIM = "secret-key"
INFO = b"inclavare eaa secret v1"
NONCE_SIZE = 12
MAX_SECRET = 64 * 1024


class SecretError(InclavareError):
    """A sealed secret that does not open, or that cannot be sealed."""


@dataclass(frozen=True)
class Sealed:
    ephemeral: bytes  # the sender's X25519 public key
    ciphertext: bytes  # IV || AES-GCM ciphertext and tag


class SecretKey:
    """The enclave's side: a key pair for one attestation."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        self._private = X25519PrivateKey.generate()
        self.public = _raw_public(self._private.public_key())

    def open(self, sealed: Sealed, name: str, nonce: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            peer = X25519PublicKey.from_public_bytes(sealed.ephemeral)
            shared = self._private.exchange(peer)
        except ValueError:
            raise SecretError(f"secret {name!r}: the sender's key is not an X25519 key") from None
        key = _derive(shared, nonce, sealed.ephemeral, self.public)
        iv, body = sealed.ciphertext[:NONCE_SIZE], sealed.ciphertext[NONCE_SIZE:]
        try:
            return AESGCM(key).decrypt(iv, body, name.encode())
        except (InvalidTag, ValueError):
            raise SecretError(
                f"secret {name!r} does not open: sealed for another key, name or nonce, or altered"
            ) from None


def seal(recipient: bytes, secret: bytes, name: str, nonce: bytes) -> Sealed:
    """Seal `secret` to the enclave key `recipient` (32 bytes, from verified claims)."""
    import os

    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(secret) > MAX_SECRET:
        raise SecretError(f"secret {name!r} is {len(secret)} bytes; the limit is {MAX_SECRET}")
    try:
        peer = X25519PublicKey.from_public_bytes(recipient)
    except ValueError:
        raise SecretError("the enclave's secret-key claim is not an X25519 public key") from None
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw_public(ephemeral.public_key())
    key = _derive(ephemeral.exchange(peer), nonce, ephemeral_public, recipient)
    iv = os.urandom(NONCE_SIZE)
    return Sealed(ephemeral_public, iv + AESGCM(key).encrypt(iv, secret, name.encode()))


def _derive(shared: bytes, nonce: bytes, sender: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt=nonce, info=INFO + sender + recipient).derive(shared)


def _raw_public(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
