"""Flags and configuration shared by inclavared, the enclave service and
`shelter remoteattestation`: which Enclave-TLS plugins, which policy, which roots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.attestation.certificate import Certificate
    from inclavare.attestation.policy import Policy
    from inclavare.tls.config import Config
    from inclavare.tls.endpoint import EnclaveTls


class UsageError(InclavareError):
    """A flag or an input file is unusable."""


def add_plugin_flags(parser: argparse.ArgumentParser) -> None:
    flag = parser.add_argument
    flag("--attester", help="nullattester, sim, sgx_ecdsa, tdx_ecdsa, snp (default: best)")
    flag(
        "--verifier",
        help="enforce a verifier: nullverifier, sim, sgx_ecdsa, tdx_ecdsa, snp, sgx_epid "
        "(default: the one the peer's evidence type calls for)",
    )
    flag("--tls", help="TLS wrapper: openssl, nulltls (default: openssl)")
    flag("--crypto", help="crypto wrapper: openssl, nullcrypto (default: openssl)")
    flag(
        "--allow-sim",
        action="store_true",
        help="accept evidence of the simulated TEE (sim), which protects nothing against the "
        "host's root",
    )
    flag(
        "--roots",
        metavar="FILE",
        action="append",
        default=[],
        help="extra trusted root certificates (PEM), e.g. another host's sim root",
    )
    flag("--timeout", type=float, default=10.0, help="bound of each step, seconds (default: 10)")


def read_file(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {option} {path}: {error.strerror or error}") from None


def load_policy_file(path: str | None, option: str) -> Policy | None:
    if path is None:
        return None
    from inclavare.attestation.errors import AttestationInputError
    from inclavare.attestation.policy import load_policy

    try:
        return load_policy(read_file(path, option), path)
    except AttestationInputError as error:
        raise UsageError(f"{option}: {error}") from None


def load_roots(paths: list[str]) -> tuple[Certificate, ...]:
    from inclavare.attestation.certificate import parse_certificates
    from inclavare.attestation.errors import MalformedEvidence

    roots: list[Certificate] = []
    for path in paths:
        try:
            roots.extend(parse_certificates(read_file(path, "--roots")))
        except MalformedEvidence as error:
            raise UsageError(f"--roots {path}: not a certificate file ({error})") from None
    return tuple(roots)


def tls_config(
    args: argparse.Namespace,
    policy: Policy | None,
    mutual: bool,
    attester: str | None = None,
) -> Config:
    from inclavare.tls.config import Config

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return Config(
        attester=attester if attester is not None else args.attester,
        verifier=args.verifier,
        tls=args.tls,
        crypto=args.crypto,
        mutual=mutual,
        policy=policy,
        allow_simulated=args.allow_sim,
        roots=load_roots(args.roots),
        handshake_timeout=args.timeout,
    )


def make_tls(config: Config, server: bool) -> EnclaveTls:
    from inclavare.tls.endpoint import EnclaveTls

    try:
        return EnclaveTls(config, server=server)
    except InclavareError as error:
        raise UsageError(str(error)) from None
