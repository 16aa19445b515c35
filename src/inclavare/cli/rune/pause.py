"""rune pause: freeze every process of a container (cgroup freezer)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "<container-id>"
ARGUMENTS = (1, 1)
FLAGS: list[object] = []


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.runtime.container import Container
    from inclavare.runtime.lifecycle import pause

    pause(Container.load(context.root, args[0]))
    return 0
