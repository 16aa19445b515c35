"""The SGX extension of Intel PCK certificates (OID 1.2.840.113741.1.13.1). Pure parsing.

It names the platform (FMSPC, PCE-ID) and the TCB the PCK key was issued for: sixteen SGX
TCB component SVNs, the PCE SVN and the CPU SVN. TCB status evaluation compares these with
Intel's TCB info.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from inclavare.attestation import der
from inclavare.attestation.certificate import Certificate
from inclavare.attestation.errors import MalformedEvidence

OID_SGX_EXTENSIONS = "1.2.840.113741.1.13.1"
_PPID = OID_SGX_EXTENSIONS + ".1"
_TCB = OID_SGX_EXTENSIONS + ".2"
_PCE_ID = OID_SGX_EXTENSIONS + ".3"
_FMSPC = OID_SGX_EXTENSIONS + ".4"
_SGX_TYPE = OID_SGX_EXTENSIONS + ".5"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"

SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "Scalable with Integrity"}


@dataclass(frozen=True)
class PckInfo:
    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int | None


def pck_info(certificate: Certificate) -> PckInfo:
    extension = certificate.extension(OID_SGX_EXTENSIONS)
    if extension is None:
        raise MalformedEvidence(
            f"certificate {certificate.common_name!r} has no SGX extension: not a PCK certificate"
        )
    return parse_sgx_extension(extension.value)


@functools.lru_cache(maxsize=1024)
def parse_sgx_extension(value: bytes) -> PckInfo:
    fields = _oid_value_pairs(der.parse_single(value, "SGX extension"))
    tcb = fields.get(_TCB)
    if tcb is None:
        raise MalformedEvidence("SGX extension lacks the TCB field")
    tcb_fields = _oid_value_pairs(tcb)
    components = []
    for index in range(1, 17):
        component = tcb_fields.get(f"{_TCB}.{index}")
        if component is None:
            raise MalformedEvidence(f"SGX extension lacks TCB component {index}")
        components.append(_integer(component, f"TCB component {index}"))
    sgx_type = fields.get(_SGX_TYPE)
    return PckInfo(
        ppid=_octets(fields, _PPID, "PPID"),
        tcb_components=tuple(components),
        pce_svn=_integer(_required(tcb_fields, _PCESVN, "PCESVN"), "PCESVN"),
        cpu_svn=_octets(tcb_fields, _CPUSVN, "CPUSVN"),
        pce_id=_octets(fields, _PCE_ID, "PCE-ID"),
        fmspc=_octets(fields, _FMSPC, "FMSPC"),
        sgx_type=None if sgx_type is None else der.decode_integer(sgx_type.content),
    )


def _oid_value_pairs(sequence: der.Tlv) -> dict[str, der.Tlv]:
    pairs: dict[str, der.Tlv] = {}
    for item in sequence.expect(der.SEQUENCE, "SGX extension").children():
        parts = item.expect(der.SEQUENCE, "SGX extension field").children()
        if len(parts) != 2:
            raise MalformedEvidence("SGX extension field must be an (OID, value) pair")
        pairs[der.decode_oid(parts[0].expect(der.OID, "SGX extension field").content)] = parts[1]
    return pairs


def _required(fields: dict[str, der.Tlv], oid: str, name: str) -> der.Tlv:
    value = fields.get(oid)
    if value is None:
        raise MalformedEvidence(f"SGX extension lacks {name}")
    return value


def _octets(fields: dict[str, der.Tlv], oid: str, name: str) -> bytes:
    return _required(fields, oid, name).expect(der.OCTET_STRING, name).content


def _integer(tlv: der.Tlv, name: str) -> int:
    value = der.decode_integer(tlv.expect(der.INTEGER, name).content)
    if value < 0:
        raise MalformedEvidence(f"negative {name} in SGX extension")
    return value
