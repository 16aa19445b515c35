"""Thin command-line entry points, one module (or package) per program."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

EXIT_USAGE = 2


def exit_now(code: int) -> None:
    """Flush the standard streams and end the process without the interpreter's shutdown.

    Tearing down the interpreter (module finalisation, garbage collection) costs several
    milliseconds that a runtime executed many times per container does not need to spend;
    rune leaves no state that only a clean shutdown would save.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if code == 0:
                code = 1
    os._exit(code)


def run_subcommand(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, program: str
) -> int:
    """main() of an argparse program with subcommands, each of which sets `run`: help
    without one, and a user error (InclavareError) as one line with exit code 2."""
    from inclavare.errors import InclavareError

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except InclavareError as error:
        print(f"{program} {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    return code
