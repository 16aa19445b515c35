"""Intel PCS collateral: TCB info, enclave identities (QE, TD QE) and CRLs. Pure parsing and
the TCB status computation.

TCB info and identities arrive as `{"tcbInfo": {...}, "signature": "<hex r||s>"}` and
`{"enclaveIdentity": {...}, "signature": ...}`. The signature covers the exact bytes of the
inner object as served, so the text is never re-serialised: the byte span of the inner object
is located in the document and kept.

The TCB status of a platform is the status of the first TCB level (Intel lists them newest
first) whose every component the platform meets, then lowered by the QE's own status and, for
TDX 1.5, by the TDX module's status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inclavare.attestation import der
from inclavare.attestation.certificate import (
    Certificate,
    SignatureAlgorithm,
    format_name,
    parse_certificates,
    parse_time,
)
from inclavare.attestation.errors import (
    AttestationInputError,
    MalformedEvidence,
    VerificationFailed,
)

UP_TO_DATE = "UpToDate"
SW_HARDENING_NEEDED = "SWHardeningNeeded"
CONFIGURATION_NEEDED = "ConfigurationNeeded"
CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
KNOWN_STATUSES = frozenset(
    {
        UP_TO_DATE,
        SW_HARDENING_NEEDED,
        CONFIGURATION_NEEDED,
        CONFIGURATION_AND_SW_HARDENING_NEEDED,
        OUT_OF_DATE,
        OUT_OF_DATE_CONFIGURATION_NEEDED,
        REVOKED,
    }
)


@dataclass(frozen=True)
class SignedBody:
    """The exact signed bytes of a PCS JSON document and its ECDSA P-256 signature (r||s)."""

    signed_bytes: bytes
    signature: bytes
    source: str


@dataclass(frozen=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None
    status: str
    date: str
    advisories: tuple[str, ...]


@dataclass(frozen=True)
class IdentityLevel:
    isv_svn: int
    status: str
    advisories: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[IdentityLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str  # "SGX" or "TDX"
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    evaluation_data_number: int
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None  # tcbInfo.tdxModule (no levels)
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    body: SignedBody


@dataclass(frozen=True)
class EnclaveIdentity:
    id: str  # "QE", "QVE", "TD_QE"
    version: int
    issue_date: datetime
    next_update: datetime
    misc_select: int
    misc_select_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[IdentityLevel, ...]
    body: SignedBody


@dataclass(frozen=True)
class RevocationList:
    """An X.509 CRL: who issued it, when it is current, and the revoked serial numbers."""

    der: bytes
    tbs: bytes
    issuer_der: bytes
    issuer: str
    this_update: datetime
    next_update: datetime | None
    revoked_serials: frozenset[int]
    signature_algorithm: SignatureAlgorithm
    signature: bytes
    source: str


@dataclass(frozen=True)
class Collateral:
    tcb_infos: tuple[TcbInfo, ...]
    identities: tuple[EnclaveIdentity, ...]
    crls: tuple[RevocationList, ...]
    certificates: tuple[Certificate, ...]  # issuer chains of the above

    def tcb_info_for(self, tee_id: str, fmspc: bytes, pce_id: bytes) -> TcbInfo | None:
        matching = [
            info
            for info in self.tcb_infos
            if info.id == tee_id and info.fmspc == fmspc and info.pce_id == pce_id
        ]
        return max(matching, key=lambda info: info.issue_date, default=None)

    def identity(self, identity_id: str) -> EnclaveIdentity | None:
        matching = [identity for identity in self.identities if identity.id == identity_id]
        return max(matching, key=lambda identity: identity.issue_date, default=None)


def parse_collateral(files: Mapping[str, bytes]) -> Collateral:
    """Sort collateral documents by content: TCB info, identity, CRL or certificates."""
    tcb_infos: list[TcbInfo] = []
    identities: list[EnclaveIdentity] = []
    crls: list[RevocationList] = []
    certificates: list[Certificate] = []
    for name, served in sorted(files.items()):
        data = _as_served_by_pcs(served)
        stripped = data.strip()
        try:
            if stripped.startswith(b"{"):
                document = parse_signed_json(stripped, name)
                if isinstance(document, TcbInfo):
                    tcb_infos.append(document)
                else:
                    identities.append(document)
            elif b"-----BEGIN X509 CRL-----" in data:
                crls.append(parse_crl(_pem_body(data, "X509 CRL"), name))
            elif b"-----BEGIN CERTIFICATE-----" in data:
                certificates.extend(parse_certificates(data))
            elif _is_der_crl(data):
                crls.append(parse_crl(data, name))
            else:
                certificates.extend(parse_certificates(data))
        except MalformedEvidence as error:
            raise AttestationInputError(
                f"collateral file {name} is not TCB info, an enclave identity, a CRL or "
                f"certificates: {error}"
            ) from None
    return Collateral(tuple(tcb_infos), tuple(identities), tuple(crls), tuple(certificates))


def _as_served_by_pcs(data: bytes) -> bytes:
    """Undo the encodings PCS uses around DER and PEM: URL-encoded issuer chains (as in its
    HTTP headers) and hex-encoded CRLs."""
    stripped = data.strip()
    if b"BEGIN%20" in stripped or b"%2D%2D%2D%2D%2DBEGIN" in stripped:
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(stripped)
    if (
        stripped
        and len(stripped) % 2 == 0
        and all(c in b"0123456789abcdefABCDEF" for c in stripped)
    ):
        return bytes.fromhex(stripped.decode("ascii"))
    return data


def _pem_body(data: bytes, label: str) -> bytes:
    import base64
    import binascii

    begin = f"-----BEGIN {label}-----".encode()
    end = f"-----END {label}-----".encode()
    start = data.find(begin)
    stop = data.find(end, start)
    if start < 0 or stop < 0:
        raise MalformedEvidence(f"unterminated PEM {label}")
    try:
        return base64.b64decode(b"".join(data[start + len(begin) : stop].split()), validate=True)
    except binascii.Error:
        raise MalformedEvidence(f"PEM {label} with invalid base64") from None


def _is_der_crl(data: bytes) -> bool:
    """A CRL's TBS has no [0] version wrapper and holds a Time where a certificate has a Name."""
    try:
        outer = der.parse_single(data, "CRL")
        tbs = outer.children()[0].children()
    except (MalformedEvidence, IndexError):
        return False
    positions = [tlv.tag for tlv in tbs]
    start = 1 if positions and positions[0] == der.INTEGER else 0
    return len(positions) > start + 2 and positions[start + 2] in (
        der.UTC_TIME,
        der.GENERALIZED_TIME,
    )


# --- PCS JSON -----------------------------------------------------------------------------


def _member_spans(text: str) -> dict[str, tuple[int, int]]:
    """The character span of every top-level member value of a JSON object."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    position = _skip_space(text, 0)
    if not text.startswith("{", position):
        raise MalformedEvidence("PCS document is not a JSON object")
    position = _skip_space(text, position + 1)
    if text.startswith("}", position):
        return spans
    while True:
        key, position = decoder.raw_decode(text, position)
        if not isinstance(key, str):
            raise MalformedEvidence("JSON object key is not a string")
        position = _skip_space(text, position)
        if not text.startswith(":", position):
            raise MalformedEvidence("malformed JSON object")
        start = _skip_space(text, position + 1)
        _, end = decoder.raw_decode(text, start)
        spans[key] = (start, end)
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
            continue
        if text.startswith("}", position) and not text[position + 1 :].strip():
            return spans
        raise MalformedEvidence("malformed JSON object")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def parse_signed_json(data: bytes, source: str = "collateral") -> TcbInfo | EnclaveIdentity:
    try:
        text = data.decode("utf-8")
        spans = _member_spans(text)
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedEvidence(f"{source}: invalid JSON ({error})") from None
    kinds = [kind for kind in ("tcbInfo", "enclaveIdentity") if kind in spans]
    if len(kinds) != 1 or "signature" not in spans or not isinstance(document, dict):
        raise MalformedEvidence(f"{source}: expected a tcbInfo or enclaveIdentity with a signature")
    kind = kinds[0]
    start, end = spans[kind]
    signature = _hex(document["signature"], "signature")
    if len(signature) != 64:
        raise MalformedEvidence(f"{source}: signature must be 64 bytes (r||s)")
    body = SignedBody(text[start:end].encode("utf-8"), signature, source)
    inner = document[kind]
    if not isinstance(inner, dict):
        raise MalformedEvidence(f"{source}: {kind} is not an object")
    try:
        if kind == "tcbInfo":
            return _tcb_info(inner, body)
        return _enclave_identity(inner, body)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise MalformedEvidence(f"{source}: malformed {kind}: {error!r}") from None


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEvidence(f"{name} is not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise MalformedEvidence(f"{name} is not a hex string") from None


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} is not a non-negative integer")
    return value


def _status(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("tcbStatus is not a string")
    return value


def _date(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date string")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _advisories(level: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(item) for item in level.get("advisoryIDs", ()))


def _tcb_level(level: Mapping[str, Any]) -> TcbLevel:
    tcb = level["tcb"]
    if "sgxtcbcomponents" in tcb:
        sgx = tuple(_int(item["svn"], "svn") for item in tcb["sgxtcbcomponents"])
    else:  # TCB info v2
        sgx = tuple(_int(tcb[f"sgxtcbcomp{index:02d}svn"], "svn") for index in range(1, 17))
    tdx = None
    if "tdxtcbcomponents" in tcb:
        tdx = tuple(_int(item["svn"], "svn") for item in tcb["tdxtcbcomponents"])
        if len(tdx) != 16:
            raise ValueError("tdxtcbcomponents must have 16 entries")
    if len(sgx) != 16:
        raise ValueError("sgxtcbcomponents must have 16 entries")
    return TcbLevel(
        sgx,
        _int(tcb["pcesvn"], "pcesvn"),
        tdx,
        _status(level["tcbStatus"]),
        str(level.get("tcbDate", "")),
        _advisories(level),
    )


def _identity_levels(levels: Sequence[Mapping[str, Any]]) -> tuple[IdentityLevel, ...]:
    return tuple(
        IdentityLevel(
            _int(level["tcb"]["isvsvn"], "isvsvn"), _status(level["tcbStatus"]), _advisories(level)
        )
        for level in levels
    )


def _module(identity: Mapping[str, Any], with_levels: bool) -> TdxModuleIdentity:
    return TdxModuleIdentity(
        id=str(identity.get("id", "")),
        mr_signer=_hex(identity["mrsigner"], "mrsigner"),
        attributes=_hex(identity["attributes"], "attributes"),
        attributes_mask=_hex(identity["attributesMask"], "attributesMask"),
        levels=_identity_levels(identity["tcbLevels"]) if with_levels else (),
    )


def _tcb_info(info: Mapping[str, Any], body: SignedBody) -> TcbInfo:
    module = info.get("tdxModule")
    return TcbInfo(
        id=str(info.get("id", "SGX")),
        version=_int(info["version"], "version"),
        issue_date=_date(info["issueDate"], "issueDate"),
        next_update=_date(info["nextUpdate"], "nextUpdate"),
        fmspc=_hex(info["fmspc"], "fmspc"),
        pce_id=_hex(info["pceId"], "pceId"),
        evaluation_data_number=_int(info.get("tcbEvaluationDataNumber", 0), "evaluation number"),
        levels=tuple(_tcb_level(level) for level in info["tcbLevels"]),
        tdx_module=_module(module, with_levels=False) if module is not None else None,
        tdx_module_identities=tuple(
            _module(identity, with_levels=True) for identity in info.get("tdxModuleIdentities", ())
        ),
        body=body,
    )


def _enclave_identity(identity: Mapping[str, Any], body: SignedBody) -> EnclaveIdentity:
    return EnclaveIdentity(
        id=str(identity["id"]),
        version=_int(identity["version"], "version"),
        issue_date=_date(identity["issueDate"], "issueDate"),
        next_update=_date(identity["nextUpdate"], "nextUpdate"),
        misc_select=int.from_bytes(_hex(identity["miscselect"], "miscselect"), "little"),
        misc_select_mask=int.from_bytes(
            _hex(identity["miscselectMask"], "miscselectMask"), "little"
        ),
        attributes=_hex(identity["attributes"], "attributes"),
        attributes_mask=_hex(identity["attributesMask"], "attributesMask"),
        mr_signer=_hex(identity["mrsigner"], "mrsigner"),
        isv_prod_id=_int(identity["isvprodid"], "isvprodid"),
        levels=_identity_levels(identity["tcbLevels"]),
        body=body,
    )


# --- CRLs ---------------------------------------------------------------------------------


def parse_crl(data: bytes, source: str = "CRL") -> RevocationList:
    outer = der.parse_single(bytes(data), "CRL").expect(der.SEQUENCE, "CRL")
    parts = outer.children()
    if len(parts) != 3:
        raise MalformedEvidence("CRL must have 3 parts")
    tbs, algorithm, signature = parts
    fields = tbs.expect(der.SEQUENCE, "tbsCertList").children()
    index = 1 if fields and fields[0].tag == der.INTEGER else 0
    if len(fields) < index + 3:
        raise MalformedEvidence("tbsCertList has too few fields")
    issuer = fields[index + 1].expect(der.SEQUENCE, "CRL issuer")
    this_update = parse_time(fields[index + 2])
    rest = fields[index + 3 :]
    next_update = None
    if rest and rest[0].tag in (der.UTC_TIME, der.GENERALIZED_TIME):
        next_update = parse_time(rest[0])
        rest = rest[1:]
    revoked: set[int] = set()
    if rest and rest[0].tag == der.SEQUENCE:
        for entry in rest[0].children():
            entry_fields = entry.expect(der.SEQUENCE, "revoked certificate").children()
            if not entry_fields:
                raise MalformedEvidence("empty revoked certificate entry")
            revoked.add(der.decode_integer(entry_fields[0].expect(der.INTEGER, "serial").content))
    algorithm_parts = algorithm.expect(der.SEQUENCE, "CRL signature algorithm").children()
    if not algorithm_parts:
        raise MalformedEvidence("empty CRL signature algorithm")
    return RevocationList(
        der=outer.encoded,
        tbs=tbs.encoded,
        issuer_der=issuer.encoded,
        issuer=format_name(issuer.encoded),
        this_update=this_update,
        next_update=next_update,
        revoked_serials=frozenset(revoked),
        signature_algorithm=SignatureAlgorithm(
            der.decode_oid(algorithm_parts[0].expect(der.OID, "algorithm").content),
            algorithm_parts[1].encoded if len(algorithm_parts) > 1 else b"",
        ),
        signature=der.decode_bit_string(signature.expect(der.BIT_STRING, "CRL signature").content),
        source=source,
    )


# --- TCB status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TcbEvaluation:
    status: str
    advisories: tuple[str, ...]
    detail: str


class TcbNotSupported(VerificationFailed):
    """The platform meets none of the TCB levels: Intel does not support its TCB."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"TCB not supported: {detail}")


def sgx_level(info: TcbInfo, components: Sequence[int], pce_svn: int) -> TcbLevel:
    for level in info.levels:
        if _meets(components, level.sgx_components) and pce_svn >= level.pce_svn:
            return level
    raise TcbNotSupported(
        f"the platform TCB (components {list(components)}, PCESVN {pce_svn}) is below every "
        f"TCB level of the TCB info for FMSPC {info.fmspc.hex()}"
    )


def tdx_level(
    info: TcbInfo, components: Sequence[int], pce_svn: int, tee_tcb_svn: bytes
) -> TcbLevel:
    """The first level the platform (PCK TCB) and the TDX module (TEE_TCB_SVN) both meet."""
    module_versioned = tee_tcb_svn[1] > 0 and bool(info.tdx_module_identities)
    for level in info.levels:
        if level.tdx_components is None:
            continue
        if not (_meets(components, level.sgx_components) and pce_svn >= level.pce_svn):
            continue
        tdx_required = list(level.tdx_components)
        tdx_actual = list(tee_tcb_svn)
        if module_versioned:
            tdx_required, tdx_actual = tdx_required[2:], tdx_actual[2:]
        if _meets(tdx_actual, tdx_required):
            return level
    raise TcbNotSupported(
        f"the platform TCB (components {list(components)}, PCESVN {pce_svn}, TEE_TCB_SVN "
        f"{tee_tcb_svn.hex()}) is below every TCB level of the TCB info for FMSPC "
        f"{info.fmspc.hex()}"
    )


def tdx_module_status(
    info: TcbInfo, tee_tcb_svn: bytes, mr_signer_seam: bytes, seam_attributes: bytes
) -> IdentityLevel | None:
    """The TDX module's own status (TDX 1.5 module identities); None when not applicable."""
    if info.tdx_module is not None:
        _check_module(info.tdx_module, "TDX module", mr_signer_seam, seam_attributes)
    if tee_tcb_svn[1] == 0 or not info.tdx_module_identities:
        return None
    module_id = f"TDX_{tee_tcb_svn[1]:02X}"
    for identity in info.tdx_module_identities:
        if identity.id == module_id:
            _check_module(identity, module_id, mr_signer_seam, seam_attributes)
            for level in identity.levels:
                if tee_tcb_svn[0] >= level.isv_svn:
                    return level
            raise TcbNotSupported(
                f"TDX module {module_id} SVN {tee_tcb_svn[0]} is below every level of its identity"
            )
    raise TcbNotSupported(f"the TCB info has no identity for TDX module {module_id}")


def _check_module(
    identity: TdxModuleIdentity, name: str, mr_signer_seam: bytes, seam_attributes: bytes
) -> None:
    if identity.mr_signer != mr_signer_seam:
        raise VerificationFailed(
            f"MRSIGNERSEAM {mr_signer_seam.hex()} is not the signer of {name} "
            f"({identity.mr_signer.hex()})"
        )
    if _masked(seam_attributes, identity.attributes_mask) != _masked(
        identity.attributes, identity.attributes_mask
    ):
        raise VerificationFailed(f"SEAM attributes {seam_attributes.hex()} do not match {name}")


def qe_identity_level(
    identity: EnclaveIdentity,
    mr_signer: bytes,
    isv_prod_id: int,
    misc_select: int,
    attributes: bytes,
    isv_svn: int,
) -> IdentityLevel:
    """Check the QE report against its identity; return the level its ISVSVN reaches."""
    if mr_signer != identity.mr_signer:
        raise VerificationFailed(
            f"QE MRSIGNER {mr_signer.hex()} is not that of the {identity.id} identity "
            f"({identity.mr_signer.hex()})"
        )
    if isv_prod_id != identity.isv_prod_id:
        raise VerificationFailed(
            f"QE ISVPRODID {isv_prod_id} is not that of the {identity.id} identity "
            f"({identity.isv_prod_id})"
        )
    if misc_select & identity.misc_select_mask != identity.misc_select & identity.misc_select_mask:
        raise VerificationFailed(f"QE MISCSELECT 0x{misc_select:08x} does not match {identity.id}")
    if _masked(attributes, identity.attributes_mask) != _masked(
        identity.attributes, identity.attributes_mask
    ):
        raise VerificationFailed(f"QE attributes {attributes.hex()} do not match {identity.id}")
    for level in identity.levels:
        if isv_svn >= level.isv_svn:
            return level
    raise TcbNotSupported(f"QE ISVSVN {isv_svn} is below every level of the {identity.id} identity")


def converge(platform: str, component: str) -> str:
    """Lower a platform status by a component's (QE or TDX module) status, as Intel's QVL does."""
    if component == REVOKED:
        return REVOKED
    if component == OUT_OF_DATE:
        if platform in (UP_TO_DATE, SW_HARDENING_NEEDED):
            return OUT_OF_DATE
        if platform in (CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


def _meets(actual: Sequence[int], required: Sequence[int]) -> bool:
    return len(actual) == len(required) and all(
        a >= r for a, r in zip(actual, required, strict=True)
    )


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value.ljust(len(mask), b"\0"), mask, strict=False))
