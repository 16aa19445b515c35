"""`shelter remoteattestation`: attest a confidential container through inclavared.

    shelter remoteattestation --addr ADDR [--policy FILE] [--inclavared-policy FILE]
                              [--nonce HEX] [--enclave NAME] [--secret NAME=FILE]
                              [--allow-sim] [--roots FILE] [--json] [--attester A] ...

Prints both parties' measurements and the verdict. Exit codes: 0 both inclavared and the
enclave are trusted (and the secret, if any, was accepted); 1 a party was refused (the
reason says which and why); 2 unusable flags or files; 3 no verdict could be reached
(inclavared unreachable, or it broke off).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from inclavare.cli.attestation_flags import (
    UsageError,
    add_plugin_flags,
    load_policy_file,
    make_tls,
    read_file,
    tls_config,
)

if TYPE_CHECKING:
    from inclavare.eaa.remote import RemoteAttestation

EXIT_TRUSTED = 0
EXIT_NOT_TRUSTED = 1
EXIT_UNREACHABLE = 3


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "remoteattestation",
        help="attest a confidential container through inclavared",
        description="Connect to inclavared over Enclave-TLS, verify its evidence and the "
        "enclave's forwarded evidence for a fresh nonce against reference values.",
    )
    flag = parser.add_argument
    flag("--addr", required=True, metavar="ADDR", help="inclavared: tcp://HOST:PORT, unix:///P")
    flag("--policy", metavar="FILE", help="reference values of the enclave (shelter mrverify)")
    flag("--inclavared-policy", metavar="FILE", help="reference values of inclavared")
    flag("--nonce", metavar="HEX", help="the freshness nonce, 16 to 64 bytes (default: random)")
    flag("--enclave", metavar="NAME", default="", help="which of inclavared's enclaves")
    flag("--secret", metavar="NAME=FILE", help="pass this secret, sealed to the enclave")
    flag("--json", action="store_true", help="print the result as one JSON object")
    add_plugin_flags(parser)
    parser.set_defaults(run=run_remoteattestation, attester="nullattester")
    # --attester (from the shared flags): shelter's own evidence, for an inclavared --mutual.


def run_remoteattestation(args: argparse.Namespace) -> int:
    from inclavare.eaa.address import parse_address
    from inclavare.eaa.remote import NotTrusted, Unreachable, remote_attest

    address = parse_address(args.addr)
    nonce = _nonce(args.nonce)
    secret = _secret(args.secret)
    enclave_policy = load_policy_file(args.policy, "--policy")
    inclavared_policy = load_policy_file(args.inclavared_policy, "--inclavared-policy")
    # With an attester of its own, shelter attests itself when inclavared asks (--mutual).
    attests = args.attester not in (None, "nullattester")
    client = make_tls(tls_config(args, inclavared_policy, mutual=attests), server=False)
    enclave_verifier = make_tls(
        tls_config(args, enclave_policy, mutual=False, attester="nullattester"), server=False
    )
    try:
        result = asyncio.run(
            remote_attest(
                address,
                client,
                enclave_verifier,
                nonce=nonce,
                enclave=args.enclave,
                secret=secret,
                timeout=max(args.timeout * 3, 10.0),
            )
        )
    except NotTrusted as refusal:
        _say_refused(args, str(refusal))
        return EXIT_NOT_TRUSTED
    except Unreachable as failure:
        print(f"shelter remoteattestation: {failure}", file=sys.stderr)
        return EXIT_UNREACHABLE
    _print(args, result)
    return EXIT_TRUSTED


def _nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--nonce {text!r} is not hexadecimal") from None
    if not 16 <= len(nonce) <= 64:
        raise UsageError(f"--nonce must be 16 to 64 bytes, not {len(nonce)}")
    return nonce


def _secret(text: str | None) -> tuple[str, bytes] | None:
    if text is None:
        return None
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise UsageError("--secret is NAME=FILE")
    return name, read_file(path, "--secret")


def _say_refused(args: argparse.Namespace, reason: str) -> None:
    if args.json:
        print(json.dumps({"verified": False, "reason": reason}, indent=2))
    else:
        print(f"REJECTED: {reason}")
    print(f"shelter remoteattestation: not trusted: {reason}", file=sys.stderr)


def _print(args: argparse.Namespace, result: RemoteAttestation) -> None:
    from inclavare.eaa.remote import fingerprint, measurements

    parties = {"inclavared": result.inclavared, "enclave": result.enclave}
    if args.json:
        document: dict[str, object] = {
            "verified": True,
            "simulated": result.simulated,
            "nonce": result.nonce.hex(),
            "secret_accepted": result.secret_accepted,
        }
        for name, party in parties.items():
            document[name] = {
                "evidence_type": party.evidence_type,
                "simulated": party.simulated,
                "certificate_sha256": fingerprint(party.certificate),
                "measurements": measurements(party),
                "warnings": list(party.verdict.warnings) if party.verdict else [],
            }
        print(json.dumps(document, indent=2))
        return
    print(f"nonce: {result.nonce.hex()}")
    for name, party in parties.items():
        kind = f"{party.evidence_type}{' (simulated TEE)' if party.simulated else ''}"
        print(f"{name}: {kind}")
        for key, value in measurements(party).items():
            print(f"  {key}: {str(value).lower() if isinstance(value, bool) else value}")
    if result.secret_accepted:
        print(f"secret {result.secret_accepted!r}: accepted by the enclave")
    print("VERIFIED (simulated TEE)" if result.simulated else "VERIFIED")
