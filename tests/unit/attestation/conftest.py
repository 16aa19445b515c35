"""Shared fixtures: the vector folder, read in place and never copied into the repository.

The vectors live beside the repository (`<repo>/../shared/vectors`) or wherever
INCLAVARE_VECTORS points. Without them the tests that need them are skipped, loudly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inclavare.attestation.certificate import Certificate, parse_certificates
from inclavare.attestation.chain import SignatureCache
from inclavare.attestation.collateral import Collateral, parse_collateral
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.trust import TrustStore

REPO_ROOT = Path(__file__).resolve().parents[3]


def vectors_dir() -> Path:
    configured = os.environ.get("INCLAVARE_VECTORS")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "vectors"


class Vectors:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def certificates(self, *names: str) -> list[Certificate]:
        return [cert for name in names for cert in parse_certificates(self.read(name))]

    def certificate(self, name: str) -> Certificate:
        return self.certificates(name)[0]

    def collateral(self, *names: str) -> Collateral:
        return parse_collateral({Path(name).name: self.read(name) for name in names})

    def inputs(
        self,
        at: str | datetime | None = None,
        roots: Iterable[str] = (),
        pck: Iterable[str] = (),
        vek: str | None = None,
        ca: Iterable[str] = (),
        collateral: Collateral | None = None,
        cache: SignatureCache | None = None,
    ) -> VerificationInputs:
        root_certs = self.certificates(*roots)
        return VerificationInputs(
            at=moment(at) if at is not None else datetime.now(UTC),
            trust=TrustStore.with_extra_roots((c.spki_sha256, c.common_name) for c in root_certs),
            pck_certificates=tuple(self.certificates(*pck)) + tuple(root_certs),
            endorsement_key=self.certificate(vek) if vek else None,
            ca_certificates=tuple(self.certificates(*ca)) + tuple(root_certs),
            collateral=collateral,
            cache=cache,
        )


def moment(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@pytest.fixture(scope="session")
def vectors() -> Vectors:
    root = vectors_dir()
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"attestation test vectors not found at {root} (set INCLAVARE_VECTORS)")
    return Vectors(root)
