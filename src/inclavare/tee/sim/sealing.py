"""Sealing: data encrypted so that only the same enclave (or signer) on this host can read it.

The key derives from the platform secret and the enclave's MRENCLAVE (policy MRENCLAVE) or
its MRSIGNER and ISVPRODID (policy MRSIGNER), its DEBUG attribute and a security version
(keys.py). As in SGX, an enclave can unseal what it or an older version (lower ISVSVN)
sealed, never what a newer version sealed. A sealed blob is:

    16 bytes  ASCII "INCLAVARE-SEAL-1"
    u16       key policy (1 MRENCLAVE, 2 MRSIGNER)
    u16       ISVSVN of the sealing enclave
    32 bytes  key id (random, the HKDF salt)
    12 bytes  AES-GCM nonce
    rest      AES-256-GCM ciphertext followed by its 16-byte tag

The 64-byte header and the caller's additional data are authenticated.
"""

from __future__ import annotations

import os
import struct

from inclavare.tee.sim.errors import MalformedStructure, SealError
from inclavare.tee.sim.keys import POLICY_MRENCLAVE, POLICY_MRSIGNER, seal_key
from inclavare.tee.sim.sgx import EnclaveIdentity

SEAL_MAGIC = b"INCLAVARE-SEAL-1"
HEADER_SIZE = 64
TAG_SIZE = 16
POLICIES = {POLICY_MRENCLAVE: "MRENCLAVE", POLICY_MRSIGNER: "MRSIGNER"}


def seal(
    platform_secret: bytes,
    identity: EnclaveIdentity,
    data: bytes,
    policy: int = POLICY_MRENCLAVE,
    additional_data: bytes = b"",
) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if policy not in POLICIES:
        raise SealError(f"unknown key policy {policy} (1 MRENCLAVE, 2 MRSIGNER)")
    key_id = os.urandom(32)
    nonce = os.urandom(12)
    header = SEAL_MAGIC + struct.pack("<HH", policy, identity.isv_svn) + key_id + nonce
    key = seal_key(platform_secret, identity, policy, identity.isv_svn, key_id)
    return header + AESGCM(key).encrypt(nonce, bytes(data), header + additional_data)


def unseal(
    platform_secret: bytes, identity: EnclaveIdentity, blob: bytes, additional_data: bytes = b""
) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    blob = bytes(blob)
    if blob[:16] != SEAL_MAGIC:
        raise MalformedStructure("not sealed data (expected INCLAVARE-SEAL-1)")
    if len(blob) < HEADER_SIZE + TAG_SIZE:
        raise MalformedStructure("sealed data is truncated")
    policy, sealed_svn = struct.unpack_from("<HH", blob, 16)
    if policy not in POLICIES:
        raise MalformedStructure(f"sealed data names an unknown key policy {policy}")
    if sealed_svn > identity.isv_svn:
        raise SealError(
            f"the data was sealed by ISVSVN {sealed_svn}; this enclave (ISVSVN "
            f"{identity.isv_svn}) cannot unseal data of a newer version"
        )
    header = blob[:HEADER_SIZE]
    key = seal_key(platform_secret, identity, policy, sealed_svn, blob[20:52])
    try:
        return AESGCM(key).decrypt(blob[52:64], blob[HEADER_SIZE:], header + additional_data)
    except InvalidTag:
        raise SealError(
            f"this enclave cannot unseal the data (sealed to another {POLICIES[policy]}, "
            "another platform, other additional data, or altered)"
        ) from None
