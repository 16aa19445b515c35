"""Raw ECDSA signatures as TEEs write them: fixed-size r||s, not DER.

Intel writes r and s big-endian (32 bytes each, P-256); AMD writes them little-endian and
zero-extended to 72 bytes each (P-384).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from inclavare.attestation.errors import MalformedEvidence

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


def p256_public_key(xy: bytes) -> EllipticCurvePublicKey:
    """A P-256 public key from its raw 64-byte x||y coordinates."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if len(xy) != 64:
        raise MalformedEvidence("P-256 public key must be 64 bytes (x||y)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except ValueError:
        raise MalformedEvidence("attestation key is not a point on P-256") from None


def ecdsa_verify(
    key: PublicKeyTypes,
    r: bytes,
    s: bytes,
    message: bytes,
    hash_name: Literal["sha256", "sha384"],
    byteorder: Literal["big", "little"] = "big",
) -> bool:
    """Whether (r, s) is a valid ECDSA signature of `message` under `key`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    algorithm = hashes.SHA256() if hash_name == "sha256" else hashes.SHA384()
    signature = encode_dss_signature(int.from_bytes(r, byteorder), int.from_bytes(s, byteorder))
    try:
        key.verify(signature, message, ec.ECDSA(algorithm))
    except InvalidSignature:
        return False
    return True


def ecdsa_verify_rs(key: PublicKeyTypes, rs: bytes, message: bytes) -> bool:
    """Intel's form: 64 bytes r||s big-endian, SHA-256."""
    if len(rs) != 64:
        return False
    return ecdsa_verify(key, rs[:32], rs[32:], message, "sha256")
