"""What `enclave-tls-server` and `enclave-tls-client` share: flags, configuration, logging.

Upstream's flags: -a/--attester, -v/--verifier, -t/--tls, -c/--crypto, -m/--mutual,
-l/--log-level, -i/--ip, -p/--port, -D/--debug-enclave. Added: --policy FILE, --cert-out FILE,
--allow-sim, --roots FILE, --key-type, --no-session-evidence, --timeout.

Outside an enclave container the sim attester speaks for the sample enclave identity
(`inclavare.tls.plugins.attesters.sample_identity`, documented in docs/enclave-tls.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.tls.config import Config

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40, "fatal": 50, "off": 100}


class UsageError(InclavareError):
    """A flag or an input file is unusable."""


class Log:
    def __init__(self, program: str, level: str) -> None:
        self.program = program
        self.threshold = LOG_LEVELS[level]

    def __call__(self, level: str, message: str) -> None:
        if LOG_LEVELS[level] >= self.threshold:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            print(f"{stamp} {self.program} [{level}] {message}", file=sys.stderr, flush=True)


def add_flags(parser: argparse.ArgumentParser, default_ip: str) -> None:
    flag = parser.add_argument
    flag("-a", "--attester", help="nullattester, sim, sgx_ecdsa, tdx_ecdsa, snp (default: best)")
    flag(
        "-v",
        "--verifier",
        help="enforce nullverifier, sim, sgx_ecdsa, tdx_ecdsa, snp or sgx_epid "
        "(default: the one the peer's evidence type calls for)",
    )
    flag("-t", "--tls", help="TLS wrapper: openssl, nulltls (default: openssl)")
    flag("-c", "--crypto", help="crypto wrapper: openssl, nullcrypto (default: openssl)")
    flag("-m", "--mutual", action="store_true", help="mutual attestation: the client attests too")
    flag("-l", "--log-level", default="info", choices=list(LOG_LEVELS), help="default: info")
    flag("-i", "--ip", default=default_ip, help=f"IP address (default: {default_ip})")
    flag("-p", "--port", type=int, default=1234, help="TCP port (default: 1234; 0: any free port)")
    flag("-D", "--debug-enclave", action="store_true", help="attest as a debug enclave (sim)")
    flag("--policy", metavar="FILE", help="attestation policy the peer must satisfy (TOML/JSON)")
    flag("--cert-out", metavar="FILE", help="write the certificate this side presents (PEM)")
    flag("--allow-sim", action="store_true", help="accept simulated-TEE evidence (no protection)")
    flag(
        "--roots",
        metavar="FILE",
        action="append",
        default=[],
        help="extra trusted root certificates, e.g. another host's sim root",
    )
    flag("--key-type", default="ec-p256", choices=["ec-p256", "rsa-3072"], help="default: ec-p256")
    flag(
        "--no-session-evidence",
        action="store_true",
        help="exchange no session-bound evidence (for upstream RATS-TLS and Gramine peers); a "
        "certificate replayed from another session then goes undetected",
    )
    flag("--timeout", type=float, default=10.0, help="bound of one establishment (default: 10 s)")


def build_config(args: argparse.Namespace) -> Config:
    from inclavare.cli.attestation_flags import load_policy_file, load_roots
    from inclavare.tls.config import Config

    policy = load_policy_file(args.policy, "--policy")
    roots = load_roots(args.roots)
    if args.port < 0 or args.port > 65535:
        raise UsageError(f"--port {args.port} is not a TCP port")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return Config(
        attester=args.attester,
        verifier=args.verifier,
        tls=args.tls,
        crypto=args.crypto,
        mutual=args.mutual,
        key_type=args.key_type,
        session_evidence=not args.no_session_evidence,
        policy=policy,
        allow_simulated=args.allow_sim,
        roots=roots,
        debug_enclave=args.debug_enclave,
        handshake_timeout=args.timeout,
    )


def write_certificate(path: str, certificate: bytes | None) -> None:
    if certificate is None:
        raise UsageError("--cert-out: this side presents no certificate (it does not attest)")
    import base64

    body = base64.encodebytes(certificate).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    try:
        Path(path).write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write --cert-out {path}: {error.strerror or error}") from None
