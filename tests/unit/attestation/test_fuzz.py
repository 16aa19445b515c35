"""Arbitrary and mutated bytes into every parser: the only outcomes are a verdict or a clean error.

A clean error is `MalformedEvidence` from a parser (turned into a failed verdict by the
verifier) or an `AttestationInputError` (a usage error, exit code 2). Anything else escaping
is a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation import collateral, epid, intel_quote, ratls, snp
from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.errors import AttestationInputError, MalformedEvidence
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.pck import parse_sgx_extension
from inclavare.attestation.policy import load_policy
from inclavare.attestation.verdict import Verdict
from inclavare.attestation.verifier import verify_evidence

from .conftest import Vectors, vectors_dir

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

PARSERS: dict[str, Callable[[bytes], object]] = {
    "quote": intel_quote.parse_quote,
    "snp report": snp.parse_report,
    "certificates": parse_certificates,
    "tagged evidence": ratls.parse_tagged_evidence,
    "crl": collateral.parse_crl,
    "pcs json": collateral.parse_signed_json,
    "ias report": epid.parse_ias_report,
    "sgx extension": parse_sgx_extension,
}


def _inputs() -> VerificationInputs:
    return VerificationInputs(at=datetime(2024, 1, 1, tzinfo=UTC))


def _verdict_or_clean_error(data: bytes, inputs: VerificationInputs) -> Verdict | None:
    try:
        verdict = verify_evidence(data, inputs)
    except AttestationInputError as error:
        assert str(error)
        return None
    assert isinstance(verdict, Verdict)
    assert verdict.verified or verdict.reason
    return verdict


@pytest.mark.parametrize("name", sorted(PARSERS))
@BOUNDED
@given(data=st.binary(max_size=2048))
def test_parsers_on_arbitrary_bytes(name: str, data: bytes) -> None:
    try:
        PARSERS[name](data)
    except MalformedEvidence as error:
        assert str(error)


@BOUNDED
@given(data=st.binary(max_size=4096))
def test_verifier_on_arbitrary_bytes(data: bytes) -> None:
    verdict = _verdict_or_clean_error(data, _inputs())
    assert verdict is None or not verdict.verified


@BOUNDED
@given(
    prefix=st.sampled_from(
        [
            b"\x03\x00\x02\x00",
            b"\x04\x00\x02\x00\x81\x00\x00\x00",
            b"\x05\x00\x02\x00\x81\x00\x00\x00",
            b"\xd9\xea\x60",
            b"\xda\x00\x1a\x75\x04",
            b"-----BEGIN CERTIFICATE-----\n",
            b"\x30\x82\x01\x00",
            b"\x02\x00\x00\x00",
            b"HCLA",
        ]
    ),
    rest=st.binary(max_size=3000),
)
def test_verifier_on_plausible_headers(prefix: bytes, rest: bytes) -> None:
    verdict = _verdict_or_clean_error(prefix + rest, _inputs())
    assert verdict is None or not verdict.verified


@BOUNDED
@given(text=st.text(max_size=400))
def test_policy_loader_on_arbitrary_text(text: str) -> None:
    for name in ("policy.toml", "policy.json"):
        try:
            load_policy(text.encode(), name)
        except AttestationInputError as error:
            assert str(error)


# --- mutations of the real vectors ----------------------------------------------------------

MUTATED = [
    ("sgx/trustee_occlum_sgx_quote_v3.dat", {}),
    ("tdx/gotdxguest_quote_v5_sample.dat", {}),
    ("tdx/trustee_tdx_quote_4.dat", {}),
    ("ratls/ccc_gramine_cert.pem", {}),
    ("ratls/ratstls_legacy_cert_sample.pem", {}),
    (
        "snp/trustee_report_vcek.bin",
        {"vek": "snp/trustee_vcek.der", "ca": ("snp/amd_milan_ask_ark.pem",)},
    ),
    (
        "epid/integritee_ra_dump_cert_TEST4.der",
        {"at": "2020-05-01", "ca": ("intel-roots/intel_sgx_attestation_report_signing_ca.pem",)},
    ),
]


def _mutations(size: int) -> st.SearchStrategy[list[tuple[str, int, int]]]:
    edit = st.tuples(
        st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
        st.integers(min_value=0, max_value=max(size - 1, 0)),
        st.integers(min_value=0, max_value=255),
    )
    return st.lists(edit, min_size=1, max_size=4)


def _apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in edits:
        if not buffer:
            break
        position %= len(buffer)
        if kind == "flip":
            buffer[position] ^= value or 1
        elif kind == "set":
            buffer[position] = value
        elif kind == "truncate":
            del buffer[position:]
        elif kind == "insert":
            buffer.insert(position, value)
        else:
            del buffer[position]
    return bytes(buffer)


@pytest.mark.skipif(
    not (vectors_dir() / "SOURCES.md").is_file(), reason="attestation vectors not found"
)
@pytest.mark.parametrize(("name", "options"), MUTATED, ids=[name for name, _ in MUTATED])
@FEW
@given(data=st.data())
def test_mutated_vectors_give_a_verdict_or_a_clean_error(
    vectors: Vectors, name: str, options: dict[str, object], data: st.DataObject
) -> None:
    original = vectors.read(name)
    edits = data.draw(_mutations(len(original)))
    mutated = _apply(original, edits)
    inputs = vectors.inputs(**options)  # type: ignore[arg-type]
    verdict = _verdict_or_clean_error(mutated, inputs)
    if verdict is not None and verdict.verified and mutated != original:
        # Only bytes no signature covers may change without consequence: trailing bytes,
        # PEM line breaks, and an EPID carrier outside its signed report.
        assert verdict.warnings or name.endswith(".pem") or name.startswith("epid/"), edits


@pytest.mark.skipif(
    not (vectors_dir() / "SOURCES.md").is_file(), reason="attestation vectors not found"
)
@FEW
@given(data=st.data())
def test_mutated_collateral_is_a_clean_error_or_a_verdict(
    vectors: Vectors, data: st.DataObject
) -> None:
    names = [
        "tdx/gotdxguest_tdx_tcbinfo_v3_fmspc50806f000000.json",
        "tdx/gotdxguest_td_qe_identity.json",
        "tdx/gotdxguest_pck_platform_crl.der",
        "intel-roots/intel_tcb_signing_chain_from_gotdxguest.pem",
    ]
    target = data.draw(st.sampled_from(names))
    files = {name: vectors.read(name) for name in names}
    files[target] = _apply(files[target], data.draw(_mutations(len(files[target]))))
    try:
        parsed = collateral.parse_collateral(files)
    except AttestationInputError:
        return
    inputs = vectors.inputs(at="2023-06-20T00:00:00Z", collateral=parsed)
    verdict = _verdict_or_clean_error(vectors.read("tdx/trustee_tdx_quote_4.dat"), inputs)
    assert verdict is not None
