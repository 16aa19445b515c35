"""The simulated quoting enclave: local reports in, SGX ECDSA quotes (version 3) out.

A quote is made from a local report addressed to the quoting enclave (QE), as on hardware:
the QE checks the report's MAC, then signs the header and the report body with the
platform's attestation key. The signature data carries the QE's own report, which binds the
attestation key and is signed by the PCK leaf key, and the PCK certificate chain as PEM
(certification data type 5). Layout: docs/sim-tee.md and attestation/intel_quote.py.

The header's QE vendor id is "INCLAVARE-SIM-QE": verifiers know the quote is simulated and
refuse it unless simulated evidence is explicitly allowed.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING

from inclavare.attestation.intel_quote import (
    ATTESTATION_KEY_ECDSA_P256,
    CERT_PCK_CERT_CHAIN,
    SIM_QE_ISV_PROD_ID,
    SIM_QE_MR_SIGNER,
    SIM_QE_VENDOR_ID,
)
from inclavare.tee.sim.errors import PlatformError
from inclavare.tee.sim.identity import SIM_CPU_SVN, SIM_PCE_SVN, SIM_QE_SVN
from inclavare.tee.sim.keys import ReportKeys
from inclavare.tee.sim.reports import verify_report
from inclavare.tee.sim.sgx import (
    FLAG_INIT,
    FLAG_MODE64BIT,
    REPORT_BODY_SIZE,
    Attributes,
    EnclaveIdentity,
    TargetInfo,
    report_body,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

QUOTE_VERSION = 3
# Real quoting enclaves put 32 bytes 00..1f here; so does this one.
QE_AUTH_DATA = bytes(range(32))

SIM_QE_IDENTITY = EnclaveIdentity(
    mr_enclave=hashlib.sha256(b"inclavare-sim quoting enclave").digest(),
    mr_signer=SIM_QE_MR_SIGNER,
    attributes=Attributes(FLAG_INIT | FLAG_MODE64BIT),
    isv_prod_id=SIM_QE_ISV_PROD_ID,
    isv_svn=SIM_QE_SVN,
)
QE_TARGET_INFO = TargetInfo.of(SIM_QE_IDENTITY)


def create_quote(
    keys: ReportKeys,
    report: bytes,
    attestation_key_pem: bytes,
    pck_key_pem: bytes,
    pck_chain_pem: bytes,
) -> bytes:
    """The quote of `report`, a local report made for the quoting enclave (QE_TARGET_INFO)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    checked = verify_report(keys, report, QE_TARGET_INFO)
    attestation_key = serialization.load_pem_private_key(attestation_key_pem, password=None)
    pck_key = serialization.load_pem_private_key(pck_key_pem, password=None)
    if not isinstance(attestation_key, ec.EllipticCurvePrivateKey) or not isinstance(
        pck_key, ec.EllipticCurvePrivateKey
    ):
        raise PlatformError("the platform's attestation and PCK keys must be ECDSA P-256 keys")
    public = attestation_key.public_key().public_numbers()
    attestation_public = public.x.to_bytes(32, "big") + public.y.to_bytes(32, "big")

    user_data = hashlib.sha256(attestation_public).digest()[:16] + bytes(4)
    header = (
        struct.pack("<HHIHH", QUOTE_VERSION, ATTESTATION_KEY_ECDSA_P256, 0, SIM_QE_SVN, SIM_PCE_SVN)
        + SIM_QE_VENDOR_ID
        + user_data
    )
    signed = header + checked.raw[:REPORT_BODY_SIZE]

    binding = hashlib.sha256(attestation_public + QE_AUTH_DATA).digest()
    qe_report = report_body(SIM_QE_IDENTITY, SIM_CPU_SVN, binding)
    certification = pck_chain_pem
    signature_data = (
        _sign(attestation_key, signed)
        + attestation_public
        + qe_report
        + _sign(pck_key, qe_report)
        + struct.pack("<H", len(QE_AUTH_DATA))
        + QE_AUTH_DATA
        + struct.pack("<HI", CERT_PCK_CERT_CHAIN, len(certification))
        + certification
    )
    return signed + struct.pack("<I", len(signature_data)) + signature_data


def _sign(key: EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 with SHA-256, as r || s (32 bytes each, big-endian)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
