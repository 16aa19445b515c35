"""PCS collateral: signatures over the exact JSON text, CRLs, and the TCB status."""

from __future__ import annotations

from pathlib import Path

import pytest

from inclavare.attestation import collateral as pcs
from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.errors import AttestationInputError, VerificationFailed
from inclavare.attestation.intel_quote import TdReportBody, parse_quote
from inclavare.attestation.pck import pck_info
from inclavare.attestation.verifier import verify_evidence

from .conftest import Vectors

TDX_2023 = (
    "tdx/gotdxguest_tdx_tcbinfo_v3_fmspc50806f000000.json",
    "tdx/gotdxguest_td_qe_identity.json",
    "tdx/gotdxguest_pck_platform_crl.der",
    "intel-roots/intel_tcb_signing_chain_from_gotdxguest.pem",
    "intel-roots/intel_sgx_root_ca_crl_from_gotdxguest.der",
)
SGX_QVL = (
    "sgx/qvl_testroot_tcbInfo.json",
    "sgx/qvl_testroot_qeIdentity.json",
    "sgx/qvl_testroot_qveIdentity.json",
    "sgx/qvl_testroot_rootCaCrl.der",
    "sgx/qvl_testroot_intermediateCaCrl.der",
    "sgx/qvl_testroot_tcbSignChain.pem",
)
SGX_QVL_PCK = ("sgx/qvl_testroot_pckCert.pem", "sgx/qvl_testroot_pckSignChain.pem")
SGX_QVL_ROOT = ("sgx/qvl_testroot_trustedRootCaCert.pem",)


def test_real_tdx_quote_is_up_to_date_with_its_collateral(vectors: Vectors) -> None:
    inputs = vectors.inputs(at="2023-06-20T00:00:00Z", collateral=vectors.collateral(*TDX_2023))
    verdict = verify_evidence(vectors.read("tdx/trustee_tdx_quote_4.dat"), inputs)
    assert verdict.verified, verdict.reason
    assert verdict.tcb_status == "UpToDate"
    assert not any("revocation" in warning for warning in verdict.warnings)


def test_platform_below_every_level_is_not_supported(vectors: Vectors) -> None:
    inputs = vectors.inputs(at="2023-06-20T00:00:00Z", collateral=vectors.collateral(*TDX_2023))
    verdict = verify_evidence(vectors.read("tdx/gotdxguest_quote_v4_SPR_E4.dat"), inputs)
    assert not verdict.verified
    assert str(verdict.reason).startswith("TCB not supported")


def test_expired_collateral_says_which_and_when(vectors: Vectors) -> None:
    inputs = vectors.inputs(at="2023-07-10T00:00:00Z", collateral=vectors.collateral(*TDX_2023))
    verdict = verify_evidence(vectors.read("tdx/trustee_tdx_quote_4.dat"), inputs)
    assert not verdict.verified
    assert "CRL of 'Intel SGX PCK Platform CA' expired on 2023-07-08" in str(verdict.reason)


def test_collateral_for_another_platform_is_missing(vectors: Vectors) -> None:
    names = ("tdx/trustee_tdx_tcbinfo_fmspc00A06D080000.json", *TDX_2023[1:])
    inputs = vectors.inputs(at="2023-06-20T00:00:00Z", collateral=vectors.collateral(*names))
    verdict = verify_evidence(vectors.read("tdx/trustee_tdx_quote_4.dat"), inputs)
    assert not verdict.verified
    assert "no TDX TCB info for FMSPC 50806f000000" in str(verdict.reason)


def test_qvl_sgx_sample_with_full_collateral(vectors: Vectors) -> None:
    inputs = vectors.inputs(
        at="2020-01-01",
        pck=SGX_QVL_PCK,
        roots=SGX_QVL_ROOT,
        collateral=vectors.collateral(*SGX_QVL),
    )
    verdict = verify_evidence(vectors.read("sgx/qvl_testroot_quote.dat"), inputs)
    assert verdict.verified, verdict.reason
    assert verdict.tcb_status == "UpToDate"


def test_qvl_tdx_sample_has_a_foreign_quoting_enclave(vectors: Vectors) -> None:
    names = (
        "tdx/qvl_testroot_tcbInfo.json",
        "tdx/qvl_testroot_qeIdentity.json",
        "tdx/qvl_testroot_rootCaCrl.der",
        "tdx/qvl_testroot_intermediateCaCrl.der",
        "tdx/qvl_testroot_tcbSignChain.pem",
    )
    inputs = vectors.inputs(
        roots=("tdx/qvl_testroot_trustedRootCaCert.pem",), collateral=vectors.collateral(*names)
    )
    verdict = verify_evidence(vectors.read("tdx/qvl_testroot_quote.dat"), inputs)
    assert not verdict.verified
    assert "QE MRSIGNER" in str(verdict.reason)


def test_tampered_tcb_info_text_fails_its_signature(vectors: Vectors) -> None:
    original = vectors.read(TDX_2023[0])
    tampered = original.replace(b'"tcbStatus":"OutOfDate"', b'"tcbStatus":"UpToDate"', 1)
    assert tampered != original
    files = {Path(name).name: vectors.read(name) for name in TDX_2023[1:]}
    files["tcbinfo.json"] = tampered
    inputs = vectors.inputs(at="2023-06-20T00:00:00Z", collateral=pcs.parse_collateral(files))
    verdict = verify_evidence(vectors.read("tdx/trustee_tdx_quote_4.dat"), inputs)
    assert not verdict.verified
    assert "signature of the TCB info" in str(verdict.reason)


def test_signed_span_is_the_raw_inner_object(vectors: Vectors) -> None:
    data = vectors.read("tdx/gotdxguest_td_qe_identity.json")
    identity = pcs.parse_signed_json(data)
    assert isinstance(identity, pcs.EnclaveIdentity)
    assert data.startswith(b'{"enclaveIdentity":' + identity.body.signed_bytes)
    assert (
        identity.mr_signer.hex()
        == "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"
    )


def test_tdx_15_module_identities(vectors: Vectors) -> None:
    """The v5 quote's TCB, evaluated with TDX 1.5 TCB info (whose signer has since expired)."""
    quote = parse_quote(vectors.read("tdx/gotdxguest_quote_v5_sample.dat"))
    assert isinstance(quote.body, TdReportBody)
    info = pcs.parse_signed_json(vectors.read("tdx/gotdxguest_tdx_tcbinfo_tdx15.json"))
    assert isinstance(info, pcs.TcbInfo)
    leaf = parse_certificates(quote.certification.certification_data)[0]
    platform = pck_info(leaf)
    level = pcs.tdx_level(info, platform.tcb_components, platform.pce_svn, quote.body.tee_tcb_svn)
    assert level.status == "UpToDate"
    module = pcs.tdx_module_status(
        info, quote.body.tee_tcb_svn, quote.body.mr_signer_seam, quote.body.seam_attributes
    )
    assert module is not None and module.status == "UpToDate"
    # A module one SVN older than the level of 2024-11 is out of date.
    older = bytes([5]) + quote.body.tee_tcb_svn[1:]
    stale = pcs.tdx_module_status(
        info, older, quote.body.mr_signer_seam, quote.body.seam_attributes
    )
    assert stale is not None and stale.status == "OutOfDate"
    assert pcs.converge(level.status, stale.status) == "OutOfDate"
    unknown = bytes([3, 7]) + quote.body.tee_tcb_svn[2:]
    with pytest.raises(pcs.TcbNotSupported, match="TDX_07"):
        pcs.tdx_module_status(info, unknown, quote.body.mr_signer_seam, quote.body.seam_attributes)


def test_tdx_15_collateral_signed_by_an_expired_certificate(vectors: Vectors) -> None:
    names = ("tdx/gotdxguest_tdx_tcbinfo_tdx15.json", *TDX_2023[1:])
    inputs = vectors.inputs(at="2026-02-10T00:00:00Z", collateral=vectors.collateral(*names))
    verdict = verify_evidence(vectors.read("tdx/gotdxguest_quote_v5_sample.dat"), inputs)
    assert not verdict.verified
    assert "expired" in str(verdict.reason)


def test_sgx_levels_from_tcb_info_v2(vectors: Vectors) -> None:
    info = pcs.parse_signed_json(vectors.read("sgx/qvl_testroot_tcbInfo.json"))
    assert isinstance(info, pcs.TcbInfo)
    components = [0, 3, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert pcs.sgx_level(info, components, 3).status == "UpToDate"
    components[6] = 0
    assert pcs.sgx_level(info, components, 3).status == "ConfigurationNeeded"
    revoked = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert pcs.sgx_level(info, revoked, 1).status == "Revoked"
    assert pcs.sgx_level(info, [0] * 16, 0).status == "OutOfDate"
    info_without_floor = pcs.TcbInfo(**{**info.__dict__, "levels": info.levels[:-1]})
    with pytest.raises(pcs.TcbNotSupported):
        pcs.sgx_level(info_without_floor, [0] * 16, 0)


@pytest.mark.parametrize(
    ("platform", "component", "result"),
    [
        ("UpToDate", "UpToDate", "UpToDate"),
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "OutOfDate", "OutOfDate"),
        ("UpToDate", "Revoked", "Revoked"),
    ],
)
def test_status_convergence(platform: str, component: str, result: str) -> None:
    assert pcs.converge(platform, component) == result


def test_crls_are_read(vectors: Vectors) -> None:
    crl = pcs.parse_crl(vectors.read("tdx/gotdxguest_pck_platform_crl.der"))
    assert len(crl.revoked_serials) == 44
    assert crl.issuer.endswith("CN=Intel SGX PCK Platform CA") or "PCK Platform CA" in crl.issuer
    root_crl = pcs.parse_crl(vectors.read("intel-roots/intel_sgx_root_ca_crl_from_gotdxguest.der"))
    assert root_crl.revoked_serials == frozenset()


def test_unknown_collateral_file_is_an_input_error() -> None:
    with pytest.raises(AttestationInputError, match=r"notes\.txt"):
        pcs.parse_collateral({"notes.txt": b"hello"})
    with pytest.raises(AttestationInputError):
        pcs.parse_collateral({"broken.json": b'{"tcbInfo": {"version": 3}'})


def test_qe_identity_mismatch_is_reported(vectors: Vectors) -> None:
    identity = pcs.parse_signed_json(vectors.read("sgx/qvl_testroot_qeIdentity.json"))
    assert isinstance(identity, pcs.EnclaveIdentity)
    with pytest.raises(VerificationFailed, match="ISVPRODID"):
        pcs.qe_identity_level(identity, identity.mr_signer, 99, 0, bytes(16), 1)


def test_collateral_in_the_encodings_pcs_serves(vectors: Vectors) -> None:
    from urllib.parse import quote_from_bytes

    crl = vectors.read("tdx/gotdxguest_pck_platform_crl.der")
    chain = vectors.read("intel-roots/intel_tcb_signing_chain_from_gotdxguest.pem")
    parsed = pcs.parse_collateral(
        {"pck.crl": crl.hex().encode(), "chain.txt": quote_from_bytes(chain).encode()}
    )
    assert len(parsed.crls) == 1 and len(parsed.crls[0].revoked_serials) == 44
    assert [cert.common_name for cert in parsed.certificates] == [
        "Intel SGX TCB Signing",
        "Intel SGX Root CA",
    ]
