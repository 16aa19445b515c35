"""Enclave signing: SGX's SIGSTRUCT, and the signature file that carries it with the manifest.

A SIGSTRUCT (1808 bytes, SGX layout, little-endian) says which enclave a key vouches for:

    0     16   HEADER  06000000 e1000000 00000100 00000000
    16    4    VENDOR (0)
    20    4    DATE, BCD yyyymmdd
    24    16   HEADER2 01010000 60000000 60000000 01000000
    40    4    SWDEFINED (0)
    44    84   reserved (0)
    128   384  MODULUS of the RSA-3072 key, little-endian
    512   4    EXPONENT (3)
    516   384  SIGNATURE, little-endian
    900   4    MISCSELECT
    904   4    MISCMASK
    908   4    reserved (0)
    912   16   ISVFAMILYID
    928   16   ATTRIBUTES (flags u64, xfrm u64): MODE64BIT, and DEBUG for a debug enclave
    944   16   ATTRIBUTEMASK
    960   32   ENCLAVEHASH (MRENCLAVE)
    992   16   reserved (0)
    1008  16   ISVEXTPRODID
    1024  2    ISVPRODID
    1026  2    ISVSVN
    1028  12   reserved (0)
    1040  384  Q1 = floor(SIGNATURE^2 / MODULUS), little-endian
    1424  384  Q2 = floor((SIGNATURE^3 - Q1 * SIGNATURE * MODULUS) / MODULUS), little-endian

SIGNATURE is RSASSA-PKCS1-v1_5 with SHA-256 over bytes [0, 128) followed by [900, 1028).
MRSIGNER = SHA-256(MODULUS as stored, little-endian).

The signature file (`enclave.sig`) is:

    16 bytes  ASCII "INCLAVARE-SIGN-1"
    u32       length N of the measurement manifest
    1808      SIGSTRUCT
    N         the measurement manifest (measurement.py), whose SHA-256 is ENCLAVEHASH

Verification needs no RSA library: with exponent 3 it is two multiplications, done here with
Python integers, so a launch imports nothing heavy. Signing uses `cryptography`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from inclavare.tee.sim.errors import MalformedStructure, SignatureInvalid
from inclavare.tee.sim.measurement import Manifest, parse_manifest
from inclavare.tee.sim.sgx import FLAG_DEBUG, FLAG_MODE64BIT, XFRM_LEGACY, Attributes

SIGSTRUCT_SIZE = 1808
KEY_SIZE = 384
KEY_BITS = 3072
EXPONENT = 3
HEADER1 = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGNATURE_FILE_MAGIC = b"INCLAVARE-SIGN-1"
SIGNATURE_FILE_HEADER = 20
# Attributes checked at launch: every flag and every XSAVE feature.
ATTRIBUTE_MASK = Attributes(0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF)

# DER DigestInfo prefix of a SHA-256 digest in a PKCS#1 v1.5 signature (RFC 8017, 9.2).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

_ZERO_RANGES = ((44, 128), (908, 912), (992, 1008), (1028, 1040))


@dataclass(frozen=True)
class SigStruct:
    raw: bytes
    date: int
    modulus: int
    signature: int
    misc_select: int
    misc_mask: int
    attributes: Attributes
    attribute_mask: Attributes
    enclave_hash: bytes
    isv_prod_id: int
    isv_svn: int

    @property
    def mr_signer(self) -> bytes:
        return hashlib.sha256(self.raw[128:512]).digest()

    @property
    def debug(self) -> bool:
        return self.attributes.debug

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[0:128] + self.raw[900:1028]

    def verify(self) -> None:
        """Check the RSA signature and the Q1/Q2 helpers; raise `SignatureInvalid` if wrong."""
        expected = _pkcs1_sha256(hashlib.sha256(self.signed_bytes).digest())
        if pow(self.signature, EXPONENT, self.modulus) != expected:
            raise SignatureInvalid("the enclave signature does not verify with its key")
        q1, q2 = _helpers(self.signature, self.modulus)
        if self.raw[1040:1424] != _le(q1) or self.raw[1424:1808] != _le(q2):
            raise SignatureInvalid("the SIGSTRUCT's Q1/Q2 do not match its signature")


def parse_sigstruct(raw: bytes) -> SigStruct:
    raw = bytes(raw)
    if len(raw) != SIGSTRUCT_SIZE:
        raise MalformedStructure(f"SIGSTRUCT must be {SIGSTRUCT_SIZE} bytes, got {len(raw)}")
    if raw[0:16] != HEADER1 or raw[24:40] != HEADER2:
        raise MalformedStructure("SIGSTRUCT headers are not SGX's constant values")
    for start, end in _ZERO_RANGES:
        if any(raw[start:end]):
            raise MalformedStructure(f"SIGSTRUCT reserved bytes {start}..{end - 1} are not zero")
    if any(raw[912:928]) or any(raw[1008:1024]):
        raise MalformedStructure("SIGSTRUCT ISVFAMILYID/ISVEXTPRODID are not used and must be 0")
    vendor, date = struct.unpack_from("<II", raw, 16)
    if vendor != 0:
        raise MalformedStructure(f"SIGSTRUCT vendor {vendor:#x} is not 0 (only Intel's is 0x8086)")
    exponent = int.from_bytes(raw[512:516], "little")
    if exponent != EXPONENT:
        raise MalformedStructure(f"SIGSTRUCT exponent is {exponent}; SGX requires 3")
    modulus = int.from_bytes(raw[128:512], "little")
    if modulus.bit_length() != KEY_BITS or modulus % 2 == 0:
        raise MalformedStructure("SIGSTRUCT modulus is not an odd 3072-bit number")
    signature = int.from_bytes(raw[516:900], "little")
    if signature >= modulus:
        raise MalformedStructure("SIGSTRUCT signature is not smaller than the modulus")
    misc_select, misc_mask = struct.unpack_from("<II", raw, 900)
    isv_prod_id, isv_svn = struct.unpack_from("<HH", raw, 1024)
    return SigStruct(
        raw=raw,
        date=date,
        modulus=modulus,
        signature=signature,
        misc_select=misc_select,
        misc_mask=misc_mask,
        attributes=Attributes.parse(raw[928:944]),
        attribute_mask=Attributes.parse(raw[944:960]),
        enclave_hash=raw[960:992],
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
    )


@dataclass(frozen=True)
class EnclaveSignature:
    """A signature file: the SIGSTRUCT and the manifest it vouches for (through ENCLAVEHASH)."""

    sigstruct: SigStruct
    manifest: Manifest
    manifest_bytes: bytes

    def encode(self) -> bytes:
        return (
            SIGNATURE_FILE_MAGIC
            + struct.pack("<I", len(self.manifest_bytes))
            + self.sigstruct.raw
            + self.manifest_bytes
        )

    def verify(self) -> None:
        """The signature holds and covers this manifest."""
        self.sigstruct.verify()
        if hashlib.sha256(self.manifest_bytes).digest() != self.sigstruct.enclave_hash:
            raise SignatureInvalid(
                "the measurement manifest does not match the signed ENCLAVEHASH "
                f"{self.sigstruct.enclave_hash.hex()}"
            )


def parse_signature_file(data: bytes) -> EnclaveSignature:
    data = bytes(data)
    if data[:16] != SIGNATURE_FILE_MAGIC:
        raise MalformedStructure("not an enclave signature file (expected INCLAVARE-SIGN-1)")
    if len(data) < SIGNATURE_FILE_HEADER + SIGSTRUCT_SIZE:
        raise MalformedStructure("enclave signature file is truncated")
    (manifest_size,) = struct.unpack_from("<I", data, 16)
    manifest_start = SIGNATURE_FILE_HEADER + SIGSTRUCT_SIZE
    if len(data) != manifest_start + manifest_size:
        raise MalformedStructure(
            f"enclave signature file is {len(data)} bytes; its header says "
            f"{manifest_start + manifest_size}"
        )
    sigstruct = parse_sigstruct(data[SIGNATURE_FILE_HEADER:manifest_start])
    manifest_bytes = data[manifest_start:]
    return EnclaveSignature(sigstruct, parse_manifest(manifest_bytes), manifest_bytes)


# --- signing ----------------------------------------------------------------------------------


def generate_signing_key() -> bytes:
    """A new RSA-3072 key with exponent 3, as PKCS#8 PEM (unencrypted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=EXPONENT, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# A signer signs a SIGSTRUCT's signed bytes (`material`, 256 bytes) with RSASSA-PKCS1-v1_5
# and SHA-256, and returns the signature (big-endian bytes) and its key's modulus. The key
# may live elsewhere (a signing server, a hardware module): only its public half is needed
# here, and the result is checked before it is used.
Signer = Callable[[bytes], tuple[bytes, int]]


def key_signer(key_pem: bytes) -> Signer:
    """The signer of an RSA-3072/e=3 private key given as PEM."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise SignatureInvalid("the signing key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignatureInvalid("the signing key is not an RSA key (SGX signs with RSA-3072, e=3)")
    numbers = key.public_key().public_numbers()
    check_public_key(numbers.n, numbers.e, "the signing key")

    def sign(material: bytes) -> tuple[bytes, int]:
        return key.sign(material, padding.PKCS1v15(), hashes.SHA256()), numbers.n

    return sign


def check_public_key(modulus: int, exponent: int, what: str) -> None:
    """Refuse a key SGX cannot sign enclaves with (it must be RSA-3072, exponent 3)."""
    if modulus.bit_length() != KEY_BITS or exponent != EXPONENT:
        raise SignatureInvalid(
            f"{what} is RSA-{modulus.bit_length()} with exponent {exponent}; SGX requires "
            "RSA-3072 with exponent 3"
        )


def mr_signer_of(modulus: int) -> bytes:
    """MRSIGNER of a signing key: SHA-256 of its modulus as SIGSTRUCT stores it."""
    return hashlib.sha256(_le(modulus)).digest()


def sign_enclave(
    key_pem: bytes,
    manifest: Manifest,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    debug: bool = False,
    when: datetime | None = None,
) -> EnclaveSignature:
    """Sign `manifest` with the RSA-3072/e=3 private key in `key_pem`."""
    return sign_enclave_with(key_signer(key_pem), manifest, isv_prod_id, isv_svn, debug, when)


def sign_enclave_with(
    signer: Signer,
    manifest: Manifest,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    debug: bool = False,
    when: datetime | None = None,
) -> EnclaveSignature:
    """Sign `manifest` with `signer`; its answer is verified before it goes into SIGSTRUCT."""
    for name, value in (("ISVPRODID", isv_prod_id), ("ISVSVN", isv_svn)):
        if not 0 <= value <= 0xFFFF:
            raise MalformedStructure(f"{name} {value} does not fit 16 bits")

    manifest_bytes = manifest.encode()
    flags = FLAG_MODE64BIT | (FLAG_DEBUG if debug else 0)
    raw = bytearray(SIGSTRUCT_SIZE)
    raw[0:16] = HEADER1
    struct.pack_into("<II", raw, 16, 0, _bcd_date(when or datetime.now(UTC)))
    raw[24:40] = HEADER2
    raw[512:516] = struct.pack("<I", EXPONENT)
    struct.pack_into("<II", raw, 900, 0, 0xFFFF_FFFF)
    raw[928:944] = Attributes(flags, XFRM_LEGACY).to_bytes()
    raw[944:960] = ATTRIBUTE_MASK.to_bytes()
    raw[960:992] = hashlib.sha256(manifest_bytes).digest()
    struct.pack_into("<HH", raw, 1024, isv_prod_id, isv_svn)

    # The modulus is not among the signed bytes, so the signer may name its key afterwards.
    signed = bytes(raw[0:128] + raw[900:1028])
    signature_bytes, modulus = signer(signed)
    check_public_key(modulus, EXPONENT, "the signer's key")
    signature = int.from_bytes(signature_bytes, "big")
    if len(signature_bytes) > KEY_SIZE or pow(signature, EXPONENT, modulus) != _pkcs1_sha256(
        hashlib.sha256(signed).digest()
    ):
        raise SignatureInvalid(
            "the signer's signature does not verify as RSA-3072/e=3 PKCS#1 v1.5 with SHA-256"
        )
    q1, q2 = _helpers(signature, modulus)
    raw[128:512] = _le(modulus)
    raw[516:900] = _le(signature)
    raw[1040:1424] = _le(q1)
    raw[1424:1808] = _le(q2)
    return EnclaveSignature(parse_sigstruct(bytes(raw)), manifest, manifest_bytes)


def sign_with_throwaway_key(manifest: Manifest) -> EnclaveSignature:
    """The signature of an enclave nobody signed: a fresh key, and the DEBUG attribute."""
    return sign_enclave(generate_signing_key(), manifest, debug=True)


def _pkcs1_sha256(digest: bytes) -> int:
    suffix = _SHA256_DIGEST_INFO + digest
    encoded = b"\x00\x01" + b"\xff" * (KEY_SIZE - 3 - len(suffix)) + b"\x00" + suffix
    return int.from_bytes(encoded, "big")


def _helpers(signature: int, modulus: int) -> tuple[int, int]:
    q1 = signature * signature // modulus
    q2 = (signature**3 - q1 * signature * modulus) // modulus
    return q1, q2


def _le(value: int) -> bytes:
    return value.to_bytes(KEY_SIZE, "little")


def _bcd_date(when: datetime) -> int:
    digits = f"{when.year:04d}{when.month:02d}{when.day:02d}"
    return int(digits, 16)
