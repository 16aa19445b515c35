"""Intel DCAP ECDSA quotes: SGX quote v3, and quote v4/v5 for TDX (and SGX). Pure parsing.

Layouts (all integers little-endian, signatures and keys big-endian r||s and x||y):

- v3: header 48 B (version, att_key_type, reserved, qe_svn, pce_svn, qe_vendor_id,
  user_data), SGX report body 384 B, signature data length, signature data:
  signature 64, attestation key 64, QE report 384, QE report signature 64, QE auth data
  (u16 size + bytes), certification data (u16 type, u32 size, bytes).
- v4: header 48 B (version, att_key_type, tee_type u32, reserved, qe_vendor_id, user_data),
  body (TD report 584 B when tee_type is TDX, SGX report 384 B otherwise), signature data
  length, signature data: signature 64, attestation key 64, certification data of type 6
  wrapping the QE report, its signature, the QE auth data and the inner certification data.
- v5: like v4 but the body is preceded by its type (1 SGX, 2 TDX 1.0, 3 TDX 1.5) and size.

The quote signature covers the header and the body (for v5 with the body type and size).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.attestation.errors import MalformedEvidence
from inclavare.attestation.verdict import Tee

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

ATTESTATION_KEY_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081

HEADER_SIZE = 48
SGX_REPORT_BODY_SIZE = 384
TD_REPORT_BODY_SIZE = 584
TD15_REPORT_BODY_SIZE = 648

V5_BODY_SGX = 1
V5_BODY_TDX10 = 2
V5_BODY_TDX15 = 3
_V5_BODY_SIZES = {
    V5_BODY_SGX: SGX_REPORT_BODY_SIZE,
    V5_BODY_TDX10: TD_REPORT_BODY_SIZE,
    V5_BODY_TDX15: TD15_REPORT_BODY_SIZE,
}

# Certification data types (sgx_ql_cert_key_type_t).
CERT_PPID_CLEARTEXT = 1
CERT_PPID_RSA2048_ENCRYPTED = 2
CERT_PPID_RSA3072_ENCRYPTED = 3
CERT_PCK_CLEARTEXT = 4
CERT_PCK_CERT_CHAIN = 5
CERT_QE_REPORT = 6
CERT_PLATFORM_MANIFEST = 7

SGX_FLAG_DEBUG = 1 << 1


class _Reader:
    """Reads fields in sequence from a buffer, naming the structure when it runs out."""

    def __init__(self, data: bytes, what: str, offset: int = 0) -> None:
        self.data = data
        self.what = what
        self.offset = offset

    def take(self, size: int, field: str) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise MalformedEvidence(
                f"{self.what} truncated: {field} needs {size} bytes at offset {self.offset}, "
                f"{max(len(self.data) - self.offset, 0)} left"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])


@dataclass(frozen=True)
class SgxReportBody:
    """`sgx_report_body_t`: an enclave's identity, as in a quote and in the QE's report."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @classmethod
    def parse(cls, raw: bytes) -> SgxReportBody:
        if len(raw) != SGX_REPORT_BODY_SIZE:
            raise MalformedEvidence(f"SGX report body must be 384 bytes, got {len(raw)}")
        misc_select, isv_prod_id, isv_svn, config_svn = (
            int.from_bytes(raw[16:20], "little"),
            int.from_bytes(raw[256:258], "little"),
            int.from_bytes(raw[258:260], "little"),
            int.from_bytes(raw[260:262], "little"),
        )
        return cls(
            raw=raw,
            cpu_svn=raw[0:16],
            misc_select=misc_select,
            isv_ext_prod_id=raw[32:48],
            attributes=raw[48:64],
            mr_enclave=raw[64:96],
            mr_signer=raw[128:160],
            config_id=raw[192:256],
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            isv_family_id=raw[304:320],
            report_data=raw[320:384],
        )

    @property
    def attribute_flags(self) -> int:
        return int.from_bytes(self.attributes[0:8], "little")

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & SGX_FLAG_DEBUG)


@dataclass(frozen=True)
class TdReportBody:
    """`sgx_report2_body_t` (TDX 1.0) and its TDX 1.5 extension: a trust domain's identity."""

    raw: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mr_service_td: bytes | None

    @classmethod
    def parse(cls, raw: bytes) -> TdReportBody:
        if len(raw) not in (TD_REPORT_BODY_SIZE, TD15_REPORT_BODY_SIZE):
            raise MalformedEvidence(f"TD report body must be 584 or 648 bytes, got {len(raw)}")
        extended = len(raw) == TD15_REPORT_BODY_SIZE
        return cls(
            raw=raw,
            tee_tcb_svn=raw[0:16],
            mr_seam=raw[16:64],
            mr_signer_seam=raw[64:112],
            seam_attributes=raw[112:120],
            td_attributes=raw[120:128],
            xfam=raw[128:136],
            mr_td=raw[136:184],
            mr_config_id=raw[184:232],
            mr_owner=raw[232:280],
            mr_owner_config=raw[280:328],
            rtmrs=(raw[328:376], raw[376:424], raw[424:472], raw[472:520]),
            report_data=raw[520:584],
            tee_tcb_svn2=raw[584:600] if extended else None,
            mr_service_td=raw[600:648] if extended else None,
        )

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & 1)


@dataclass(frozen=True)
class QeCertification:
    """What certifies the attestation key: the QE's report signed by the PCK, and the PCK data."""

    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_type: int
    certification_data: bytes


@dataclass(frozen=True)
class Quote:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int | None  # v3 only
    pce_svn: int | None  # v3 only
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int | None  # v5 only
    body: SgxReportBody | TdReportBody
    signed_region: bytes
    signature: bytes
    attestation_key: bytes
    certification: QeCertification
    trailing_bytes: int

    @property
    def is_tdx(self) -> bool:
        return isinstance(self.body, TdReportBody)

    @property
    def is_simulated(self) -> bool:
        return self.qe_vendor_id in SIMULATED_QE_VENDOR_IDS

    @property
    def tee(self) -> Tee:
        if self.is_simulated:
            return "sim"
        return "tdx" if self.is_tdx else "sgx"


# The quoting enclave of the simulated TEE (`inclavare.tee.sim`): same byte format, its own
# vendor id (the ASCII text "INCLAVARE-SIM-QE"), a per-host root. Its quotes are verified like
# any other, then refused unless simulation is allowed.
SIM_QE_VENDOR_ID = b"INCLAVARE-SIM-QE"
# Identity of that quoting enclave: MRSIGNER = SHA-256("inclavare-sim quoting enclave signer").
SIM_QE_MR_SIGNER = bytes.fromhex("53ba7eee8f94446ff3cdd6acf075eb8816bf938811a3e41c1b70c4c405b8a04b")
SIM_QE_ISV_PROD_ID = 1
SIMULATED_QE_VENDOR_IDS: frozenset[bytes] = frozenset({SIM_QE_VENDOR_ID})

KNOWN_QE_VENDOR_IDS = frozenset({INTEL_QE_VENDOR_ID}) | SIMULATED_QE_VENDOR_IDS


def looks_like_quote(data: bytes) -> bool:
    """Whether `data` starts like a DCAP quote: a known QE vendor id, or a known header."""
    if len(data) < 4:
        return False
    if data[12:28] in KNOWN_QE_VENDOR_IDS:
        return True
    version, key_type = struct.unpack_from("<HH", data)
    if version == 3:
        return key_type in (ATTESTATION_KEY_ECDSA_P256, 3)
    if version in (4, 5) and len(data) >= 8:
        tee_type = int.from_bytes(data[4:8], "little")
        return key_type in (ATTESTATION_KEY_ECDSA_P256, 3) and tee_type in (
            TEE_TYPE_SGX,
            TEE_TYPE_TDX,
        )
    return False


def quote_tee(data: bytes) -> Tee:
    """The TEE a quote comes from, judged from its header alone."""
    if data[12:28] in SIMULATED_QE_VENDOR_IDS:
        return "sim"
    version = int.from_bytes(data[0:2], "little")
    if version != 3 and int.from_bytes(data[4:8], "little") == TEE_TYPE_TDX:
        return "tdx"
    return "sgx"


def parse_quote(data: bytes) -> Quote:
    data = bytes(data)
    reader = _Reader(data, "quote")
    version = reader.u16("version")
    key_type = reader.u16("attestation key type")
    if version == 3:
        reader.take(4, "reserved")
        qe_svn: int | None = reader.u16("QE SVN")
        pce_svn: int | None = reader.u16("PCE SVN")
        tee_type = TEE_TYPE_SGX
    elif version in (4, 5):
        tee_type = reader.u32("TEE type")
        reader.take(4, "reserved")
        qe_svn = pce_svn = None
    else:
        raise MalformedEvidence(f"unsupported quote version {version}")
    qe_vendor_id = reader.take(16, "QE vendor id")
    user_data = reader.take(20, "user data")

    body_type: int | None = None
    if version == 5:
        body_type = reader.u16("body type")
        body_size = reader.u32("body size")
        expected = _V5_BODY_SIZES.get(body_type)
        if expected is None:
            raise MalformedEvidence(f"unknown quote v5 body type {body_type}")
        if body_size != expected:
            raise MalformedEvidence(
                f"quote v5 body type {body_type} must be {expected} bytes, says {body_size}"
            )
        if (body_type == V5_BODY_SGX) != (tee_type == TEE_TYPE_SGX):
            raise MalformedEvidence(f"quote v5 body type {body_type} contradicts TEE type")
    elif tee_type == TEE_TYPE_TDX:
        body_size = TD_REPORT_BODY_SIZE
    elif tee_type == TEE_TYPE_SGX:
        body_size = SGX_REPORT_BODY_SIZE
    else:
        raise MalformedEvidence(f"unknown TEE type 0x{tee_type:x}")
    raw_body = reader.take(body_size, "report body")
    body: SgxReportBody | TdReportBody = (
        TdReportBody.parse(raw_body) if tee_type == TEE_TYPE_TDX else SgxReportBody.parse(raw_body)
    )
    signed_region = data[: reader.offset]

    signature_data_size = reader.u32("signature data length")
    signature_data = reader.take(signature_data_size, "signature data")
    trailing = len(data) - reader.offset

    signed = _Reader(signature_data, "quote signature data")
    signature = signed.take(64, "quote signature")
    attestation_key = signed.take(64, "attestation key")
    if version == 3:
        certification = _parse_qe_certification(signed, "quote signature data")
    else:
        outer_type = signed.u16("certification data type")
        outer_size = signed.u32("certification data size")
        outer = signed.take(outer_size, "certification data")
        if outer_type != CERT_QE_REPORT:
            raise MalformedEvidence(
                f"quote v{version} certification data must be type 6 (QE report), "
                f"found type {outer_type}"
            )
        inner = _Reader(outer, "QE report certification data")
        certification = _parse_qe_certification(inner, "QE report certification data")
        _expect_consumed(inner)
    _expect_consumed(signed)

    return Quote(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=qe_vendor_id,
        user_data=user_data,
        body_type=body_type,
        body=body,
        signed_region=signed_region,
        signature=signature,
        attestation_key=attestation_key,
        certification=certification,
        trailing_bytes=trailing,
    )


def _parse_qe_certification(reader: _Reader, what: str) -> QeCertification:
    qe_report = SgxReportBody.parse(reader.take(SGX_REPORT_BODY_SIZE, "QE report"))
    qe_report_signature = reader.take(64, "QE report signature")
    auth_size = reader.u16("QE auth data size")
    qe_auth_data = reader.take(auth_size, "QE auth data")
    certification_type = reader.u16("certification data type")
    certification_size = reader.u32("certification data size")
    certification_data = reader.take(certification_size, "certification data")
    if not CERT_PPID_CLEARTEXT <= certification_type <= CERT_PLATFORM_MANIFEST:
        raise MalformedEvidence(f"{what}: unknown certification data type {certification_type}")
    return QeCertification(
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        certification_type=certification_type,
        certification_data=certification_data,
    )


def _expect_consumed(reader: _Reader) -> None:
    left = len(reader.data) - reader.offset
    if left:
        raise MalformedEvidence(f"{reader.what}: {left} unexpected bytes at the end")
