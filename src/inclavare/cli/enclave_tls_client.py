"""`enclave-tls-client`: connect to an Enclave-TLS server, print its verified claims.

    enclave-tls-client [-a ATTESTER] [-v VERIFIER] [-t TLS] [-c CRYPTO] [-m] [-l LEVEL]
                       [-i IP] [-p PORT] [-D] [--policy FILE] [--cert-out FILE] [--allow-sim]
                       [--roots FILE] [--key-type TYPE] [--no-session-evidence] [--timeout S]
                       [--message TEXT]

The server's attestation (evidence type, verifier, verdict with its claims) is printed as one
JSON object on standard output; the message is sent and its echo checked. Exit codes: 0 the
server was verified and echoed, 1 the connection was refused (the reason on standard error,
one line), 2 unusable configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from inclavare.cli.enclave_tls import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Log,
    add_flags,
    build_config,
    write_certificate,
)
from inclavare.errors import InclavareError

DEFAULT_MESSAGE = "Hello and welcome to Enclave-TLS!"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave-tls-client",
        description="Connect to an Enclave-TLS server and print its verified claims.",
    )
    add_flags(parser, default_ip="127.0.0.1")
    parser.add_argument("--message", default=DEFAULT_MESSAGE, help="text to send and expect back")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = Log("enclave-tls-client", args.log_level)
    try:
        from inclavare.tls.endpoint import EnclaveTls

        tls = EnclaveTls(build_config(args), server=False)
        if args.cert_out:
            write_certificate(args.cert_out, tls.certificate)
    except InclavareError as error:
        print(f"enclave-tls-client: {error}", file=sys.stderr)
        return EXIT_USAGE
    from inclavare.tls.blocking import connect
    from inclavare.tls.errors import EnclaveTlsError

    message = args.message.encode()
    try:
        with connect(tls, (args.ip, args.port)) as session:
            log("info", f"connected to {args.ip}:{args.port} over {session.protocol}")
            if session.peer is not None:
                print(json.dumps(session.peer.to_json(), indent=2))
                if session.peer.simulated:
                    log(
                        "warn", "the server attested with the simulated TEE: no hardware protection"
                    )
            session.settimeout(args.timeout)
            session.sendall(message)
            echoed = b""
            while len(echoed) < len(message):
                data = session.recv()
                if not data:
                    break
                echoed += data
    except (EnclaveTlsError, TimeoutError, OSError) as error:
        reason = str(error) or type(error).__name__
        print(f"enclave-tls-client: {reason}", file=sys.stderr)
        return EXIT_REFUSED
    if not echoed:
        print(
            "enclave-tls-client: the server closed the connection without echoing "
            "(it may have refused this client: its log says why)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    if echoed != message:
        print(f"enclave-tls-client: the server echoed {echoed!r}, not {message!r}", file=sys.stderr)
        return EXIT_REFUSED
    log("info", f"server echoed: {echoed.decode(errors='replace')}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
