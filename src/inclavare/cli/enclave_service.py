"""`inclavare-enclave-service`: the attestation service an enclave container runs.

    inclavare-enclave-service --listen ADDR [--attester A] [--verifier V] [--tls T]
                              [--crypto C] [--no-mutual] [--policy FILE] [--allow-sim]
                              [--roots FILE] [--timeout S]

It answers `get-evidence`, `put-secret` and `connect` (then echoes application bytes) over
Enclave-TLS; by default its clients (inclavared) must attest themselves, judged by --policy.
Inside a sim enclave container its quotes are of the container's enclave (through the
runtime's attestation channel). Exit codes: 0 after SIGTERM/SIGINT, 2 for unusable flags.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from inclavare.cli.attestation_flags import (
    UsageError,
    add_plugin_flags,
    load_policy_file,
    make_tls,
    tls_config,
)
from inclavare.errors import InclavareError

PROGRAM = "inclavare-enclave-service"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    flag = parser.add_argument
    flag("--listen", metavar="ADDR", required=True, help="tcp://HOST:PORT or unix:///PATH")
    flag("--no-mutual", action="store_true", help="do not require clients to attest")
    flag("--policy", metavar="FILE", help="policy attesting clients must satisfy")
    add_plugin_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except InclavareError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


async def run(args: argparse.Namespace) -> int:
    from inclavare.eaa.service import EnclaveService, log, serve

    policy = load_policy_file(args.policy, "--policy")
    tls = make_tls(tls_config(args, policy, mutual=not args.no_mutual), server=True)
    service = EnclaveService(tls)
    try:
        server = await serve(service, args.listen)
    except OSError as error:
        raise UsageError(f"cannot listen on {args.listen}: {error.strerror or error}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    log("ready", address=args.listen, attester=tls.attester_name)
    try:
        await stop.wait()
    finally:
        await server.close()
    log("stopped", sessions=service.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
