"""`shelter`: the off-cloud verifier.

    shelter mrverify --bundle DIR | --image OCI-LAYOUT[:TAG] [--runtime RUNTIME] [--key PUB]
                     [--trusted PATH]... [--policy-out FILE [--allow-sim]] [--json]
                     (exit 1: the image disagrees with its signature)
    shelter verify EVIDENCE [--json] [--pck-chain FILE] [--vcek FILE] [--ca-chain FILE]
                            [--roots FILE] [--at RFC3339] [--collateral DIR] [--policy FILE]
                            [--allow-sim]
    shelter remoteattestation --addr ADDR [--policy FILE] [--nonce HEX] ...
                            (cli/shelter_remote.py)

Exit codes: 0 the evidence verified (and satisfies the policy), 1 it did not, 2 usage error or
unreadable input. Errors are reported as one line on standard error.

Only argparse is imported at start-up; the verifier and `cryptography` load when a subcommand
needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.attestation.certificate import Certificate
    from inclavare.attestation.collateral import Collateral
    from inclavare.attestation.inputs import VerificationInputs

EXIT_VERIFIED = 0
EXIT_NOT_VERIFIED = 1
EXIT_USAGE = 2


class UsageError(InclavareError):
    """A command-line input is missing, unreadable or malformed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelter",
        description="Verify TEE evidence and attest confidential containers.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_mrverify(commands)
    verify = commands.add_parser(
        "verify",
        help="verify an evidence file offline",
        description=(
            "Verify SGX/TDX quotes, SEV-SNP reports, RA-TLS certificates and EPID "
            "attestation reports offline. The kind of evidence is detected from its bytes."
        ),
    )
    verify.add_argument("evidence", metavar="EVIDENCE", help="evidence file ('-' for stdin)")
    verify.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    verify.add_argument(
        "--pck-chain",
        metavar="FILE",
        action="append",
        default=[],
        help="PCK certificate and its chain (PEM or DER) for quotes that do not carry them",
    )
    verify.add_argument(
        "--vcek", metavar="FILE", help="VCEK or VLEK certificate (DER or PEM, may bundle ASK/ARK)"
    )
    verify.add_argument(
        "--ca-chain",
        metavar="FILE",
        action="append",
        default=[],
        help="CA certificates (PEM): AMD's ASK/ASVK and ARK, Intel's report signing CA",
    )
    verify.add_argument(
        "--roots",
        metavar="FILE",
        action="append",
        default=[],
        help="certificates to trust as roots in addition to the vendors' pinned roots",
    )
    verify.add_argument(
        "--at", metavar="RFC3339", help="verification time, e.g. 2024-05-01T00:00:00Z (default now)"
    )
    verify.add_argument(
        "--collateral",
        metavar="DIR",
        help="directory of Intel PCS collateral: TCB info, QE identity, CRLs, issuer chains",
    )
    verify.add_argument(
        "--policy", metavar="FILE", help="policy of reference values (TOML or JSON)"
    )
    verify.add_argument(
        "--allow-sim",
        action="store_true",
        help=(
            "accept evidence from the simulated TEE (sim), which gives no protection against "
            "the host's root; its per-host root must still be given with --roots"
        ),
    )
    verify.set_defaults(run=run_verify)
    from inclavare.cli import shelter_remote

    shelter_remote.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from inclavare.cli import run_subcommand

    return run_subcommand(build_parser(), argv, "shelter")


def run_verify(args: argparse.Namespace) -> int:
    from inclavare.attestation.verifier import verify_evidence

    policy = None
    if args.policy is not None:
        from inclavare.attestation.policy import load_policy

        policy = load_policy(_read(args.policy, "policy"), args.policy)
    evidence = _read(args.evidence, "evidence")
    if args.allow_sim and policy is not None:
        policy = policy.allowing_simulated()
    inputs = _verification_inputs(
        args, allow_simulated=args.allow_sim or (policy is not None and policy.allow_simulated)
    )
    verdict = verify_evidence(evidence, inputs)
    if policy is not None:
        verdict = policy.apply(verdict)
    if args.json:
        import json

        print(json.dumps(verdict.to_json(), indent=2))
    else:
        print(verdict.summary())
    return EXIT_VERIFIED if verdict.verified else EXIT_NOT_VERIFIED


def _verification_inputs(args: argparse.Namespace, allow_simulated: bool) -> VerificationInputs:
    from inclavare.attestation.inputs import VerificationInputs
    from inclavare.attestation.trust import TrustStore

    roots = [cert for path in args.roots for cert in _certificates(path, "--roots")]
    ca_certificates = [cert for path in args.ca_chain for cert in _certificates(path, "--ca-chain")]
    pck_certificates = [
        cert for path in args.pck_chain for cert in _certificates(path, "--pck-chain")
    ]
    endorsement_key = None
    if args.vcek is not None:
        endorsement_key, *bundled = _certificates(args.vcek, "--vcek")
        ca_certificates.extend(bundled)
    collateral = None
    if args.collateral is not None:
        collateral = _collateral(args.collateral)
    return VerificationInputs(
        at=parse_time(args.at) if args.at else datetime.now(UTC),
        trust=TrustStore.with_extra_roots((root.spki_sha256, root.common_name) for root in roots),
        pck_certificates=tuple(pck_certificates + roots),
        endorsement_key=endorsement_key,
        ca_certificates=tuple(ca_certificates + roots),
        collateral=collateral,
        allow_simulated=allow_simulated,
    )


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (a bare date means its midnight UTC; no offset means UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r} is not an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror or error}") from None


def _certificates(path: str, option: str) -> list[Certificate]:
    from inclavare.attestation.certificate import parse_certificates
    from inclavare.attestation.errors import MalformedEvidence

    data = _read(path, option)
    try:
        certificates = parse_certificates(data)
    except MalformedEvidence as error:
        raise UsageError(f"{option} {path}: not a certificate file ({error})") from None
    if not certificates:
        raise UsageError(f"{option} {path}: no certificate in the file")
    return certificates


def _collateral(directory: str) -> Collateral:
    from inclavare.attestation.collateral import parse_collateral

    folder = Path(directory)
    try:
        files = {
            entry.name: entry.read_bytes()
            for entry in sorted(folder.iterdir())
            if entry.is_file() and not entry.name.startswith(".")
        }
    except OSError as error:
        raise UsageError(f"cannot read collateral {directory}: {error.strerror or error}") from None
    if not files:
        raise UsageError(f"collateral directory {directory} is empty")
    return parse_collateral(files)


# --- mrverify -----------------------------------------------------------------------------------


def _add_mrverify(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mrverify = commands.add_parser(
        "mrverify",
        help="compute the reference values of a sim enclave image or bundle",
        description=(
            "Compute the MRENCLAVE (and MRSIGNER, ISVPRODID, ISVSVN, DEBUG) a genuine launch "
            "of an enclave image or bundle reports, from its files alone, and check a signed "
            "image against its signature. For the simulated TEE (sim), which gives no "
            "protection against the host's root."
        ),
    )
    source = mrverify.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", metavar="DIR", help="OCI bundle directory")
    source.add_argument("--image", metavar="OCI-LAYOUT[:TAG]", help="OCI image layout and tag")
    mrverify.add_argument(
        "--runtime",
        choices=["builtin:native", "builtin:wasm"],
        help="enclave runtime (default: the image's ENCLAVE_RUNTIME_PATH, else builtin:native)",
    )
    mrverify.add_argument(
        "--key",
        metavar="PUB",
        help="the signer's RSA-3072/e=3 key: PEM public key, certificate or private key",
    )
    mrverify.add_argument(
        "--trusted",
        metavar="PATH",
        action="append",
        default=[],
        help="another trusted file or directory (of a signed image: it must be among the signed)",
    )
    mrverify.add_argument(
        "--policy-out", metavar="FILE", help="write an attestation policy (TOML, or JSON if .json)"
    )
    mrverify.add_argument(
        "--allow-sim",
        action="store_true",
        help="make the policy accept simulated evidence (allow_simulated = true)",
    )
    mrverify.add_argument("--json", action="store_true", help="print one JSON object")
    mrverify.set_defaults(run=run_mrverify)


def run_mrverify(args: argparse.Namespace) -> int:
    from inclavare.eaa import mrverify

    key = None
    if args.key is not None:
        key = mrverify.signer_public_key(_read(args.key, "--key"), args.key)
    try:
        if args.image is not None:
            from inclavare.oci.image import parse_reference

            layout, tag = parse_reference(args.image)
            values = mrverify.of_image(layout, tag, args.runtime, args.trusted, key)
        else:
            values = mrverify.of_bundle(args.bundle, args.runtime, args.trusted, key)
    except mrverify.ImageSignatureMalformed as error:
        print(f"shelter mrverify: {error}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    policy_line = "policy       none written (give --policy-out FILE)"
    if args.policy_out is not None and not values.consistent:
        policy_line = "policy       not written: the image disagrees with its signature"
    elif args.policy_out is not None:
        data = mrverify.render_policy(values, args.allow_sim, args.policy_out.endswith(".json"))
        try:
            Path(args.policy_out).write_bytes(data)
        except OSError as error:
            raise UsageError(f"cannot write {args.policy_out}: {error.strerror}") from None
        policy_line = f"policy       wrote {args.policy_out}, allow_simulated = " + (
            "true (--allow-sim)"
            if args.allow_sim
            else "false (sim evidence is refused; give --allow-sim to accept it)"
        )
    if args.json:
        import json

        document = values.to_json()
        written = args.policy_out is not None and values.consistent
        document["policy"] = (
            {"path": args.policy_out, "allow_simulated": args.allow_sim} if written else None
        )
        print(json.dumps(document, indent=2))
    else:
        print(f"{values.summary()}\n{policy_line}")
    return EXIT_VERIFIED if values.consistent else EXIT_NOT_VERIFIED


if __name__ == "__main__":
    sys.exit(main())
