"""rune state: print the OCI state of a container as JSON."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "<container-id>"
ARGUMENTS = (1, 1)
FLAGS: list[object] = []


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare import lightjson
    from inclavare.runtime.container import Container

    state = Container.load(context.root, args[0]).oci_state()
    sys.stdout.write(lightjson.dumps(state, indent="  ") + "\n")
    return 0
