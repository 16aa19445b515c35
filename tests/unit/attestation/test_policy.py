"""Policies: parsed strictly, evaluated on verified verdicts only."""

from __future__ import annotations

import pytest

from inclavare.attestation.errors import PolicyError
from inclavare.attestation.policy import load_policy
from inclavare.attestation.verdict import Verdict

SGX = Verdict(
    verified=True,
    tee="sgx",
    claims={
        "mrenclave": "aa" * 32,
        "mrsigner": "bb" * 32,
        "isv_prod_id": 3,
        "isv_svn": 5,
        "debug": False,
        "report_data": "74657374" + "00" * 60,
    },
    tcb_status="SWHardeningNeeded",
)
SNP = Verdict(
    verified=True,
    tee="snp",
    claims={
        "measurement": "cc" * 48,
        "policy": 0x30000,
        "debug": False,
        "vmpl": 0,
        "guest_svn": 2,
        "reported_tcb": {"boot_loader": 3, "tee": 0, "snp": 8, "microcode": 115},
        "report_data": "00" * 64,
    },
)


def _apply(text: str, verdict: Verdict, name: str = "policy.toml") -> Verdict:
    return load_policy(text.encode(), name).apply(verdict)


def test_satisfied_sgx_policy() -> None:
    text = f"""
accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
report_data = "74657374"
[sgx]
mrenclave = ["{"aa" * 32}", "{"dd" * 32}"]
mrsigner = "{"BB" * 32}"
isv_prod_id = [3, 4]
min_isv_svn = 5
"""
    verdict = _apply(text, SGX)
    assert verdict.verified, verdict.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f'mrenclave = ["{"dd" * 32}"]', "mrenclave"),
        ("min_isv_svn = 6", "isv_svn 5 is below the minimum 6"),
        ("isv_prod_id = 1", "isv_prod_id"),
        ('accepted_tcb_statuses = ["UpToDate"]', "TCB status 'SWHardeningNeeded'"),
        ('report_data = "7465737400ff"', "report_data"),
        ('tee = ["tdx", "snp"]', "sgx evidence is not accepted"),
        (f'measurement = ["{"cc" * 48}"]', "does not apply to sgx evidence"),
        ('nonce = "0102"', "does not apply"),
    ],
)
def test_violations_give_reasons(text: str, reason: str) -> None:
    verdict = _apply(text, SGX)
    assert not verdict.verified
    assert reason in str(verdict.reason)
    assert str(verdict.reason).startswith("policy: ")
    assert verdict.claims == SGX.claims  # genuine evidence keeps its claims


def test_debug_is_refused_unless_allowed() -> None:
    debug = Verdict(True, "sgx", claims={**SGX.claims, "debug": True})
    assert not _apply("", debug).verified
    assert _apply("allow_debug = true", debug).verified


def test_sections_apply_to_their_tee_only() -> None:
    text = f"""
[snp]
measurement = ["{"cc" * 48}"]
min_tcb = {{ boot_loader = 3, snp = 8 }}
forbidden_policy_bits = ["debug", "migrate_ma"]
required_policy_bits = ["smt"]
vmpl = [0]
min_guest_svn = 2
[sgx]
min_isv_svn = 1
"""
    assert _apply(text, SNP).verified
    assert _apply(text, SGX).verified
    stricter = text.replace("snp = 8", "snp = 9")
    assert "reported TCB snp 8 is below the minimum 9" in str(_apply(stricter, SNP).reason)
    smt_off = Verdict(True, "snp", claims={**SNP.claims, "policy": 0x20000})
    assert "guest policy bit smt is clear" in str(_apply(text, smt_off).reason)


def test_json_policies() -> None:
    text = '{"accepted_tcb_statuses": ["not evaluated"], "snp": {"vmpl": [1]}}'
    verdict = _apply(text, SNP, "policy.json")
    assert "vmpl 0 is not an accepted value" in str(verdict.reason)


def test_simulated_evidence_needs_permission() -> None:
    simulated = Verdict(True, "sim", claims={"mrenclave": "aa" * 32, "debug": False})
    assert "simulated evidence is not accepted" in str(_apply("", simulated).reason)
    policy = load_policy(b"[sim]\nallow_simulated = true\n")
    assert policy.allow_simulated
    assert policy.apply(simulated).verified


def test_failed_verdicts_pass_through() -> None:
    failed = Verdict.failure("sgx", "the quote signature does not verify")
    assert _apply('tee = "snp"', failed).reason == "the quote signature does not verify"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('mrenclav = "aa"', "unknown rule 'mrenclav'"),
        ('mrenclave = ["aabb"]', "must be 32 bytes"),
        ('mrenclave = ["zz"]', "mrenclave"),
        ("min_isv_svn = -1", "non-negative"),
        ('accepted_tcb_statuses = ["Fine"]', "unknown TCB status 'Fine'"),
        ('tee = "gpu"', "unknown TEE 'gpu'"),
        ("allow_debug = 1", "true or false"),
        ("[sgx\n", "not valid TOML"),
        ("sgx = 3", "must be a table"),
        ('forbidden_policy_bits = ["fast"]', "unknown guest policy bit"),
        ("min_tcb = { bl = 1 }", "unknown TCB component"),
    ],
)
def test_malformed_policies_are_input_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(text.encode(), "policy.toml")
