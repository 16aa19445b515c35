"""`inclavare-device-plugin`: the enclave-memory device plugin of a Kubernetes node.

    inclavare-device-plugin [--epc-mib N] [--unit-mib N] [--resource-name NAME]
                            [--directory DIR] [--endpoint NAME] [--interval SECONDS]
                            [--cpuinfo FILE] [--cpuid-device FILE]

Advertises the node's enclave memory as the extended resource `inclavare.io/epc` (or
`sgx.intel.com/epc` with --resource-name, so existing manifests work), one device per
--unit-mib MiB: the SGX EPC the CPU enumerates (CPUID leaf 0x12), or --epc-mib for the
software TEE `sim`. A container that is allocated N devices gets ENCLAVE_EPC_LIMIT_MIB (and
the annotation enclave.epc.limit.mib) of N times the unit, which rune enforces on its enclave.
SIGTERM or SIGINT stops it and removes its socket. Exit codes: 0 stopped by a signal,
1 the kubelet refused the registration, 2 unusable configuration.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from inclavare.errors import InclavareError

EXIT_REFUSED = 1
EXIT_USAGE = 2


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    from inclavare.k8s.api import DEFAULT_DIRECTORY
    from inclavare.k8s.epc import CPUID_DEVICE, CPUINFO
    from inclavare.k8s.epcpool import RESOURCE_NAME

    parser = argparse.ArgumentParser(
        prog="inclavare-device-plugin",
        description="Kubernetes device plugin advertising a node's enclave memory (EPC).",
    )
    parser.add_argument(
        "--epc-mib",
        type=positive,
        help="advertise this much enclave memory (the sim TEE); default: the host's SGX EPC",
    )
    parser.add_argument("--unit-mib", type=positive, default=1, help="MiB per device (1)")
    parser.add_argument("--resource-name", default=RESOURCE_NAME, help=f"({RESOURCE_NAME})")
    parser.add_argument("--directory", default=DEFAULT_DIRECTORY, help=f"({DEFAULT_DIRECTORY})")
    parser.add_argument("--endpoint", default="inclavare-epc.sock", help="the plugin's socket")
    parser.add_argument(
        "--interval", type=seconds, default=1.0, help="seconds between checks of the sockets"
    )
    parser.add_argument("--cpuinfo", default=CPUINFO, help=argparse.SUPPRESS)
    parser.add_argument("--cpuid-device", default=CPUID_DEVICE, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from inclavare import log

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        from inclavare.k8s.epc import EpcError, host_epc_mib
        from inclavare.k8s.epcpool import EpcPool, check_resource_name
        from inclavare.k8s.plugin import DevicePlugin, RegistrationRefused

        resource_name = check_resource_name(args.resource_name)
        health = None
        if args.epc_mib is not None:
            total = args.epc_mib
        else:
            total = host_epc_mib(args.cpuinfo, args.cpuid_device)
            if total == 0:
                raise EpcError(
                    "this host has no SGX (no sgx flag in /proc/cpuinfo): give the enclave "
                    "memory of the sim TEE with --epc-mib"
                )

            def health() -> bool:
                # Healthy while the EPC the plugin advertises is all still there.
                try:
                    return host_epc_mib(args.cpuinfo, args.cpuid_device) >= total
                except EpcError:
                    return False

        pool = EpcPool(total, args.unit_mib)
        plugin = DevicePlugin(
            pool, resource_name, args.directory, args.endpoint, health, args.interval
        )
        log.info(
            f"{resource_name}: {total} MiB of enclave memory as {pool.count} devices "
            f"of {pool.unit_mib} MiB"
        )
        plugin.run(stop)
    except RegistrationRefused as error:
        print(f"inclavare-device-plugin: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except InclavareError as error:
        print(f"inclavare-device-plugin: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
