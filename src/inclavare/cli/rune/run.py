"""rune run: create and start a container; unless detached, wait for it and return its exit
code (128+N when signal N ended it), forwarding signals, then delete it."""

from __future__ import annotations

from inclavare.cli.goflags import Flag
from inclavare.cli.rune.create import FLAGS as CREATE_FLAGS
from inclavare.cli.rune.create import create_options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options] <container-id>"
ARGUMENTS = (1, 1)
FLAGS = [
    *CREATE_FLAGS,
    Flag("detach, d", bool, "detach from the container's process"),
    Flag("keep", bool, "do not delete the container after it exits"),
    Flag("no-subreaper", bool, "accepted for compatibility with runc; rune always reaps"),
]


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.cgroups import prime_migration

    prime_migration()
    from inclavare.runtime.run import run_container

    return run_container(
        context.root, args[0], create_options(options), options.detach, options.keep
    )
