"""`enclave-tls-server`: an Enclave-TLS echo server.

    enclave-tls-server [-a ATTESTER] [-v VERIFIER] [-t TLS] [-c CRYPTO] [-m] [-l LEVEL]
                       [-i IP] [-p PORT] [-D] [--policy FILE] [--cert-out FILE] [--allow-sim]
                       [--roots FILE] [--key-type TYPE] [--no-session-evidence] [--timeout S]

Each client's session is established (its evidence verified when -m is given) and what it
sends is echoed back. A refused client is logged with the reason and the server goes on.
SIGINT or SIGTERM stops it. Exit codes: 0 stopped by a signal, 2 unusable configuration.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from inclavare.cli.enclave_tls import (
    EXIT_OK,
    EXIT_USAGE,
    Log,
    add_flags,
    build_config,
    write_certificate,
)
from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.tls.blocking import Session


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave-tls-server", description="Enclave-TLS echo server."
    )
    add_flags(parser, default_ip="127.0.0.1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = Log("enclave-tls-server", args.log_level)
    try:
        from inclavare.tls.blocking import Server
        from inclavare.tls.endpoint import EnclaveTls

        config = build_config(args)
        tls = EnclaveTls(config, server=True)
        if args.cert_out:
            write_certificate(args.cert_out, tls.certificate)
        server = Server(
            tls,
            (args.ip, args.port),
            lambda session: _echo(session, log),
            on_error=lambda address, error: log("error", f"{_where(address)}: refused: {error}"),
        )
    except InclavareError as error:
        print(f"enclave-tls-server: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        reason = error.strerror or error
        print(
            f"enclave-tls-server: cannot listen on {args.ip}:{args.port}: {reason}", file=sys.stderr
        )
        return EXIT_USAGE
    log(
        "info",
        f"listening on {server.address[0]}:{server.address[1]} (attester {tls.attester_name}, "
        f"TLS {tls.tls_wrapper.name}, mutual {config.mutual}, session evidence "
        f"{tls.session_evidence})",
    )
    if tls.attester is not None and tls.attester.evidence_type == "sim":
        log("warn", "attesting with the simulated TEE: no hardware protection")
    stop = threading.Event()

    def on_signal(number: int, frame: object) -> None:
        stop.set()
        server.shutdown()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.serve_forever()
    log("info", "stopped")
    return EXIT_OK


def _where(address: tuple[str, int] | None) -> str:
    return f"{address[0]}:{address[1]}" if address else "a client"


def _echo(session: Session, log: Log) -> None:
    if session.peer is not None:
        log("info", f"client attested: {session.peer.summary().splitlines()[0]}")
    session.settimeout(60)
    while True:
        try:
            data = session.recv()
        except TimeoutError:
            log("info", "client idle for 60 s: closing")
            return
        if not data:
            return
        log("debug", f"echoing {len(data)} bytes")
        session.sendall(data)


if __name__ == "__main__":
    sys.exit(main())
