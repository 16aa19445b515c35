"""containerd-shim-rune-v2: containerd's shim v2 for rune (runtime_type io.containerd.rune.v2).

containerd runs `containerd-shim-rune-v2 -namespace NS -address A -publish-binary P -id ID
start` in the bundle's directory and reads the shim's ttrpc address from its output, and
`... -bundle B delete` to clean up after a shim that died.
"""

from __future__ import annotations

import sys

from inclavare.cli.goflags import Flag, UsageError, parse

FLAGS = [
    Flag("namespace", str, "namespace that owns the shim"),
    Flag("address", str, "grpc address back to main containerd"),
    Flag("publish-binary", str, "path to the binary that publishes events to containerd"),
    Flag("id", str, "id of the task"),
    Flag("bundle", str, "path to the bundle if not the working directory"),
    Flag("socket", str, "socket path to serve (not used: start picks it)"),
    Flag("debug", bool, "enable debug output in logs"),
    Flag("v", bool, "show the shim version and exit"),
]
PROGRAM = "containerd-shim-rune-v2"


def _usage() -> str:
    lines = [f"Usage of {PROGRAM}: [flags] start|delete"]
    lines += [flag.usage_line() for flag in FLAGS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from inclavare.errors import InclavareError

    try:
        options, args, wants_help = parse(FLAGS, list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        sys.stderr.write(f"{PROGRAM}: {error}\n{_usage()}")
        return 2
    if wants_help:
        sys.stdout.write(_usage())
        return 0
    if options.v:
        from inclavare import __version__

        sys.stdout.write(f"{PROGRAM}:\n  Version:  {__version__}\n")
        return 0
    try:
        if not options.namespace:
            raise UsageError("shim namespace cannot be empty")
        action = args[0] if args else ""
        if len(args) > 1 or action not in ("start", "delete"):
            raise UsageError(f"unknown action {' '.join(args)!r}: want start or delete")
        if not options.id:
            raise UsageError("-id is required")
        if action == "delete":
            from inclavare.shim.cleanup import delete

            return delete(options.namespace, options.id, options.bundle)
        from inclavare.shim.daemon import start

        return start(
            options.namespace, options.address, options.publish_binary, options.id, options.debug
        )
    except InclavareError as error:
        sys.stderr.write(f"{PROGRAM}: {error}\n")
        return 1
