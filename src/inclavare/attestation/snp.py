"""AMD SEV-SNP attestation reports, their VCEK/VLEK and AMD's certificate chain.

A report (1184 bytes) is signed with ECDSA P-384/SHA-384 over its first 0x2A0 bytes by a
versioned chip endorsement key (VCEK, unique to the chip and its TCB) or a versioned loaded
endorsement key (VLEK, provisioned by a cloud provider). The VCEK is signed by AMD's ASK, the
VLEK by AMD's ASVK, both by the ARK of the product line (Milan, Genoa, Turin), all with
RSASSA-PSS.

The endorsement key's certificate names the TCB it was derived for and, for a VCEK, the chip:
both must equal the report's REPORTED_TCB and CHIP_ID. How the 8 bytes of a TCB version split
into components depends on the product: Turin added an FMC component and moved the others.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass

from inclavare.attestation import der
from inclavare.attestation.certificate import Certificate
from inclavare.attestation.chain import verify_chain
from inclavare.attestation.errors import MalformedEvidence, MissingInput, VerificationFailed
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.signatures import ecdsa_verify
from inclavare.attestation.trust import AMD_SIGNING_KEYS, Authority
from inclavare.attestation.verdict import ClaimValue, Verdict

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_ALGORITHM_ECDSA_P384_SHA384 = 1
LATEST_KNOWN_VERSION = 5

POLICY_BITS = {
    "smt": 16,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}
POLICY_DEBUG = 1 << POLICY_BITS["debug"]

SIGNING_KEYS = {0: "VCEK", 1: "VLEK", 7: "none"}

_AMD_OID = "1.3.6.1.4.1.3704.1."
OID_PRODUCT_NAME = _AMD_OID + "2"
OID_BOOT_LOADER_SPL = _AMD_OID + "3.1"
OID_TEE_SPL = _AMD_OID + "3.2"
OID_SNP_SPL = _AMD_OID + "3.3"
OID_MICROCODE_SPL = _AMD_OID + "3.8"
OID_FMC_SPL = _AMD_OID + "3.9"
OID_HWID = _AMD_OID + "4"
OID_CSP_ID = _AMD_OID + "5"

PRODUCTS = ("Milan", "Genoa", "Turin")

AZURE_HCL_MAGIC = b"HCLA"
AZURE_HCL_REPORT_OFFSET = 0x20


@dataclass(frozen=True)
class TcbVersion:
    """The security patch levels packed in a TCB_VERSION, decoded for one product line."""

    boot_loader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None  # Turin and later

    @classmethod
    def decode(cls, raw: bytes, product: str) -> TcbVersion:
        if product == "Turin":
            return cls(raw[1], raw[2], raw[3], raw[7], raw[0])
        return cls(raw[0], raw[1], raw[6], raw[7], None)

    def as_claim(self) -> dict[str, int]:
        claim = {
            "boot_loader": self.boot_loader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            claim["fmc"] = self.fmc
        return claim


@dataclass(frozen=True)
class SnpReport:
    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algorithm: int
    current_tcb: bytes
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid: tuple[int, int, int] | None  # family, model, stepping (version 3 and later)
    chip_id: bytes
    committed_tcb: bytes
    current_version: tuple[int, int, int]  # major, minor, build
    committed_version: tuple[int, int, int]
    launch_tcb: bytes
    signature_r: bytes
    signature_s: bytes
    trailing_bytes: int

    @property
    def signed_region(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signing_key(self) -> str:
        return SIGNING_KEYS.get((self.key_info >> 2) & 0x7, "reserved")

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)


def looks_like_report(data: bytes) -> bool:
    """A report is 1184 bytes whose signature algorithm is 1 or whose signature tail is zero."""
    if len(data) < REPORT_SIZE:
        return len(data) >= 0x38 and _plausible_header(data)
    return _plausible_header(data) or not any(data[0x330:REPORT_SIZE])


def _plausible_header(data: bytes) -> bool:
    version = int.from_bytes(data[0:4], "little")
    algorithm = int.from_bytes(data[0x34:0x38], "little")
    return 2 <= version <= 0xFF and algorithm == SIGNATURE_ALGORITHM_ECDSA_P384_SHA384


def looks_like_azure_hcl_report(data: bytes) -> bool:
    return data.startswith(AZURE_HCL_MAGIC)


def parse_report(data: bytes) -> SnpReport:
    data = bytes(data)
    if len(data) < REPORT_SIZE:
        raise MalformedEvidence(
            f"SEV-SNP report truncated: {len(data)} bytes, a report has {REPORT_SIZE}"
        )
    raw = data[:REPORT_SIZE]

    def u32(offset: int) -> int:
        return int(struct.unpack_from("<I", raw, offset)[0])

    def u64(offset: int) -> int:
        return int(struct.unpack_from("<Q", raw, offset)[0])

    version = u32(0x000)
    if any(raw[0x330:REPORT_SIZE]):
        raise MalformedEvidence(
            "SEV-SNP report: the reserved bytes after the signature are not zero"
        )
    if version < 2:
        raise MalformedEvidence(f"SEV-SNP report version {version} is not supported (2 or later)")
    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=u32(0x004),
        policy=u64(0x008),
        family_id=raw[0x010:0x020],
        image_id=raw[0x020:0x030],
        vmpl=u32(0x030),
        signature_algorithm=u32(0x034),
        current_tcb=raw[0x038:0x040],
        platform_info=u64(0x040),
        key_info=u32(0x048),
        report_data=raw[0x050:0x090],
        measurement=raw[0x090:0x0C0],
        host_data=raw[0x0C0:0x0E0],
        id_key_digest=raw[0x0E0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=raw[0x180:0x188],
        cpuid=(raw[0x188], raw[0x189], raw[0x18A]) if version >= 3 else None,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=raw[0x1E0:0x1E8],
        current_version=(raw[0x1EA], raw[0x1E9], raw[0x1E8]),
        committed_version=(raw[0x1EE], raw[0x1ED], raw[0x1EC]),
        launch_tcb=raw[0x1F0:0x1F8],
        signature_r=raw[0x2A0:0x2E8],
        signature_s=raw[0x2E8:0x330],
        trailing_bytes=len(data) - REPORT_SIZE,
    )


# --- the VCEK / VLEK certificate ------------------------------------------------------------


@dataclass(frozen=True)
class EndorsementKey:
    """What a VCEK or VLEK certificate states about the key."""

    kind: str  # "VCEK" or "VLEK"
    product_name: str | None  # as written, e.g. "Milan-B0"
    levels: dict[str, int]  # boot_loader, tee, snp, microcode, fmc (those present)
    hw_id: bytes | None
    csp_id: str | None

    @property
    def product(self) -> str | None:
        if self.product_name is None:
            return None
        return self.product_name.split("-")[0]


def endorsement_key_info(certificate: Certificate) -> EndorsementKey:
    return _endorsement_key_info(certificate.der)


@functools.lru_cache(maxsize=256)
def _endorsement_key_info(certificate_der: bytes) -> EndorsementKey:
    certificate = Certificate.from_der(certificate_der)
    levels = {}
    for name, oid in (
        ("boot_loader", OID_BOOT_LOADER_SPL),
        ("tee", OID_TEE_SPL),
        ("snp", OID_SNP_SPL),
        ("microcode", OID_MICROCODE_SPL),
        ("fmc", OID_FMC_SPL),
    ):
        extension = certificate.extension(oid)
        if extension is not None:
            tlv = der.parse_single(extension.value, name).expect(der.INTEGER, f"{name} SPL")
            levels[name] = der.decode_integer(tlv.content)
    product = certificate.extension(OID_PRODUCT_NAME)
    csp = certificate.extension(OID_CSP_ID)
    hw_id = certificate.extension(OID_HWID)
    csp_id = _ia5(csp.value, "cspID") if csp is not None else None
    kind = "VLEK" if csp_id is not None or certificate.common_name == "SEV-VLEK" else "VCEK"
    return EndorsementKey(
        kind=kind,
        product_name=_ia5(product.value, "productName") if product is not None else None,
        levels=levels,
        hw_id=_hw_id(hw_id.value) if hw_id is not None else None,
        csp_id=csp_id,
    )


def _ia5(value: bytes, name: str) -> str:
    return der.decode_string(der.parse_single(value, name))


def _hw_id(value: bytes) -> bytes:
    """The chip id: AMD writes it raw in extnValue; some writers wrap it in an OCTET STRING."""
    if len(value) in (66, 10) and value[0] == der.OCTET_STRING and value[1] == len(value) - 2:
        return value[2:]
    return value


# --- verification -------------------------------------------------------------------------


def check_report(
    report: SnpReport, inputs: VerificationInputs, warnings: list[str] | None = None
) -> Verdict:
    warnings = [] if warnings is None else warnings
    if report.signature_algorithm != SIGNATURE_ALGORITHM_ECDSA_P384_SHA384:
        raise VerificationFailed(
            f"SEV-SNP signature algorithm {report.signature_algorithm} is not supported"
        )
    if report.version > LATEST_KNOWN_VERSION:
        warnings.append(
            f"report version {report.version} is newer than {LATEST_KNOWN_VERSION}; "
            "read with the latest known layout"
        )
    if report.trailing_bytes:
        warnings.append(f"{report.trailing_bytes} bytes after the report are not signed; ignored")
    if report.vmpl > 3:
        raise VerificationFailed(f"VMPL {report.vmpl} is out of range")

    vek = inputs.endorsement_key
    if vek is None:
        raise MissingInput(
            "SEV-SNP evidence needs the VCEK or VLEK certificate: give it with --vcek FILE"
        )
    from cryptography.hazmat.primitives.asymmetric import ec

    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise VerificationFailed(f"certificate {vek.common_name!r} does not hold a P-384 key")
    if not ecdsa_verify(
        key, report.signature_r, report.signature_s, report.signed_region, "sha384", "little"
    ):
        raise VerificationFailed(
            f"the report signature does not verify with the key of {vek.common_name!r}"
        )

    chain = verify_chain(
        vek, inputs.ca_certificates, inputs.trust, Authority.AMD_SEV, inputs.at, inputs.cache
    )
    if not chain.anchor.vendor:
        warnings.append(f"chain ends at {chain.anchor.name!r}, a root given explicitly")
    info = endorsement_key_info(vek)
    product = _product(info, chain.anchor.product, chain.certificates)
    if report.signing_key != info.kind:
        raise VerificationFailed(
            f"the report says it is signed by a {report.signing_key} but the key is a {info.kind}"
        )
    _check_cpuid(report, product, warnings)

    reported = TcbVersion.decode(report.reported_tcb, product)
    for name, value in reported.as_claim().items():
        certified = info.levels.get(name)
        if certified is None:
            raise VerificationFailed(f"the {info.kind} certificate does not state the {name} SPL")
        if certified != value:
            raise VerificationFailed(
                f"REPORTED_TCB {name} {value} differs from the {info.kind}'s {name} SPL {certified}"
            )
    if info.kind == "VCEK":
        _check_chip_id(report, info, warnings)

    if report.debug:
        warnings.append("the guest policy allows debugging")
    return Verdict(
        verified=True,
        tee="snp",
        claims=report_claims(report, product, info),
        chain=chain.subjects,
        warnings=tuple(warnings),
    )


def _product(
    info: EndorsementKey, anchor_product: str | None, chain: tuple[Certificate, ...]
) -> str:
    product = info.product
    if product is not None and product not in PRODUCTS:
        raise VerificationFailed(f"unknown AMD product {info.product_name!r} in the {info.kind}")
    if anchor_product is not None and product is not None and anchor_product != product:
        raise VerificationFailed(
            f"the {info.kind} is for {product} but its chain ends at the ARK of {anchor_product}"
        )
    product = product or anchor_product
    if product is None:
        raise VerificationFailed(f"the product line of the {info.kind} cannot be determined")
    if len(chain) > 1:
        signer = AMD_SIGNING_KEYS.get(chain[1].spki_sha256)
        if signer is not None and (signer.product != product or signer.signs != info.kind):
            raise VerificationFailed(
                f"the {info.kind} for {product} is signed by {signer.name}, "
                f"which signs {signer.signs}s for {signer.product}"
            )
    return product


def _check_cpuid(report: SnpReport, product: str, warnings: list[str]) -> None:
    if report.cpuid is None or report.cpuid == (0, 0, 0):
        return
    family, model, _ = report.cpuid
    if family == 0x1A:
        reported = "Turin"
    elif family == 0x19 and model <= 0x0F:
        reported = "Milan"
    elif family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        reported = "Genoa"
    else:
        warnings.append(f"unknown CPU family 0x{family:02x} model 0x{model:02x}")
        return
    if reported != product:
        raise VerificationFailed(
            f"the report's CPUID says {reported} but the endorsement key is for {product}"
        )


def _check_chip_id(report: SnpReport, info: EndorsementKey, warnings: list[str]) -> None:
    if info.hw_id is None:
        raise VerificationFailed("the VCEK certificate does not state the chip id (hwID)")
    if not any(report.chip_id):
        warnings.append("CHIP_ID is masked in the report; it was not compared with the VCEK")
        return
    if report.chip_id[: len(info.hw_id)] != info.hw_id:
        raise VerificationFailed("the report's CHIP_ID is not the chip id (hwID) of the VCEK")


def report_claims(report: SnpReport, product: str, info: EndorsementKey) -> dict[str, ClaimValue]:
    return {
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "host_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
        "policy": report.policy,
        "debug": report.debug,
        "vmpl": report.vmpl,
        "reported_tcb": TcbVersion.decode(report.reported_tcb, product).as_claim(),
        "current_tcb": TcbVersion.decode(report.current_tcb, product).as_claim(),
        "committed_tcb": TcbVersion.decode(report.committed_tcb, product).as_claim(),
        "launch_tcb": TcbVersion.decode(report.launch_tcb, product).as_claim(),
        "guest_svn": report.guest_svn,
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "report_id": report.report_id.hex(),
        "platform_info": report.platform_info,
        "version": report.version,
        "product": product,
        "signing_key": info.kind.lower(),
        "firmware": ".".join(str(part) for part in report.current_version),
    }


def check_azure_hcl_report(data: bytes, inputs: VerificationInputs) -> Verdict:
    """An Azure confidential VM's HCL report: an SNP report bound to runtime data (JSON)."""
    start = AZURE_HCL_REPORT_OFFSET
    report = parse_report(data[start : start + REPORT_SIZE])
    header_at = start + REPORT_SIZE
    if len(data) < header_at + 20:
        raise MalformedEvidence("Azure HCL report truncated before its runtime data header")
    _, _, _, hash_type, size = struct.unpack_from("<5I", data, header_at)
    runtime_data = data[header_at + 20 : header_at + 20 + size]
    if len(runtime_data) != size:
        raise MalformedEvidence("Azure HCL report truncated inside its runtime data")
    hashes = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}
    if hash_type not in hashes:
        raise VerificationFailed(f"unknown Azure HCL runtime data hash type {hash_type}")
    digest = hashes[hash_type](runtime_data).digest()
    verdict = check_report(report, inputs)
    if report.report_data != digest.ljust(64, b"\0"):
        raise VerificationFailed("the SNP report data does not bind the HCL runtime data")
    claims = dict(verdict.claims)
    claims["runtime_data"] = runtime_data.hex()
    return Verdict(True, "snp", None, claims, verdict.tcb_status, verdict.chain, verdict.warnings)
