"""rune update: change the cgroup resources of a running container."""

from __future__ import annotations

import sys

from inclavare.cgroups import UPDATE_FLAGS
from inclavare.cli.goflags import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options] <container-id>"
DESCRIPTION = """\
   The flags (or a resources JSON object with -r FILE, '-' for standard input) give the new
   values; what they leave out keeps its current value. Device rules cannot be updated."""
ARGUMENTS = (1, 1)
FLAGS = [Flag(names, int if kind == "int" else str, text) for names, kind, text in UPDATE_FLAGS]


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.cgroups import parse_update_flags
    from inclavare.runtime.container import Container
    from inclavare.runtime.lifecycle import update

    given = {flag.name: getattr(options, flag.attribute) for flag in FLAGS}
    changes = parse_update_flags(given, lambda path: _read_input(path))
    update(Container.load(context.root, args[0]), changes)
    return 0


def _read_input(path: str) -> bytes:
    from inclavare.errors import InclavareError

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError as error:
        raise InclavareError(f"read {path}: {error.strerror}") from None
