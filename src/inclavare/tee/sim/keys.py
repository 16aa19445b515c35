"""Key derivation of the simulated TEE: report keys (per boot) and sealing keys.

Everything derives from the platform secret (32 random bytes created with the platform
identity) with HKDF-SHA256 (RFC 5869):

- the report root of a boot = HKDF(secret, salt = the kernel's boot id text,
  info = "inclavare-sim report root"), 32 bytes; it changes with every boot;
- the KEYID of that boot's reports = "SIMULATED-REPORT" followed by the first 16 bytes of
  HKDF(report root, salt = "", info = "inclavare-sim report key id");
- the report key for a target enclave = HKDF(report root, salt = KEYID,
  info = "inclavare-sim report key" || target MRENCLAVE || target ATTRIBUTES (16) ||
  target MISCSELECT (u32)), 16 bytes; a report's MAC is AES-128-CMAC with it over the body;
- a sealing key = HKDF(secret, salt = the sealed blob's key id,
  info = "inclavare-sim seal key" || policy (u16) || identity || ISVPRODID (u16) ||
  ISVSVN (u16) || DEBUG (one byte)), 32 bytes, where the identity is the MRENCLAVE or the
  MRSIGNER depending on the policy.

HKDF is written out with `hmac` so that deriving a key imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from inclavare.tee.sim.sgx import EnclaveIdentity, TargetInfo

KEY_ID_PREFIX = b"SIMULATED-REPORT"
REPORT_ROOT_LABEL = b"inclavare-sim report root"
KEY_ID_LABEL = b"inclavare-sim report key id"
REPORT_KEY_LABEL = b"inclavare-sim report key"
SEAL_KEY_LABEL = b"inclavare-sim seal key"

# Key policies, as SGX's KEYREQUEST.KEYPOLICY bits.
POLICY_MRENCLAVE = 0x0001
POLICY_MRSIGNER = 0x0002


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to `length` bytes."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length out of range")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    output = b""
    block = b""
    counter = 1
    while len(output) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        output += block
        counter += 1
    return output[:length]


@dataclass(frozen=True)
class ReportKeys:
    """What a platform needs, during one boot, to MAC and check local reports."""

    root: bytes
    key_id: bytes
    cpu_svn: bytes

    @classmethod
    def for_boot(cls, platform_secret: bytes, boot_id: str, cpu_svn: bytes) -> ReportKeys:
        root = hkdf_sha256(platform_secret, boot_id.encode(), REPORT_ROOT_LABEL, 32)
        key_id = KEY_ID_PREFIX + hkdf_sha256(root, b"", KEY_ID_LABEL, 16)
        return cls(root, key_id, cpu_svn)

    def report_key(self, target: TargetInfo, key_id: bytes | None = None) -> bytes:
        info = (
            REPORT_KEY_LABEL
            + target.mr_enclave
            + target.attributes.to_bytes()
            + struct.pack("<I", target.misc_select)
        )
        return hkdf_sha256(self.root, key_id or self.key_id, info, 16)


def cmac_aes128(key: bytes, message: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES128(key))
    mac.update(message)
    return mac.finalize()


def seal_key(
    platform_secret: bytes, identity: EnclaveIdentity, policy: int, isv_svn: int, key_id: bytes
) -> bytes:
    """The AES-256 key sealing data of `identity` under `policy` at security version `isv_svn`."""
    if policy == POLICY_MRENCLAVE:
        bound = identity.mr_enclave
    elif policy == POLICY_MRSIGNER:
        bound = identity.mr_signer
    else:
        raise ValueError(f"unknown key policy {policy}")
    info = (
        SEAL_KEY_LABEL
        + struct.pack("<H", policy)
        + bound
        + struct.pack("<HH", identity.isv_prod_id, isv_svn)
        + bytes([identity.debug])
    )
    return hkdf_sha256(platform_secret, key_id, info, 32)
