"""rune delete: remove a stopped container's state, cgroup and processes."""

from __future__ import annotations

from inclavare.cli.goflags import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options] <container-id>"
DESCRIPTION = """\
   A created container is killed and deleted; a running one only with --force."""
ARGUMENTS = (1, 1)
FLAGS = [
    Flag("force, f", bool, "forcibly delete the container if it is still running (SIGKILL)"),
]


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.runtime.lifecycle import delete

    delete(context.root, args[0], options.force)
    return 0
