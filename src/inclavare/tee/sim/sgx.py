"""The SGX structures the simulated TEE produces and reads, in their hardware layouts. Pure.

All integers are little-endian. Offsets (decimal):

- report body (`sgx_report_body_t`, 384 B): CPUSVN 0, MISCSELECT 16, ISVEXTPRODID 32,
  ATTRIBUTES 48 (flags u64, xfrm u64), MRENCLAVE 64, MRSIGNER 128, CONFIGID 192,
  ISVPRODID 256, ISVSVN 258, CONFIGSVN 260, ISVFAMILYID 304, REPORTDATA 320;
- report (`sgx_report_t`, 432 B): body 0, KEYID 384 (32 B), MAC 416 (16 B);
- target info (`sgx_target_info_t`, 512 B): MRENCLAVE 0, ATTRIBUTES 32, CONFIGSVN 50,
  MISCSELECT 52, CONFIGID 64, the rest reserved (zero);
- SECS (4096 B): SIZE 0, BASEADDR 8, SSAFRAMESIZE 16, MISCSELECT 20, ATTRIBUTES 48,
  MRENCLAVE 64, MRSIGNER 128, CONFIGID 192, ISVPRODID 256, ISVSVN 258, CONFIGSVN 260.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inclavare.tee.sim.errors import MalformedStructure

if TYPE_CHECKING:
    from inclavare.attestation.intel_quote import SgxReportBody

REPORT_BODY_SIZE = 384
REPORT_SIZE = 432
TARGET_INFO_SIZE = 512
SECS_SIZE = 4096
REPORT_DATA_SIZE = 64

# ATTRIBUTES.FLAGS bits.
FLAG_INIT = 1 << 0
FLAG_DEBUG = 1 << 1
FLAG_MODE64BIT = 1 << 2
FLAG_PROVISIONKEY = 1 << 4
FLAG_EINITTOKENKEY = 1 << 5
FLAG_KSS = 1 << 7
# ATTRIBUTES.XFRM of an enclave using x87 and SSE state only.
XFRM_LEGACY = 0x3


@dataclass(frozen=True)
class Attributes:
    """SGX ATTRIBUTES: 64 flag bits and the XSAVE feature request mask."""

    flags: int
    xfrm: int = XFRM_LEGACY

    @classmethod
    def parse(cls, raw: bytes) -> Attributes:
        flags, xfrm = struct.unpack("<QQ", raw)
        return cls(flags, xfrm)

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.flags, self.xfrm)

    @property
    def debug(self) -> bool:
        return bool(self.flags & FLAG_DEBUG)


@dataclass(frozen=True)
class EnclaveIdentity:
    """What a report says about an enclave: its measurement, its signer and its attributes."""

    mr_enclave: bytes
    mr_signer: bytes
    attributes: Attributes
    isv_prod_id: int = 0
    isv_svn: int = 0
    misc_select: int = 0
    config_id: bytes = bytes(64)
    config_svn: int = 0

    def __post_init__(self) -> None:
        if len(self.mr_enclave) != 32 or len(self.mr_signer) != 32:
            raise MalformedStructure("MRENCLAVE and MRSIGNER must be 32 bytes each")
        if len(self.config_id) != 64:
            raise MalformedStructure("CONFIGID must be 64 bytes")
        for name in ("isv_prod_id", "isv_svn", "config_svn"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise MalformedStructure(f"{name.upper().replace('_', '')} must fit 16 bits")

    @property
    def debug(self) -> bool:
        return self.attributes.debug


def report_body(identity: EnclaveIdentity, cpu_svn: bytes, report_data: bytes) -> bytes:
    """The 384-byte report body describing `identity`, carrying `report_data`."""
    if len(cpu_svn) != 16:
        raise MalformedStructure("CPUSVN must be 16 bytes")
    body = bytearray(REPORT_BODY_SIZE)
    body[0:16] = cpu_svn
    body[16:20] = struct.pack("<I", identity.misc_select)
    body[48:64] = identity.attributes.to_bytes()
    body[64:96] = identity.mr_enclave
    body[128:160] = identity.mr_signer
    body[192:256] = identity.config_id
    body[256:262] = struct.pack("<HHH", identity.isv_prod_id, identity.isv_svn, identity.config_svn)
    body[320:384] = pad_report_data(report_data)
    return bytes(body)


def pad_report_data(data: bytes) -> bytes:
    """REPORTDATA holding `data` (at most 64 bytes), zero-padded on the right."""
    if len(data) > REPORT_DATA_SIZE:
        raise MalformedStructure(f"report data is {len(data)} bytes; at most 64 fit")
    return bytes(data) + bytes(REPORT_DATA_SIZE - len(data))


def identity_of(body: SgxReportBody) -> EnclaveIdentity:
    return EnclaveIdentity(
        mr_enclave=body.mr_enclave,
        mr_signer=body.mr_signer,
        attributes=Attributes.parse(body.attributes),
        isv_prod_id=body.isv_prod_id,
        isv_svn=body.isv_svn,
        misc_select=body.misc_select,
        config_id=body.config_id,
        config_svn=body.config_svn,
    )


@dataclass(frozen=True)
class TargetInfo:
    """`sgx_target_info_t`: the enclave a report is made for (only it can check the MAC)."""

    mr_enclave: bytes
    attributes: Attributes
    misc_select: int = 0
    config_svn: int = 0
    config_id: bytes = bytes(64)

    @classmethod
    def of(cls, identity: EnclaveIdentity) -> TargetInfo:
        return cls(
            identity.mr_enclave,
            identity.attributes,
            identity.misc_select,
            identity.config_svn,
            identity.config_id,
        )

    @classmethod
    def parse(cls, raw: bytes) -> TargetInfo:
        raw = bytes(raw)
        if len(raw) != TARGET_INFO_SIZE:
            raise MalformedStructure(f"target info must be 512 bytes, got {len(raw)}")
        if any(raw[48:50]) or any(raw[56:64]) or any(raw[128:]):
            raise MalformedStructure("target info has non-zero reserved bytes")
        config_svn, misc_select = struct.unpack_from("<HI", raw, 50)
        return cls(raw[0:32], Attributes.parse(raw[32:48]), misc_select, config_svn, raw[64:128])

    def to_bytes(self) -> bytes:
        raw = bytearray(TARGET_INFO_SIZE)
        raw[0:32] = self.mr_enclave
        raw[32:48] = self.attributes.to_bytes()
        raw[50:56] = struct.pack("<HI", self.config_svn, self.misc_select)
        raw[64:128] = self.config_id
        return bytes(raw)


@dataclass(frozen=True)
class Report:
    """`sgx_report_t`: a report body, the id of the key its MAC was made with, and the MAC."""

    raw: bytes
    body: SgxReportBody
    key_id: bytes
    mac: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Report:
        from inclavare.attestation.intel_quote import SgxReportBody

        raw = bytes(raw)
        if len(raw) != REPORT_SIZE:
            raise MalformedStructure(f"a report must be {REPORT_SIZE} bytes, got {len(raw)}")
        return cls(raw, SgxReportBody.parse(raw[:REPORT_BODY_SIZE]), raw[384:416], raw[416:432])

    @property
    def identity(self) -> EnclaveIdentity:
        return identity_of(self.body)

    @property
    def report_data(self) -> bytes:
        return self.body.report_data


def secs(identity: EnclaveIdentity, size: int = 0, base: int = 0) -> bytes:
    """The 4096-byte SECS of a launched enclave with `identity`."""
    page = bytearray(SECS_SIZE)
    struct.pack_into("<QQII", page, 0, size, base, 1, identity.misc_select)
    page[48:64] = identity.attributes.to_bytes()
    page[64:96] = identity.mr_enclave
    page[128:160] = identity.mr_signer
    page[192:256] = identity.config_id
    struct.pack_into("<HHH", page, 256, identity.isv_prod_id, identity.isv_svn, identity.config_svn)
    return bytes(page)
