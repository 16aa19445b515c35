"""`rune-sign-server`: the HTTPS service that signs enclaves for the shim's carrier.

    rune-sign-server --listen HOST:PORT --key KEY --cert CERT --tls-key TLSKEY
                     [--client-ca CA]

KEY is the enclave signing key (RSA-3072, exponent 3: `enclave-sign genkey`); CERT and
TLSKEY are the server's TLS certificate and key; with --client-ca, clients must present a
certificate issued by CA. The first line on standard output is `listening on
https://HOST:PORT` (the port chosen when PORT is 0); each request is a JSON line on
standard error. SIGTERM or SIGINT stop it. Exit codes: 0 stopped, 2 bad input.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

PROGRAM = "rune-sign-server"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Sign enclaves (SIGSTRUCT) for containerd-shim-rune-v2."
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--key", required=True, help="the enclave signing key (PEM)")
    parser.add_argument("--cert", required=True, help="the server's TLS certificate (PEM)")
    parser.add_argument("--tls-key", required=True, help="the server's TLS key (PEM)")
    parser.add_argument("--client-ca", help="require client certificates issued by this CA")
    return parser


def _listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    from inclavare.errors import InclavareError

    arguments = build_parser().parse_args(argv)
    try:
        address = _listen_address(arguments.listen)
    except ValueError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    from inclavare.shim.sign_server import SigningKey, SignServer, serve, server_context

    try:
        with open(arguments.key, "rb") as stream:
            key = SigningKey(stream.read())
        context = server_context(arguments.cert, arguments.tls_key, arguments.client_ca)
        server = SignServer(address, key, context)
    except OSError as error:
        where = getattr(error, "filename", None) or arguments.listen
        print(f"{PROGRAM}: {where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except InclavareError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def stopping(number: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    host = address[0] if ":" not in address[0] else f"[{address[0]}]"
    print(f"listening on https://{host}:{server.port}", flush=True)
    server.write_log({"event": "started", "mrsigner": key.mr_signer.hex(), "port": server.port})
    try:
        serve(server, stop)
    finally:
        server.server_close()
    server.write_log({"event": "stopped", "signed": server.signed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
