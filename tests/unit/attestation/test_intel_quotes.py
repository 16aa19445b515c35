"""SGX and TDX DCAP quotes: the real vectors verify with their exact claims; tampering fails."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inclavare.attestation.errors import MissingInput, UnrecognisedEvidence
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.intel_quote import TD15_REPORT_BODY_SIZE, parse_quote
from inclavare.attestation.verifier import detect, verify_evidence

from .conftest import Vectors

ZERO48 = "00" * 48
INTEL_CHAIN = (
    "C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX PCK Certificate",
    "C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX PCK Platform CA",
    "C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX Root CA",
)

TDX_EXPECTED = {
    "tdx/gotdxguest_quote_v4_SPR_E4.dat": {
        "mr_td": (
            "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f"
            "22fc00b8dcd404bc10d5e119d7215cbb"
        ),
        "rtmr0": (
            "2927da70461cd63266f43230cc1849c03ef25ebe490062a801d8fcc80af42976"
            "823adf08f833c1e50b51779c6593f32a"
        ),
        "rtmr1": (
            "2c700b8ba9b85783f8be9fb9443647bdc0bb3c50747f06297cc6538c25a5f589"
            "c4b56d035c59107c6bc5800db2cacb61"
        ),
        "rtmr2": (
            "8652f0caaba7e215ea442dc36a4499d8fec3362f3a0b2ca151cbe4b3e6466fe5"
            "9c7368b3c2287fc7c3bf5c924eb4424e"
        ),
        "rtmr3": ZERO48,
        "tee_tcb_svn": "03000400000000000000000000000000",
        "mr_seam": (
            "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9"
            "a89b4869a9fab60fbe9d0c5a5363c656"
        ),
        "td_attributes": "0000004000000000",
        "xfam": "e71a060000000000",
        "mr_config_id": ZERO48,
        "mr_owner": ZERO48,
        "report_data": (
            "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545"
            "eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
        ),
        "debug": False,
        "fmspc": "50806f000000",
    },
    "tdx/gotdxguest_quote_v5_sample.dat": {
        "mr_td": (
            "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb0"
            "01a1ced3ee19747dda8f750c3bc8f876"
        ),
        "rtmr0": (
            "5c8daf76063a71ac8fcef4067564661fc682ed7944c7a5d21dbbced02f61ceff"
            "4ba0678c6aef3bdae8cbc614cec24619"
        ),
        "rtmr1": (
            "463acaace1b6e97c76e92e41fe312aa66f3fd4dad60ec7acf169859db0343e3d"
            "1e591646795cdc80fbc0ca5f7041d253"
        ),
        "rtmr2": (
            "6369b9c9a3b791ebcbdc5a0bb9536cfb57f50df2b393b33c8b29616d3568baa6"
            "1f4b59dc6092e31ea8764bcbdfc69f20"
        ),
        "rtmr3": ZERO48,
        "tee_tcb_svn": "0b010400000000000000000000000000",
        "tee_tcb_svn2": "0d010400000000000000000000000000",
        "mr_service_td": ZERO48,
        "mr_seam": (
            "7bf063280e94fb051f5dd7b1fc59ce9aac42bb961df8d44b709c9b0ff87a7b4d"
            "f648657ba6d1189589feab1d5a3c9a9d"
        ),
        "td_attributes": "0000001000000000",
        "xfam": "e702060000000000",
        "report_data": (
            "945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e"
            "094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a"
        ),
        "debug": False,
        "fmspc": "90c06f000000",
    },
    "tdx/trustee_tdx_quote_4.dat": {
        "mr_td": (
            "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b6"
            "89cac1599ccea1b7d420483a9ce5f031"
        ),
        "rtmr0": (
            "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e"
            "63867eb41edd4b480fef0c59f496b288"
        ),
        "rtmr1": (
            "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede4"
            "86a5684c4c9ff3ddf52315fcdca3a596"
        ),
        "rtmr2": ZERO48,
        "rtmr3": ZERO48,
        "tee_tcb_svn": "03000500000000000000000000000000",
        "mr_seam": (
            "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9"
            "a89b4869a9fab60fbe9d0c5a5363c656"
        ),
        "mr_signer_seam": ZERO48,
        "seam_attributes": "0000000000000000",
        "td_attributes": "0100001000000000",
        "xfam": "e742060000000000",
        "report_data": (
            "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656ae"
            "b755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"
        ),
        "debug": True,
        "fmspc": "50806f000000",
    },
}

OCCLUM_CLAIMS = {
    "mrenclave": "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68",
    "mrsigner": "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
    "isv_prod_id": 0,
    "isv_svn": 0,
    "debug": True,
    "attributes": "0700000000000000e700000000000000",
    "cpu_svn": "06060c0cffff00000000000000000000",
    "misc_select": "00000001",
    "report_data": "7465737400000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000",
    "fmspc": "00606a000000",
}


def _check_claims(claims: object, expected: dict[str, object]) -> None:
    assert isinstance(claims, dict)
    for key, value in expected.items():
        assert claims[key] == value, key


def test_real_sgx_quote_verifies_with_its_claims(vectors: Vectors) -> None:
    verdict = verify_evidence(vectors.read("sgx/trustee_occlum_sgx_quote_v3.dat"), vectors.inputs())
    assert verdict.verified, verdict.reason
    assert verdict.tee == "sgx"
    _check_claims(dict(verdict.claims), OCCLUM_CLAIMS)
    assert verdict.tcb_status == "not evaluated"
    assert verdict.chain == INTEL_CHAIN
    document = verdict.to_json()
    assert set(document) == {"verified", "tee", "claims", "tcb_status", "chain", "warnings"}


@pytest.mark.parametrize("name", sorted(TDX_EXPECTED))
def test_real_tdx_quotes_verify_with_their_claims(vectors: Vectors, name: str) -> None:
    verdict = verify_evidence(vectors.read(name), vectors.inputs())
    assert verdict.verified, verdict.reason
    assert verdict.tee == "tdx"
    _check_claims(dict(verdict.claims), TDX_EXPECTED[name])
    assert verdict.chain == INTEL_CHAIN


def test_trailing_bytes_after_a_quote_are_reported(vectors: Vectors) -> None:
    verdict = verify_evidence(vectors.read("tdx/gotdxguest_quote_v4_SPR_E4.dat"), vectors.inputs())
    assert verdict.verified
    assert any("39 bytes after the quote" in warning for warning in verdict.warnings)


def test_v5_quote_layout(vectors: Vectors) -> None:
    quote = parse_quote(vectors.read("tdx/gotdxguest_quote_v5_sample.dat"))
    assert (quote.version, quote.body_type, len(quote.body.raw)) == (5, 3, TD15_REPORT_BODY_SIZE)
    assert len(quote.signed_region) == 702
    assert quote.certification.qe_report.isv_svn == 7


def test_trustee_tdx_claims_match_trustees_own_parse(vectors: Vectors) -> None:
    import json

    expected = json.loads(vectors.read("tdx/trustee_parse_tdx_claims_expected.json"))["quote"]
    verdict = verify_evidence(vectors.read("tdx/trustee_tdx_quote_4.dat"), vectors.inputs())
    body = expected["body"]
    for ours, theirs in [
        ("mr_td", "mr_td"),
        ("mr_seam", "mr_seam"),
        ("mr_config_id", "mr_config_id"),
        ("mr_owner", "mr_owner"),
        ("mr_owner_config", "mr_owner_config"),
        ("rtmr0", "rtmr_0"),
        ("rtmr1", "rtmr_1"),
        ("rtmr2", "rtmr_2"),
        ("rtmr3", "rtmr_3"),
        ("td_attributes", "td_attributes"),
        ("xfam", "xfam"),
        ("tee_tcb_svn", "tcb_svn"),
        ("report_data", "report_data"),
        ("mr_signer_seam", "mrsigner_seam"),
        ("seam_attributes", "seam_attributes"),
    ]:
        assert verdict.claims[ours] == body[theirs], ours


def test_quote_without_pck_chain_needs_one(vectors: Vectors) -> None:
    with pytest.raises(MissingInput, match="--pck-chain"):
        verify_evidence(vectors.read("sgx/qvl_testroot_quote.dat"), vectors.inputs())


def test_test_root_is_not_trusted_by_name(vectors: Vectors) -> None:
    evidence = vectors.read("sgx/qvl_testroot_quote.dat")
    pck = ("sgx/qvl_testroot_pckCert.pem", "sgx/qvl_testroot_pckSignChain.pem")
    verdict = verify_evidence(evidence, vectors.inputs(at="2020-01-01", pck=pck))
    assert not verdict.verified
    assert "not a trusted root" in str(verdict.reason)
    assert verdict.claims == {}


def test_test_root_given_explicitly_is_trusted_with_a_warning(vectors: Vectors) -> None:
    evidence = vectors.read("sgx/qvl_testroot_quote.dat")
    pck = ("sgx/qvl_testroot_pckCert.pem", "sgx/qvl_testroot_pckSignChain.pem")
    roots = ("sgx/qvl_testroot_trustedRootCaCert.pem",)
    verdict = verify_evidence(evidence, vectors.inputs(at="2020-01-01", pck=pck, roots=roots))
    assert verdict.verified, verdict.reason
    assert verdict.chain[-1].endswith("CN=Intel SGX Root CA")
    assert any("given explicitly" in warning for warning in verdict.warnings)
    assert verdict.claims["mrenclave"] == "00" * 32
    assert verdict.claims["fmspc"] == "00707f000000"


def test_expired_pck_certificate_names_the_certificate_and_date(vectors: Vectors) -> None:
    evidence = vectors.read("sgx/qvl_testroot_quote.dat")
    pck = ("sgx/qvl_testroot_pckCert.pem", "sgx/qvl_testroot_pckSignChain.pem")
    roots = ("sgx/qvl_testroot_trustedRootCaCert.pem",)
    verdict = verify_evidence(evidence, vectors.inputs(at="2026-11-28", pck=pck, roots=roots))
    assert not verdict.verified
    assert "'Intel SGX PCK Certificate' expired on 2026-09-05" in str(verdict.reason)


def test_qvl_tdx_quote_with_root_first_der_chain(vectors: Vectors) -> None:
    evidence = vectors.read("tdx/qvl_testroot_quote.dat")
    verdict = verify_evidence(
        evidence, vectors.inputs(roots=("tdx/qvl_testroot_trustedRootCaCert.pem",))
    )
    assert verdict.verified, verdict.reason
    assert verdict.claims["fmspc"] == "ed742af8adf5"
    assert verdict.claims["tee_tcb_svn"] == "52c1a38cf7edf30a524b4ebb049f59c7"
    # Its synthetic QE is not Intel's: tolerated, with a warning, only under a test root.
    assert any("is not Intel TD QE" in warning for warning in verdict.warnings)


def test_not_yet_valid_certificate(vectors: Vectors) -> None:
    verdict = verify_evidence(
        vectors.read("tdx/gotdxguest_quote_v5_sample.dat"), vectors.inputs(at="2025-01-01")
    )
    assert not verdict.verified
    assert "'Intel SGX PCK Certificate' is not valid before 2026-01-27" in str(verdict.reason)


# --- tampering ------------------------------------------------------------------------------

QUOTES = [
    "sgx/trustee_occlum_sgx_quote_v3.dat",
    "tdx/gotdxguest_quote_v4_SPR_E4.dat",
    "tdx/gotdxguest_quote_v5_sample.dat",
    "tdx/trustee_tdx_quote_4.dat",
]


def _flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


@pytest.mark.parametrize("name", QUOTES)
def test_flipping_any_signed_byte_fails(vectors: Vectors, name: str) -> None:
    data = vectors.read(name)
    quote = parse_quote(data)
    end = len(data) - quote.trailing_bytes
    # Every byte of the header and body, then a sample of the signature data (keys, QE
    # report, its signature, auth data and the PEM chain).
    offsets = list(range(0, len(quote.signed_region), 7)) + list(
        range(len(quote.signed_region), end, 13)
    )
    for offset in offsets:
        verdict = verify_evidence(_flipped(data, offset), vectors.inputs())
        assert not verdict.verified, f"flipping byte {offset} of {name} still verified"
        assert verdict.reason
        assert verdict.claims == {}


@pytest.mark.parametrize("name", QUOTES)
def test_truncated_quote_fails(vectors: Vectors, name: str) -> None:
    data = vectors.read(name)
    end = len(data) - parse_quote(data).trailing_bytes
    for length in (8, 47, 48, 300, 431, 432, 640, end // 2, end - 1):
        verdict = verify_evidence(data[:length], vectors.inputs())
        assert not verdict.verified
        assert "truncated" in str(verdict.reason), verdict.reason


def test_pck_chain_from_another_platform_fails(vectors: Vectors) -> None:
    evidence = vectors.read("sgx/qvl_testroot_quote.dat")
    pck = ("tdx/qvl_testroot_pckCert.pem", "tdx/qvl_testroot_pckSignChain.pem")
    roots = ("tdx/qvl_testroot_trustedRootCaCert.pem",)
    verdict = verify_evidence(evidence, vectors.inputs(pck=pck, roots=roots))
    assert not verdict.verified
    assert "QE report signature does not verify" in str(verdict.reason)


def test_unrecognised_bytes_are_an_input_error() -> None:
    with pytest.raises(UnrecognisedEvidence):
        detect(b"this is not evidence")
    with pytest.raises(UnrecognisedEvidence):
        verify_evidence(b"", VerificationInputs(at=datetime.now(UTC)))


def test_simulated_quotes_are_refused_unless_allowed(
    vectors: Vectors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook for the simulated TEE: quotes of a simulated QE vendor are kind "sim"."""
    from dataclasses import replace

    from inclavare.attestation import dcap, intel_quote

    monkeypatch.setattr(
        intel_quote, "SIMULATED_QE_VENDOR_IDS", frozenset({intel_quote.INTEL_QE_VENDOR_ID})
    )
    # Simulated quotes are checked against the simulated QE's identity; Intel's stands in.
    monkeypatch.setattr(dcap, "SIM_QE", dcap.INTEL_SGX_QE)
    evidence = vectors.read("sgx/trustee_occlum_sgx_quote_v3.dat")
    refused = verify_evidence(evidence, vectors.inputs())
    assert (refused.verified, refused.tee) == (False, "sim")
    assert "simulated TEE" in str(refused.reason)
    allowed = verify_evidence(evidence, replace(vectors.inputs(), allow_simulated=True))
    assert (allowed.verified, allowed.tee) == (True, "sim")
