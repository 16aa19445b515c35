"""`shelter verify`: JSON output and exit codes 0 (verified), 1 (not verified), 2 (usage)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.cli.shelter import main

from .conftest import REPO_ROOT, Vectors


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verified_quote_prints_the_verdict_json(
    vectors: Vectors, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        ["verify", "--json", str(vectors.path("sgx/trustee_occlum_sgx_quote_v3.dat"))], capsys
    )
    assert code == 0
    verdict = json.loads(out)
    assert list(verdict) == ["verified", "tee", "claims", "tcb_status", "chain", "warnings"]
    assert verdict["verified"] is True
    assert verdict["tee"] == "sgx"
    assert (
        verdict["claims"]["mrenclave"]
        == "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68"
    )
    assert verdict["tcb_status"] == "not evaluated"
    assert verdict["chain"][0].endswith("CN=Intel SGX PCK Certificate")


def test_human_summary(vectors: Vectors, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["verify", str(vectors.path("tdx/trustee_tdx_quote_4.dat"))], capsys)
    assert code == 0
    assert out.startswith("VERIFIED: tdx evidence")
    assert "mr_td: 705ee938" in out


def test_tampered_evidence_exits_1_with_a_reason(
    vectors: Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(vectors.read("sgx/trustee_occlum_sgx_quote_v3.dat"))
    data[100] ^= 0xFF
    tampered = tmp_path / "quote.dat"
    tampered.write_bytes(bytes(data))
    code, out, _ = _run(["verify", "--json", str(tampered)], capsys)
    assert code == 1
    verdict = json.loads(out)
    assert verdict["verified"] is False
    assert verdict["reason"] == "the quote signature does not verify with its attestation key"
    assert verdict["claims"] == {}


def test_snp_with_vcek_and_ca_chain(vectors: Vectors, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "verify",
        "--json",
        str(vectors.path("snp/trustee_report_vlek.bin")),
        "--vcek",
        str(vectors.path("snp/trustee_vlek.der")),
        "--ca-chain",
        str(vectors.path("snp/amd_milan_asvk_ark_vlek.pem")),
        "--at",
        "2025-06-01T00:00:00Z",
    ]
    code, out, _ = _run(argv, capsys)
    assert code == 0, out
    assert json.loads(out)["claims"]["signing_key"] == "vlek"
    code, out, _ = _run(argv[:-2], capsys)
    assert code == 1
    assert "expired on 2025-12-10" in json.loads(out)["reason"]


def test_vcek_bundle_carries_the_chain(
    vectors: Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vcek = vectors.read("snp/trustee_vcek.der")
    pem = (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(vcek) + b"-----END CERTIFICATE-----\n"
    )
    bundle = tmp_path / "vcek-bundle.pem"
    bundle.write_bytes(pem + vectors.read("snp/amd_milan_ask_ark.pem"))
    code, out, _ = _run(
        ["verify", str(vectors.path("snp/trustee_report_vcek.bin")), "--vcek", str(bundle)], capsys
    )
    assert code == 0, out


def test_policy_failure_exits_1(
    vectors: Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[sgx]\nmrenclave = ["' + "00" * 32 + '"]\nallow_debug = true\n')
    code, out, _ = _run(
        [
            "verify",
            "--json",
            "--policy",
            str(policy),
            str(vectors.path("sgx/trustee_occlum_sgx_quote_v3.dat")),
        ],
        capsys,
    )
    assert code == 1
    verdict = json.loads(out)
    assert verdict["reason"].startswith("policy: mrenclave")
    assert (
        verdict["claims"]["mrsigner"]
        == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
    )


def test_collateral_directory(
    vectors: Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "tdx/gotdxguest_tdx_tcbinfo_v3_fmspc50806f000000.json",
        "tdx/gotdxguest_td_qe_identity.json",
        "tdx/gotdxguest_pck_platform_crl.der",
        "intel-roots/intel_tcb_signing_chain_from_gotdxguest.pem",
        "intel-roots/intel_sgx_root_ca_crl_from_gotdxguest.der",
    ):
        (tmp_path / Path(name).name).symlink_to(vectors.path(name))
    argv = ["verify", "--json", "--collateral", str(tmp_path), "--at", "2023-06-20T00:00:00Z"]
    code, out, _ = _run([*argv, str(vectors.path("tdx/trustee_tdx_quote_4.dat"))], capsys)
    assert code == 0, out
    assert json.loads(out)["tcb_status"] == "UpToDate"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "/nonexistent/quote.dat"], "cannot read evidence /nonexistent/quote.dat"),
        (["verify", "{pyproject}"], "not a recognised format"),
        (["verify", "{quote}", "--at", "yesterday"], "--at 'yesterday' is not an RFC 3339 time"),
        (["verify", "{quote}", "--pck-chain", "{pyproject}"], "--pck-chain"),
        (["verify", "{quote}", "--policy", "{pyproject}"], "unknown rule"),
        (["verify", "{quote}", "--collateral", "/nonexistent"], "cannot read collateral"),
        (["verify", "{snp}"], "--vcek FILE"),
        (["verify", "{qvl}"], "--pck-chain FILE"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    vectors: Vectors, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    paths = {
        "pyproject": str(REPO_ROOT / "pyproject.toml"),
        "quote": str(vectors.path("sgx/trustee_occlum_sgx_quote_v3.dat")),
        "snp": str(vectors.path("snp/trustee_report_vcek.bin")),
        "qvl": str(vectors.path("sgx/qvl_testroot_quote.dat")),
    }
    code, out, err = _run([arg.format(**paths) for arg in argv], capsys)
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("shelter verify: ")


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify"])
    assert exit_info.value.code == 2
    assert main([]) == 2


def test_subprocess_exit_codes_and_no_traceback(vectors: Vectors, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    command = [sys.executable, "-m", "inclavare.cli.shelter", "verify", "--json"]
    ok = subprocess.run(
        [*command, str(vectors.path("ratls/ccc_gramine_cert.pem"))],
        capture_output=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["claims"]["mrenclave"].startswith("0866e7ca")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(3000))
    bad = subprocess.run([*command, str(garbage)], capture_output=True, env=env, check=False)
    assert bad.returncode in (1, 2)
    assert b"Traceback" not in bad.stderr


def test_help_does_not_import_cryptography() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    code = "import sys; from inclavare.cli import shelter; print('cryptography' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
    assert result.stdout.strip() == b"False"
