"""Benchmark: evidence verifications per second against raw ECDSA verifications per second.

Verifies a real SGX quote and a real SEV-SNP report repeatedly, as a verifier serving one
platform would, and in the same run measures how many raw ECDSA signature checks
`cryptography` does per second on the same curves (P-256 for the quote, P-384 for the
report). The ratio says how close the verifier comes to the cost of the signatures alone.

A quote carries four signatures (quote, QE report, PCK certificate, PCK CA); with the verified
PCK chain and QE report remembered, a repeated quote from one platform needs one. A report
needs one ECDSA check plus two RSA checks of its chain, which are remembered likewise.

    python bench/verify.py [--seconds N]

The vectors are read from <repo>/../shared/vectors or $INCLAVARE_VECTORS.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from inclavare.attestation.certificate import parse_certificates  # noqa: E402
from inclavare.attestation.chain import SignatureCache  # noqa: E402
from inclavare.attestation.inputs import VerificationInputs  # noqa: E402
from inclavare.attestation.intel_quote import parse_quote  # noqa: E402
from inclavare.attestation.signatures import ecdsa_verify, p256_public_key  # noqa: E402
from inclavare.attestation.snp import parse_report  # noqa: E402
from inclavare.attestation.verifier import verify_evidence  # noqa: E402

SGX_QUOTE = "sgx/trustee_occlum_sgx_quote_v3.dat"
SNP_REPORT = "snp/trustee_report_vcek.bin"
SNP_VCEK = "snp/trustee_vcek.der"
SNP_CHAIN = "snp/amd_milan_ask_ark.pem"


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second over about `seconds` of wall time (after a warm-up call)."""
    operation()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            operation()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    vectors = Path(os.environ.get("INCLAVARE_VECTORS", REPO_ROOT.parent / "shared" / "vectors"))
    if not (vectors / SGX_QUOTE).is_file():
        print(
            f"bench/verify: vectors not found at {vectors} (set INCLAVARE_VECTORS)", file=sys.stderr
        )
        return 2
    at = datetime.now(UTC)

    quote_bytes = (vectors / SGX_QUOTE).read_bytes()
    quote = parse_quote(quote_bytes)
    attestation_key = p256_public_key(quote.attestation_key)
    signature = quote.signature

    def raw_p256() -> bool:
        return ecdsa_verify(
            attestation_key, signature[:32], signature[32:], quote.signed_region, "sha256"
        )

    cached_intel = VerificationInputs(at=at, cache=SignatureCache())
    uncached_intel = VerificationInputs(at=at)

    def sgx(inputs: VerificationInputs) -> Callable[[], object]:
        def run() -> object:
            verdict = verify_evidence(quote_bytes, inputs)
            assert verdict.verified, verdict.reason
            return verdict

        return run

    report_bytes = (vectors / SNP_REPORT).read_bytes()
    report = parse_report(report_bytes)
    vcek = parse_certificates((vectors / SNP_VCEK).read_bytes())[0]
    ask_ark = tuple(parse_certificates((vectors / SNP_CHAIN).read_bytes()))
    vcek_key = vcek.public_key()

    def raw_p384() -> bool:
        return ecdsa_verify(
            vcek_key,
            report.signature_r,
            report.signature_s,
            report.signed_region,
            "sha384",
            "little",
        )

    def snp_inputs(cache: SignatureCache | None) -> VerificationInputs:
        return VerificationInputs(at=at, endorsement_key=vcek, ca_certificates=ask_ark, cache=cache)

    def snp(inputs: VerificationInputs) -> Callable[[], object]:
        def run() -> object:
            verdict = verify_evidence(report_bytes, inputs)
            assert verdict.verified, verdict.reason
            return verdict

        return run

    seconds = args.seconds
    raw_256 = rate(raw_p256, seconds)
    sgx_cached = rate(sgx(cached_intel), seconds)
    sgx_uncached = rate(sgx(uncached_intel), seconds)
    raw_384 = rate(raw_p384, seconds)
    snp_cached = rate(snp(snp_inputs(SignatureCache())), seconds)
    snp_uncached = rate(snp(snp_inputs(None)), seconds)

    print(f"raw ECDSA P-256/SHA-256 verifications/s (cryptography): {raw_256:10.0f}")
    print(f"SGX quote v3 verifications/s, chain cached:             {sgx_cached:10.0f}")
    print(f"SGX quote v3 verifications/s, no signature cache:        {sgx_uncached:10.0f}")
    print(f"  ratio quote/raw ECDSA, cached:   {sgx_cached / raw_256:.3f}")
    limit = "4 signatures: limit 0.25"
    print(f"  ratio quote/raw ECDSA, uncached: {sgx_uncached / raw_256:.3f} ({limit})")
    print(f"raw ECDSA P-384/SHA-384 verifications/s (cryptography): {raw_384:10.0f}")
    print(f"SEV-SNP report verifications/s, chain cached:           {snp_cached:10.0f}")
    print(f"SEV-SNP report verifications/s, no signature cache:      {snp_uncached:10.0f}")
    print(f"  ratio report/raw ECDSA, cached:   {snp_cached / raw_384:.3f}")
    print(f"  ratio report/raw ECDSA, uncached: {snp_uncached / raw_384:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
