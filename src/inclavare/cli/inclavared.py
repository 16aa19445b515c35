"""`inclavared`: the node daemon between verifiers (shelter) and confidential containers.

    inclavared --listen ADDR [--listen ADDR]... --connect [NAME=]ADDR [--connect ...]
               [--tunnel-listen ADDR]...
               [--attester A] [--verifier V] [--tls T] [--crypto C] [--mutual]
               [--policy FILE] [--verifier-policy FILE] [--allow-sim] [--roots FILE]
               [--metrics HOST:PORT] [--timeout S] [--idle-timeout S]

ADDR is tcp://HOST:PORT or unix:///PATH. Enclave-TLS on both legs: towards the enclaves
inclavared is a mutual client that verifies them with --policy; towards verifiers it attests
itself, and with --mutual requires them to attest too (judged by --verifier-policy). On a
--tunnel-listen address clients reach an enclave end to end (inclavared relays ciphertext).
Logs are
JSON lines on standard error. SIGTERM or SIGINT: stop accepting, end the open sessions, exit 0.
Exit codes: 0 after a clean stop, 2 for unusable flags or files.
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

PROGRAM = "inclavared"
EXIT_OK = 0
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Forward attestation and application traffic between verifiers and "
        "confidential containers, over Enclave-TLS on both sides.",
    )
    flag = parser.add_argument
    flag("--listen", metavar="ADDR", action="append", default=[], help="where verifiers connect")
    flag(
        "--connect",
        metavar="[NAME=]ADDR",
        action="append",
        default=[],
        help="an enclave to reach (the first is the default one)",
    )
    flag(
        "--tunnel-listen",
        metavar="ADDR",
        action="append",
        default=[],
        help="where clients open end-to-end Enclave-TLS tunnels to an enclave",
    )
    flag("--mutual", action="store_true", help="verifiers must attest themselves too")
    flag("--policy", metavar="FILE", help="policy the enclaves must satisfy (TOML/JSON)")
    flag("--verifier-policy", metavar="FILE", help="policy attesting verifiers must satisfy")
    flag("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics over HTTP")
    flag("--idle-timeout", type=float, default=60.0, help="end a silent session (default: 60 s)")
    add_plugin_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        daemon, listens, metrics = configure(args)
        return asyncio.run(run(daemon, listens, metrics))
    except InclavareError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def configure(args: argparse.Namespace) -> tuple[object, list[object], object]:
    from inclavare.eaa.address import parse_address
    from inclavare.eaa.inclavared import Inclavared

    if not args.listen:
        raise UsageError("--listen ADDR is required (tcp://HOST:PORT or unix:///PATH)")
    if not args.connect:
        raise UsageError("--connect [NAME=]ADDR is required: the enclave to reach")
    enclaves = {}
    for index, item in enumerate(args.connect):
        name, separator, address = item.partition("=")
        if not separator or "://" in name:
            name, address = ("default" if index == 0 else f"enclave{index}"), item
        if name in enclaves:
            raise UsageError(f"--connect: the name {name!r} is given twice")
        enclaves[name] = parse_address(address)
    listens = [parse_address(item) for item in args.listen]
    tunnels = [parse_address(item) for item in args.tunnel_listen]
    metrics = parse_address(args.metrics) if args.metrics else None
    if metrics is not None and metrics.scheme != "tcp":
        raise UsageError("--metrics is a TCP address (HOST:PORT)")
    if args.idle_timeout <= 0:
        raise UsageError("--idle-timeout must be positive")
    upstream = make_tls(
        tls_config(args, load_policy_file(args.policy, "--policy"), mutual=True), server=False
    )
    downstream_policy = load_policy_file(args.verifier_policy, "--verifier-policy")
    downstream = make_tls(tls_config(args, downstream_policy, mutual=args.mutual), server=True)
    daemon = Inclavared(
        downstream=downstream,
        upstream=upstream,
        enclaves=enclaves,
        request_timeout=args.timeout,
        idle_timeout=args.idle_timeout,
    )
    daemon.tunnel_addresses = tunnels
    return daemon, list(listens), metrics


async def run(daemon: object, listens: list[object], metrics_address: object) -> int:
    from inclavare.eaa.address import Address
    from inclavare.eaa.inclavared import Inclavared
    from inclavare.eaa.metrics import serve_metrics

    assert isinstance(daemon, Inclavared)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    metrics_server = None
    try:
        for address in listens:
            assert isinstance(address, Address)
            try:
                server = await daemon.listen(address)
            except OSError as error:
                raise UsageError(f"cannot listen on {address}: {error.strerror or error}") from None
            shown = address
            if address.scheme == "tcp":
                shown = Address("tcp", server.address[0], server.address[1])
            daemon.log("listening", address=str(shown))
        for address in daemon.tunnel_addresses:
            try:
                tunnel = await daemon.listen_tunnel(address)
            except OSError as error:
                raise UsageError(f"cannot listen on {address}: {error.strerror or error}") from None
            shown = address
            if address.scheme == "tcp":
                bound = tunnel.sockets[0].getsockname()
                shown = Address("tcp", bound[0], bound[1])
            daemon.log("tunnel-listening", address=str(shown))
        if isinstance(metrics_address, Address):
            try:
                metrics_server = await serve_metrics(
                    daemon.metrics, metrics_address.host, metrics_address.port
                )
            except OSError as error:
                raise UsageError(
                    f"cannot serve metrics on {metrics_address}: {error.strerror or error}"
                ) from None
            port = metrics_server.sockets[0].getsockname()[1]
            daemon.log("metrics", address=f"http://{metrics_address.host}:{port}/metrics")
        daemon.log(
            "ready",
            enclaves={name: str(address) for name, address in daemon.enclaves.items()},
            attester=daemon.downstream.attester_name,
        )
        await stop.wait()
        daemon.log("stopping", sessions=daemon.metrics.sessions_active)
    finally:
        await daemon.close()
        if metrics_server is not None:
            metrics_server.close()
            await metrics_server.wait_closed()
        _remove_unix_sockets([*listens, *daemon.tunnel_addresses])
    daemon.log("stopped")
    return EXIT_OK


def _remove_unix_sockets(listens: list[object]) -> None:
    import os

    from inclavare.eaa.address import Address

    for address in listens:
        if isinstance(address, Address) and address.scheme == "unix":
            try:
                os.unlink(address.path)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
