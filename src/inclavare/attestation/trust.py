"""Trusted roots, pinned by the SHA-256 of their SubjectPublicKeyInfo.

Roots are never recognised by name: Intel's sample data uses test roots whose subject is
identical to the real "Intel SGX Root CA". A certificate is a trust anchor only when its
public key hashes to one of the values below, or when the caller added it explicitly
(`--roots`): Intel's test roots, and the per-host root of the simulated platform.

The AMD signing keys one level below the ARKs are listed too. They are not anchors; knowing
them lets the verifier say whether a VCEK/VLEK chain went through the ASK of the expected
product, and whether it went through an ASK (VCEK) or an ASVK (VLEK).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class Authority(Enum):
    """Which kind of evidence a root may vouch for."""

    INTEL_SGX = "Intel SGX/TDX provisioning (PCK certificates, PCS collateral)"
    AMD_SEV = "AMD SEV-SNP (VCEK/VLEK)"
    INTEL_IAS = "Intel attestation service (EPID reports)"


@dataclass(frozen=True)
class Anchor:
    name: str
    spki_sha256: str
    authorities: frozenset[Authority]
    product: str | None = None  # AMD product line for ARKs
    vendor: bool = True  # False for roots given by the caller


INTEL_SGX_ROOT_CA = Anchor(
    "Intel SGX Root CA",
    "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e",
    frozenset({Authority.INTEL_SGX}),
)
INTEL_ATTESTATION_REPORT_SIGNING_CA = Anchor(
    "Intel SGX Attestation Report Signing CA",
    "a9beeb83bb1222c108b436bdd82334e5cf380d61039dae11db95272343850394",
    frozenset({Authority.INTEL_IAS}),
)
AMD_ARK_MILAN = Anchor(
    "ARK-Milan",
    "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9",
    frozenset({Authority.AMD_SEV}),
    product="Milan",
)
AMD_ARK_GENOA = Anchor(
    "ARK-Genoa",
    "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831",
    frozenset({Authority.AMD_SEV}),
    product="Genoa",
)
AMD_ARK_TURIN = Anchor(
    "ARK-Turin",
    "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08",
    frozenset({Authority.AMD_SEV}),
    product="Turin",
)

VENDOR_ANCHORS = (
    INTEL_SGX_ROOT_CA,
    INTEL_ATTESTATION_REPORT_SIGNING_CA,
    AMD_ARK_MILAN,
    AMD_ARK_GENOA,
    AMD_ARK_TURIN,
)


@dataclass(frozen=True)
class AmdSigningKey:
    """An AMD key directly below an ARK: an ASK signs VCEKs, an ASVK signs VLEKs."""

    name: str
    product: str
    signs: str  # "VCEK" or "VLEK"


AMD_SIGNING_KEYS = {
    "42491669ccb851d627ea9846cd24eccbeb7de7c2a62740120fff88001d38ebb6": AmdSigningKey(
        "SEV-Milan", "Milan", "VCEK"
    ),
    "0324d55bcd48ba877a8fd87c0e1b4934dec8448e3807a24384a34dc6a6c9ebb8": AmdSigningKey(
        "SEV-Genoa", "Genoa", "VCEK"
    ),
    "0000ead352025f208bf55297c4192c34cd1b878002107366d8f2065a9ae7d3a9": AmdSigningKey(
        "SEV-Turin", "Turin", "VCEK"
    ),
    "66450a123ea5876206df67f2514a4fea224c0f63b18313423078b0edc4535e33": AmdSigningKey(
        "SEV-VLEK-Milan", "Milan", "VLEK"
    ),
    "7d1633252ebbadaa75f96e9b4e6f7d43a90ceb3f843937482630f8da2459264e": AmdSigningKey(
        "SEV-VLEK-Genoa", "Genoa", "VLEK"
    ),
    "bfc441408b2f806c5dbf180bd8920e6e60dd404d82141780d85dbf962954d386": AmdSigningKey(
        "SEV-VLEK-Turin", "Turin", "VLEK"
    ),
}


class TrustStore:
    """The roots a verification may end at: the vendors' pinned keys plus explicit extras."""

    def __init__(self, extra: Iterable[Anchor] = ()) -> None:
        self._anchors: dict[str, Anchor] = {anchor.spki_sha256: anchor for anchor in VENDOR_ANCHORS}
        for anchor in extra:
            self._anchors.setdefault(anchor.spki_sha256, anchor)

    @classmethod
    def with_extra_roots(cls, spki_hashes_and_names: Iterable[tuple[str, str]]) -> TrustStore:
        """Add caller-given roots, trusted for every kind of evidence (they are explicit)."""
        extra = [
            Anchor(name, digest, frozenset(Authority), vendor=False)
            for digest, name in spki_hashes_and_names
        ]
        return cls(extra)

    def anchor_for(self, spki_sha256: str, authority: Authority) -> Anchor | None:
        anchor = self._anchors.get(spki_sha256)
        if anchor is None or authority not in anchor.authorities:
            return None
        return anchor
